"""The report as JSON for machines (``--json``): schema ``shadowdeco.report/1``.

>>> to_json(report)["experiments"]["churn-v2"]["agreement"]["rate"]  # doctest: +SKIP
0.912

Keys are stable: a key is never removed or renamed within schema ``/1`` (new ones may be
added).  Times are ISO 8601 UTC strings, durations seconds, rates fractions in 0…1, and a
statistic with no data is ``null`` (as is one that no float holds: the mean of outputs near
``1e308`` overflows), so the JSON is strict: no ``NaN`` or ``Infinity``.  The shape
(``QUANTILES`` and ``ARM`` are used twice)::

    {
      "schema": "shadowdeco.report/1",
      "complete": true,            # false: lines skipped, a read error, a named experiment absent
      "results": 12345,            # results read (after the filters)
      "files": [{"path": "...", "results": 0, "malformed": 0}],
      "malformed": {"count": 0, "examples": [{"path": "...", "line": 7, "reason": "not JSON"}]},
      "read_errors": ["..."],
      "filters": {"experiments": [], "since": null, "until": null, "outside_window": 0,
                  "unmatched_experiments": []},
      "labels": null | {"path": "...", "kind": "categorical" | "numeric", "count": 0,
                        "duplicates": 0, "metric": "accuracy",
                        "blank": 0,                # rows with no label, left out
                        "whole_numbers": false},   # categorical, but numeric per experiment
                                                   # where predictions have fractions
      "experiments": {
        "<name>": {
          "first": "...", "last": "...",          # first and last started_at
          "counts": {"results": 0, "source": "stats" | "log", "processes": 0,
                     "sampled": null, "skipped": null, "emitted": null,
                     "dropped": null | {"<reason>": 0}, "dropped_total": null,
                     "in_flight": null, "sink_errors": null,     # null without a stats line
                     "sink_drops": null | {"<sink>": 0},
                     "unencodable": 0, "inputs_recorded": 0, "no_timestamp": 0},
          "live": ARM, "candidate": ARM,
          "latency_ratio": {"p50": 2.0, "p90": 2.0, "p99": 2.0, "mean": 2.0},  # candidate / live
          "queue_s": QUANTILES,
          "outputs": {
            "kind": "categorical" | "numeric" | "none",
            "rows": [{"value": "stay", "live": 0, "candidate": 0}],   # "(other)" last
            "confusion": null | {"values": ["stay", "churn"], "cells": [[0, 0], [0, 0]],
                                 "untracked": 0},      # rows: live value, columns: candidate
            "histogram": null | {"edges": [0.0, ...], "live": [0.1, ...],
                                 "candidate": [0.1, ...], "clipped": false}   # shares per bin
          },
          "agreement": {"rate": 0.9, "matched": 0, "mismatched": 0, "not_comparable": 0,
                        "score_mean": null, "score_n": 0, "bucket_seconds": 3600,
                        "buckets": [{"start": "...", "results": 0, "matched": 0,
                                     "mismatched": 0, "rate": null}]},
          "ground_truth": null | {"kind": "categorical", "metric": "accuracy", "labeled": 0,
                                  "unlabeled": 0, "no_key": 0, "paired": 0, "live_failed": 0,
                                  "candidate_failed": 0,
                                  "live": {"accuracy": 0.9, "macro_f1": 0.9},
                                  "candidate": {...}, "difference": {...},   # candidate - live
                                  "better": "candidate" | "live" | "tie" | null},
          "warnings": [{"code": "candidate_collapse", "message": "..."}]
        }
      }
    }

    QUANTILES = {"n": 0, "sampled": 0, "exact": true, "mean": null, "p50": null, "p90": null,
                 "p99": null, "max": null}
    ARM = {"results": 0, "statuses": {"ok": 0, "error": 0, "timeout": 0},
           "error_rate": 0.0, "timeout_rate": 0.0,
           "errors": [{"type": "ValueError", "count": 0, "rate": 0.0, "example": "..."}],
           "latency_s": QUANTILES,
           "output": {"n": 0, "distinct": 0, "distinct_capped": false,
                      "top": [{"value": "stay", "count": 0}], "types": {"str": 0},
                      "non_numeric": 0,
                      "numeric": null | {"n": 0, "non_finite": 0, "mean": 0.0, "std": 0.0,
                                         "min": 0.0, "max": 0.0, "p5": 0.0, "p25": 0.0,
                                         "p50": 0.0, "p75": 0.0, "p95": 0.0}}}

Warning codes: ``candidate_constant`` (one value for every input), ``candidate_collapse``
(far fewer distinct values than live), ``candidate_spread`` (numeric outputs with a tenth of
live's spread or less), ``candidate_types`` (types live never returns).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
from typing import Any

from ._model import Arm, Experiment, Quantiles, Report

__all__ = ["SCHEMA", "render_json", "to_json"]

SCHEMA = "shadowdeco.report/1"


def render_json(report: Report) -> str:
    """:func:`to_json` as indented JSON text, ending in a newline."""
    return json.dumps(to_json(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def to_json(report: Report) -> dict[str, Any]:
    """The report as plain JSON-ready data in the schema above."""
    data: dict[str, Any] = _strict(_report(report))
    return data


def _strict(data: Any) -> Any:
    """``data`` with each NaN or infinite float as None: strict JSON has no spelling for them."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _strict(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_strict(value) for value in data]
    return data


def _report(report: Report) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "complete": report.complete,
        "results": report.results,
        "files": [dataclasses.asdict(f) for f in report.files],
        "malformed": {
            "count": report.malformed,
            "examples": [dataclasses.asdict(m) for m in report.malformed_examples],
        },
        "read_errors": list(report.read_errors),
        "filters": {
            "experiments": list(report.experiment_filter),
            "since": _iso(report.since),
            "until": _iso(report.until),
            "outside_window": report.outside_window,
            "unmatched_experiments": list(report.unmatched_experiments),
        },
        "labels": None if report.labels is None else dataclasses.asdict(report.labels),
        "experiments": {e.name: _experiment(e) for e in report.experiments},
    }


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return _dt.datetime.fromtimestamp(moment, tz=_dt.timezone.utc).isoformat()


def _quantiles(q: Quantiles) -> dict[str, Any]:
    return {
        "n": q.n,
        "sampled": q.sampled,
        "exact": q.exact,
        "mean": q.mean,
        "p50": q.p50,
        "p90": q.p90,
        "p99": q.p99,
        "max": q.max,
    }


def _arm(arm: Arm) -> dict[str, Any]:
    out = arm.output
    return {
        "results": arm.results,
        "statuses": {"ok": 0, "error": 0, "timeout": 0, **arm.statuses},
        "error_rate": arm.rate("error"),
        "timeout_rate": arm.rate("timeout"),
        "errors": [
            {
                "type": e.type,
                "count": e.count,
                "rate": e.count / arm.results if arm.results else None,
                "example": e.example,
            }
            for e in arm.errors
        ],
        "latency_s": _quantiles(arm.latency),
        "output": {
            "n": out.n,
            "distinct": out.distinct,
            "distinct_capped": out.distinct_capped,
            "top": [{"value": v, "count": n} for v, n in out.top],
            "types": dict(out.types),
            "non_numeric": out.non_numeric,
            "numeric": None if out.numeric is None else dataclasses.asdict(out.numeric),
        },
    }


def _ratio(candidate: float | None, live: float | None) -> float | None:
    return candidate / live if candidate is not None and live else None


def _experiment(exp: Experiment) -> dict[str, Any]:
    c = exp.counts
    live, cand = exp.live.latency, exp.candidate.latency
    a = exp.agreement
    truth = exp.ground_truth
    return {
        "first": _iso(exp.first),
        "last": _iso(exp.last),
        "counts": {
            "results": c.results,
            "source": c.source,
            "processes": c.processes,
            "sampled": c.sampled,
            "skipped": c.skipped,
            "emitted": c.emitted,
            "dropped": None if c.dropped is None else dict(c.dropped),
            "dropped_total": None if c.dropped is None else sum(c.dropped.values()),
            "in_flight": c.in_flight,
            "sink_errors": c.sink_errors,
            "sink_drops": None if c.sink_drops is None else dict(c.sink_drops),
            "unencodable": exp.unencodable,
            "inputs_recorded": exp.inputs_recorded,
            "no_timestamp": exp.no_timestamp,
        },
        "live": _arm(exp.live),
        "candidate": _arm(exp.candidate),
        "latency_ratio": {
            "p50": _ratio(cand.p50, live.p50),
            "p90": _ratio(cand.p90, live.p90),
            "p99": _ratio(cand.p99, live.p99),
            "mean": _ratio(cand.mean, live.mean),
        },
        "queue_s": _quantiles(exp.queue),
        "outputs": {
            "kind": exp.output_kind,
            "rows": [{"value": v, "live": n, "candidate": m} for v, n, m in exp.rows],
            "confusion": None
            if exp.confusion is None
            else {
                "values": list(exp.confusion.values),
                "cells": [list(row) for row in exp.confusion.cells],
                "untracked": exp.confusion.untracked,
            },
            "histogram": None
            if exp.histogram is None
            else {
                "edges": list(exp.histogram.edges),
                "live": list(exp.histogram.live),
                "candidate": list(exp.histogram.candidate),
                "clipped": exp.histogram.clipped,
            },
        },
        "agreement": {
            "rate": a.rate,
            "matched": a.matched,
            "mismatched": a.mismatched,
            "not_comparable": a.not_comparable,
            "score_mean": a.score_mean,
            "score_n": a.score_n,
            "bucket_seconds": a.bucket_seconds,
            "buckets": [
                {
                    "start": _iso(b.start),
                    "results": b.results,
                    "matched": b.matched,
                    "mismatched": b.mismatched,
                    "rate": b.rate,
                }
                for b in a.buckets
            ],
        },
        "ground_truth": None
        if truth is None
        else {
            "kind": truth.kind,
            "metric": truth.metric,
            "labeled": truth.labeled,
            "unlabeled": truth.unlabeled,
            "no_key": truth.no_key,
            "paired": truth.paired,
            "live_failed": truth.live_failed,
            "candidate_failed": truth.candidate_failed,
            "live": dict(truth.live),
            "candidate": dict(truth.candidate),
            "difference": dict(truth.difference),
            "better": truth.better,
        },
        "warnings": [{"code": w.code, "message": w.message} for w in exp.warnings],
    }
