"""The errors nbserve raises for things a user can fix.

Each carries the HTTP status and TorchServe error ``type`` it is answered with, so an error
raised deep in the engine travels back to a curl client, a ``%predict`` cell or the command line
unchanged.
"""


class NBServeError(Exception):
    """An error a user can act on; its message says what failed and what to do."""

    status = 500
    type = "InternalServerException"


class ArchiveError(NBServeError):
    """A model archive cannot be written or read."""

    status = 400
    type = "InvalidModelException"
