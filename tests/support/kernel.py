"""A real ipykernel, started and driven by nbclient one cell at a time, as Jupyter runs a notebook."""

import os
import re

import nbformat
from nbclient import NotebookClient


class Kernel:
    """``run(code)`` executes a cell and returns it with its outputs; errors are outputs too."""

    def __init__(self, cwd, timeout=180, env=None):
        self.notebook = nbformat.v4.new_notebook()
        self.client = NotebookClient(self.notebook, timeout=timeout, kernel_name="python3",
                                     allow_errors=True, resources={"metadata": {"path": str(cwd)}})
        self.env = {**os.environ, **(env or {})}

    def __enter__(self):
        self._setup = self.client.setup_kernel(env=self.env)
        self._setup.__enter__()
        return self

    def __exit__(self, *exc):
        self._setup.__exit__(*exc)

    def run(self, code: str):
        cell = nbformat.v4.new_code_cell(code)
        self.notebook.cells.append(cell)
        self.client.execute_cell(cell, len(self.notebook.cells) - 1)
        return cell

    def ok(self, code: str):
        """Run a cell that must not fail; returns it."""
        cell = self.run(code)
        failed = error(cell)
        assert failed is None, "\n".join(failed["traceback"])
        return cell

    def value(self, expression: str):
        """A JSON-able value of the kernel's, as its repr evaluates here."""
        import ast
        return ast.literal_eval(text(self.ok(f"print(repr({expression}))")).strip())


def text(cell) -> str:
    """What the cell printed and its plain-text result."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output and "text/plain" in output.data:
            parts.append(output.data["text/plain"])
    return "".join(parts)


def html(cell) -> str:
    return "".join(o.data.get("text/html", "") for o in cell.outputs if "data" in o)


def usage_error(cell) -> str:
    """The message of an IPython UsageError, which a kernel prints on stderr, not as an error."""
    stderr = "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr")
    return stderr.partition("UsageError: ")[2].strip()


def error(cell):
    """The cell's error output (``ename``, ``evalue``, ``traceback``), or None."""
    return next((o for o in cell.outputs if o.output_type == "error"), None)


def traceback(cell) -> str:
    """The cell's traceback as plain text, without the terminal colours IPython adds."""
    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error(cell)["traceback"]))
