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
        assert json.loads(z.read(config)) == {"ServerApp": {"jpserver_extensions": {"nbserve": True}}}
        assert "nbserve/extension/page.html" in names


def test_jupyter_finds_the_extension_point():
    import nbserve
    from nbserve.extension import NBServe

    (point,) = nbserve._jupyter_server_extension_points()
    assert point == {"module": "nbserve.extension", "app": NBServe} and NBServe.name == "nbserve"
