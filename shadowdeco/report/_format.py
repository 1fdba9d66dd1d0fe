"""Number, time and table formatting shared by the text and HTML renderers."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Final

from ._model import LabelsSummary, Report

__all__ = [
    "NONE",
    "SPARKS",
    "TIMES",
    "bucket_label",
    "count",
    "duration_label",
    "filters",
    "labels_summary",
    "ms",
    "number",
    "percent",
    "plural",
    "ratio",
    "signed",
    "spark",
    "table",
    "visible",
    "when",
]

SPARKS: Final = "▁▂▃▄▅▆▇█"
#: Shown for a value that cannot be computed (an en dash).
NONE: Final = "\u2013"
#: The multiplication sign of a ratio.
TIMES: Final = "\u00d7"


# Characters a log may hold that would act on a terminal (or reorder what it shows) rather
# than be shown: C0 and C1 controls and DEL, and the bidirectional marks, embeddings, overrides
# and isolates.  Each becomes one visible character, so the columns of a table stay aligned:
# a C0 control its Unicode control picture (ESC as "␛"), a line break "⏎", the rest "�".
_VISIBLE: Final[dict[int, str]] = {
    **{code: chr(0x2400 + code) for code in range(0x20)},
    0x0A: "\u23ce",
    0x7F: "\u2421",
    **dict.fromkeys(range(0x80, 0xA0), "\ufffd"),
    **dict.fromkeys([0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F)], "\ufffd"),
    **dict.fromkeys(range(0x2066, 0x206A), "\ufffd"),
}
_VISIBLE_LINES: Final = {code: text for code, text in _VISIBLE.items() if code != 0x0A}


def visible(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character as a visible symbol (see ``_VISIBLE``): what the
    report prints from a log (values, names, error messages) cannot move the cursor, retitle
    the window or reverse a line.  ``keep_newlines``: line breaks stay."""
    return text.translate(_VISIBLE_LINES if keep_newlines else _VISIBLE)


def count(n: int | None) -> str:
    return NONE if n is None else f"{n:,}"


def plural(n: int, word: str) -> str:
    """``1 file``, ``2 files``: the count and the word, with an ``s`` unless it is one."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def filters(report: Report) -> str | None:
    """The filters the report was made with, or None without any."""
    parts = []
    if report.experiment_filter:
        parts.append("experiment " + ", ".join(report.experiment_filter))
    if report.since is not None:
        parts.append(f"since {when(report.since)}")
    if report.until is not None:
        parts.append(f"until {when(report.until)}")
    if not parts:
        return None
    outside = report.outside_window
    if outside:
        parts.append(f"{plural(outside, 'result')} outside the time window")
    return "; ".join(parts)


def percent(fraction: float | None, digits: int = 1) -> str:
    return NONE if fraction is None else f"{fraction * 100:.{digits}f}%"


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds with three significant figures or so."""
    if seconds is None:
        return NONE
    value = seconds * 1000
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def number(value: float | None) -> str:
    return NONE if value is None else f"{value:.4g}"


def signed(value: float | None, *, points: bool = False) -> str:
    """A difference with its sign; ``points`` shows a fraction as percentage points."""
    if value is None:
        return NONE
    if points:
        return f"{value * 100:+.1f} pt"
    return f"{value:+.4g}"


def ratio(candidate: float | None, live: float | None) -> str:
    if candidate is None or not live:
        return NONE
    return f"{candidate / live:.2f}{TIMES}"


def when(moment: float | None) -> str:
    """Unix time as ``YYYY-MM-DD HH:MM:SSZ`` (UTC)."""
    if moment is None:
        return NONE
    stamp = _dt.datetime.fromtimestamp(moment, tz=_dt.timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M:%SZ")


def duration_label(seconds: int) -> str:
    """A bucket width for people: ``30 s``, ``5 min``, ``1 h``, ``1 day``, ``1 week``."""
    if seconds % 604800 == 0:
        weeks = seconds // 604800
        return f"{weeks:,} week" + ("s" if weeks > 1 else "")
    if seconds % 86400 == 0:
        days = seconds // 86400
        return f"{days} day" + ("s" if days > 1 else "")
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def bucket_label(start: float, width: int) -> str:
    """A bucket's start, as short as its width allows."""
    stamp = _dt.datetime.fromtimestamp(start, tz=_dt.timezone.utc)
    if width >= 86400:
        return stamp.strftime("%Y-%m-%d")
    if width >= 60:
        return stamp.strftime("%m-%d %H:%M")
    return stamp.strftime("%H:%M:%S")


def table(rows: Sequence[Sequence[str]], align: str, indent: int = 4, gap: int = 2) -> list[str]:
    """Rows of cells as aligned lines; ``align`` holds one ``<`` or ``>`` per column."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(align))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(width) if side == "<" else cell.rjust(width)
            for cell, width, side in zip(row, widths, align, strict=True)
        ]
        lines.append((" " * indent + (" " * gap).join(cells)).rstrip())
    return lines


def spark(values: Sequence[float | None], low: float, high: float) -> str:
    """One block character per value between ``low`` and ``high``; a space for None."""
    span = high - low
    out = []
    for value in values:
        if value is None:
            out.append(" ")
        elif span <= 0:  # all alike: their level on the 0-1 scale (rates, shares)
            level = round(min(max(value, 0.0), 1.0) * (len(SPARKS) - 1))
            out.append(SPARKS[level])
        else:
            level = round((value - low) / span * (len(SPARKS) - 1))
            out.append(SPARKS[min(max(level, 0), len(SPARKS) - 1)])
    return "".join(out)


def labels_summary(labels: LabelsSummary) -> str:
    """``143 categorical labels, 2 duplicate keys, 10 blank labels left out; lead metric …``"""
    if labels.whole_numbers:
        kind = (
            "whole-number labels, scored as classes, or as numbers where predictions have fractions"
        )
        lead = f"{labels.metric} / mae"
    else:
        kind, lead = f"{labels.kind} labels", labels.metric
    parts = [f"{count(labels.count)} {kind}"]
    if labels.duplicates:
        parts.append(f"{count(labels.duplicates)} duplicate keys")
    if labels.blank:
        parts.append(f"{plural(labels.blank, 'blank label')} left out")
    return ", ".join(parts) + f"; lead metric {lead}"
