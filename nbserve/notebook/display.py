"""How predictions and the serving status show in a notebook, and as plain text elsewhere.

Each object here has an HTML form for Jupyter and a text form for terminal IPython, ``print``
and nbconvert, built from the same rows.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError

from nbserve.handlers.util import IMAGE_FORMATS

#: Longest side of the thumbnail shown beside an image's predictions, in pixels.
THUMBNAIL_SIZE = 160
_BAR_WIDTH = 24


def thumbnail_png(data: Any) -> bytes | None:
    """A small PNG of ``data`` (image bytes or a PIL image), or None if it is not an image."""
    try:
        image = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        image = image.copy()
        image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        if image.mode not in ("RGB", "RGBA", "L"):
            image = image.convert("RGBA")
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()
    except (UnidentifiedImageError, OSError, ValueError, TypeError, Image.DecompressionBombError):
        return None


def is_scores(value: Any) -> bool:
    """Whether ``value`` reads as class scores (``{"tabby": 0.45, ...}``), drawn as bars."""
    return (isinstance(value, dict) and bool(value) and all(isinstance(k, str) for k in value)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()))


#: Below this, the top class of a classifier's probabilities is close to a guess among
#: many classes: what a model with untrained (random) weights answers.
LOW_CONFIDENCE = 0.05


def _probabilities(scores: dict[str, float]) -> bool:
    return all(0 <= score <= 1 for score in scores.values()) and sum(scores.values()) <= 1 + 1e-6


def _bars(scores: dict[str, float]) -> list[tuple[str, float, float]]:
    """``(label, score, bar length from 0 to 1)``: probabilities on their own scale (a bar of
    0.003 is a sliver); other scores (logits, say) scaled to the top one."""
    top = 1.0 if _probabilities(scores) else max(max(scores.values()), 1e-12)
    return [(label, score, max(score, 0) / top) for label, score in scores.items()]


def low_confidence(scores: dict[str, float]) -> str | None:
    """A warning where class probabilities say the model hardly prefers any class."""
    if not _probabilities(scores):
        return None
    top = max(scores.values())
    if top >= LOW_CONFIDENCE:
        return None
    return (f"Low confidence: the top class has p = {top:.3f}. A model with untrained or random "
            "weights answers like this.")


def _text_bar(length: float) -> str:
    """A bar of ``length`` (0 to 1) in block characters; a sliver for what rounds to none."""
    blocks = round(_BAR_WIDTH * length)
    return "█" * blocks if blocks or length <= 0 else "▏"


def prediction_text(value: Any) -> str:
    if is_scores(value):
        width = max(len(k) for k in value)
        warning = low_confidence(value)
        return "\n".join([f"{label:<{width}}  {score:8.4f}  {_text_bar(bar)}"
                          for label, score, bar in _bars(value)] + ([warning] if warning else []))
    return _json(value)


def image_html(thumbnail: bytes | None) -> str:
    if not thumbnail:
        return ""
    return (f'<img src="data:image/png;base64,{base64.b64encode(thumbnail).decode()}" '
            f'style="max-width:{THUMBNAIL_SIZE}px;max-height:{THUMBNAIL_SIZE}px" alt="input">')


def beside(thumbnail: bytes | None, body: str, css_class: str = "nbserve-prediction") -> str:
    """``body`` to the right of the input's thumbnail."""
    return (f'<div class="{css_class}" style="display:flex;gap:16px;align-items:center">'
            f"{image_html(thumbnail)}{body}</div>")


def prediction_html(value: Any, thumbnail: bytes | None = None) -> str:
    if is_scores(value):
        rows = "".join(
            f'<tr><td style="text-align:right;padding-right:8px">{html.escape(label)}</td>'
            f'<td style="width:200px"><div style="background:#4c8bf5;height:14px;'
            f'width:{100 * bar:.1f}%"></div></td>'
            f'<td style="padding-left:8px;font-family:monospace">{score:.4f}</td></tr>'
            for label, score, bar in _bars(value))
        body = f'<table class="nbserve-scores">{rows}</table>'
        warning = low_confidence(value)
        if warning:
            body = (f'<div>{body}<p class="nbserve-low-confidence" style="color:#b45309">'
                    f"{html.escape(warning)}</p></div>")
    else:
        body = f"<pre>{html.escape(_json(value))}</pre>"
    return beside(thumbnail, body)


def _json(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    try:
        return json.dumps(value, indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


class _ShowsPrediction:
    """Rich display for an answer; the value itself is the JSON the HTTP API sends."""

    thumbnail: bytes | None = None

    def _repr_html_(self) -> str:
        return prediction_html(self, self.thumbnail)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(prediction_text(self))


class PredictionDict(_ShowsPrediction, dict):
    """A dict answer (class scores, say) that shows as bars beside its input image."""


class PredictionList(_ShowsPrediction, list):
    """A list answer (detections, a batch of values) that shows as JSON beside its input image."""


def shown(value: Any, thumbnail: bytes | None = None) -> Any:
    """``value`` with a rich display if it is a dict or list; other answers as they are."""
    kind = PredictionDict if isinstance(value, dict) else PredictionList if isinstance(value, list) else None
    if kind is None:
        return value
    result = kind(value)
    result.thumbnail = thumbnail
    return result


def device_text(version) -> str:
    """Where a model version's workers run: ``cpu``, or their GPUs and the memory its workers
    took on each as they loaded (``cuda:0 (0.11 GiB)``)."""
    memory: dict[int, int] = {}
    for worker in version.workers:
        if worker.gpu_id is not None:
            memory[worker.gpu_id] = memory.get(worker.gpu_id, 0) + (worker.gpu_memory or 0)
    return ", ".join(f"cuda:{g} ({memory[g] / 2**30:.2f} GiB)" for g in sorted(memory)) or "cpu"


def _batching(version) -> str:
    """The batch size the batching policy fills to now, out of the most a batch may hold, and
    how long it lets a batch wait to fill when it does (``1 (max 4)``, ``4 (max 4) +1.2 ms``)."""
    workers = list(version.workers)
    if not workers:
        return "-"
    worker = workers[0]
    wait = worker.batch_wait_s * 1000
    return (f"{worker.batch_target} (max {version.config.batch_size})"
            + (f" +{wait:.1f} ms" if wait >= 0.05 else ""))


def _latency(version) -> str:
    """``p50 / p99`` in milliseconds over the latest requests, or ``-`` before any."""
    p50, p99 = version.stats.percentile(50), version.stats.percentile(99)
    return "-" if p50 is None else f"{p50:.1f} / {p99:.1f}"


def _generation(version) -> dict[str, str]:
    """A language model's live figures, from its handler's gauges: sequences running and
    requests waiting to join them, the KV cache's use, tokens per second; none for other
    models (whose handlers add no RunningSequences)."""
    gauges = {m.name: sum(m.samples.values()) for m in version.handler_metrics.metrics()
              if m.name in ("RunningSequences", "KVCacheUsage", "TokensPerSecond")}
    if "RunningSequences" not in gauges:
        return {}
    return {"sequences": f"{gauges['RunningSequences']:.0f} running, "
                         f"{len(version.queue)} waiting",
            "KV cache": f"{gauges.get('KVCacheUsage', 0):.0f}%",
            "tok/s": f"{gauges.get('TokensPerSecond', 0):.0f}"}


_NOWRAP = "white-space:nowrap"


@dataclass
class ServingStatus:
    """What ``%serve`` with no arguments shows: each model version and the URLs to call."""

    rows: list[dict]
    urls: dict[str, str]
    #: A ``!curl`` line that calls the first model served here; it names where the key is
    #: (IPython puts it in when the line runs), never the key: a cell's output is saved.
    curl: str = ""
    #: Worker processes that died: which, how, and the last lines of their stderr.
    deaths: list[str] = field(default_factory=list)

    #: The URL to call comes right after the model's name, so a narrow notebook shows it.
    COLUMNS = ("model", "predictions URL", "version", "device", "workers", "batch size", "queue",
               "requests", "p50 / p99 ms")
    #: Shown when a language model is served (``-`` in other models' rows).
    GENERATION_COLUMNS = ("sequences", "KV cache", "tok/s")

    @classmethod
    def of(cls, engine, urls: dict[str, str], ray=None, keys_at: dict[str, str] | None = None
           ) -> ServingStatus:
        """The versions ``engine`` serves, and the models deployed to Ray through ``ray`` (a
        :class:`~nbserve.ray_serve.serving.RayServing`), with their replicas' states.
        ``keys_at``: for each place models answer (``here``, ``ray``), the Python expression
        of its inference key, where token authorization is on there."""
        rows, deaths = [], []
        for model in engine.models() if engine is not None else []:
            for name, version in sorted(model.versions.items()):
                ready = sum(w.status == "READY" for w in version.workers)
                restarts = version.stats.worker_restarts
                deaths += [f"{w.label} {w.last_death}; restarted {w.restarts} time"
                           f"{'s' * (w.restarts != 1)}. Its last stderr lines:\n"
                           + "".join(w.stderr_tail)
                           for w in version.workers if w.last_death]
                path = f"/predictions/{model.name}" + ("" if name == model.default_version else f"/{name}")
                rows.append({
                    "model": model.name,
                    "version": name + (" (default)" if name == model.default_version
                                       and len(model.versions) > 1 else ""),
                    "device": device_text(version),
                    "workers": f"{ready}/{len(version.workers)}"
                               + (f" ({restarts} restarts)" if restarts else ""),
                    "batch size": _batching(version),
                    "queue": str(len(version.queue)),
                    "requests": str(version.stats.requests),
                    "p50 / p99 ms": _latency(version),
                    "predictions URL": urls.get("inference", "") + path,
                    **_generation(version),
                })
        for failure in engine.failures.values() if engine is not None else []:
            rows.append({"model": failure.name, "version": "-", "device": "-",
                         "workers": "failed to load", "batch size": "-", "queue": "-",
                         "requests": "-", "p50 / p99 ms": "-",
                         "predictions URL": failure.error.splitlines()[0]})
        urls = dict(urls)
        if ray is not None:
            urls["ray"] = ray.url
            for model in sorted(ray.models.values(), key=lambda m: m.name):
                state = ray.state(model.name)
                running = state["replicaStates"].get("RUNNING", 0)
                total = sum(state["replicaStates"].values())
                rows.append({
                    "model": model.name, "version": model.version,
                    "device": f"ray: {model.resources} each",
                    "workers": f"{running}/{total} replicas ({state['status']})",
                    "batch size": "-", "queue": "-", "requests": "-", "p50 / p99 ms": "-",
                    "predictions URL": f"{ray.url}/predictions/{model.name}",
                })
        curl = ""
        served = [row["predictions URL"] for row in rows if row["workers"] != "failed to load"]
        if served:
            url = served[0]
            where = "here" if url.startswith(urls.get("inference", "//")) else "ray"
            key = (keys_at or {}).get(where)
            header = f' -H "Authorization: Bearer {{{key}}}"' if key else ""
            curl = f"!curl {url} -T INPUT{header}"
        return cls(rows, urls, curl, deaths)

    @property
    def columns(self) -> tuple[str, ...]:
        generating = any("tok/s" in row for row in self.rows)
        return self.COLUMNS + (self.GENERATION_COLUMNS if generating else ())

    def _cells(self, row: dict) -> tuple[str, ...]:
        return tuple(row.get(column, "-") for column in self.columns)

    def __str__(self) -> str:
        if not self.rows:
            return "Nothing is being served. Start with: %serve path/to/model.mar"
        table = [self.columns] + [self._cells(row) for row in self.rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(self.columns))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines += [""] + [f"{api:<10} {url}" for api, url in self.urls.items()]
        lines += ["", self.curl]
        lines += [line for death in self.deaths for line in ("", death.rstrip())]
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        if not self.rows:
            return f"<p>{html.escape(str(self))}</p>"
        # Cells do not wrap (a wrapped URL or figure is hard to read; JupyterLab's own style
        # would wrap them); a narrow output area scrolls the table sideways instead.
        head = "".join(f'<th style="{_NOWRAP}">{html.escape(c)}</th>' for c in self.columns)
        body = "".join("<tr>" + "".join(f'<td style="{_NOWRAP}">{html.escape(cell)}</td>'
                                        for cell in self._cells(row)) + "</tr>"
                       for row in self.rows)
        urls = "".join(f'<li>{html.escape(api)}: <a href="{html.escape(url)}" target="_blank">'
                       f"{html.escape(url)}</a></li>" for api, url in self.urls.items())
        return (f'<div style="overflow-x:auto"><table class="nbserve-status">'
                f"<thead><tr>{head}</tr></thead><tbody>{body}"
                f"</tbody></table></div><ul>{urls}</ul><pre>{html.escape(self.curl)}</pre>"
                + "".join(f"<pre>{html.escape(death)}</pre>" for death in self.deaths))


def openai_snippet(model: str, url: str, keyed: bool) -> str:
    """How to call a language model served here with the ``openai`` client: its base_url, and
    its key named, not printed (a cell's output is saved and shared)."""
    key = 'nbserve.session.current.keys["inference"]' if keyed else '"none"'
    return (f"OpenAI's API at {url}/v1:\n"
            f"    from openai import OpenAI\n"
            f"    client = OpenAI(base_url=\"{url}/v1\", api_key={key})\n"
            f"    client.chat.completions.create(model=\"{model}\", "
            "messages=[{\"role\": \"user\", \"content\": \"Hi\"}])")
