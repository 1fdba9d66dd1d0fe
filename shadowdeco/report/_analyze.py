"""One pass over the records, bounded memory, then the finished :class:`Report`.

Per experiment the pass keeps counters, a 10,000-value reservoir per latency and per numeric
output stream, capped counts of output values (1,000 distinct per arm) and of live/candidate
value pairs (10,000), time buckets (at most 512) and, with labels, per-class counts.  Nothing
grows with the number of results; it grows with the number of experiments (a few MB each at
most).  See :mod:`._stats` for the error of sampled quantiles.
"""

from __future__ import annotations

import bisect
import fnmatch
import math
import re
import sys
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TypeGuard

from ._labels import Labels
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
    OutputKind,
    Quantiles,
    Report,
)
from ._read import EARLIEST, Problems, Source, read_records, record_time
from ._stats import CappedCounter, Moments, Reservoir, TimeBuckets, macro_f1, quantile
from ._values import describe, key_text, number, parse_number

__all__ = ["analyze"]

OTHER: Final = "(other)"
_PAIR_CAP: Final = 10_000  # distinct (live, candidate) value pairs in the confusion counts
_ERROR_TYPE_CAP: Final = 100  # distinct error types per arm
_CLASS_CAP: Final = 10_000  # distinct predicted classes per arm in the label metrics
_EXAMPLE_CHARS: Final = 300  # of an error message kept as the example
_CHART_BUCKETS: Final = 60  # time buckets shown for agreement over time
_HISTOGRAM_BINS: Final = 20
#: Whole-number outputs with more distinct values than this are quantities, not class ids.
_MAX_INTEGER_CLASSES: Final = 50
#: A candidate needs this many ok results before its output can be called collapsed.
_COLLAPSE_MIN_RESULTS: Final = 10
#: One value this share of the candidate's results, and this much more than live's top value,
#: is a collapse even when a few other values remain.
_DOMINANT_SHARE: Final = 0.9
_DOMINANT_MARGIN: Final = 0.25
_INTEGER: Final = re.compile(r"-?\d{1,18}")
_STATS_FIELDS: Final = ("sampled", "skipped", "emitted", "in_flight", "sink_errors")
_FLOAT_MAX: Final = sys.float_info.max


class _ArmAcc:
    """Running counts for one arm of one experiment."""

    __slots__ = (
        "errors",
        "examples",
        "fractional",
        "latency",
        "moments",
        "non_finite",
        "non_numeric",
        "nulls",
        "numbers",
        "results",
        "statuses",
        "types",
        "values",
    )

    def __init__(self, seed: int) -> None:
        self.results = 0
        self.statuses: CappedCounter[str] = CappedCounter(cap=20)
        self.errors: CappedCounter[str] = CappedCounter(cap=_ERROR_TYPE_CAP)
        self.examples: dict[str, str] = {}
        self.latency = Reservoir(seed=seed)
        self.values: CappedCounter[str] = CappedCounter()
        self.types: CappedCounter[str] = CappedCounter(cap=50)
        self.numbers = Reservoir(seed=seed + 1)
        self.moments = Moments()
        self.non_numeric = 0
        self.nulls = 0  # of the non-numeric: None, as a model that abstains returns
        self.non_finite = 0
        self.fractional = 0

    def add(self, obs: dict[str, Any]) -> tuple[bool, Any, str]:
        """Count one observation; ``(ok, value, value's category)``.

        This runs twice per line of the log: the checks are written for speed.
        """
        self.results += 1
        status = obs.get("status")
        if status.__class__ is not str:
            status = "unknown"
        self.statuses.add(status)
        duration = obs.get("duration_s")
        if duration.__class__ is float and duration - duration == 0.0:  # finite: the usual case
            self.latency.add(duration)
        elif _finite(duration):
            self.latency.add(float(duration))
        if status == "ok":
            value = obs.get("value")
            text, kind, x = describe(value)
            values = self.values.counts
            if text in values:
                values[text] += 1
            else:
                self.values.add(text)
            self.types.add(kind)
            if x is None:
                self.non_numeric += 1
                if value is None:
                    self.nulls += 1
            elif x - x != 0.0:  # NaN or infinite
                self.non_finite += 1
            else:
                self.numbers.add(x)
                self.moments.add(x)
                if not x.is_integer():
                    self.fractional += 1
            return True, value, text
        if status == "error":
            error = obs.get("error")
            kind, message = "unknown", ""
            if isinstance(error, dict):
                kind = str(error.get("type") or "unknown")
                message = str(error.get("message") or "")
            self.errors.add(kind)
            if kind not in self.examples and len(self.examples) < _ERROR_TYPE_CAP:
                self.examples[kind] = message[:_EXAMPLE_CHARS]
        return False, None, ""


class _Score:
    """One arm's predictions against the labels."""

    __slots__ = ("abs_sum", "correct", "fn", "fp", "n", "sq_sum", "tp")

    def __init__(self) -> None:
        self.n = 0
        self.correct = 0
        self.tp: dict[str, int] = {}
        self.fp: dict[str, int] = {}
        self.fn: dict[str, int] = {}
        self.abs_sum = 0.0
        self.sq_sum = 0.0

    def add_class(self, label: str, predicted: str) -> None:
        self.n += 1
        if predicted == label:
            self.correct += 1
            self.tp[label] = self.tp.get(label, 0) + 1
            return
        self.fn[label] = self.fn.get(label, 0) + 1
        if predicted not in self.fp and len(self.fp) >= _CLASS_CAP:
            predicted = OTHER
        self.fp[predicted] = self.fp.get(predicted, 0) + 1

    def add_number(self, label: float, predicted: float) -> None:
        self.n += 1
        error = predicted - label
        self.abs_sum += abs(error)
        self.sq_sum += error * error

    def metrics(self, numeric: bool) -> dict[str, float | None]:
        n = self.n
        if numeric:
            return {
                "mae": self.abs_sum / n if n else None,
                "rmse": math.sqrt(self.sq_sum / n) if n else None,
            }
        return {
            "accuracy": self.correct / n if n else None,
            "macro_f1": macro_f1(self.tp, self.fp, self.fn) if n else None,
        }


class _Scoring:
    """Both arms scored one way (as classes or as numbers), on the same results."""

    __slots__ = ("candidate", "candidate_failed", "live", "live_failed", "paired")

    def __init__(self) -> None:
        self.live = _Score()
        self.candidate = _Score()
        self.paired = self.live_failed = self.candidate_failed = 0


class _TruthAcc:
    """Both arms against ground truth, on the results where both gave a usable prediction.

    Numeric labels are scored as numbers, categorical ones as classes; whole-number labels
    (``Labels.whole_numbers``) both ways, and :meth:`numeric` picks one when the log is read.
    """

    __slots__ = (
        "classes",
        "fractional",
        "label_numbers",
        "labeled",
        "labels",
        "no_key",
        "numbers",
        "unlabeled",
    )

    def __init__(self, labels: Labels) -> None:
        self.labels = labels
        numeric = labels.kind == "numeric"
        self.classes = None if numeric else _Scoring()
        self.numbers = _Scoring() if numeric or labels.whole_numbers else None
        #: labeled results where an arm predicted a number with a fraction.
        self.fractional = 0
        self.label_numbers: dict[str, float | None] = {}  # whole-number label text → float
        self.labeled = self.unlabeled = self.no_key = 0

    def add(self, key: Any, live: tuple[bool, Any, str], candidate: tuple[bool, Any, str]) -> None:
        text = key_text(key)
        if text is None:
            self.no_key += 1
            return
        labels = self.labels
        label = labels.values.get(text)
        if label is None and text in labels.aliases:  # a CSV key 42.0 for a key 42
            label = labels.values.get(labels.aliases[text])
        if label is None:
            self.unlabeled += 1
            return
        self.labeled += 1
        live_x, cand_x = _usable_number(live), _usable_number(candidate)
        if (live_x is not None and not live_x.is_integer()) or (
            cand_x is not None and not cand_x.is_integer()
        ):
            self.fractional += 1
        numbers = self.numbers
        if numbers is not None:
            y = label if isinstance(label, float) else self._number(label)
            numbers.live_failed += live_x is None
            numbers.candidate_failed += cand_x is None
            if y is not None and live_x is not None and cand_x is not None:
                numbers.paired += 1
                numbers.live.add_number(y, live_x)
                numbers.candidate.add_number(y, cand_x)
        classes = self.classes
        if classes is not None:
            classes.live_failed += not live[0]
            classes.candidate_failed += not candidate[0]
            if live[0] and candidate[0]:
                classes.paired += 1
                classes.live.add_class(str(label), live[2])
                classes.candidate.add_class(str(label), candidate[2])

    def _number(self, text: str) -> float | None:
        cached = self.label_numbers
        if text not in cached:
            cached[text] = parse_number(text)
        return cached[text]

    def numeric(self) -> bool:
        """Score as numbers: numeric labels, or whole-number labels with predictions that have
        fractions on more than 1 % of the labeled results (a stray 2.5 among ratings does not
        change the metric)."""
        return self.classes is None or (
            self.numbers is not None and self.fractional * 100 > self.labeled
        )


def _finite(value: object) -> TypeGuard[int | float]:
    """True for a JSON number a float holds finitely (not a bool, NaN, infinite or an int past
    the float range)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and -_FLOAT_MAX <= value <= _FLOAT_MAX
    )


def _bad_duration(record: dict[str, Any]) -> str | None:
    """Why the line is malformed if an arm's ``duration_s`` is a number no float holds
    finitely (NaN, infinite, an int past the float range), else None.  (Not a number at all
    is no duration, as a missing one.)"""
    for name in ("live", "candidate"):
        duration = record[name].get("duration_s")
        if duration.__class__ is float and duration - duration == 0.0:  # finite: the usual case
            continue
        numeric = isinstance(duration, (int, float)) and not isinstance(duration, bool)
        if numeric and not _finite(duration):
            return f"{name} duration_s is not a finite number of seconds"
    return None


def _usable_number(observed: tuple[bool, Any, str]) -> float | None:
    ok, value, _ = observed
    x = number(value) if ok else None
    return x if x is not None and math.isfinite(x) else None


class _ExperimentAcc:
    """Running counts for one experiment."""

    def __init__(self, name: str, labels: Labels | None) -> None:
        seed = zlib.crc32(name.encode("utf-8", "backslashreplace"))
        self.name = name
        self.live = _ArmAcc(seed)
        self.candidate = _ArmAcc(seed + 2)
        self.queue = Reservoir(seed=seed + 4)
        self.results = 0
        self.first: float | None = None
        self.last: float | None = None
        self.no_timestamp = 0
        self.matched = self.mismatched = self.not_comparable = 0
        self.score = Moments()
        self.buckets = TimeBuckets()
        self.pairs: CappedCounter[tuple[str, str]] = CappedCounter(cap=_PAIR_CAP)
        self.unencodable = 0
        self.inputs_recorded = 0
        self.truth = _TruthAcc(labels) if labels is not None else None

    def add(self, record: dict[str, Any], when: float | None) -> None:
        self.results += 1
        live = self.live.add(record["live"])
        candidate = self.candidate.add(record["candidate"])
        match = record.get("match")
        if match is True:
            self.matched += 1
        elif match is False:
            self.mismatched += 1
        else:
            self.not_comparable += 1
        if when is None:
            self.no_timestamp += 1
        else:
            if self.first is None or when < self.first:
                self.first = when
            if self.last is None or when > self.last:
                self.last = when
            self.buckets.add(when, match if isinstance(match, bool) else None)
        queue_s = record.get("queue_s")
        if _finite(queue_s):
            self.queue.add(float(queue_s))
        score = record.get("score")
        if _finite(score):
            self.score.add(float(score))
        if record.get("inputs") is not None:
            self.inputs_recorded += 1
        if live[0] and candidate[0]:
            self.pairs.add((live[2], candidate[2]))
        if self.truth is not None:
            self.truth.add(record.get("key"), live, candidate)


class _Selection:
    """The ``--experiment`` names (globs allowed) and which of them matched."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        self.matched: set[str] = set()
        self._cache: dict[str, bool] = {}

    def __call__(self, name: str) -> bool:
        if not self.patterns:
            return True
        chosen = self._cache.get(name)
        if chosen is None:
            hits = [p for p in self.patterns if fnmatch.fnmatchcase(name, p)]
            self.matched.update(hits)
            chosen = self._cache[name] = bool(hits)
        return chosen


def analyze(
    sources: Sequence[Source],
    *,
    labels: Labels | None = None,
    experiments: Sequence[str] = (),
    since: float | None = None,
    until: float | None = None,
    top: int = 10,
) -> Report:
    """Read every source once and build the report."""
    problems = Problems()
    selected = _Selection(experiments)
    accs: dict[str, _ExperimentAcc] = {}
    snapshots: dict[tuple[str, str, str], dict[str, Any]] = {}
    per_file: dict[str, int] = {}
    outside_window = 0
    windowed = since is not None or until is not None
    choosing = bool(experiments)

    for source, line, record in read_records(sources, problems):
        if record.get("kind") == "stats":
            _stats_line(
                record, source, line, problems=problems, selected=selected, snapshots=snapshots
            )
            continue
        name = record.get("experiment")
        if not isinstance(name, str):
            problems.skip(source, line, "no experiment name")
            continue
        if "live" not in record and "$error" in record:
            if selected(name):  # a result the sink could not encode: counted, nothing to read
                _acc(accs, name, labels).unencodable += 1
            continue
        if record.get("v") != 1:
            problems.skip(source, line, f"unsupported schema version {record.get('v')!r}")
            continue
        if not isinstance(record.get("live"), dict) or not isinstance(
            record.get("candidate"), dict
        ):
            problems.skip(source, line, "no live or candidate observation")
            continue
        if choosing and not selected(name):
            continue
        try:
            when = record_time(record.get("started_at"))
        except ValueError as exc:  # a time no date holds: in milliseconds, NaN, 1e300
            problems.skip(source, line, str(exc))
            continue
        bad = _bad_duration(record)
        if bad is not None:
            problems.skip(source, line, bad)
            continue
        if windowed and (
            when is None
            or (since is not None and when < since)
            or (until is not None and when >= until)
        ):
            outside_window += 1
            continue
        acc = accs.get(name) or _acc(accs, name, labels)
        acc.add(record, when)
        per_file[source.path] = per_file.get(source.path, 0) + 1

    for name, _, _ in snapshots:
        _acc(accs, name, labels)
    finished = tuple(
        _finish(accs[name], snapshots, top, labels is not None) for name in sorted(accs)
    )
    files = tuple(
        FileSummary(s.path, per_file.get(s.path, 0), problems.per_file.get(s.path, 0))
        for s in sources
    )
    return Report(
        files=files,
        results=sum(per_file.values()),
        malformed=problems.malformed,
        malformed_examples=tuple(problems.examples),
        read_errors=tuple(problems.read_errors),
        experiment_filter=selected.patterns,
        since=since,
        until=until,
        outside_window=outside_window,
        unmatched_experiments=tuple(p for p in selected.patterns if p not in selected.matched),
        labels=None
        if labels is None
        else LabelsSummary(
            labels.path,
            labels.kind,
            len(labels.values),
            labels.duplicates,
            labels.metric,
            labels.blank,
            labels.whole_numbers,
        ),
        top=top,
        experiments=finished,
    )


def _acc(accs: dict[str, _ExperimentAcc], name: str, labels: Labels | None) -> _ExperimentAcc:
    acc = accs.get(name)
    if acc is None:
        acc = accs[name] = _ExperimentAcc(name, labels)
    return acc


def _stats_line(
    record: dict[str, Any],
    source: Source,
    line: int,
    *,
    problems: Problems,
    selected: _Selection,
    snapshots: dict[tuple[str, str, str], dict[str, Any]],
) -> None:
    """Keep the latest ``stats()`` snapshot per experiment and process.

    A process is named by the line's ``process`` (``host:pid:lifetime`` from
    :func:`stats_record`; older lines: ``host:pid``);
    lines without one are told apart by the file they are in (a backup counts as its file).

    The counters only grow, so the snapshot with the most ``sampled`` is the latest, whatever
    order the lines (and the rotated files) are read in.
    """
    name = record.get("experiment")
    sampled = record.get("sampled")
    if not isinstance(name, str) or not isinstance(sampled, int) or isinstance(sampled, bool):
        problems.skip(source, line, "stats line without experiment or sampled")
        return
    if not selected(name):
        return
    process = record.get("process")
    group = (name, "", str(process)) if process is not None else (name, source.stream, "")
    previous = snapshots.get(group)
    if previous is not None and previous["sampled"] > sampled:
        return
    snapshot: dict[str, Any] = {
        field: value
        for field in _STATS_FIELDS
        if isinstance(value := record.get(field), int) and not isinstance(value, bool)
    }
    for field in ("dropped", "sink_drops"):
        by_name = record.get(field)
        snapshot[field] = (
            {str(k): v for k, v in by_name.items() if isinstance(v, int)}
            if isinstance(by_name, dict)
            else {}
        )
    snapshots[group] = snapshot


def _counts(
    name: str, results: int, snapshots: Mapping[tuple[str, str, str], dict[str, Any]]
) -> Counts:
    mine = [snap for (exp, _, _), snap in snapshots.items() if exp == name]
    if not mine:
        return Counts(results, "log", 0, None, None, None, None, None, None)
    dropped: dict[str, int] = {}
    sink_drops: dict[str, int] = {}
    for snap in mine:
        for reason, n in snap["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + n
        for sink, n in snap["sink_drops"].items():
            sink_drops[sink] = sink_drops.get(sink, 0) + n
    total = {field: sum(snap.get(field, 0) for snap in mine) for field in _STATS_FIELDS}
    return Counts(
        results=results,
        source="stats",
        processes=len(mine),
        sampled=total["sampled"],
        skipped=total["skipped"],
        emitted=total["emitted"],
        dropped=dict(sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))),
        in_flight=total["in_flight"],
        sink_errors=total["sink_errors"],
        sink_drops=dict(sorted(sink_drops.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


def _quantiles(reservoir: Reservoir) -> Quantiles:
    seen = reservoir.seen
    return Quantiles(
        n=seen,
        sampled=len(reservoir.sample),
        mean=reservoir.mean,
        p50=reservoir.quantile(0.5),
        p90=reservoir.quantile(0.9),
        p99=reservoir.quantile(0.99),
        max=reservoir.maximum if seen else None,
    )


def _output(arm: _ArmAcc, top: int) -> Output:
    numbers = arm.numbers
    numeric = None
    if numbers.seen:
        numeric = Numeric(
            n=numbers.seen,
            non_finite=arm.non_finite,
            mean=arm.moments.mean,
            std=arm.moments.std,
            min=numbers.minimum,
            max=numbers.maximum,
            p5=numbers.quantile(0.05),
            p25=numbers.quantile(0.25),
            p50=numbers.quantile(0.5),
            p75=numbers.quantile(0.75),
            p95=numbers.quantile(0.95),
        )
    return Output(
        n=arm.values.total,
        distinct=arm.values.distinct,
        distinct_capped=arm.values.overflowed,
        top=tuple(arm.values.most_common(top)),
        types=tuple(arm.types.most_common()),
        non_numeric=arm.non_numeric,
        numeric=numeric,
    )


def _arm(arm: _ArmAcc, top: int) -> Arm:
    errors = tuple(
        ErrorKind(kind, count, arm.examples.get(kind, ""))
        for kind, count in arm.errors.most_common()
    )
    if arm.errors.other:
        errors += (ErrorKind(OTHER, arm.errors.other, ""),)
    statuses = dict(arm.statuses.most_common())
    return Arm(
        results=arm.results,
        statuses=statuses,
        errors=errors,
        latency=_quantiles(arm.latency),
        output=_output(arm, top),
    )


def _output_kind(live: _ArmAcc, candidate: _ArmAcc) -> OutputKind:
    """Numeric when the live outputs are numbers that are not few whole class ids.

    Nulls are left out of the share of non-numbers: a regression that abstains on a few inputs
    still has numeric outputs."""
    arm = live if live.values.total else candidate
    total = arm.values.total
    if not total:
        return "none"
    numbers = arm.numbers.seen + arm.non_finite
    mostly_numbers = numbers and arm.non_numeric - arm.nulls <= 0.01 * (total - arm.nulls)
    quantities = arm.fractional or arm.values.distinct > _MAX_INTEGER_CLASSES
    return "numeric" if mostly_numbers and quantities else "categorical"


def _rows(live: _ArmAcc, candidate: _ArmAcc, top: int) -> tuple[tuple[str, int, int], ...]:
    """The ``top`` values by both arms' counts, side by side, and ``(other)`` for the rest."""
    combined: dict[str, int] = dict(live.values.counts)
    for value, n in candidate.values.counts.items():
        combined[value] = combined.get(value, 0) + n
    chosen = sorted(combined, key=lambda v: (-combined[v], v))[:top]
    if all(_INTEGER.fullmatch(v) for v in chosen):  # class ids read best in their own order
        chosen.sort(key=int)
    rows = [(v, live.values.counts.get(v, 0), candidate.values.counts.get(v, 0)) for v in chosen]
    rest = (
        live.values.total - sum(r[1] for r in rows),
        candidate.values.total - sum(r[2] for r in rows),
    )
    if any(rest):
        rows.append((OTHER, *rest))
    return tuple(rows)


def _confusion(pairs: CappedCounter[tuple[str, str]], values: Sequence[str]) -> Confusion:
    index = {v: i for i, v in enumerate(values)}
    size = len(values) + 1
    cells = [[0] * size for _ in range(size)]
    for (live, candidate), n in pairs.counts.items():
        cells[index.get(live, size - 1)][index.get(candidate, size - 1)] += n
    names = [*values, OTHER]
    if not any(cells[-1]) and not any(row[-1] for row in cells):
        names.pop()
        cells = [row[:-1] for row in cells[:-1]]
    return Confusion(tuple(names), tuple(tuple(row) for row in cells), pairs.other)


def _edge(low: float, high: float, width: float, i: int) -> float:
    edge = low + i * width
    if math.isfinite(edge):
        return edge
    share = i / _HISTOGRAM_BINS
    return low * (1 - share) + high * share


def _histogram(live: Reservoir, candidate: Reservoir) -> Histogram | None:
    both = sorted(live.sample + candidate.sample)
    if not both:
        return None
    low, high = both[0], both[-1]
    p1, p99 = quantile(both, 0.01), quantile(both, 0.99)
    clipped = False
    if p1 is not None and p99 is not None and p99 > p1 and high - low > 10 * (p99 - p1):
        low, high, clipped = p1, p99, True
    if high == low:
        low, high = low - 0.5, high + 0.5
    # Divided first and binned by comparison: no step overflows, even from -1e308 to 1e308
    # (where ``i * width`` would: such an edge is weighed between the ends instead).
    width = high / _HISTOGRAM_BINS - low / _HISTOGRAM_BINS
    edges = (*(_edge(low, high, width, i) for i in range(_HISTOGRAM_BINS)), high)

    def shares(values: Iterable[float], n: int) -> tuple[float, ...]:
        counts = [0] * _HISTOGRAM_BINS
        for x in values:  # below the second edge: the first bin; from the last but one: the last
            counts[bisect.bisect_right(edges, x, 1, _HISTOGRAM_BINS) - 1] += 1
        return tuple(c / n if n else 0.0 for c in counts)

    return Histogram(
        edges=edges,
        live=shares(live.sample, len(live.sample)),
        candidate=shares(candidate.sample, len(candidate.sample)),
        clipped=clipped,
    )


def _findings(kind: OutputKind, live: _ArmAcc, candidate: _ArmAcc) -> list[Finding]:
    """Warnings about the candidate's outputs: constant, collapse, narrow spread, new types.

    ``candidate_collapse`` fires on few distinct values (a tenth of live's, at most) or on one
    value taking 90 % of the candidate's results where live's top value takes 25 points less.
    """
    found: list[Finding] = []
    n, live_n = candidate.values.total, live.values.total
    if n >= _COLLAPSE_MIN_RESULTS and live_n:
        mine, theirs = candidate.values.distinct, live.values.distinct
        plus = "+" if live.values.overflowed else ""
        if mine == 1 and theirs > 1:
            (only, _), *_ = candidate.values.most_common(1)
            found.append(
                Finding(
                    "candidate_constant",
                    f"the candidate returned one value ({only}) for all {n:,} ok results, "
                    f"where live returned {theirs:,}{plus} distinct values",
                )
            )
        elif theirs >= 5 and mine <= max(1, min(theirs, n) // 10):
            found.append(
                Finding(
                    "candidate_collapse",
                    f"the candidate's outputs collapse: {mine:,} distinct values where live "
                    f"has {theirs:,}{plus}",
                )
            )
        elif (
            kind == "categorical"
            and _dominant(candidate) >= _DOMINANT_SHARE
            and (_dominant(live) <= _dominant(candidate) - _DOMINANT_MARGIN)
        ):
            (value, _), *_ = candidate.values.most_common(1)
            found.append(
                Finding(
                    "candidate_collapse",
                    f"the candidate's outputs collapse: {value} for "
                    f"{_dominant(candidate) * 100:.1f}% of its results, where live's most "
                    f"common value covers {_dominant(live) * 100:.1f}%",
                )
            )
        elif kind == "numeric":
            live_std, cand_std = live.moments.std, candidate.moments.std
            if live_std and cand_std is not None and cand_std <= live_std / 10:
                found.append(
                    Finding(
                        "candidate_spread",
                        f"the candidate's outputs barely vary: standard deviation "
                        f"{cand_std:.4g} where live has {live_std:.4g}",
                    )
                )
    if live_n:
        new = [(t, c) for t, c in candidate.types.most_common() if t not in live.types.counts]
        if new:
            listed = ", ".join(f"{t} ({c:,})" for t, c in new)
            found.append(
                Finding("candidate_types", f"the candidate returns types live never does: {listed}")
            )
    return found


def _dominant(arm: _ArmAcc) -> float:
    """The share of the arm's ok results that its most common value takes."""
    top = arm.values.most_common(1)
    total = arm.values.total
    return top[0][1] / total if top and total else 0.0


def _ground_truth(truth: _TruthAcc) -> GroundTruth:
    numeric = truth.numeric()
    scoring = truth.numbers if numeric else truth.classes
    assert scoring is not None  # numeric() chooses a way the labels are scored
    live = scoring.live.metrics(numeric)
    candidate = scoring.candidate.metrics(numeric)
    difference: dict[str, float | None] = {}
    for metric, value in live.items():
        other = candidate[metric]
        difference[metric] = None if value is None or other is None else other - value
    labels = truth.labels
    # Whole-number labels scored as numbers lead with MAE; otherwise the labels' own metric.
    lead = "mae" if numeric and labels.kind != "numeric" else labels.metric
    better = None
    delta = difference.get(lead)
    if delta is not None and not _never_match(truth):
        higher_is_better = lead in ("accuracy", "macro_f1")
        if abs(delta) < 1e-12:
            better = "tie"
        else:
            better = "candidate" if (delta > 0) == higher_is_better else "live"
    return GroundTruth(
        kind="numeric" if numeric else "categorical",
        metric=lead,
        labeled=truth.labeled,
        unlabeled=truth.unlabeled,
        no_key=truth.no_key,
        paired=scoring.paired,
        live_failed=scoring.live_failed,
        candidate_failed=scoring.candidate_failed,
        live=live,
        candidate=candidate,
        difference=difference,
        better=better,
    )


def _never_match(truth: _TruthAcc) -> bool:
    """True when results were scored as classes and no prediction of either arm was right:
    the labels and the outputs spell the classes apart (or the outputs are not classes), and
    two zero scores say nothing about which arm is better."""
    classes = truth.classes
    return (
        not truth.numeric()
        and classes is not None
        and classes.paired > 0
        and classes.live.correct == 0
        and classes.candidate.correct == 0
    )


def _label_findings(truth: _TruthAcc) -> list[Finding]:
    if not _never_match(truth):
        return []
    assert truth.classes is not None
    message = (
        f"no prediction of either arm equals its label on {truth.classes.paired:,} results "
        "scored as classes: do the labels spell the classes as the outputs do?"
    )
    if truth.fractional:
        message += (
            f" The predictions have fractions on {truth.fractional:,} labeled results: "
            "if the labels are numbers, --metric mae scores them as numbers."
        )
    return [Finding("labels_never_match", message)]


def _finish(
    acc: _ExperimentAcc,
    snapshots: Mapping[tuple[str, str, str], dict[str, Any]],
    top: int,
    with_labels: bool,
) -> Experiment:
    kind = _output_kind(acc.live, acc.candidate)
    rows = _rows(acc.live, acc.candidate, top) if kind == "categorical" else ()
    confusion = None
    if kind == "categorical" and acc.pairs.total:
        confusion = _confusion(acc.pairs, [r[0] for r in rows if r[0] != OTHER])
    histogram = _histogram(acc.live.numbers, acc.candidate.numbers) if kind == "numeric" else None
    width, buckets = acc.buckets.coarsened(_CHART_BUCKETS)
    agreement = Agreement(
        matched=acc.matched,
        mismatched=acc.mismatched,
        not_comparable=acc.not_comparable,
        bucket_seconds=width,
        # Epoch-aligned, the first bucket can start before the year 1 that a date can hold.
        buckets=tuple(Bucket(max(float(start), EARLIEST), *counts) for start, counts in buckets),
        score_n=acc.score.n,
        score_mean=acc.score.mean if acc.score.n else None,
    )
    truth = acc.truth
    return Experiment(
        name=acc.name,
        first=acc.first,
        last=acc.last,
        counts=_counts(acc.name, acc.results, snapshots),
        live=_arm(acc.live, top),
        candidate=_arm(acc.candidate, top),
        queue=_quantiles(acc.queue),
        output_kind=kind,
        rows=rows,
        confusion=confusion,
        histogram=histogram,
        agreement=agreement,
        ground_truth=_ground_truth(truth) if with_labels and truth is not None else None,
        warnings=tuple(
            _findings(kind, acc.live, acc.candidate)
            + (_label_findings(truth) if with_labels and truth is not None else [])
        ),
        unencodable=acc.unencodable,
        no_timestamp=acc.no_timestamp,
        inputs_recorded=acc.inputs_recorded,
    )
