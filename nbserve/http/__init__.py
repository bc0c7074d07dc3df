"""TorchServe's REST API over the engine: inference, management and metrics, on tornado.

A prediction's path: :mod:`nbserve.routes` names the route; :class:`~nbserve.http.server.Server`
gives it to its handler (``inference.PredictionHandler``), whose ``prepare``
(:mod:`nbserve.http.base`) checks the caller (:mod:`nbserve.http.access`) and the body's size
(:mod:`nbserve.http.limits`) before anything runs; the body becomes the handler's input
(:mod:`nbserve.protocol`) and goes to :meth:`nbserve.engine.Engine.submit`; the engine's
answer (or error, as TorchServe's JSON: :mod:`nbserve.http.errors`) is written back.
"""

from nbserve.http.server import Server

__all__ = ["Server"]
