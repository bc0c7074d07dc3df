"""densenet161's trained weights, as TorchServe's tutorial fetches them with wget; without a
network, the same architecture with seeded random weights, and a warning that says so.

    python examples/densenet161/weights.py [OUT]     (default OUT: densenet161.pth)
"""

import shutil
import sys
import urllib.request
from pathlib import Path

WEIGHTS_URL = "https://download.pytorch.org/models/densenet161-8d451a50.pth"


def fetch(out: Path) -> bool:
    """Write the weights to ``out``; whether they are the trained ones."""
    partial = out.with_suffix(".part")
    try:
        with urllib.request.urlopen(WEIGHTS_URL, timeout=30) as response, open(partial, "wb") as f:
            shutil.copyfileobj(response, f)
        partial.rename(out)
        print(f"Downloaded the trained weights to {out}.")
        return True
    except OSError as error:
        import torch
        import torchvision

        torch.manual_seed(0)
        torch.save(torchvision.models.densenet161(weights=None).state_dict(), out)
        print(f"OFFLINE: could not download {WEIGHTS_URL} ({error}). Wrote {out} with random "
              "weights instead: the model serves, but its predictions mean nothing.",
              file=sys.stderr)
        return False


if __name__ == "__main__":
    fetch(Path(sys.argv[1] if len(sys.argv) > 1 else "densenet161.pth"))
