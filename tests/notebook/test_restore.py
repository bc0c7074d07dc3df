"""A notebook's served models across a kernel restart, in real kernels: ``%load_ext nbserve``
says what there is to restore, ``%serve --restore`` serves the archives again with their
settings, and a live object is named with the cell that served it."""

from tests.support import archives
from tests.support.kernel import Kernel, text


def test_a_restarted_kernel_restores_what_its_notebook_served(tmp_path):
    mar = archives.controlled(tmp_path / "ctl")
    env = {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JPY_SESSION_NAME": str(tmp_path / "demo.ipynb"),
           "NBSERVE_CACHE_DIR": str(tmp_path / "cache")}
    with Kernel(tmp_path, env=env) as kernel:
        assert "restore" not in text(kernel.ok("%load_ext nbserve\nimport nbserve"))
        kernel.ok(f"%serve {mar} --batch-size 3")
        kernel.ok(f"%serve {mar} --model-name second --workers 2")
        kernel.ok("def echo(data, context):\n    return data and [1] * len(data)")
        served_live = kernel.ok("nbserve.serve(echo, model_name='live_echo')")
    with Kernel(tmp_path, env={**env, "JPY_SESSION_NAME": str(tmp_path / "other.ipynb")}) as other:
        assert "restore" not in text(other.ok("%load_ext nbserve"))  # another notebook's
    with Kernel(tmp_path, env=env) as kernel:
        said = text(kernel.ok("%load_ext nbserve\nimport nbserve"))
        assert "this notebook served ctl, second before its kernel restarted" in said, said
        assert f"live_echo was a live object served in In [{served_live.execution_count}]" in said
        restored = text(kernel.ok("%serve --restore"))
        assert f"Restored ctl 1.0 from {mar}" in restored and "Restored second" in restored
        engine = "nbserve.notebook.session.current.engine"
        assert kernel.value(f"{engine}.get('ctl').config.batch_size") == 3
        assert kernel.value(f"len({engine}.get('second').workers)") == 2
        assert kernel.value("nbserve.predict('ctl', {'a': 1})['echo']") == {"a": 1}
        kernel.ok("%serve --stop")
    with Kernel(tmp_path, env=env) as kernel:  # stopped on purpose: nothing to restore
        assert "restore" not in text(kernel.ok("%load_ext nbserve"))
