"""The tutorial notebooks as a fresh checkout has them, and an environment with no network."""

import shutil
from pathlib import Path

REPO = Path(__file__).parents[2]
#: Any download fails at once, whatever network the machine has: the notebooks' offline path.
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}


def checkout(tmp_path: Path) -> Path:
    """The notebooks and what they read, as a Binder or CI checkout has them."""
    written = [line.strip().rstrip("/") for line in (REPO / "notebooks" / ".gitignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]  # what earlier runs left
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns(*written))
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    return tmp_path / "notebooks"
