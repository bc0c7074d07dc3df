"""The tiny chat model the tests serve: examples/tiny_chat/model.py's (the tutorial builds it
too, offline), loaded from its file, as examples/ is not a package."""

import importlib.util
import urllib.request
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "examples" / "tiny_chat" / "model.py"
_spec = importlib.util.spec_from_file_location("tiny_chat_model", _PATH)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

build_tiny_chat_model = _module.build_tiny_chat_model
QUESTIONS, SENTENCES = _module.QUESTIONS, _module.SENTENCES


def generated_tokens(metrics_port: int) -> float:
    """The tokens the models served there have generated so far, from GeneratedTokens."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.decode().splitlines()
               if line.startswith("GeneratedTokens{"))
