"""Serving archives on Ray Serve, for models that outgrow one kernel.

nbserve does not manage a cluster: it hands the same archive and the same handler runtime to
Ray Serve, which places, restarts and autoscales replicas. Each model is a Serve application
(``nbserve:<model>``) whose replicas each run nbserve's engine (:mod:`.replica`); one ingress
application answers TorchServe's and KServe's paths on Ray Serve's HTTP proxy (:mod:`.ingress`);
:class:`~nbserve.ray_serve.serving.RayServing` deploys them from a notebook or ``nbserve serve``.

Ray is an optional dependency (``pip install 'nbserve[ray]'``); :func:`connect` says so when
it is missing.
"""

from __future__ import annotations

from nbserve.errors import NBServeError


def connect(address: str | None = None, **options):
    """A :class:`~nbserve.ray_serve.serving.RayServing` on the cluster at ``address`` (a new
    local one if None and ``RAY_ADDRESS`` is unset); ``options`` as it takes them."""
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        raise NBServeError("Serving on Ray needs Ray Serve, an optional extra: "
                           "pip install 'nbserve[ray]'") from None
    from nbserve.ray_serve.serving import RayServing

    return RayServing(address, **options)
