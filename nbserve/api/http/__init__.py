"""TorchServe's REST API over the engine: inference, management and metrics, on tornado.

A prediction's path: :mod:`nbserve.api.routes` names the route; :class:`~nbserve.api.http.server.Server`
gives it to its handler (``inference.PredictionHandler``), whose ``prepare``
(:mod:`nbserve.api.http.base`) checks the caller (:mod:`nbserve.api.access`) and the body's size
(:mod:`nbserve.api.limits`) before anything runs; the body becomes the handler's input
(:mod:`nbserve.api.protocol`) and goes to :meth:`nbserve.serving.engine.Engine.submit`; the engine's
answer (or error, as TorchServe's JSON: :mod:`nbserve.api.http.errors`) is written back.
"""

from nbserve.api.http.server import Server

__all__ = ["Server"]
