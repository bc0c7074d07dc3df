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

#: The Serve application of the ingress, at route prefix ``/``.
INGRESS_APP = "nbserve"
#: Each model's Serve application is this prefix and the model's name.
MODEL_APP_PREFIX = "nbserve:"


def app_name(model_name: str) -> str:
    return MODEL_APP_PREFIX + model_name


def deployment_state(applications: dict, model_name: str) -> dict:
    """A model's deployment as ``serve.status()`` tells it: its status (HEALTHY, UPDATING,
    ...), its replicas by state, and Ray's message."""
    application = applications.get(app_name(model_name))
    if application is None:
        return {"status": "DELETED", "replicaStates": {}, "message": ""}
    deployment = application.deployments[model_name]
    return {"status": str(deployment.status.value),
            "replicaStates": {str(getattr(state, "value", state)): count
                              for state, count in deployment.replica_states.items()},
            "message": deployment.message}


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
