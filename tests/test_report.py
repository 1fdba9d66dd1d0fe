"""shadowdeco report: known answers on small generated logs, bad input, the CLI, the HTML page."""

from __future__ import annotations

import datetime as _dt
import doctest
import gzip
import importlib
import importlib.util
import io
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import threading
import types
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

import shadowdeco
from shadowdeco import report, shadow, sinks
from shadowdeco.__main__ import main
from shadowdeco.report._stats import Reservoir, TimeBuckets, macro_f1
from shadowdeco.report._svg import CANDIDATE, LIVE
from shadowdeco.report._values import category, key_text

REPO = Path(__file__).resolve().parents[1]
T0 = _dt.datetime(2026, 11, 27, 10, 0, tzinfo=_dt.timezone.utc).timestamp()


# -- helpers --------------------------------------------------------------------------------


def iso(seconds: float) -> str:
    return _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc).isoformat()


def arm(
    value: Any = None, *, status: str = "ok", seconds: float | None = 0.01, error: Any = None
) -> dict[str, Any]:
    return {"status": status, "value": value, "error": error, "duration_s": seconds}


def result(
    i: int = 0,
    *,
    experiment: str = "exp",
    live: dict[str, Any] | None = None,
    candidate: dict[str, Any] | None = None,
    match: bool | None = None,
    key: Any = None,
    started: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One v1 result line as ``ShadowResult.to_dict()`` writes it."""
    live = arm(1) if live is None else live
    candidate = arm(1) if candidate is None else candidate
    if match is None and live["status"] == "ok" and candidate["status"] == "ok":
        match = live["value"] == candidate["value"]
    return {
        "v": 1,
        "experiment": experiment,
        "id": f"r{i}",
        "started_at": iso(T0 + i if started is None else started),
        "key": i if key is None else key,
        "live": live,
        "candidate": candidate,
        "queue_s": 0.0,
        "match": match,
        "score": None,
        "inputs": None,
        "context": None,
        "trace_id": None,
        "span_id": None,
        **extra,
    }


def write(path: Path, records: Iterable[dict[str, Any] | str]) -> Path:
    """Write records (dicts as JSON, strings as they are) one per line."""
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return path


def build(*paths: Path, **options: Any) -> report.Report:
    return report.build_report([str(p) for p in paths], **options)


def only(rep: report.Report) -> report.Experiment:
    assert len(rep.experiments) == 1
    return rep.experiments[0]


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["report", *(str(a) for a in args)])
    out, err = capsys.readouterr()
    return code, out, err


def write_labels(path: Path, pairs: Sequence[tuple[Any, Any]]) -> Path:
    if path.suffix == ".csv":
        lines = ["key,label", *(f"{k},{v}" for k, v in pairs)]
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_text("".join(json.dumps({"key": k, "label": v}) + "\n" for k, v in pairs))
    return path


# -- counts, errors, latency ----------------------------------------------------------------


def test_counts_statuses_and_errors_by_type(tmp_path: Path) -> None:
    """Statuses, error rates by type with the first message, and timeouts are counted exactly."""
    records = [result(i) for i in range(7)]
    records += [
        result(7, candidate=arm(status="error", error={"type": "ValueError", "message": "m1"})),
        result(8, candidate=arm(status="error", error={"type": "ValueError", "message": "m2"})),
        result(9, candidate=arm(status="timeout", error={"type": "TimeoutError", "message": "t"})),
    ]
    exp = only(build(write(tmp_path / "s.jsonl", records)))
    assert exp.counts.results == 10
    assert exp.counts.source == "log"
    assert dict(exp.candidate.statuses) == {"ok": 7, "error": 2, "timeout": 1}
    assert exp.candidate.rate("error") == pytest.approx(0.2)
    assert exp.candidate.timeout == 1
    assert [(e.type, e.count, e.example) for e in exp.candidate.errors] == [("ValueError", 2, "m1")]
    assert exp.live.errors == ()
    assert (exp.agreement.matched, exp.agreement.not_comparable) == (7, 3)


def test_latency_quantiles_are_exact_on_small_logs(tmp_path: Path) -> None:
    """p50 / p90 / p99 interpolate linearly, exactly, below the reservoir size."""
    records = [
        result(i, live=arm(1, seconds=i / 1000), candidate=arm(1, seconds=2 * i / 1000))
        for i in range(1, 101)
    ]
    exp = only(build(write(tmp_path / "s.jsonl", records)))
    live, cand = exp.live.latency, exp.candidate.latency
    assert (live.p50, live.p90, live.p99) == pytest.approx((0.0505, 0.0901, 0.09901))
    assert live.exact
    assert live.mean == pytest.approx(0.0505)
    assert live.max == pytest.approx(0.1)
    assert cand.p99 / live.p99 == pytest.approx(2.0)


def test_reservoir_quantiles_stay_close_and_bounded() -> None:
    """Past its capacity the reservoir keeps 10,000 values and quantiles within 1 % of rank."""
    reservoir = Reservoir()
    n = 200_000
    for i in range(n):
        reservoir.add(((i * 7919) % n) / n)  # every value of 0..1 once, in scrambled order
    assert len(reservoir.sample) == 10_000
    assert not reservoir.exact
    for p in (0.5, 0.9, 0.99):
        assert reservoir.quantile(p) == pytest.approx(p, abs=0.01)
    assert (reservoir.minimum, reservoir.seen) == (0.0, n)


def test_time_buckets_widen_and_stay_bounded() -> None:
    """Time buckets merge into wider ones and never exceed their bound."""
    buckets = TimeBuckets(max_buckets=16)
    for i in range(10_000):
        buckets.add(T0 + i * 7.0, i % 2 == 0)
    assert len(buckets.buckets) <= 16
    assert sum(c[0] for c in buckets.buckets.values()) == 10_000
    assert sum(c[1] for c in buckets.buckets.values()) == 5_000


# -- outputs ---------------------------------------------------------------------------------


def test_categorical_outputs_side_by_side_with_confusion(tmp_path: Path) -> None:
    """Top values are listed per arm and a live-by-candidate confusion table counts the pairs."""
    pairs = [("a", "a")] * 5 + [("a", "b")] * 2 + [("b", "b")] * 3
    records = [result(i, live=arm(lv), candidate=arm(cv)) for i, (lv, cv) in enumerate(pairs)]
    exp = only(build(write(tmp_path / "s.jsonl", records)))
    assert exp.output_kind == "categorical"
    assert exp.rows == (("a", 7, 5), ("b", 3, 5))
    assert exp.confusion is not None
    assert exp.confusion.values == ("a", "b")
    assert exp.confusion.cells == ((5, 2), (0, 3))
    assert exp.agreement.rate == pytest.approx(0.8)
    assert exp.warnings == ()


def test_top_limits_the_values_listed(tmp_path: Path) -> None:
    """--top N lists N values and folds the rest into (other)."""
    records = [result(i, live=arm(i % 5), candidate=arm(i % 5)) for i in range(50)]
    exp = only(build(write(tmp_path / "s.jsonl", records), top=2))
    assert [r[0] for r in exp.rows] == ["0", "1", "(other)"]
    assert exp.rows[-1] == ("(other)", 30, 30)
    assert exp.confusion is not None
    assert exp.confusion.values == ("0", "1", "(other)")


def test_numeric_outputs_get_quantiles_and_a_histogram(tmp_path: Path) -> None:
    """Fractional outputs are numeric: quantiles per arm and a histogram whose shares sum to 1."""
    records = [
        result(i, live=arm(i + 0.5), candidate=arm(2 * i + 0.5), match=False) for i in range(101)
    ]
    exp = only(build(write(tmp_path / "s.jsonl", records)))
    assert exp.output_kind == "numeric"
    assert exp.confusion is None
    live, cand = exp.live.output.numeric, exp.candidate.output.numeric
    assert live is not None
    assert cand is not None
    assert (live.min, live.p50, live.max, live.mean) == pytest.approx((0.5, 50.5, 100.5, 50.5))
    assert cand.p50 == pytest.approx(100.5)
    assert exp.histogram is not None
    assert sum(exp.histogram.live) == pytest.approx(1.0)
    assert sum(exp.histogram.candidate) == pytest.approx(1.0)
    assert len(exp.histogram.edges) == len(exp.histogram.live) + 1


def test_http_responses_count_by_status(tmp_path: Path) -> None:
    """Middleware results (dicts with status and body_sha256) count as their status code."""

    def response(status: int) -> dict[str, Any]:
        return {"status": status, "headers": [], "body_sha256": "ab" * 32, "body_len": 2}

    records = [
        result(i, live=arm(response(200)), candidate=arm(response(200 if i % 4 else 503)))
        for i in range(8)
    ]
    exp = only(build(write(tmp_path / "s.jsonl", records)))
    assert exp.rows == (("200", 8, 6), ("503", 0, 2))
    assert dict(exp.candidate.output.types) == {"http response": 8}


def test_collapse_warning_fires_for_a_constant_candidate(tmp_path: Path) -> None:
    """A candidate returning one value where live returns ten is flagged as constant."""
    records = [result(i, live=arm(f"class{i % 10}"), candidate=arm("class0")) for i in range(100)]
    exp = only(build(write(tmp_path / "s.jsonl", records)))
    assert [w.code for w in exp.warnings] == ["candidate_constant"]
    assert "one value (class0)" in exp.warnings[0].message


def test_collapse_warning_fires_for_few_distinct_values(tmp_path: Path) -> None:
    """A candidate with 3 distinct values where live has 50 is flagged as collapsed."""
    records = [result(i, live=arm(i % 50), candidate=arm(i % 3)) for i in range(200)]
    exp = only(build(write(tmp_path / "s.jsonl", records)))
    assert [w.code for w in exp.warnings] == ["candidate_collapse"]


def test_collapse_warning_fires_when_one_value_dominates(tmp_path: Path) -> None:
    """A candidate giving one value for 95 % of inputs, where live spreads six, is flagged."""
    records = [
        result(i, live=arm(f"c{i % 6}"), candidate=arm("c0" if i % 20 else "c1"))
        for i in range(200)
    ]
    exp = only(build(write(tmp_path / "s.jsonl", records)))
    assert [w.code for w in exp.warnings] == ["candidate_collapse"]
    assert "c0 for 95.0% of its results" in exp.warnings[0].message


def test_collapse_warning_stays_quiet_for_a_healthy_candidate(tmp_path: Path) -> None:
    """A varied, a matching constant, a barely sampled or a skewed-like-live candidate is quiet."""
    varied = [result(i, live=arm(i % 10), candidate=arm((i + 1) % 10)) for i in range(100)]
    assert only(build(write(tmp_path / "a.jsonl", varied))).warnings == ()
    both_constant = [result(i, live=arm("x"), candidate=arm("x")) for i in range(100)]
    assert only(build(write(tmp_path / "b.jsonl", both_constant))).warnings == ()
    few = [result(i, live=arm(i), candidate=arm(0)) for i in range(5)]  # too few to judge
    assert only(build(write(tmp_path / "c.jsonl", few))).warnings == ()
    skewed = [  # an imbalanced problem: live says "no" 85 % of the time, the candidate 95 %
        result(
            i, live=arm("no" if i % 20 < 17 else "yes"), candidate=arm("no" if i % 20 else "yes")
        )
        for i in range(200)
    ]
    assert only(build(write(tmp_path / "d.jsonl", skewed))).warnings == ()


def test_numeric_spread_collapse_and_new_types_are_flagged(tmp_path: Path) -> None:
    """Numeric outputs with a tenth of live's spread, and types live never returns, are flagged."""
    narrow = [
        result(i, live=arm(i * 1.5), candidate=arm(50 + i * 0.01), match=False) for i in range(100)
    ]
    assert [w.code for w in only(build(write(tmp_path / "a.jsonl", narrow))).warnings] == [
        "candidate_spread"
    ]
    typed = [
        result(i, live=arm("a"), candidate=arm({"label": "a"} if i else "a")) for i in range(9)
    ]
    codes = [w.code for w in only(build(write(tmp_path / "b.jsonl", typed))).warnings]
    assert codes == ["candidate_types"]


def test_numeric_outputs_with_some_nulls_stay_numeric(tmp_path: Path) -> None:
    """A model that abstains (None) on a few per cent of inputs still has numeric outputs:
    quantiles, a histogram and the spread warning; other non-numbers over 1 % do not."""
    records = [
        result(
            i,
            live=arm(None if i % 25 == 0 else 50 + (i % 40) * 0.5),
            candidate=arm(50 + (i % 7) * 0.01),
            match=None,
        )
        for i in range(1000)
    ]
    exp = only(build(write(tmp_path / "a.jsonl", records)))
    assert exp.output_kind == "numeric"
    assert exp.histogram is not None
    assert exp.rows == ()
    assert exp.live.output.non_numeric == 40
    assert [w.code for w in exp.warnings] == ["candidate_spread"]
    for r in records[::25]:
        r["live"]["value"] = "n/a"
    exp = only(build(write(tmp_path / "b.jsonl", records)))
    assert exp.output_kind == "categorical"


# -- agreement and ground truth --------------------------------------------------------------


def test_agreement_overall_and_over_time(tmp_path: Path) -> None:
    """Agreement is matched over compared, and per five-minute bucket over two hours."""
    records = [
        result(i, started=T0 + 60 * i, match=True if i < 60 else i % 2 == 0) for i in range(120)
    ]
    exp = only(build(write(tmp_path / "s.jsonl", records)))
    agreement = exp.agreement
    assert agreement.rate == pytest.approx(90 / 120)
    assert agreement.bucket_seconds == 300
    assert len(agreement.buckets) == 24
    assert [b.rate for b in agreement.buckets[:12]] == [1.0] * 12
    assert [b.rate for b in agreement.buckets[12:]] == pytest.approx([0.6, 0.4] * 6)
    assert sum(b.results for b in agreement.buckets) == 120


def test_accuracy_and_macro_f1_against_labels(tmp_path: Path) -> None:
    """Accuracy and macro-F1 match hand-computed values (and scikit-learn's)."""
    truth, live, cand = "aaabbc", "aabbba", "aaabcc"
    records = [
        result(i, key=f"k{i}", live=arm(lv), candidate=arm(cv))
        for i, (lv, cv) in enumerate(zip(live, cand, strict=True))
    ]
    labels = write_labels(tmp_path / "labels.csv", [(f"k{i}", t) for i, t in enumerate(truth)])
    exp = only(build(write(tmp_path / "s.jsonl", records), labels=labels))
    gt = exp.ground_truth
    assert gt is not None
    assert (gt.kind, gt.metric, gt.labeled, gt.paired) == ("categorical", "accuracy", 6, 6)
    assert gt.live["accuracy"] == pytest.approx(4 / 6)
    assert gt.live["macro_f1"] == pytest.approx((4 / 6 + 4 / 5 + 0) / 3)
    assert gt.candidate["accuracy"] == pytest.approx(5 / 6)
    assert gt.candidate["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert gt.difference["accuracy"] == pytest.approx(1 / 6)
    assert gt.better == "candidate"


def test_macro_f1_counts_classes_only_predicted() -> None:
    """A class that is only ever predicted counts in macro-F1 with a score of 0."""
    assert macro_f1({"a": 1}, {"z": 1}, {"a": 1}) == pytest.approx((2 / 3 + 0) / 2)
    assert macro_f1({}, {}, {}) is None


def test_mae_and_rmse_for_numeric_labels(tmp_path: Path) -> None:
    """Fractional labels choose MAE and RMSE, with hand-computed values; lower is better."""
    labels = [1.5, 2.5, 3.5]
    live, cand = [1.0, 3.0, 3.5], [1.5, 2.5, 5.5]
    records = [
        result(i, live=arm(lv), candidate=arm(cv), match=False)
        for i, (lv, cv) in enumerate(zip(live, cand, strict=True))
    ]
    path = write_labels(tmp_path / "labels.jsonl", list(enumerate(labels)))
    gt = only(build(write(tmp_path / "s.jsonl", records), labels=path)).ground_truth
    assert gt is not None
    assert (gt.kind, gt.metric) == ("numeric", "mae")
    assert gt.live["mae"] == pytest.approx(1 / 3)
    assert gt.live["rmse"] == pytest.approx(math.sqrt(0.5 / 3))
    assert gt.candidate["mae"] == pytest.approx(2 / 3)
    assert gt.candidate["rmse"] == pytest.approx(math.sqrt(4 / 3))
    assert gt.better == "live"


def test_metric_option_forces_the_kind_of_labels(tmp_path: Path) -> None:
    """--metric rmse scores whole-number labels as numbers; failed arms are counted apart."""
    records = [
        result(0, live=arm(1), candidate=arm(2)),
        result(1, live=arm(3), candidate=arm(status="error", error={"type": "E", "message": ""})),
        result(2, key="no-label"),
    ]
    labels = write_labels(tmp_path / "labels.csv", [(0, 1), (1, 3)])
    gt = only(
        build(write(tmp_path / "s.jsonl", records), labels=labels, metric="rmse")
    ).ground_truth
    assert gt is not None
    assert (gt.kind, gt.metric) == ("numeric", "rmse")
    assert (gt.labeled, gt.paired, gt.candidate_failed, gt.unlabeled) == (2, 1, 1, 1)
    assert gt.live["rmse"] == 0.0
    assert gt.candidate["rmse"] == 1.0


def test_keys_join_as_text(tmp_path: Path) -> None:
    """An int key joins a CSV key, and a prediction of 1.0 matches a label of 1."""
    records = [result(i, live=arm(1.0), candidate=arm(0)) for i in range(4)]
    labels = write_labels(tmp_path / "labels.csv", [(i, 1) for i in range(4)])
    gt = only(build(write(tmp_path / "s.jsonl", records), labels=labels)).ground_truth
    assert gt is not None
    assert (gt.live["accuracy"], gt.candidate["accuracy"]) == (1.0, 0.0)


def test_whole_number_labels_of_a_regression_are_scored_as_numbers(tmp_path: Path) -> None:
    """Whole-number labels written as 275.0 score by MAE when the predictions have fractions
    (on more than 1 % of the labeled results); with whole predictions they are classes, however
    many (100 class ids are classes)."""
    # Many distinct whole labels (a regression target such as scikit-learn's diabetes).
    many = [(i, f"{25 + 3 * i}.0") for i in range(60)]
    live = [
        result(i, live=arm(25 + 3 * i + 2.5), candidate=arm(25 + 3 * i - 4.0)) for i in range(60)
    ]
    log = write(tmp_path / "many.jsonl", live)
    gt = only(build(log, labels=write_labels(tmp_path / "many.csv", many))).ground_truth
    assert gt is not None
    assert (gt.kind, gt.metric, gt.paired) == ("numeric", "mae", 60)
    assert (gt.live["mae"], gt.candidate["mae"], gt.better) == (2.5, 4.0, "live")
    # Few distinct whole labels (ratings 1-5), fractional predictions: numbers too.
    ratings = [(i, i % 5 + 1) for i in range(20)]
    records = [result(i, live=arm(i % 5 + 1.25), candidate=arm(i % 5 + 1.5)) for i in range(20)]
    log = write(tmp_path / "ratings.jsonl", records)
    rep = build(log, labels=write_labels(tmp_path / "ratings.csv", ratings))
    gt = only(rep).ground_truth
    assert gt is not None
    assert (gt.kind, gt.metric, gt.better) == ("numeric", "mae", "live")
    assert (gt.live["mae"], gt.candidate["mae"]) == (0.25, 0.5)
    assert rep.labels is not None
    assert (rep.labels.kind, rep.labels.whole_numbers) == ("categorical", True)
    # The same labels with whole predictions are class ids.
    classes = [result(i, live=arm(i % 5 + 1), candidate=arm(1)) for i in range(20)]
    log = write(tmp_path / "classes.jsonl", classes)
    gt = only(build(log, labels=tmp_path / "ratings.csv")).ground_truth
    assert gt is not None
    assert (gt.kind, gt.live["accuracy"], gt.candidate["accuracy"]) == ("categorical", 1.0, 0.2)
    # Many distinct whole labels with whole predictions: class ids (CIFAR-100's 100 classes).
    ids = [result(i, live=arm(25 + 3 * i), candidate=arm(25 + 3 * i + 1)) for i in range(60)]
    log = write(tmp_path / "ids.jsonl", ids)
    gt = only(build(log, labels=tmp_path / "many.csv")).ground_truth
    assert gt is not None
    assert (gt.kind, gt.live["accuracy"], gt.candidate["accuracy"]) == ("categorical", 1.0, 0.0)
    # One stray fraction among 200 ratings does not change the metric.
    stray = [result(i, live=arm(i % 5 + 1), candidate=arm(i % 5 + 1)) for i in range(200)]
    stray[150]["candidate"]["value"] = 2.5
    ratings200 = write_labels(tmp_path / "r200.csv", [(i, i % 5 + 1) for i in range(200)])
    gt = only(build(write(tmp_path / "stray.jsonl", stray), labels=ratings200)).ground_truth
    assert gt is not None
    assert (gt.kind, gt.live["accuracy"], gt.candidate["accuracy"]) == ("categorical", 1.0, 0.995)


def test_no_prediction_matching_a_label_is_no_tie(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fractional predictions scored as classes (--metric accuracy), or classes spelled apart,
    score 0 for both arms: the report warns instead of calling it a tie."""
    records = [result(i, live=arm(i + 0.5), candidate=arm(i + 0.25)) for i in range(10)]
    log = write(tmp_path / "s.jsonl", records)
    labels = write_labels(tmp_path / "labels.csv", [(i, i) for i in range(10)])
    exp = only(build(log, labels=labels, metric="accuracy"))
    gt = exp.ground_truth
    assert gt is not None
    assert (gt.kind, gt.live["accuracy"], gt.candidate["accuracy"]) == ("categorical", 0.0, 0.0)
    assert gt.better is None
    assert [w.code for w in exp.warnings] == ["labels_never_match"]
    assert "--metric mae" in exp.warnings[0].message
    code, out, _ = cli(capsys, log, "--labels", labels, "--metric", "accuracy")
    assert code == 0
    assert "score the same" not in out
    assert "no prediction of either arm equals its label" in out
    spelled = [result(i, live=arm(i % 2), candidate=arm(1 - i % 2)) for i in range(10)]
    words = write_labels(
        tmp_path / "words.csv", [(i, "churn" if i % 2 else "stay") for i in range(10)]
    )
    exp = only(build(write(tmp_path / "w.jsonl", spelled), labels=words))
    assert exp.ground_truth is not None
    assert exp.ground_truth.better is None
    assert [w.code for w in exp.warnings] == ["labels_never_match"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_keys_with_a_blank_label_are_counted_and_left_out(tmp_path: Path, suffix: str) -> None:
    """A blank CSV cell, a JSON null or NaN is no label: the key is left out and counted."""
    records = [result(i, live=arm("churn" if i % 2 else "stay")) for i in range(100)]
    for r in records:
        r["candidate"] = r["live"]
    blank = "" if suffix == ".csv" else None
    pairs = [(i, blank if i < 10 else ("churn" if i % 2 else "stay")) for i in range(100)]
    labels = write_labels(tmp_path / f"labels{suffix}", pairs)
    rep = build(write(tmp_path / "s.jsonl", records), labels=labels)
    assert rep.labels is not None
    assert (rep.labels.count, rep.labels.blank) == (90, 10)
    gt = only(rep).ground_truth
    assert gt is not None
    assert (gt.labeled, gt.unlabeled, gt.paired) == (90, 10, 90)
    assert (gt.live["accuracy"], gt.better) == (1.0, "tie")
    assert "10 blank labels left out" in report.render_text(rep)
    assert "10 blank labels left out" in report.render_html(rep)
    assert report.to_json(rep)["labels"]["blank"] == 10


def test_a_blank_label_leaves_numeric_labels_numeric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One blank cell among fractional labels neither makes them classes nor fails --metric."""
    records = [result(i, live=arm(i + 0.5), candidate=arm(i + 1.0), match=False) for i in range(10)]
    log = write(tmp_path / "s.jsonl", records)
    pairs = [(i, "" if i == 9 else i + 0.25) for i in range(10)]
    labels = write_labels(tmp_path / "labels.csv", pairs)
    gt = only(build(log, labels=labels)).ground_truth
    assert gt is not None
    assert (gt.kind, gt.paired, gt.unlabeled) == ("numeric", 9, 1)
    assert gt.live["mae"] == pytest.approx(0.25)
    assert gt.candidate["mae"] == pytest.approx(0.75)
    nan = write_labels(
        tmp_path / "nan.csv", [(i, "NaN" if i == 9 else i + 0.25) for i in range(10)]
    )
    assert only(build(log, labels=nan)).ground_truth == gt
    code, out, err = cli(capsys, log, "--labels", labels, "--metric", "mae")
    assert (code, err) == (0, "")
    assert "mae *" in out


def test_csv_cells_join_and_match_as_the_numbers_and_booleans_they_spell(tmp_path: Path) -> None:
    """CSV labels 0.0 / 1.0 match predictions 0 / 1, True / FALSE match JSON booleans, and keys
    written 0.0 join keys 0; text that is no JSON number (007, a hex id) stays as it is."""
    floats = [result(i, live=arm(i % 3), candidate=arm(i % 3)) for i in range(30)]
    labels = write_labels(tmp_path / "float.csv", [(i, float(i % 3)) for i in range(30)])
    gt = only(build(write(tmp_path / "f.jsonl", floats), labels=labels)).ground_truth
    assert gt is not None
    assert (gt.kind, gt.paired, gt.live["accuracy"]) == ("categorical", 30, 1.0)
    bools = [result(i, live=arm(i % 2 == 0), candidate=arm(i % 3 == 0)) for i in range(12)]
    spelled = [(i, ("True", "FALSE", "true", "false")[i % 2 + 2 * (i % 4 >= 2)]) for i in range(12)]
    labels = write_labels(tmp_path / "bool.csv", spelled)
    gt = only(build(write(tmp_path / "b.jsonl", bools), labels=labels)).ground_truth
    assert gt is not None
    assert (gt.paired, gt.live["accuracy"]) == (12, 1.0)
    assert gt.candidate["accuracy"] == pytest.approx(6 / 12)
    keyed = [result(i, live=arm(i % 2), candidate=arm(0)) for i in range(4)]
    keyed += [result(4, key="007", live=arm(1)), result(5, key="830e4", live=arm(1))]
    keyed += [result(6, key=1.5, live=arm(1)), result(7, key=8300000, live=arm(1))]
    rows = [(f"{float(i)}", i % 2) for i in range(4)] + [("007", 1), ("830e4", 1), ("1.50", 1)]
    labels = write_labels(tmp_path / "keys.csv", rows)
    gt = only(build(write(tmp_path / "k.jsonl", keyed), labels=labels)).ground_truth
    assert gt is not None
    assert (gt.labeled, gt.unlabeled, gt.live["accuracy"]) == (8, 0, 1.0)
    assert key_text("830e4") == "830e4"  # a string in a log is the string it is
    assert key_text("007") == "007"


def test_json_strings_that_spell_numbers_stay_strings(tmp_path: Path) -> None:
    """In JSON (labels, keys, predictions) a string keeps its type: ids "12e4" and "120e3"
    are two keys, a version "1.10" is not "1.1"; zip codes with a leading zero are classes."""
    rows = [("12e4", "a"), ("120e3", "b"), ("1e5", "c"), ("100000", "d")]
    rows += [("v1", "1.10"), ("v2", "1000")]
    labels = write_labels(tmp_path / "l.jsonl", rows)
    records = [result(i, key=k, live=arm(v), candidate=arm(v)) for i, (k, v) in enumerate(rows[:4])]
    records += [result(4, key="v1", live=arm("1.10"), candidate=arm("1.1"))]
    records += [result(5, key="v2", live=arm("1000"), candidate=arm("1e3"))]
    rep = build(write(tmp_path / "s.jsonl", records), labels=labels)
    assert rep.labels is not None
    assert (rep.labels.count, rep.labels.duplicates) == (6, 0)
    gt = only(rep).ground_truth
    assert gt is not None
    assert (gt.live["accuracy"], gt.candidate["accuracy"]) == (1.0, pytest.approx(4 / 6))
    zips = [(f"0{2100 + i}", f"0{2100 + i}") for i in range(60)]
    zip_labels = write_labels(tmp_path / "zips.csv", zips)
    answers = [
        result(i, key=k, live=arm(v), candidate=arm(v if i % 4 else "00000"))
        for i, (k, v) in enumerate(zips)
    ]
    gt = only(build(write(tmp_path / "z.jsonl", answers), labels=zip_labels)).ground_truth
    assert gt is not None
    assert (gt.kind, gt.live["accuracy"], gt.candidate["accuracy"]) == ("categorical", 1.0, 0.75)


# -- reading: files, backups, filters, bad input ----------------------------------------------


def test_several_files_and_rotated_backups(tmp_path: Path) -> None:
    """Backups (.1, .2.gz) are read with their file, globs expand, and no file is read twice."""
    write(tmp_path / "a.jsonl", [result(i) for i in range(3)])
    write(tmp_path / "a.jsonl.1", [result(i) for i in range(3, 7)])
    with gzip.open(tmp_path / "a.jsonl.2.gz", "wt") as handle:
        handle.write("".join(json.dumps(result(i)) + "\n" for i in range(7, 12)))
    write(tmp_path / "b.jsonl", [result(i, experiment="other") for i in range(2)])
    rep = build(tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "a.jsonl.1")
    assert [f.path for f in rep.files] == [
        str(tmp_path / "a.jsonl.2.gz"),
        str(tmp_path / "a.jsonl.1"),
        str(tmp_path / "a.jsonl"),
        str(tmp_path / "b.jsonl"),
    ]
    assert {e.name: e.counts.results for e in rep.experiments} == {"exp": 12, "other": 2}
    globbed = report.build_report([str(tmp_path / "*.jsonl")])
    assert globbed.results == 14


def test_jsonlines_sink_logs_read_back_across_rotation(tmp_path: Path) -> None:
    """Every result a rotating JsonLines sink wrote under @shadow is read back once."""
    path = tmp_path / "shadow.jsonl"
    sink = sinks.JsonLines(path, max_bytes=4_000, backups=50)

    @shadow(candidate=lambda x: x % 3, name="rotated", sinks=[sink], key=lambda x: x)
    def predict(x: int) -> int:
        return x % 4

    for i in range(60):
        predict(i)
    assert shadowdeco.flush(10)
    sink.close()
    assert (tmp_path / "shadow.jsonl.1").exists()
    exp = only(build(path))
    assert exp.counts.results == 60
    assert exp.agreement.matched == sum(i % 3 == i % 4 for i in range(60))


def test_since_and_until_bound_started_at(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--since is inclusive, --until exclusive, and a trailing Z means UTC (Python 3.10 too)."""
    path = write(tmp_path / "s.jsonl", [result(i, started=T0 + 60 * i) for i in range(10)])
    code, out, _ = cli(
        capsys, path, "--since", "2026-11-27T10:02:00Z", "--until", "2026-11-27T10:05:00", "--json"
    )
    assert code == 0
    data = json.loads(out)
    assert data["results"] == 3
    assert data["filters"]["outside_window"] == 7
    assert data["experiments"]["exp"]["first"] == iso(T0 + 120)


def test_experiment_filter_and_a_name_that_matches_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--experiment keeps the named experiments (globs too); an unmatched name exits 1."""
    records = [result(i, experiment=("churn-v2", "churn-v3", "price")[i % 3]) for i in range(9)]
    path = write(tmp_path / "s.jsonl", records)
    rep = build(path, experiments=["churn-*"])
    assert [e.name for e in rep.experiments] == ["churn-v2", "churn-v3"]
    code, out, err = cli(capsys, path, "--experiment", "price", "--experiment", "nope")
    assert code == 1
    assert "══ price " in out
    assert "churn" not in out
    assert "no results for experiment 'nope'" in err


def test_malformed_lines_are_skipped_counted_and_located(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad lines are skipped and counted with file and line; the report completes and exits 1."""
    lines: list[dict[str, Any] | str] = [
        result(0),
        "not json {",
        "",
        "[1, 2]",
        {**result(1), "v": 2},
        result(2),
        '{"v": 1, "experiment": "exp"',
        b"\xff\xfe".decode("latin-1"),
        result(3),
    ]
    path = write(tmp_path / "s.jsonl", lines)
    rep = build(path)
    assert rep.results == 3
    assert rep.malformed == 5
    assert [(m.line, m.reason) for m in rep.malformed_examples] == [
        (2, "not JSON"),
        (4, "not a JSON object"),
        (5, "unsupported schema version 2"),
        (7, "not JSON"),
        (8, "not JSON"),
    ]
    assert not rep.complete
    code, out, err = cli(capsys, path)
    assert code == 1
    assert f"skipped 5 malformed lines: {path}:2 (not JSON)" in out
    assert "malformed lines (first:" in err
    assert "Traceback" not in err


def test_a_last_line_cut_short_is_skipped_as_unfinished(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file still being written ends in part of a line: skipped and said so, not "not JSON";
    a whole last line without its newline is read as any other."""
    whole = json.dumps(result(2))
    live = tmp_path / "live.jsonl"
    live.write_text(json.dumps(result(0)) + "\n" + json.dumps(result(1)) + "\n" + whole[:40])
    ended = tmp_path / "ended.jsonl"
    ended.write_text(json.dumps(result(3)) + "\n" + whole)
    blank = tmp_path / "blank.jsonl"
    blank.write_text(json.dumps(result(4)) + "\n  ")  # a blank last line is no problem
    rep = build(live, ended, blank)
    assert rep.results == 5
    assert [(m.path, m.line, m.reason) for m in rep.malformed_examples] == [
        (str(live), 3, "unfinished last line: still being written?")
    ]
    code, out, _ = cli(capsys, live)
    assert code == 1  # a record is missing from this report: it is incomplete
    assert f"{live}:3 (unfinished last line: still being written?)" in out


# A line a report cannot use whatever it holds: each is skipped as malformed, with its reason.
_TOO_DEEP = "[" * 100_000 + "]" * 100_000
_NOT_A_TIME = "started_at is not a time between the years 1 and 9999"
_NOT_A_DURATION = "duration_s is not a finite number of seconds"


def _odd_line(kind: str) -> tuple[str, str]:
    """``(line, reason)`` for one line the reader must skip: JSON text, as a log could hold it."""
    huge = "1" + "0" * 400  # an int no float holds
    started = {
        "ms": "1764237600000",  # milliseconds, not seconds
        "1e300": "1e300",
        "huge": huge,
        "nan": "NaN",
        "infinity": "-Infinity",
        "before year 1": '"0001-01-01T00:00:00+05:00"',
        "after 9999": '"9999-12-31T23:59:59-05:00"',
    }
    duration = {"huge duration": huge, "nan duration": "NaN", "infinite duration": "Infinity"}
    if kind == "deep":
        return _TOO_DEEP, "nested too deeply"
    line = json.dumps(result(9, candidate=arm(1, seconds=0.125)))
    if kind in started:
        return line.replace(json.dumps(iso(T0 + 9)), started[kind]), _NOT_A_TIME
    return line.replace("0.125", duration[kind]), f"candidate {_NOT_A_DURATION}"


_ODD_LINES = [
    "deep",
    "ms",
    "1e300",
    "huge",
    "nan",
    "infinity",
    "before year 1",
    "after 9999",
    "huge duration",
    "nan duration",
    "infinite duration",
]


@pytest.mark.parametrize("kind", _ODD_LINES)
def test_a_line_no_report_can_use_is_skipped_as_malformed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """A line nested too deeply to parse, a started_at no date can hold (milliseconds, 1e300,
    NaN, past the years 1 to 9999) or a duration no float holds is skipped as malformed, with
    its reason and place; the other lines are reported, in text, JSON and HTML alike."""
    odd, reason = _odd_line(kind)
    path = write(tmp_path / "s.jsonl", [result(0), odd, result(1)])
    rep = build(path)
    assert (rep.results, rep.malformed) == (2, 1)
    assert [(m.line, m.reason) for m in rep.malformed_examples] == [(2, reason)]
    exp = only(rep)
    assert (exp.first, exp.last) == (T0, T0 + 1)
    assert exp.live.latency.n == exp.candidate.latency.n == 2
    assert report.to_json(rep)["experiments"]["exp"]["first"] == iso(T0)
    assert report.render_html(rep)
    code, out, err = cli(capsys, path, "--json")
    assert code == 1
    assert json.loads(out)["malformed"]["examples"] == [
        {"path": str(path), "line": 2, "reason": reason}
    ]
    assert err.strip() == f"shadowdeco report: skipped 1 malformed line (first: {path}:2)"
    code, out, err = cli(capsys, path)
    assert code == 1
    assert f"{path}:2 ({reason})" in out
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", ["deep", "ms", "huge duration"])
def test_the_console_command_skips_an_odd_line_without_a_traceback(
    tmp_path: Path, kind: str
) -> None:
    """`python -m shadowdeco report` on a log with such a line exits 1, saying where it is."""
    path = write(tmp_path / "s.jsonl", [result(0), _odd_line(kind)[0], result(1)])
    proc = subprocess.run(
        [sys.executable, "-m", "shadowdeco", "report", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr == f"shadowdeco report: skipped 1 malformed line (first: {path}:2)\n"
    assert json.loads(proc.stdout)["results"] == 2


def test_times_from_year_1_to_9999_are_reported_in_few_buckets(tmp_path: Path) -> None:
    """The earliest and latest times a date holds are read, and the ten millennia between
    them fit in at most 60 epoch-aligned buckets, whose starts can all be printed."""
    early = _dt.datetime(1, 1, 1, tzinfo=_dt.timezone.utc).timestamp()
    late = _dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=_dt.timezone.utc).timestamp()
    path = write(
        tmp_path / "s.jsonl",
        [result(0, started=early), result(1), {**result(2), "started_at": late}],
    )
    rep = build(path)
    exp = only(rep)
    assert (rep.malformed, exp.first, exp.last) == (0, early, late)
    agreement = exp.agreement
    assert 2 <= len(agreement.buckets) <= 60
    assert sum(b.results for b in agreement.buckets) == 3
    assert agreement.buckets[0].start >= early
    data = report.to_json(rep)["experiments"]["exp"]
    assert (data["first"], data["last"]) == (iso(early), iso(late))
    assert report.render_text(rep)
    assert report.render_html(rep)


def test_time_buckets_stay_bounded_whatever_the_span() -> None:
    """However far apart the times, the buckets widen until they fit: no span is walked."""
    week = 604_800
    buckets = TimeBuckets()
    for i in range(2_000):  # 2,000 weeks: more buckets than fit, even a week wide
        buckets.add(T0 + i * week, True)
    assert len(buckets.buckets) <= 512
    width, chart = buckets.coarsened(60)
    assert len(chart) <= 60
    assert sum(counts[0] for _, counts in chart) == 2_000
    for when in (-1e18, 1e300):  # far past any date: the buckets still stay few
        buckets.add(when, False)
    width, chart = buckets.coarsened(60)
    assert len(buckets.buckets) <= 512
    assert len(chart) <= 60
    assert chart[0][0] <= -1e18
    assert chart[-1][0] + width > 1e300
    assert sum(counts[0] for _, counts in chart) == 2_002


def test_huge_numbers_elsewhere_in_a_line_are_no_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A queue wait, score, output or label that no float holds, and statistics that overflow,
    leave the line in the report: the number is left out (or counted as non-finite), and a
    statistic no float holds is null in the JSON."""
    huge = 10**400
    records = [
        result(0, key="a", queue_s=huge, score=huge, live=arm(huge), candidate=arm(0.5)),
        result(1, live=arm(-1.7e308, seconds=1.7e308), candidate=arm(1.7e308, seconds=1e308)),
        result(2, live=arm(1.7e308, seconds=1.7e308), candidate=arm(-1.7e308, seconds=1e308)),
        result(3, live=arm(0.25), candidate=arm(0.75)),
    ]
    path = write(tmp_path / "s.jsonl", records)
    labels = write_labels(tmp_path / "labels.jsonl", [("a", 0.5), ("b", 1.5)])
    rep = build(path, labels=labels)
    assert (rep.results, rep.malformed) == (4, 0)
    exp = only(rep)
    assert (exp.queue.n, exp.agreement.score_n, exp.output_kind) == (3, 0, "numeric")
    assert exp.live.output.numeric is not None
    assert exp.live.output.numeric.non_finite == 1
    assert exp.ground_truth is not None
    assert exp.ground_truth.live_failed == 1
    code, out, _ = cli(capsys, path, "--labels", labels, "--json")
    assert code == 0
    data = json.loads(out)["experiments"]["exp"]
    assert data["live"]["latency_s"]["mean"] is None  # two 1.7e308 add up past any float
    assert data["candidate"]["latency_s"]["max"] == 1e308
    assert report.render_text(rep)
    assert report.render_html(rep)
    big_labels = write_labels(tmp_path / "big.jsonl", [("a", huge)])
    assert only(build(path, labels=big_labels)).ground_truth is not None


def test_values_nested_deeper_than_json_goes_count_as_one_value() -> None:
    """An output or key too deep for the JSON encoder is counted, not a crash."""
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    assert category(deep) == key_text(deep) == "(nested too deeply)"


def test_labels_nested_too_deeply_are_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A labels line nested too deeply to parse stops the report with exit 2, naming it."""
    path = write(tmp_path / "s.jsonl", [result(0)])
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"key": "a", "label": 1}\n' + _TOO_DEEP + "\n")
    code, out, err = cli(capsys, path, "--labels", labels)
    assert (code, out) == (2, "")
    assert err == f"shadowdeco report: labels {labels}, line 2: nested too deeply\n"


@pytest.mark.parametrize("kind", ["missing", "directory", "glob", "labels"])
def test_an_unreadable_file_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """A missing file, a directory, an empty glob or bad labels stop the report with exit 2."""
    good = write(tmp_path / "s.jsonl", [result(0)])
    args: list[str | Path] = {
        "missing": [good, tmp_path / "missing.jsonl"],
        "directory": [tmp_path],
        "glob": [tmp_path / "*.log"],
        "labels": [good, "--labels", write(tmp_path / "l.csv", ["key,value", "0,1"])],
    }[kind]
    code, out, err = cli(capsys, *args)
    assert code == 2
    assert out == ""
    expected = {
        "missing": f"cannot read {tmp_path / 'missing.jsonl'}: No such file or directory",
        "directory": f"cannot read {tmp_path}: it is a directory",
        "glob": "no file matches this pattern",
        "labels": "must name a 'key' and a 'label' column",
    }[kind]
    assert expected in err
    assert "Traceback" not in err


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root reads files whatever their mode, so permission cannot be denied",
)
def test_a_file_without_read_permission_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file the user may not read stops the report with exit 2 and names it."""
    path = write(tmp_path / "s.jsonl", [result(0)])
    path.chmod(0)
    code, _, err = cli(capsys, path)
    assert code == 2
    assert f"cannot read {path}: Permission denied" in err


def test_the_console_command_reports_errors_without_a_traceback(tmp_path: Path) -> None:
    """`python -m shadowdeco report` on a missing file prints one line and exits 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "shadowdeco", "report", str(tmp_path / "nope.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"shadowdeco report: cannot read {tmp_path / 'nope.jsonl'}: No such file or directory"
    )


def test_stats_lines_give_sampled_and_dropped(tmp_path: Path) -> None:
    """The latest stats line per process is summed: drops by reason appear beside the results."""

    def stats(process: str, sampled: int, dropped: dict[str, int]) -> dict[str, Any]:
        emitted = sampled - sum(dropped.values())
        return {
            "v": 1,
            "kind": "stats",
            "experiment": "exp",
            "process": process,
            "sampled": sampled,
            "skipped": 0,
            "emitted": emitted,
            "dropped": dropped,
            "in_flight": 0,
            "sink_errors": 0,
        }

    lines = [
        stats("a", 50, {"queue_full": 1}),
        result(0),
        stats("a", 40, {}),  # an older snapshot read later
        stats("b", 30, {"queue_full": 2, "shutdown": 1}),
    ]
    counts = only(build(write(tmp_path / "s.jsonl", lines))).counts
    assert counts.source == "stats"
    assert (counts.processes, counts.sampled, counts.emitted) == (2, 80, 76)
    assert counts.dropped == {"queue_full": 3, "shutdown": 1}


def test_stats_lines_without_a_process_are_told_apart_by_file(tmp_path: Path) -> None:
    """Without a process tag, a file and its backups are one stream, and other files add up."""
    line = {"v": 1, "kind": "stats", "experiment": "exp", "emitted": 0, "dropped": {}}
    write(tmp_path / "a.jsonl.1", [{**line, "sampled": 10}])
    write(tmp_path / "a.jsonl", [{**line, "sampled": 25}, result(0)])
    write(tmp_path / "b.jsonl", [{**line, "sampled": 7}])
    rep = build(tmp_path / "a.jsonl.1", tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    counts = only(rep).counts
    assert (counts.processes, counts.sampled) == (2, 32)


def test_stats_record_from_a_live_experiment_is_read(tmp_path: Path) -> None:
    """report.stats_record(experiment) appended to the log gives the report its counters."""
    path = tmp_path / "shadow.jsonl"
    sink = sinks.JsonLines(path)

    @shadow(candidate=lambda x: x, name="counted", sinks=[sink])
    def predict(x: int) -> int:
        return x

    for i in range(5):
        predict(i)
    assert shadowdeco.flush(10)
    sink.close()
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(report.stats_record(predict.shadow)) + "\n")  # type: ignore[attr-defined]
    counts = only(build(path)).counts
    assert (counts.source, counts.sampled, counts.emitted, counts.results) == ("stats", 5, 5, 5)


def test_unencodable_results_are_counted_not_skipped(tmp_path: Path) -> None:
    """A result the sink wrote as an "$error" record is counted for its experiment."""
    lines = [result(0), {"v": 1, "experiment": "exp", "id": "x", "$error": "not serializable"}]
    rep = build(write(tmp_path / "s.jsonl", lines))
    assert (only(rep).unencodable, rep.malformed) == (1, 0)


# -- output formats --------------------------------------------------------------------------


def _mixed_log(tmp_path: Path) -> tuple[Path, Path]:
    """A categorical and a numeric experiment over three hours, with labels for the first."""
    records: list[dict[str, Any]] = []
    for i in range(600):
        started = T0 + 18 * i
        truth = ("stay", "churn", "upsell")[i % 3]
        cand_status = "error" if i % 50 == 0 else "ok"
        failure = {"type": "ValueError", "message": "bad"} if cand_status == "error" else None
        records.append(
            result(
                i,
                experiment="churn-v2",
                key=f"c{i}",
                started=started,
                live=arm(truth if i % 7 else "stay", seconds=0.005 + (i % 10) / 1000),
                candidate=arm(
                    None if cand_status == "error" else truth if i % 11 else "churn",
                    status=cand_status,
                    seconds=0.01 + (i % 10) / 500,
                    error=failure,
                ),
            )
        )
        records.append(
            result(
                i,
                experiment="price-v3",
                started=started,
                live=arm(100 + (i % 40) * 1.5),
                candidate=arm(100 + (i % 30) * 1.75),
                match=abs((i % 40) * 1.5 - (i % 30) * 1.75) < 5,
            )
        )
    log = write(tmp_path / "shadow.jsonl", records)
    labels = write_labels(
        tmp_path / "labels.csv", [(f"c{i}", ("stay", "churn", "upsell")[i % 3]) for i in range(600)]
    )
    return log, labels


def test_json_output_follows_the_documented_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints schema shadowdeco.report/1 with its stable keys and JSON types."""
    log, labels = _mixed_log(tmp_path)
    code, out, _ = cli(capsys, log, "--labels", labels, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["schema"] == "shadowdeco.report/1"
    assert set(data) == {
        "schema",
        "complete",
        "results",
        "files",
        "malformed",
        "read_errors",
        "filters",
        "labels",
        "experiments",
    }
    assert data["complete"] is True
    assert set(data["experiments"]) == {"churn-v2", "price-v3"}
    churn = data["experiments"]["churn-v2"]
    assert set(churn) == {
        "first",
        "last",
        "counts",
        "live",
        "candidate",
        "latency_ratio",
        "queue_s",
        "outputs",
        "agreement",
        "ground_truth",
        "warnings",
    }
    assert set(churn["candidate"]) == {
        "results",
        "statuses",
        "error_rate",
        "timeout_rate",
        "errors",
        "latency_s",
        "output",
    }
    assert set(churn["candidate"]["latency_s"]) == {
        "n",
        "sampled",
        "exact",
        "mean",
        "p50",
        "p90",
        "p99",
        "max",
    }
    assert churn["candidate"]["statuses"] == {"ok": 588, "error": 12, "timeout": 0}
    assert churn["candidate"]["errors"][0]["type"] == "ValueError"
    assert churn["outputs"]["kind"] == "categorical"
    assert churn["outputs"]["confusion"]["values"] == ["stay", "churn", "upsell"]
    assert churn["ground_truth"]["metric"] == "accuracy"
    assert set(churn["ground_truth"]["live"]) == {"accuracy", "macro_f1"}
    assert churn["counts"]["source"] == "log"
    assert churn["counts"]["dropped"] is None
    assert isinstance(churn["agreement"]["buckets"][0]["start"], str)
    price = data["experiments"]["price-v3"]
    assert price["outputs"]["kind"] == "numeric"
    assert len(price["outputs"]["histogram"]["edges"]) == 21
    assert price["ground_truth"]["paired"] == 0


def test_text_output_answers_the_three_questions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The text report has the three sections per experiment with aligned tables."""
    log, labels = _mixed_log(tmp_path)
    code, out, _ = cli(capsys, log, "--labels", labels)
    assert code == 0
    assert out.startswith("shadowdeco report: 1,200 results from 1 file, 2 experiments")
    for heading in ("1. Engineering", "2. Outputs", "3. Performance"):
        assert out.count(heading) == 2
    assert "ValueError" in out
    assert "accuracy *" in out
    assert "candidate/live" in out
    status_rows = [line for line in out.splitlines() if line.startswith(("   ok ", "   error "))]
    assert len({len(line) for line in status_rows[:2]}) == 1  # aligned columns


def test_html_is_self_contained(tmp_path: Path) -> None:
    """The page inlines its style and charts and references nothing outside itself."""
    log, labels = _mixed_log(tmp_path)
    page = report.render_html(build(log, labels=labels))
    assert page.startswith("<!doctype html>")
    for needle in ("<script", "<link", " src=", "url(", "@import"):
        assert needle not in page
    assert page.replace('xmlns="http://www.w3.org/2000/svg"', "").count("http") == 0
    for chart in ("latency", "distribution", "histogram", "agreement"):
        assert f'class="chart {chart}"' in page


HOSTILE = "\x1b]0;owned\x07\x1b[2J\r\u202eevil\x9b31m\x7f\nnext"


def _hostile_log(tmp_path: Path) -> Path:
    """Results whose experiment name, values, key and error message hold terminal escapes,
    a bidirectional override and HTML."""
    error = {"type": "ValueError", "message": f"<script>alert(1)</script>{HOSTILE}"}
    return write(
        tmp_path / "hostile.jsonl",
        [
            result(
                i,
                experiment=f"exp{HOSTILE}",
                live=arm(f"<b>{HOSTILE}</b>"),
                candidate=arm(status="error", error=error) if i % 2 else arm(HOSTILE),
                key=f"user{HOSTILE}{i}",
            )
            for i in range(20)
        ],
    )


def test_text_output_shows_control_characters_as_symbols(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Values, names and error messages from the log never send control characters (escape
    sequences, carriage returns, bidi overrides) to the terminal: each shows as one visible
    symbol, so columns stay aligned."""
    code, out, _ = cli(capsys, _hostile_log(tmp_path), "--top", "5")
    assert code == 0
    hidden = {c for c in out if c != "\n" and unicodedata.category(c) == "Cc"}
    assert hidden == set()
    assert "\u202e" not in out
    assert "\u241b]0;owned\u2407\u241b[2J\u240d" in out  # ESC, BEL, CR as control pictures
    assert "exp\u241b" in out
    status_rows = [line for line in out.splitlines() if line.startswith(("   ok ", "   error "))]
    assert len({len(line) for line in status_rows[:2]}) == 1  # still aligned


def test_html_escapes_hostile_values(tmp_path: Path) -> None:
    """Markup in values, keys, names and error messages is shown as text, never run."""
    page = report.render_html(build(_hostile_log(tmp_path)))
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;\u241b]0;owned" in page  # markup as text, the escape as its symbol
    assert not {c for c in page if c != "\n" and unicodedata.category(c) == "Cc"}


def test_docstring_examples_run() -> None:
    """The report package's docstring examples pass as doctests."""
    for name in ("shadowdeco.report", "shadowdeco.report._stats", "shadowdeco.report._values"):
        failures, _ = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
        assert failures == 0, name


# -- the page in a real browser --------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit RGB or RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, [], 0, 0, 3
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8, depth
            channels = {2: 3, 6: 4}[colour]
        elif kind == b"IDAT":
            idat.append(body)
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + (left + previous[i]) // 2) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = previous[i]
                c = previous[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        rgb = bytes(line) if channels == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3)
        rows.append(rgb)
        previous = line
    return width, height, rows


@pytest.mark.slow
def test_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    """Headless Chromium renders the page: its SVG charts are in the DOM and drawn in colour."""
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    log, labels = _mixed_log(tmp_path)
    page = tmp_path / "report.html"
    assert main(["report", str(log), "--labels", str(labels), "--html", str(page)]) == 0
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    url = page.as_uri()
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    for chart in ("latency", "distribution", "histogram", "agreement"):
        assert f'class="chart {chart}"' in dom.stdout
    assert dom.stdout.count("<rect") > 50
    shot = tmp_path / "report.png"
    run = subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1280,2000", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.stat().st_size > 30_000
    width, height, rows = decode_png(shot.read_bytes())
    assert (width, height) == (1280, 2000)
    colours: dict[bytes, int] = {}
    for row in rows:
        for x in range(0, len(row), 3):
            pixel = row[x : x + 3]
            colours[pixel] = colours.get(pixel, 0) + 1
    assert len(colours) > 50  # text, tables and charts, not a blank page
    live, candidate = bytes.fromhex(LIVE[1:]), bytes.fromhex(CANDIDATE[1:])
    assert colours.get(live, 0) > 2_000  # live's bars are drawn
    assert colours.get(candidate, 0) > 2_000  # and the candidate's
    background = max(colours.values())
    assert background < 0.95 * width * height


@pytest.mark.slow
def test_the_scikit_learn_demo_reports_both_accuracies(tmp_path: Path) -> None:
    """The demo serves v1, shadows v2, and prints both accuracies and writes the page."""
    if importlib.util.find_spec("sklearn") is None:
        pytest.skip("scikit-learn is not installed (pip install 'shadowdeco[examples]')")
    page = tmp_path / "report.html"
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "demo_sklearn.py"), "--html", str(page)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "══ digits-v2 " in proc.stdout
    assert "sampled 540 · emitted 540 · dropped 0" in proc.stdout
    assert "accuracy against the true labels: v1 (live) 0.9" in proc.stdout
    assert "scikit-learn's accuracy_score agrees" in proc.stdout
    assert 'class="chart agreement"' in page.read_text()


# -- reading: backups compressed midway, restarts, stdin, what a sink missed -----------------


def test_a_backup_both_plain_and_gzipped_is_read_once(tmp_path: Path) -> None:
    """While logrotate's ``compress`` runs (or after one left its input behind), FILE.1 and
    FILE.1.gz hold the same lines: the plain file is read, the other not."""
    write(tmp_path / "a.jsonl", [result(i) for i in range(3)])
    write(tmp_path / "a.jsonl.1", [result(i) for i in range(3, 6)])
    with gzip.open(tmp_path / "a.jsonl.1.gz", "wt") as handle:
        handle.write("".join(json.dumps(result(i)) + "\n" for i in range(3, 5)))  # cut short
    rep = build(tmp_path / "a.jsonl")
    assert [f.path for f in rep.files] == [str(tmp_path / "a.jsonl.1"), str(tmp_path / "a.jsonl")]
    assert only(rep).counts.results == 6


def test_logrotate_dateext_backups_are_read_oldest_first(tmp_path: Path) -> None:
    """logrotate's ``dateext`` names backups FILE-YYYYMMDD (``.gz`` with ``compress``; other
    ``dateformat`` s such as ``-%Y-%m-%d-%s``): read with their file, oldest first; a name that
    only starts like one (``a.jsonl-old``) is not a backup."""
    write(tmp_path / "a.jsonl", [result(i) for i in range(2)])
    write(tmp_path / "a.jsonl-20261127", [result(i) for i in range(2, 5)])
    with gzip.open(tmp_path / "a.jsonl-20261126.gz", "wt") as handle:
        handle.write("".join(json.dumps(result(i)) + "\n" for i in range(5, 9)))
    write(tmp_path / "a.jsonl-old", [result(i) for i in range(9, 20)])
    rep = build(tmp_path / "a.jsonl")
    assert [f.path for f in rep.files] == [
        str(tmp_path / "a.jsonl-20261126.gz"),
        str(tmp_path / "a.jsonl-20261127"),
        str(tmp_path / "a.jsonl"),
    ]
    assert only(rep).counts.results == 9
    write(tmp_path / "b.jsonl", [result(0)])
    write(tmp_path / "b.jsonl-2026-11-27-1795000000", [result(1)])
    write(tmp_path / "b.jsonl-2026-11-26-1794900000", [result(2)])
    assert [f.path for f in build(tmp_path / "b.jsonl").files] == [
        str(tmp_path / "b.jsonl-2026-11-26-1794900000"),
        str(tmp_path / "b.jsonl-2026-11-27-1795000000"),
        str(tmp_path / "b.jsonl"),
    ]


def test_labels_from_a_pipe(tmp_path: Path) -> None:
    """``--labels <(zcat labels.csv.gz)`` hands the report a pipe, which cannot seek."""
    records = [result(i, key=f"k{i}", live=arm("a"), candidate=arm("ab"[i % 2])) for i in range(4)]
    logs = write(tmp_path / "s.jsonl", records)
    for text in (
        "key,label\n" + "".join(f"k{i},a\n" for i in range(4)),
        "".join(json.dumps({"key": f"k{i}", "label": "a"}) + "\n" for i in range(4)),
    ):
        fifo = tmp_path / "labels.fifo"
        os.mkfifo(fifo)
        writer = threading.Thread(target=fifo.write_text, args=(text,))
        writer.start()
        try:
            gt = only(build(logs, labels=fifo)).ground_truth
        finally:
            writer.join(timeout=30)
            fifo.unlink()
        assert gt is not None
        assert (gt.labeled, gt.live["accuracy"], gt.candidate["accuracy"]) == (4, 1.0, 0.5)


def test_stats_lines_of_a_restarted_process_with_the_same_pid_add_up(tmp_path: Path) -> None:
    """A container restarted runs as the same pid on the same host: each lifetime's counters
    count (the process tag names the lifetime, not only host:pid)."""
    tag = (
        "import os, random; os.getpid = lambda: 1; random.seed(0); from shadowdeco import report; "
        "print(report.stats_record('exp', report.Stats(*[0] * 13))['process'])"
    )

    def lifetime() -> str:
        proc = subprocess.run(
            [sys.executable, "-c", tag],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        return proc.stdout.strip()

    first, restarted = lifetime(), lifetime()
    assert first.split(":")[1] == restarted.split(":")[1] == "1"
    lines = [
        {
            **report.stats_record("exp", _stats(sampled=500, emitted=400, dropped=100)),
            "process": first,
        },
        {
            **report.stats_record("exp", _stats(sampled=300, emitted=250, dropped=50)),
            "process": restarted,
        },
        result(0),
    ]
    counts = only(build(write(tmp_path / "s.jsonl", lines))).counts
    assert (counts.sampled, counts.emitted) == (800, 650)


def _stats(*, sampled: int, emitted: int, dropped: int) -> shadowdeco.Stats:
    return shadowdeco.Stats(
        sampled=sampled,
        skipped=0,
        emitted=emitted,
        dropped={"queue_full": dropped},
        in_flight=0,
        matched=emitted,
        mismatched=0,
        candidate_errors=0,
        timeouts=0,
        sink_errors=0,
        sink_drops={"JsonLines('/x')": 30},
        compare_errors=0,
        sampler_errors=0,
    )


def test_results_a_sink_missed_are_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """emitted counts results handed to every sink; one that fell behind missed some, and
    the log is short by that many: the report says so (text, JSON)."""
    line = report.stats_record("exp", _stats(sampled=100, emitted=90, dropped=10))
    path = write(tmp_path / "s.jsonl", [line, *(result(i) for i in range(60))])
    counts = only(build(path)).counts
    assert counts.sink_drops == {"JsonLines('/x')": 30}
    _, out, _ = cli(capsys, path)
    assert "30 missed by a sink" in out, out
    _, out, _ = cli(capsys, path, "--json")
    assert json.loads(out)["experiments"]["exp"]["counts"]["sink_drops"] == {"JsonLines('/x')": 30}


def test_a_gzipped_log_on_stdin_is_read(tmp_path: Path) -> None:
    data = gzip.compress("".join(json.dumps(result(i)) + "\n" for i in range(4)).encode())
    proc = subprocess.run(
        [sys.executable, "-m", "shadowdeco", "report", "-", "--json"],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"] == 4


def test_a_flat_sparkline_sits_at_its_level() -> None:
    """All values equal: the line shows where they are on the 0-1 scale, not full blocks."""
    from shadowdeco.report._format import SPARKS, spark

    assert spark([0.0, 0.0], 0.0, 0.0) == SPARKS[0] * 2
    assert spark([1.0, 1.0], 1.0, 1.0) == SPARKS[-1] * 2
    assert spark([0.5, None], 0.5, 0.5) == SPARKS[len(SPARKS) // 2] + " "


class _Trickle(io.RawIOBase):
    """A pipe that hands out one byte per read, as a slow writer's pipe may."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._data or not len(buffer):
            return 0
        buffer[0:1], self._data = self._data[:1], self._data[1:]
        return 1


def test_gzip_on_stdin_split_across_reads_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    data = gzip.compress("".join(json.dumps(result(i)) + "\n" for i in range(5)).encode())
    fake = types.SimpleNamespace(buffer=_Trickle(data))
    monkeypatch.setattr(sys, "stdin", fake)
    assert report.build_report(["-"]).results == 5


def test_a_flat_agreement_line_is_drawn_on_the_whole_scale(tmp_path: Path) -> None:
    records = [result(i, started=T0 + 600 * (i // 2), match=i % 2 == 0) for i in range(40)]
    text = report.render_text(build(write(tmp_path / "s.jsonl", records)))
    line = next(line for line in text.splitlines() if "over time" in line)
    assert "▁ 0.0% … █ 100.0%" in line, line
