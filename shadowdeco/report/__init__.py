"""The shadow report: answer the three questions from the JSONL logs of one or many replicas.

>>> import json, os, tempfile
>>> from shadowdeco import Observation, ShadowResult, report
>>> path = os.path.join(tempfile.mkdtemp(), "shadow.jsonl")
>>> with open(path, "w") as log:
...     for i in range(100):
...         live = Observation("ok", i % 3, duration=0.010)
...         candidate = Observation("ok", 0 if i % 10 == 0 else i % 3, duration=0.020)
...         match = live.value == candidate.value
...         result = ShadowResult("demo", str(i), 1.7e9 + i, i, live, candidate, 0.0, match)
...         print(json.dumps(result.to_dict()), file=log)
>>> summary = report.build_report([path])
>>> demo = summary.experiments[0]
>>> demo.counts.results, demo.agreement.rate, demo.candidate.latency.p99 / demo.live.latency.p99
(100, 0.94, 2.0)
>>> "agreement  94.0%" in report.render_text(summary)
True

The same from a shell: ``shadowdeco report shadow.jsonl`` (or ``python -m shadowdeco report``),
with ``--html report.html`` for a page with charts and ``--json`` for machines; see
``docs/report.md``.  :func:`build_report` reads every file once, line by line, in bounded
memory (see :mod:`shadowdeco.report._analyze`), and returns a :class:`Report`, an immutable
value that :func:`render_text`, :func:`render_html` and :func:`to_json` turn into output.

The log holds emitted results only.  Drops (``queue_full``, ``shutdown``, …) are counted by
``Experiment.stats()``; append :func:`stats_record` as a JSON line to the log and the report
shows sampled, emitted and dropped from it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._experiment import Experiment as _Experiment
from .._experiment import Stats
from ._analyze import analyze
from ._html import render_html
from ._json import SCHEMA, render_json, to_json
from ._labels import METRICS, Labels, load_labels
from ._model import (
    Agreement,
    Arm,
    Bucket,
    Confusion,
    Counts,
    ErrorKind,
    Experiment,
    FileSummary,
    Finding,
    GroundTruth,
    Histogram,
    LabelsSummary,
    Numeric,
    Output,
    Quantiles,
    Report,
)
from ._read import InputError, Malformed, expand_paths, parse_time, unix_time
from ._text import render_text

__all__ = [
    "METRICS",
    "SCHEMA",
    "Agreement",
    "Arm",
    "Bucket",
    "Confusion",
    "Counts",
    "ErrorKind",
    "Experiment",
    "FileSummary",
    "Finding",
    "GroundTruth",
    "Histogram",
    "InputError",
    "Labels",
    "LabelsSummary",
    "Malformed",
    "Numeric",
    "Output",
    "Quantiles",
    "Report",
    "build_report",
    "load_labels",
    "parse_time",
    "render_html",
    "render_json",
    "render_text",
    "stats_record",
    "to_json",
]

Moment = float | str | _dt.datetime | None


def build_report(
    paths: Iterable[str | os.PathLike[str]],
    *,
    experiments: Sequence[str] = (),
    since: Moment = None,
    until: Moment = None,
    labels: str | os.PathLike[str] | None = None,
    metric: str | None = None,
    top: int = 10,
) -> Report:
    """Read the logs (rotated backups included) and build the report.

    ``experiments`` are names or globs to keep; ``since`` (inclusive) and ``until``
    (exclusive) bound ``started_at`` and take Unix seconds, ISO 8601 text (a trailing ``Z``
    and a missing zone both mean UTC) or a ``datetime``; ``labels`` is a CSV or JSON lines
    file of ``key`` and ``label``; ``metric`` (one of :data:`METRICS`) forces the metric and
    the kind of the labels; ``top`` is how many output values to list.

    Raises :class:`InputError` (its message names the file) when a file or the labels cannot
    be read, before any is read, and ``ValueError`` for a bad argument.
    """
    if metric is not None and metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if metric is not None and labels is None:
        raise ValueError("metric needs labels: the metric compares each arm with the labels")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive int, got {top!r}")
    start, end = _moment(since, "since"), _moment(until, "until")
    sources = expand_paths([os.fspath(p) for p in paths])
    if not sources:
        raise InputError("no log files given")
    loaded = None if labels is None else load_labels(os.fspath(labels), metric)
    return analyze(
        sources,
        labels=loaded,
        experiments=tuple(experiments),
        since=start,
        until=end,
        top=top,
    )


def _moment(value: Moment, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=_dt.timezone.utc)
        seconds: float = aware.timestamp()
    elif isinstance(value, str):
        try:
            return parse_time(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value
    else:
        raise TypeError(f"{name} must be Unix seconds, ISO 8601 text or a datetime, got {value!r}")
    try:
        return unix_time(seconds)
    except ValueError as exc:  # 1e300, NaN: no date, so no time to print or compare with
        raise ValueError(f"{name}: {exc}") from None


#: Tells apart the lifetimes of processes that share a host and pid (a container restarted
#: runs as pid 1 again): a process's counters start from zero in each.
_LIFETIME = os.urandom(4).hex()  # not `random`: an app may seed it the same in every run


def stats_record(source: _Experiment | str, stats: Stats | None = None) -> dict[str, Any]:
    """A ``"kind": "stats"`` record of an experiment's counters, for the report to read.

    Append it as one JSON line to the experiment's log (after ``flush()``, and again whenever
    you like: the report keeps the latest per process)::

        exp = predict.shadow
        exp.flush(5)
        with open("shadow.jsonl", "a") as log:
            log.write(json.dumps(report.stats_record(exp)) + "\\n")

    ``source`` is an :class:`~shadowdeco.Experiment`, or a name with ``stats`` given.
    """
    if isinstance(source, str):
        if stats is None:
            raise TypeError("stats_record(name) needs the stats: stats_record(name, stats)")
        name = source
    else:
        name = source.name
        stats = source.stats() if stats is None else stats
    counters: dict[str, Any] = {}
    for field in dataclasses.fields(stats):
        value = getattr(stats, field.name)
        counters[field.name] = dict(value) if isinstance(value, Mapping) else value
    return {
        "v": 1,
        "kind": "stats",
        "experiment": name,
        "at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "process": f"{socket.gethostname()}:{os.getpid()}:{_LIFETIME}",
        **counters,
    }
