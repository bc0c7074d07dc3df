"""Notebook widgets: upload images and see a model's answers.

``%predict NAME`` with no input shows a :class:`PredictionUpload`; it can also be made in
Python, for any model the kernel serves::

    import nbserve
    nbserve.widgets.PredictionUpload("densenet161")
"""

from __future__ import annotations

import html
import threading
from concurrent.futures import Future

import ipywidgets as widgets

from nbserve.errors import NBServeError
from nbserve.notebook import session
from nbserve.notebook.display import beside, prediction_html, thumbnail_png


class PredictionUpload(widgets.VBox):
    """An upload button for several images at once; each shows beside its answer as it comes.

    Predictions run on the engine's workers, so the kernel stays free while they do; a file the
    model cannot read shows its error beside it and takes nothing else down.
    """

    def __init__(self, model_name: str, *, version: str | None = None, engine=None):
        self.model_name, self.version = model_name, version
        #: Where requests go: an engine, or the kernel's session (local or on Ray).
        self.target = engine or session.current
        self.target.get(model_name, version)  # unknown model: fail now
        self.upload = widgets.FileUpload(accept="image/*", multiple=True,
                                         description="Upload images")
        self.results = widgets.VBox()
        self._pending: list[Future] = []
        self._lock = threading.Lock()
        self.upload.observe(self._uploaded, names="value")
        title = widgets.HTML(f"<b>{html.escape(model_name)}</b>: upload images to predict")
        super().__init__([title, self.upload, self.results])

    def _uploaded(self, change) -> None:
        for file in change["new"]:
            self.predict(bytes(file["content"]), file["name"])

    def predict(self, data: bytes, name: str = "image") -> Future:
        """Send one file to the model; its row updates when the answer comes."""
        thumbnail = thumbnail_png(data)
        row = widgets.HTML(_row(name, beside(thumbnail, "<i>predicting…</i>")))
        self.results.children = (*self.results.children, row)
        try:
            future = self.target.submit(self.model_name, {"body": data}, version=self.version)
        except NBServeError as error:
            future = Future()
            future.set_exception(error)
        future.add_done_callback(lambda done: setattr(row, "value", _answer_row(name, thumbnail, done)))
        with self._lock:
            self._pending.append(future)
        return future

    def wait(self, timeout: float | None = None) -> None:
        """Block until every upload so far has its answer (for scripts and tests)."""
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            try:
                future.result(timeout)
            except NBServeError:
                pass


def _answer_row(name: str, thumbnail: bytes | None, done: Future) -> str:
    error = done.exception()
    if error is None:
        return _row(name, prediction_html(done.result().value, thumbnail))
    message = f'<span class="nbserve-error" style="color:#c62828">{html.escape(str(error))}</span>'
    return _row(name, beside(thumbnail, message))


def _row(name: str, body: str) -> str:
    return f'<div class="nbserve-upload-row"><b>{html.escape(name)}</b>{body}</div>'
