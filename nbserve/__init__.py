"""nbserve: TorchServe-compatible model serving that lives in the notebook."""

__version__ = "0.1.0"

from nbserve.archive import ModelArchive, archive, open_archive  # noqa: E402
from nbserve.errors import NBServeError  # noqa: E402

__all__ = ["ModelArchive", "NBServeError", "archive", "open_archive", "__version__"]
