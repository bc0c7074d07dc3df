"""nbserve: TorchServe-compatible model serving that lives in the notebook."""

from nbserve._version import __version__
from nbserve.errors import InferenceError, NBServeError
from nbserve.store.archive import ModelArchive, open_archive
from nbserve.store.archiver import archive


def __getattr__(name):
    # The engine imports torch: load it on first use, so `nbserve archive` starts fast.
    if name == "Engine":
        from nbserve.serving.engine import Engine
        return Engine
    if name in ("serve", "predict", "stop", "workflow", "archive_workflow"):  # the magics' work
        from nbserve.notebook import session
        return getattr(session, name)
    if name in ("session", "widgets"):  # nbserve.session.current: the kernel's server and keys
        import importlib
        return importlib.import_module(f"nbserve.notebook.{name}")
    raise AttributeError(f"module 'nbserve' has no attribute {name!r}")


def load_ipython_extension(ipython):
    """``%load_ext nbserve``: the ``%archive``, ``%serve`` and ``%predict`` magics."""
    from nbserve.notebook import restore, session
    from nbserve.notebook.magics import NBServeMagics
    ipython.register_magics(NBServeMagics)
    snapshot = restore.read() if session.current.engine is None else None
    if snapshot is not None:
        print(restore.summary(snapshot))


def _jupyter_server_extension_points():
    """The jupyter-server extension that serves the kernels' models under Jupyter's URL."""
    from nbserve.extension import NBServe
    return [{"module": "nbserve.extension", "app": NBServe}]


__all__ = ["Engine", "InferenceError", "ModelArchive", "NBServeError", "archive",
           "archive_workflow", "open_archive", "predict", "serve", "stop", "workflow",
           "__version__"]
