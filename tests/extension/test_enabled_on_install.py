"""``pip install nbserve`` enables the extension, as jupyter-server extensions are enabled."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).parent.parent.parent


def test_the_wheel_enables_the_extension_and_carries_its_page(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(tmp_path)], check=True)
    (wheel,) = tmp_path.glob("nbserve-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        config = next(n for n in names if n.endswith("etc/jupyter/jupyter_server_config.d/nbserve.json"))
        shipped = json.loads(z.read(config))
        assert "nbserve/extension/page.html" in names
    # What the wheel ships is what the repository declares, and it names the real extension.
    assert shipped == json.loads(
        (REPO / "jupyter-config/jupyter_server_config.d/nbserve.json").read_text())
    import importlib

    (enabled,) = [name for name, on in shipped["ServerApp"]["jpserver_extensions"].items() if on]
    assert importlib.import_module(enabled)._jupyter_server_extension_points()


def test_jupyter_finds_the_extension_point():
    import nbserve
    from nbserve.extension import NBServe

    (point,) = nbserve._jupyter_server_extension_points()
    assert point == {"module": "nbserve.extension", "app": NBServe} and NBServe.name == "nbserve"
