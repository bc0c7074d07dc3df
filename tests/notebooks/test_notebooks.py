"""The tutorial notebooks, executed top to bottom in a real kernel with no network, as CI runs them."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.support.notebooks import OFFLINE, checkout

REPO = Path(__file__).parent.parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
def outputs(notebook) -> str:
    return "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                   for cell in notebook.cells for o in cell.get("outputs", []))


def test_there_are_four_tutorials():
    assert [p.name for p in NOTEBOOKS] == [
        "01-densenet161-workflow.ipynb", "02-custom-handler.ipynb", "03-operate.ipynb",
        "04-language-model.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_clean_of_volatile_state(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        assert "execution" not in cell.metadata
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    assert set(notebook.metadata) <= {"kernelspec", "language_info"}
    assert notebook.cells[0].cell_type == "markdown"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_top_to_bottom_offline(path, tmp_path, monkeypatch):
    folder = checkout(tmp_path)
    notebook = nbformat.read(folder / path.name, as_version=4)
    # Once serving starts, a cell of the test's own reads the kernel's keys: no other cell's
    # saved output may hold one.
    first_serve = next(i for i, c in enumerate(notebook.cells)
                       if c.cell_type == "code" and "%serve" in c.source)
    probe = nbformat.v4.new_code_cell("print('KEYS', *__import__('nbserve').session.current.keys.values())")
    notebook.cells.insert(first_serve + 1, probe)
    env = {**__import__("os").environ, **OFFLINE}
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(folder)}}).execute(env=env)  # a failing cell raises
    keys = outputs(nbformat.v4.new_notebook(cells=[probe])).split()[1:]
    notebook.cells.remove(probe)
    text = outputs(notebook)
    saved = nbformat.writes(notebook)  # every output, HTML included, as the .ipynb keeps it
    assert len(keys) == 3 and not any(key in saved for key in keys)
    assert "InvalidKeyException" not in text  # every call carries its key
    if path.name.startswith("01"):
        assert "OFFLINE: could not download" in text
        assert '"modelName": "densenet161"' in text  # curl of the management API
        # curl's top 5 for the cat are %predict's, label for label, score for score.
        cells = {"".join(c.source): c for c in notebook.cells if c.cell_type == "code"}
        curl = next(c for src, c in cells.items() if "/predictions/densenet161 -T photos/cat.jpg" in src)
        over_http = json.loads("".join(o.get("text", "") for o in curl.outputs))
        predicted = outputs(nbformat.v4.new_notebook(cells=[cells["%predict densenet161 photos/cat.jpg"]]))
        assert len(over_http) == 5
        for label, score in over_http.items():
            assert f"{label}" in predicted and f"{score:.4f}" in predicted
    if path.name.startswith("02"):
        assert "[\n  3.0,\n  5.0,\n  7.0\n]" in text and "blue" in text
    if path.name.startswith("04"):
        assert "OFFLINE: could not download HuggingFaceTB/SmolLM2-135M-Instruct" in text
        assert "The cat sat on the mat." in text and "['chat']" in text
        assert "chat: streamed chat completions of up to 64 tokens" in text  # %bench --llm
        assert "0 running, 0 waiting" in text  # %serve's table, once the streams are done
    if path.name.startswith("03"):
        assert "64 answers, statuses [200]" in text and "same answer as %predict: True" in text
        assert "same answer as nbserve: True" in text  # TorchServe is in the test extra
