"""nbserve: TorchServe-compatible model serving that lives in the notebook."""

__version__ = "0.1.0"

from nbserve.archive import ModelArchive, archive, open_archive  # noqa: E402
from nbserve.errors import InferenceError, NBServeError  # noqa: E402


def __getattr__(name):
    # The engine imports torch: load it on first use, so `nbserve archive` starts fast.
    if name == "Engine":
        from nbserve.engine import Engine
        return Engine
    if name in ("serve", "predict", "stop"):  # what %serve and %predict do, from Python
        from nbserve import session
        return getattr(session, name)
    raise AttributeError(f"module 'nbserve' has no attribute {name!r}")


def load_ipython_extension(ipython):
    """``%load_ext nbserve``: the ``%archive``, ``%serve`` and ``%predict`` magics."""
    from nbserve.magics import NBServeMagics
    ipython.register_magics(NBServeMagics)


def _jupyter_server_extension_points():
    """The jupyter-server extension that serves the kernels' models under Jupyter's URL."""
    from nbserve.extension import NBServe
    return [{"module": "nbserve.extension", "app": NBServe}]


__all__ = ["Engine", "InferenceError", "ModelArchive", "NBServeError", "archive", "open_archive",
           "predict", "serve", "stop", "__version__"]
