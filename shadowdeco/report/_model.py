"""The finished report: immutable values that the text, JSON and HTML renderers all read.

Times are Unix seconds (UTC), durations seconds, rates fractions in 0…1; a statistic that
cannot be computed (no values) is ``None``.  :func:`shadowdeco.report.to_json` spells these
out as the documented JSON schema.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

from ._read import Malformed

__all__ = [
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
    "LabelsSummary",
    "Numeric",
    "Output",
    "Quantiles",
    "Report",
]

OutputKind = Literal["categorical", "numeric", "none"]


@dataclasses.dataclass(frozen=True, slots=True)
class Quantiles:
    """p50 / p90 / p99 (from a sample of ``sampled`` of the ``n`` values), exact mean and max."""

    n: int
    sampled: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None

    @property
    def exact(self) -> bool:
        return self.sampled == self.n


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorKind:
    """One error type an arm raised: how often, and the first message seen."""

    type: str
    count: int
    example: str


@dataclasses.dataclass(frozen=True, slots=True)
class Numeric:
    """The spread of an arm's numeric outputs (quantiles from the sample, the rest exact)."""

    n: int
    non_finite: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    p5: float | None
    p25: float | None
    p50: float | None
    p75: float | None
    p95: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class Output:
    """What one arm returned, over its ``ok`` results."""

    n: int
    distinct: int
    #: True when there were more distinct values than the report counts: ``distinct`` is a floor.
    distinct_capped: bool
    top: tuple[tuple[str, int], ...]
    #: JSON type of the values (``str``, ``int``, ``float``, ``dict``, ``http response``, …).
    types: tuple[tuple[str, int], ...]
    non_numeric: int
    numeric: Numeric | None


@dataclasses.dataclass(frozen=True, slots=True)
class Arm:
    """One side (live or candidate) of an experiment."""

    results: int
    statuses: Mapping[str, int]
    errors: tuple[ErrorKind, ...]
    latency: Quantiles
    output: Output

    @property
    def ok(self) -> int:
        return self.statuses.get("ok", 0)

    @property
    def error(self) -> int:
        return self.statuses.get("error", 0)

    @property
    def timeout(self) -> int:
        return self.statuses.get("timeout", 0)

    def rate(self, status: str) -> float | None:
        return self.statuses.get(status, 0) / self.results if self.results else None


@dataclasses.dataclass(frozen=True, slots=True)
class Counts:
    """Sampled, emitted and dropped: from ``"kind": "stats"`` lines when the log has them.

    The log holds emitted results only: drops (``queue_full``, ``shutdown``, …) exist only in
    ``Experiment.stats()``.  Without a stats line, ``source`` is ``"log"`` and only ``results``
    is known.
    """

    results: int
    source: Literal["stats", "log"]
    processes: int
    sampled: int | None
    skipped: int | None
    emitted: int | None
    dropped: Mapping[str, int] | None
    in_flight: int | None
    sink_errors: int | None
    #: results emitted but missed by a sink that fell too far behind, by sink name (the log
    #: may be short by as many, if that sink wrote it)
    sink_drops: Mapping[str, int] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Confusion:
    """Live values (rows) against candidate values (columns) for results where both are ok.

    ``values`` are the most frequent values of both arms, then ``(other)`` for the rest.
    ``untracked`` counts pairs past the report's cap on distinct pairs (in no cell).
    """

    values: tuple[str, ...]
    cells: tuple[tuple[int, ...], ...]
    untracked: int


@dataclasses.dataclass(frozen=True, slots=True)
class Histogram:
    """Shares of each arm's numeric outputs per bin (bins share their ``edges``).

    ``clipped``: values past the 1st / 99th percentile are counted in the end bins, because
    the full range would have squeezed the rest into a few bins.
    """

    edges: tuple[float, ...]
    live: tuple[float, ...]
    candidate: tuple[float, ...]
    clipped: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Bucket:
    """Results in one time bucket that starts at ``start`` and how many matched."""

    start: float
    results: int
    matched: int
    mismatched: int

    @property
    def rate(self) -> float | None:
        compared = self.matched + self.mismatched
        return self.matched / compared if compared else None


@dataclasses.dataclass(frozen=True, slots=True)
class Agreement:
    """How often the candidate matched live, overall and per time bucket."""

    matched: int
    mismatched: int
    not_comparable: int
    bucket_seconds: int
    buckets: tuple[Bucket, ...]
    score_n: int
    score_mean: float | None

    @property
    def rate(self) -> float | None:
        compared = self.matched + self.mismatched
        return self.matched / compared if compared else None


@dataclasses.dataclass(frozen=True, slots=True)
class GroundTruth:
    """Each arm scored against the labels on the same results (``paired``).

    A result counts when its key has a label and *both* arms gave a usable prediction, so the
    two scores compare like with like; the failures are counted beside them.
    """

    kind: Literal["categorical", "numeric"]
    metric: str
    labeled: int
    unlabeled: int
    no_key: int
    paired: int
    live_failed: int
    candidate_failed: int
    live: Mapping[str, float | None]
    candidate: Mapping[str, float | None]
    #: candidate minus live, per metric.
    difference: Mapping[str, float | None]
    #: ``"candidate"``, ``"live"``, ``"tie"`` by the lead metric, or None without scores or
    #: when no prediction of either arm equals its label (warning ``labels_never_match``).
    better: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """A warning worth a look: ``code`` is stable for machines, ``message`` is for people."""

    code: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Experiment:
    """Everything the report says about one experiment."""

    name: str
    first: float | None
    last: float | None
    counts: Counts
    live: Arm
    candidate: Arm
    queue: Quantiles
    output_kind: OutputKind
    #: side by side: ``(value, live count, candidate count)``, ``(other)`` last.
    rows: tuple[tuple[str, int, int], ...]
    confusion: Confusion | None
    histogram: Histogram | None
    agreement: Agreement
    ground_truth: GroundTruth | None
    warnings: tuple[Finding, ...]
    #: results the sink could not encode (written as ``{"$error": ...}``): counted, not read.
    unencodable: int
    no_timestamp: int
    inputs_recorded: int


@dataclasses.dataclass(frozen=True, slots=True)
class FileSummary:
    """A file read: how many results it gave and how many lines were skipped."""

    path: str
    results: int
    malformed: int


@dataclasses.dataclass(frozen=True, slots=True)
class LabelsSummary:
    """The labels file: where, how many labels, their kind and the lead metric."""

    path: str
    kind: Literal["categorical", "numeric"]
    count: int
    duplicates: int
    metric: str
    #: rows with no label (an empty cell, null, NaN), left out.
    blank: int = 0
    #: categorical labels that are all whole numbers: scored as numbers (MAE) in an experiment
    #: whose predictions have fractions (see :class:`GroundTruth` ``kind`` per experiment).
    whole_numbers: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """The whole report: the files read, what went wrong, and one section per experiment."""

    files: tuple[FileSummary, ...]
    results: int
    malformed: int
    malformed_examples: tuple[Malformed, ...]
    read_errors: tuple[str, ...]
    experiment_filter: tuple[str, ...]
    since: float | None
    until: float | None
    outside_window: int
    unmatched_experiments: tuple[str, ...]
    labels: LabelsSummary | None
    top: int
    experiments: tuple[Experiment, ...]

    @property
    def complete(self) -> bool:
        """False when lines were skipped, a file failed partway or a named experiment is absent."""
        return not (self.malformed or self.read_errors or self.unmatched_experiments)
