"""The benchmark's plots: matplotlib where installed (``pip install 'nbserve[plots]'``), else an
SVG of our own, so ``%bench`` shows one either way."""

from __future__ import annotations

import base64
import html
import io


def latency_plot(latencies_ms: list[float]) -> tuple[bytes, str]:
    """benchmark-ab's predict_latency graph: each request's latency, in order."""
    return _bars(list(range(len(latencies_ms))), latencies_ms, "Requests", "Latency (ms)",
                 "Prediction latency")


def latency_histogram(latencies_ms: list[float], bins: int = 30) -> tuple[bytes, str]:
    """How many requests took how long."""
    if not latencies_ms:
        return _bars([], [], "Latency (ms)", "Requests", "Latency histogram")
    low, high = min(latencies_ms), max(latencies_ms)
    width = (high - low) / bins or 1
    counts = [0] * bins
    for value in latencies_ms:
        counts[min(bins - 1, int((value - low) / width))] += 1
    return _bars([low + (i + 0.5) * width for i in range(bins)], counts, "Latency (ms)",
                 "Requests", "Latency histogram")


def _bars(xs, ys, xlabel: str, ylabel: str, title: str) -> tuple[bytes, str]:
    figure = _figure((7, 3.2))
    if figure is None:
        return _svg_bars(ys, xlabel, ylabel, title), "svg"
    axes = figure.subplots()
    axes.bar(xs, ys, width=(xs[1] - xs[0]) if len(xs) > 1 else 0.8)
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return _png(figure), "png"


def _figure(size: tuple[float, float]):
    """A matplotlib Figure, made without pyplot (so a notebook's backend is left as it is);
    None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(figsize=size)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def html_image(image: bytes, kind: str) -> str:
    """A plot inline in HTML: the SVG itself, or the PNG as a data URL."""
    if kind == "svg":
        return image.decode()
    return f'<img src="data:image/png;base64,{base64.b64encode(image).decode()}">'


def _svg_bars(ys, xlabel: str, ylabel: str, title: str, width=560, height=220) -> bytes:
    top = max(ys, default=0) or 1
    bar = (width - 40) / max(len(ys), 1)
    rects = "".join(
        f'<rect x="{40 + i * bar:.1f}" y="{height - 30 - (height - 60) * y / top:.1f}" '
        f'width="{max(bar - 1, 0.5):.1f}" height="{(height - 60) * y / top:.1f}" fill="#4c72b0"/>'
        for i, y in enumerate(ys))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
            f'<text x="{width / 2}" y="16" text-anchor="middle">{html.escape(title)}</text>'
            f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle">{html.escape(xlabel)}</text>'
            f'<text x="10" y="{height / 2}" transform="rotate(-90 10 {height / 2})">'
            f'{html.escape(ylabel)} (max {top:.4g})</text>{rects}</svg>').encode()


def throughput_against_p99(points: list[tuple[float, float, str]], p99_ms: float | None,
                           ) -> tuple[bytes, str]:
    """Each setting as a point (p99 latency across, throughput up, a label), and the p99
    target as a line."""
    figure = _figure((7, 4))
    if figure is None:
        return _svg_points(points, p99_ms), "svg"
    axes = figure.subplots()
    for x, y, label in points:
        axes.scatter([x], [y], color="#4c72b0")
        axes.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if p99_ms:
        axes.axvline(p99_ms, color="#c44e52", linestyle="--", label="p99 target")
        axes.legend()
    axes.set(xlabel="p99 latency (ms)", ylabel="throughput (req/s)",
             title="Throughput against p99, per setting")
    return _png(figure), "png"


def _svg_points(points, p99_ms, width=560, height=300) -> bytes:
    xmax = max([x for x, _, _ in points] + [p99_ms or 0]) or 1
    ymax = max((y for _, y, _ in points), default=0) or 1
    scale = lambda x, y: (50 + (width - 80) * x / xmax, height - 40 - (height - 70) * y / ymax)  # noqa: E731
    marks = "".join(
        f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="#4c72b0"/>'
        f'<text x="{cx + 6:.1f}" y="{cy - 6:.1f}" font-size="10">{html.escape(label)}</text>'
        for cx, cy, label in ((*scale(x, y), label) for x, y, label in points))
    target = ""
    if p99_ms:
        tx = scale(p99_ms, 0)[0]
        target = f'<line x1="{tx:.1f}" y1="30" x2="{tx:.1f}" y2="{height - 40}" stroke="#c44e52"/>'
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
            f'<text x="{width / 2}" y="16" text-anchor="middle">Throughput against p99</text>'
            f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle">p99 latency (ms, max '
            f'{xmax:.4g})</text><text x="12" y="{height / 2}" transform="rotate(-90 12 '
            f'{height / 2})">req/s (max {ymax:.4g})</text>{target}{marks}</svg>').encode()
