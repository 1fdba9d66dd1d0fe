"""Small charts as inline SVG text: latency, output distributions, agreement over time.

>>> svg = bars_chart("latency", [("p50", [0.010, 0.020])], unit=" ms", scale=1000)
>>> svg.startswith("<svg") and 'class="chart latency"' in svg
True

Why hand-written SVG rather than a plotting package (matplotlib, plotly, altair):

* **Self-contained page**: each chart is a few kilobytes of markup inside the HTML, with no
  JavaScript, no image files and no fonts to fetch, so the page opens from an e-mail
  attachment, a CI artifact or an air-gapped host, and prints.
* **No network**: plotly and altair pages load their JavaScript from a CDN unless a multi-MB
  bundle is inlined; a page with no external reference cannot leak or break offline.
* **Library-friendly**: shadowdeco is imported by production services; a plotting package
  would add tens of megabytes (and, for matplotlib, a native toolchain) to every install for
  a report that needs four chart shapes.  These fit in one short module.
* **Testable**: the markup is deterministic text, and headless Chromium renders it in a test.

Every chart has ``class="chart <name>"``, a ``role="img"`` with an ``aria-label``, and a
``<title>`` tooltip on each mark; colours are a colour-blind-safe blue (live) and orange
(candidate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Final

__all__ = ["CANDIDATE", "LIVE", "bars_chart", "histogram_chart", "nice_ceiling", "timeline_chart"]

LIVE: Final = "#4c78a8"
CANDIDATE: Final = "#f58518"
_COLOURS: Final = (LIVE, CANDIDATE)
_ARMS: Final = ("live", "candidate")
_GRID: Final = "#e5e7eb"
_INK: Final = "#374151"
_MUTED: Final = "#6b7280"
_FONT: Final = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="11"'


def nice_ceiling(value: float) -> float:
    """The least of 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times 10^k that is ``value`` or more (1 for 0)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0):
        if step * power >= value * (1 - 1e-12):
            return step * power
    return 10.0 * power


def _intervals(ceiling: float) -> int:
    """How many grid intervals split ``ceiling`` into round steps (15 → 3 steps of 5)."""
    for n in (4, 5, 3, 6, 2):
        step = ceiling / n
        mantissa = step / 10 ** math.floor(math.log10(step))
        if any(abs(mantissa - nice) < 1e-9 for nice in (1.0, 2.0, 2.5, 5.0)):
            return n
    return 4


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _open(name: str, width: int, height: int, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {name}" role="img" '
        f'aria-label="{escape(label)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {_FONT}>'
    )


def bars_chart(
    name: str,
    groups: Sequence[tuple[str, Sequence[float | None]]],
    *,
    unit: str = "",
    scale: float = 1.0,
    label: str = "",
    width: int = 520,
    label_width: int = 120,
    decimals: int | None = None,
) -> str:
    """Horizontal bars: one group per row label, one bar per arm (live, candidate).

    Values are multiplied by ``scale`` for display (1000: seconds shown as ms) and labelled
    with three significant figures, or ``decimals`` places.
    """
    bar, gap, top, bottom = 13, 10, 8, 24
    height = top + bottom + len(groups) * (2 * bar + gap)
    values = [v * scale for _, pair in groups for v in pair if v is not None]
    ceiling = nice_ceiling(max(values, default=0.0))
    plot = width - label_width - 70  # room on the right for the value labels
    parts = [_open(name, width, height, label or name)]
    intervals = _intervals(ceiling)
    for i in range(intervals + 1):  # grid lines and the axis
        x = label_width + plot * i / intervals
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - bottom + 2}" '
            f'stroke="{_GRID}"/>'
            f'<text x="{x:.1f}" y="{height - 8}" fill="{_MUTED}" text-anchor="middle">'
            f"{escape(_fmt(ceiling * i / intervals))}{escape(unit) if i == intervals else ''}"
            "</text>"
        )
    y = float(top)
    for group, pair in groups:
        parts.append(
            f'<text x="{label_width - 8}" y="{y + bar + 4:.1f}" fill="{_INK}" '
            f'text-anchor="end">{escape(_clip(group, 18))}</text>'
        )
        for arm, colour, value in zip(_ARMS, _COLOURS, pair, strict=True):
            shown = None if value is None else value * scale
            length = 0.0 if shown is None else plot * shown / ceiling
            if shown is None:
                text = "\u2013"
            else:
                text = (_fmt(shown) if decimals is None else f"{shown:.{decimals}f}") + unit
            parts.append(
                f'<rect class="bar {arm}" x="{label_width}" y="{y:.1f}" '
                f'width="{max(length, 0.5):.1f}" height="{bar}" fill="{colour}">'
                f"<title>{escape(f'{group} · {arm}: {text}')}</title></rect>"
                f'<text x="{label_width + length + 4:.1f}" y="{y + bar - 3:.1f}" '
                f'fill="{_INK}">{escape(text)}</text>'
            )
            y += bar
        y += gap
    parts.append("</svg>")
    return "".join(parts)


def histogram_chart(
    edges: Sequence[float],
    live: Sequence[float],
    candidate: Sequence[float],
    *,
    width: int = 520,
    height: int = 220,
) -> str:
    """Side-by-side vertical bars per bin: the share of each arm's outputs in the bin."""
    left, right, top, bottom = 44, 10, 10, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    ceiling = nice_ceiling(max([*live, *candidate], default=0.0))
    bins = len(live)
    slot = plot_w / max(bins, 1)
    bar = max(slot * 0.4, 1.0)
    parts = [_open("histogram", width, height, "histogram of numeric outputs, live and candidate")]
    intervals = _intervals(ceiling)
    for i in range(intervals + 1):
        y = top + plot_h * (1 - i / intervals)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="{_GRID}"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" fill="{_MUTED}" text-anchor="end">'
            f"{_fmt(ceiling * i / intervals * 100)}%</text>"
        )
    for b in range(bins):
        x0 = left + b * slot + (slot - 2 * bar) / 2
        for k, (arm, colour, shares) in enumerate(
            zip(_ARMS, _COLOURS, (live, candidate), strict=True)
        ):
            h = plot_h * shares[b] / ceiling
            tip = f"{_fmt(edges[b])} … {_fmt(edges[b + 1])} · {arm}: {shares[b] * 100:.1f}%"
            parts.append(
                f'<rect class="bar {arm}" x="{x0 + k * bar:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{bar:.1f}" height="{max(h, 0.0):.1f}" fill="{colour}">'
                f"<title>{escape(tip)}</title></rect>"
            )
    for b in (0, bins // 2, bins):
        x = left + b * slot
        parts.append(
            f'<text x="{x:.1f}" y="{height - 18}" fill="{_MUTED}" text-anchor="middle">'
            f"{escape(_fmt(edges[b]))}</text>"
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 3}" fill="{_MUTED}" '
        f'text-anchor="middle">output value (share of each arm per bin)</text></svg>'
    )
    return "".join(parts)


def timeline_chart(
    points: Sequence[tuple[str, float | None, int]],
    *,
    width: int = 520,
    height: int = 240,
) -> str:
    """Agreement per time bucket as a line with dots, above a band of results per bucket.

    ``points`` are ``(bucket label, agreement rate or None, results)``.  The y axis spans the
    top 20 %, 40 %, 80 % or all of 0-100 %, the least that holds the lowest rate, so that small
    dips show; a bucket where nothing was compared breaks the line.
    """
    left, right, top, band, bottom = 44, 10, 10, 30, 36
    plot_w = width - left - right
    plot_h = height - top - bottom - band - 6
    rates = [r for _, r, _ in points if r is not None]
    lowest = min(rates, default=0.0)
    span = next((s for s in (0.2, 0.4, 0.8) if 1.0 - s <= lowest - 0.01), 1.0)
    floor = 1.0 - span
    most = max((n for _, _, n in points), default=0) or 1
    n = len(points)
    step = plot_w / max(n, 1)
    parts = [_open("agreement", width, height, "agreement with live over time")]
    for i in range(5):
        level = floor + span * i / 4
        y = top + plot_h * (1 - i / 4)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="{_GRID}"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" fill="{_MUTED}" text-anchor="end">'
            f"{level * 100:.0f}%</text>"
        )
    base = top + plot_h + 6 + band  # the volume band's baseline
    parts.append(f'<text x="{left - 6}" y="{base:.1f}" fill="{_MUTED}" text-anchor="end">n</text>')
    coords: list[tuple[float, float] | None] = []
    for i, (label, rate, results) in enumerate(points):
        x = left + step * (i + 0.5)
        h = band * results / most
        parts.append(
            f'<rect class="volume" x="{x - step * 0.35:.1f}" y="{base - h:.1f}" '
            f'width="{max(step * 0.7, 1.0):.1f}" height="{h:.1f}" fill="#cbd5e1">'
            f"<title>{escape(f'{label}: {results:,} results')}</title></rect>"
        )
        coords.append(None if rate is None else (x, top + plot_h * (1 - (rate - floor) / span)))
    path: list[str] = []
    for point in coords:
        if point is None:
            path.append("")  # a bucket with nothing compared breaks the line
            continue
        command = "L" if path and path[-1] else "M"
        path.append(f"{command}{point[0]:.1f},{point[1]:.1f}")
    line = " ".join(p for p in path if p)
    if line:
        parts.append(f'<path d="{line}" fill="none" stroke="{CANDIDATE}" stroke-width="2"/>')
    for (label, rate, results), point in zip(points, coords, strict=True):
        if point is not None and rate is not None:
            tip = f"{label}: {rate * 100:.1f}% agreement over {results:,} results"
            parts.append(
                f'<circle class="point" cx="{point[0]:.1f}" cy="{point[1]:.1f}" r="3" '
                f'fill="{CANDIDATE}"><title>{escape(tip)}</title></circle>'
            )
    if n:
        ends: list[tuple[int, float, str]] = (
            [(0, left, "start"), (n - 1, width - right, "end")] if n > 1 else []
        )
        for i, x, anchor in ends or [(0, left + plot_w / 2, "middle")]:
            parts.append(
                f'<text x="{x:.1f}" y="{height - 18}" fill="{_MUTED}" text-anchor="{anchor}">'
                f"{escape(points[i][0])}</text>"
            )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 3}" fill="{_MUTED}" '
        f'text-anchor="middle">agreement per bucket (line) · results per bucket (bars)</text>'
        "</svg>"
    )
    return "".join(parts)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
