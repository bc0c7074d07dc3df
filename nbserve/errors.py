"""The errors nbserve raises for things a user can fix.

Each carries the HTTP status and TorchServe error ``type`` it is answered with, so an error
raised deep in the engine travels back to a curl client, a ``%predict`` cell or the command line
unchanged.
"""


# The classes below share one shape (a docstring, ``status``, ``type``): TorchServe's error
# table, a class per answer. Judged boilerplate: the shape is the point.


class NBServeError(Exception):
    """An error a user can act on; its message says what failed and what to do."""

    status = 500
    type = "InternalServerException"
    #: HTTP headers the answer carries beside the error JSON.
    headers: dict[str, str] = {}

    def __reduce__(self):
        # Errors cross into other processes (Ray replicas answer through the ingress); keep
        # what subclasses set in their own ``__init__`` (status, model, traceback...).
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type, args: tuple, state: dict) -> NBServeError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class ArchiveError(NBServeError):
    """A model archive cannot be written or read."""

    status = 400
    type = "InvalidModelException"


class WorkflowNotFound(NBServeError):
    """No workflow is registered under the name asked for."""

    status = 404
    type = "WorkflowNotFoundException"


class ModelNotFound(NBServeError):
    """No model (or no such version of it) is registered under the name asked for."""

    status = 404
    type = "ModelNotFoundException"


class ModelVersionNotFound(ModelNotFound):
    """The model is served, but not in the version asked for."""

    type = "ModelVersionNotFoundException"


class ModelLoadFailed(NBServeError):
    """A model asked for at start-up that could not be loaded; its message holds why."""

    status = 500
    type = "WorkerInitializationException"


class ModelAlreadyRegistered(NBServeError):
    status = 409
    type = "ConflictStatusException"


class ArchiveConflict(NBServeError):
    """An archive of that name is already in the model store; it is never overwritten."""

    status = 409
    type = "ConflictStatusException"


class DownloadArchiveError(NBServeError):
    """An archive URL could not be fetched whole: the message names the URL, not the network."""

    status = 400
    type = "DownloadArchiveException"


class InvalidKey(NBServeError):
    """A request without the key its API asks for (TorchServe 0.12's token authorization).

    Answered 400, as TorchServe answers it (its clients and test suite check for it), with the
    ``WWW-Authenticate`` header of a 401, which HTTP clients read as "send credentials".
    """

    status = 400
    type = "InvalidKeyException"
    headers = {"WWW-Authenticate": 'Bearer realm="nbserve"'}


class Forbidden(NBServeError):
    """A request refused whoever sends it: a foreign Host or Origin, or a wrong secret from the
    Jupyter extension."""

    status = 403
    type = "ForbiddenException"


class MethodNotAllowed(NBServeError):
    status = 405
    type = "MethodNotAllowedException"


class RequestTooLarge(NBServeError):
    status = 413
    type = "RequestEntityTooLargeException"


class BadRequest(NBServeError):
    """The request itself is wrong: a bad argument, an input the handler cannot read."""

    status = 400
    type = "BadRequestException"


class QueueFull(NBServeError):
    """A model's queue is full; the request was not taken, and can be retried."""

    status = 503
    type = "ServiceUnavailableException"
    headers = {"Retry-After": "1"}


class RequestTimeout(NBServeError):
    """A request was not answered within its model's ``response_timeout``."""

    status = 408
    type = "RequestTimeoutException"


class ClientClosedRequest(NBServeError):
    """The client closed its connection before its request was answered: the request is
    dropped before it reaches the forward pass (nginx's 499; nobody reads the answer)."""

    status = 499
    type = "ClientClosedRequestException"


class InferenceError(NBServeError):
    """A handler failed on a request: which model, which stage, and the handler's traceback.

    ``status`` is the handler's own (a ``PredictionException``'s ``error_code``), 400 for input
    nbserve's handlers cannot read, and 500 for an exception in the handler's code.
    """

    type = "InternalServerException"

    def __init__(self, message: str, *, model_name: str, version: str, stage: str,
                 status: int = 500, traceback: str = ""):
        super().__init__(message)
        self.model_name, self.version, self.stage = model_name, version, stage
        self.status = status
        if status == 400:
            self.type = "BadRequestException"
        self.traceback = traceback


class WorkerDied(NBServeError):
    """A worker process ended (crashed, was killed, timed out) with a request in hand."""

    status = 500
    type = "InternalServerException"
