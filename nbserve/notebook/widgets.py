"""Notebook widgets: upload images and see a model's answers; chat with a language model.

``%predict NAME`` with no input shows a :class:`PredictionUpload`; it can also be made in
Python, for any model the kernel serves::

    import nbserve
    nbserve.widgets.PredictionUpload("densenet161")
    nbserve.widgets.Chat("chat")
"""

from __future__ import annotations

import html
import threading
from concurrent.futures import Future

import ipywidgets as widgets

from nbserve.errors import ClientClosedRequest, NBServeError
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


class Chat(widgets.VBox):
    """A chat box for a language model the kernel serves: each answer streams in as its tokens
    come; Stop cancels the generation (its sequence leaves the running batch at once).

    The conversation is :attr:`messages`, OpenAI's list, sent whole each turn through the
    model's chat template.
    """

    def __init__(self, model_name: str, *, temperature: float = 0.7, **parameters):
        """``parameters``: more of OpenAI's request parameters (``max_tokens``, ``top_p``,
        ``stop``...); without ``max_tokens``, an answer may fill the model's context."""
        self.model_name = model_name
        self.parameters = {"temperature": temperature, **parameters}
        session.current.get(model_name)  # unknown model: fail now
        #: The conversation so far: ``[{"role": "user", "content": ...}, ...]``.
        self.messages: list[dict] = []
        self.conversation = widgets.HTML()
        self.text = widgets.Text(placeholder="Message", continuous_update=False,
                                 layout=widgets.Layout(flex="1"))
        self.send_button = widgets.Button(description="Send", button_style="primary")
        self.stop_button = widgets.Button(description="Stop", disabled=True)
        self.send_button.on_click(lambda _: self.send())
        self.text.on_submit(lambda _: self.send())
        self.stop_button.on_click(lambda _: self.stop())
        self._answer: Future | None = None
        self._reply = ""
        title = widgets.HTML(f"<b>{html.escape(model_name)}</b>")
        super().__init__([title, self.conversation,
                          widgets.HBox([self.text, self.send_button, self.stop_button])])

    def send(self, text: str | None = None) -> Future | None:
        """Send ``text`` (else what is typed); its answer streams into the box."""
        text = self.text.value if text is None else text
        if not text.strip() or self._answer is not None:
            return None
        self.text.value = ""
        self.messages.append({"role": "user", "content": text})
        self._reply = ""
        body = {"endpoint": "chat.completions", "messages": list(self.messages),
                **self.parameters}
        self._answer = future = session.current.submit(
            self.model_name, {"body": body}, on_part=self._on_part)
        self.stop_button.disabled, self.send_button.disabled = False, True
        self._show()
        future.add_done_callback(self._done)
        return future

    def stop(self) -> None:
        """Cancel the answer being written: the model stops generating it."""
        future = self._answer
        if future is not None and not future.done():
            try:
                future.set_exception(ClientClosedRequest("Stopped in the chat box."))
            except Exception:  # noqa: BLE001 - it finished meanwhile
                pass

    def wait(self, timeout: float | None = None) -> None:
        """Block until the current answer is done (for scripts and tests)."""
        future = self._answer
        if future is not None:
            try:
                future.result(timeout)
            except NBServeError:
                pass

    def _on_part(self, part) -> None:
        if isinstance(part, dict) and part.get("choices"):
            self._reply += part["choices"][0]["text"]
            self._show()

    def _done(self, future: Future) -> None:
        error = future.exception()
        if error is None and future.result().status == 200:
            self._on_part(future.result().value)
        elif error is None:
            self._reply += f" [{future.result().value.get('message', 'failed')}]"
        else:
            self._reply += " [stopped]" if isinstance(error, ClientClosedRequest) \
                else f" [{error}]"
        self.messages.append({"role": "assistant", "content": self._reply})
        self._answer = None
        self.stop_button.disabled, self.send_button.disabled = True, False
        self._show(writing=False)

    def _show(self, writing: bool = True) -> None:
        turns = [(m["role"], m["content"]) for m in self.messages]
        if writing:
            turns.append(("assistant", self._reply + "▌"))
        self.conversation.value = "".join(
            f'<div class="nbserve-chat-{role}"><b>{role}</b>: {html.escape(content)}</div>'
            for role, content in turns)


def _answer_row(name: str, thumbnail: bytes | None, done: Future) -> str:
    error = done.exception()
    if error is None:
        return _row(name, prediction_html(done.result().value, thumbnail))
    message = f'<span class="nbserve-error" style="color:#c62828">{html.escape(str(error))}</span>'
    return _row(name, beside(thumbnail, message))


def _row(name: str, body: str) -> str:
    return f'<div class="nbserve-upload-row"><b>{html.escape(name)}</b>{body}</div>'
