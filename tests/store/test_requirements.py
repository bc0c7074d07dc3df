"""Per-model requirements (install_py_dep_per_model): installed before the handler loads, once
per requirements file, a failure naming what failed; with the setting off, a warning naming it."""

import zipfile
from pathlib import Path

from nbserve.api.startup import start_serving
from nbserve.store.archiver import archive
from tests.support.helpers import Client, loopback_config

HANDLER = ("import tinydep\n\n\ndef handle(data, context):\n    if data is None:\n"
           "        return None\n    return [tinydep.VALUE for _ in data]\n")


def tiny_wheel(folder: Path) -> Path:
    """A wheel of one module, built here: pip installs it with no index."""
    path = folder / "tinydep-1.0-py3-none-any.whl"
    info = "tinydep-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("tinydep.py", "VALUE = 'from tinydep'\n")
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: tinydep\nVersion: 1.0\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: nbserve-tests\n"
                                        "Root-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", f"tinydep.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n"
                                         f"{info}/RECORD,,\n")
    return path


def needing(folder: Path, requirement: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "needs.py").write_text(HANDLER)
    (folder / "requirements.txt").write_text(requirement + "\n")
    return archive("needs", "1.0", str(folder / "needs.py"),
                   requirements_file=folder / "requirements.txt", export_path=folder)


def serve(tmp_path, mar, **settings):
    config = loopback_config()
    config.values.update(disable_token_authorization=True, **settings)
    return start_serving(config, [f"needs={mar}"])


def test_requirements_are_installed_before_the_handler_loads_and_once(tmp_path):
    mar = needing(tmp_path / "a", str(tiny_wheel(tmp_path)))
    engine, server = serve(tmp_path, mar, install_py_dep_per_model=True)
    try:
        assert not engine.failures
        installed = engine.get("needs").requirements
        assert (installed / "tinydep.py").is_file()
        status, _, answer = Client(server.urls["inference"]).call("POST", "/predictions/needs", b"x")
        assert (status, answer) == (200, b"from tinydep")
        made = installed.stat().st_mtime_ns
        engine.register(mar, replace=True)  # the same requirements.txt: nothing installed again
        assert installed.stat().st_mtime_ns == made
    finally:
        server.stop(timeout=5)
        engine.close()


def test_a_failing_requirement_is_named(tmp_path):
    missing = tmp_path / "nothere-1.0-py3-none-any.whl"
    engine, server = serve(tmp_path, needing(tmp_path / "b", str(missing)),
                           install_py_dep_per_model=True)
    try:
        failure = engine.failures["needs"]
        assert "requirements failed" in failure.error and "nothere" in failure.error
    finally:
        server.stop(timeout=5)
        engine.close()


def test_with_the_setting_off_a_warning_names_it(tmp_path, caplog):
    engine, server = serve(tmp_path, needing(tmp_path / "c", "tinydep-not-installed"))
    try:
        assert "install_py_dep_per_model=true" in caplog.text
        import hashlib

        from nbserve.store.cache import default_cache_dir

        digest = hashlib.sha256(b"tinydep-not-installed\n").hexdigest()
        assert not (default_cache_dir().parent / "requirements" / digest).exists()
    finally:
        server.stop(timeout=5)
        engine.close()


def test_requirements_never_shadow_the_servers_own_packages(tmp_path):
    """Thread workers share the server's process: the model's folder goes last on sys.path.
    Worker processes are the model's own: there it goes first, and the server's path is
    untouched."""
    import sys

    wheel = str(tiny_wheel(tmp_path))
    engine, server = serve(tmp_path, needing(tmp_path / "t", wheel), install_py_dep_per_model=True,
                           isolation="thread")
    try:
        installed = str(engine.get("needs").requirements)
        packages = max(i for i, entry in enumerate(sys.path) if "-packages" in entry)
        assert sys.path.index(installed) > packages and sys.path.count(installed) == 1
        status, _, answer = Client(server.urls["inference"]).call("POST", "/predictions/needs", b"x")
        assert (status, answer) == (200, b"from tinydep")
    finally:
        server.stop(timeout=5)
        engine.close()
        sys.path.remove(installed)
    engine, server = serve(tmp_path, needing(tmp_path / "p", wheel), install_py_dep_per_model=True,
                           isolation="process")
    try:
        assert str(engine.get("needs").requirements) not in sys.path
        status, _, answer = Client(server.urls["inference"]).call("POST", "/predictions/needs", b"x")
        assert (status, answer) == (200, b"from tinydep")
    finally:
        server.stop(timeout=5)
        engine.close()
