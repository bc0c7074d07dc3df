"""TorchServe's REST API over the engine: inference, management and metrics, on tornado."""

from nbserve.http.server import Server

__all__ = ["Server"]
