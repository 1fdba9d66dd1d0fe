"""Bounded streaming accumulators and the metric formulas the report is built from.

>>> r = Reservoir(capacity=1000)
>>> for x in range(1, 101):
...     r.add(float(x))
>>> r.quantile(0.5), r.quantile(0.9), r.quantile(0.99)
(50.5, 90.1, 99.01)

Every accumulator here holds a fixed amount of memory whatever the length of the log:

* :class:`Reservoir` keeps a uniform random sample of ``capacity`` values (Vitter's
  algorithm R) plus the exact count, sum, minimum and maximum.  Quantiles are exact while fewer
  than ``capacity`` values arrived; past that, a quantile ``p`` read from a sample of ``k``
  values has a *rank* error of about ``sqrt(p * (1 - p) / k)`` (one standard deviation): with
  the default 10,000 values, ±0.5 % of rank at the median and ±0.1 % at p99 — the p99 read is
  the true p98.8 to p99.2 about 95 % of the time.  The seed is fixed, so one log always gives
  one report.
* :class:`CappedCounter` counts the first ``cap`` distinct values exactly; values first seen
  after that go to one ``other`` count, and the distinct count becomes a lower bound.
* :class:`TimeBuckets` counts per fixed-width time bucket aligned to the Unix epoch, and widens
  the buckets (1 s, 5 s, 10 s, 30 s, 1 min, … 1 week, then ten times wider each step) when
  there are too many, merging the old ones, so a log of any time span fits in at most
  ``max_buckets`` buckets.
* :class:`Moments` keeps a count, mean and variance (Welford), exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Iterable, Sequence
from typing import Final, Generic, TypeVar

__all__ = [
    "CappedCounter",
    "Moments",
    "Reservoir",
    "TimeBuckets",
    "macro_f1",
    "quantile",
    "shares",
]

K = TypeVar("K", bound=Hashable)

#: Values kept per reservoir: enough for p99 to within ±0.2 % of rank (see the module doc).
RESERVOIR_SIZE: Final = 10_000
#: Distinct values counted exactly per arm before new ones go to "other".
VALUE_CAP: Final = 1_000


def quantile(ordered: Sequence[float], p: float) -> float | None:
    """The ``p`` quantile of sorted values, interpolated linearly (numpy's default method)."""
    if not ordered:
        return None
    pos = (len(ordered) - 1) * p
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    frac = pos - low
    a, b = ordered[low], ordered[high]
    value = a if frac == 0 else a + (b - a) * frac
    if not math.isfinite(value) and math.isfinite(a) and math.isfinite(b):
        value = a * (1 - frac) + b * frac  # b - a overflowed (values near the float limit)
    # Round away the last-bit noise of the interpolation, so 90.1 prints as 90.1.
    return round(value, 12)


class Reservoir:
    """A uniform sample of at most ``capacity`` floats, with exact count, sum, min and max.

    Past ``capacity`` values it follows Li's algorithm L: instead of drawing a random number for
    every value, it draws how many values to skip before the next one that enters the sample,
    so the cost per value is a counter and a comparison.
    """

    __slots__ = (
        "_items",
        "_next",
        "_rng",
        "_sorted",
        "_w",
        "capacity",
        "maximum",
        "minimum",
        "seen",
        "total",
    )

    def __init__(self, capacity: int = RESERVOIR_SIZE, seed: int = 0) -> None:
        self.capacity = capacity
        self.seen = 0
        self.total = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf
        self._items: list[float] = []
        self._rng = random.Random(seed)
        self._sorted: list[float] | None = None
        self._w = 1.0
        self._next = 0  # the count at which the next value enters the full sample

    def add(self, value: float) -> None:
        self.seen += 1
        self.total += value
        # Comparisons, not min() / max(): this runs for every value, and a call costs more.
        if value < self.minimum:  # noqa: PLR1730
            self.minimum = value
        if value > self.maximum:  # noqa: PLR1730
            self.maximum = value
        if self.seen <= self.capacity:
            self._items.append(value)
            self._sorted = None
            if self.seen == self.capacity:
                self._w = math.exp(math.log(self._random()) / self.capacity)
                self._skip()
        elif self.seen == self._next:
            self._items[self._rng.randrange(self.capacity)] = value
            self._sorted = None
            self._w *= math.exp(math.log(self._random()) / self.capacity)
            self._skip()

    def _random(self) -> float:
        """Uniform in (0, 1): log() of it is defined."""
        return self._rng.random() or 1e-300

    def _skip(self) -> None:
        gap = math.floor(math.log(self._random()) / math.log1p(-self._w)) if self._w < 1 else 0
        self._next = self.seen + gap + 1

    @property
    def exact(self) -> bool:
        """True while every value seen is still in the sample."""
        return self.seen == len(self._items)

    @property
    def sample(self) -> list[float]:
        """The kept values, sorted."""
        if self._sorted is None:
            self._sorted = sorted(self._items)
        return self._sorted

    def quantile(self, p: float) -> float | None:
        return quantile(self.sample, p)

    @property
    def mean(self) -> float | None:
        return self.total / self.seen if self.seen else None


class CappedCounter(Generic[K]):
    """Counts of at most ``cap`` distinct keys; later newcomers are counted in ``other``."""

    __slots__ = ("cap", "counts", "other", "overflowed")

    def __init__(self, cap: int = VALUE_CAP) -> None:
        self.cap = cap
        self.counts: dict[K, int] = {}
        self.other = 0
        self.overflowed = False

    def add(self, key: K, n: int = 1) -> None:
        counts = self.counts
        if key in counts:
            counts[key] += n
        elif len(counts) < self.cap:
            counts[key] = n
        else:
            self.other += n
            self.overflowed = True

    @property
    def total(self) -> int:
        return sum(self.counts.values()) + self.other

    @property
    def distinct(self) -> int:
        """Distinct keys counted: exact unless :attr:`overflowed`, then a lower bound."""
        return len(self.counts)

    def most_common(self, n: int | None = None) -> list[tuple[K, int]]:
        """The ``n`` largest counts, ties broken by the key's text so the order is stable."""
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
        return ranked if n is None else ranked[:n]


class Moments:
    """Count, mean and variance of a stream (Welford's update: stable for large counts)."""

    __slots__ = ("_m2", "mean", "n")

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self._m2 = 0.0

    def add(self, value: float) -> None:
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self._m2 += delta * (value - self.mean)

    @property
    def std(self) -> float | None:
        """The population standard deviation, or None before any value."""
        return math.sqrt(self._m2 / self.n) if self.n else None


# Bucket widths in seconds; each divides the next, so buckets merge exactly when widened.
_WIDTHS: Final = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 10800, 21600, 43200, 86400, 604800)


def _width(index: int) -> int:
    """The ``index``-th bucket width: one of ``_WIDTHS``, then ten times wider each step, so
    there is always a wider one and times any distance apart end up in few buckets."""
    last = len(_WIDTHS) - 1
    return _WIDTHS[index] if index <= last else _WIDTHS[last] * 10 ** (index - last)


class TimeBuckets:
    """Per-bucket counters ``[results, matched, mismatched]`` over epoch-aligned time buckets.

    ``when`` is a finite Unix time.  Widening ends at the latest when every time falls in one
    of the two buckets either side of the epoch, so ``max_buckets`` (and the ``at_most`` of
    :meth:`coarsened`) must be 2 or more.
    """

    __slots__ = ("_index", "buckets", "max_buckets")

    def __init__(self, max_buckets: int = 512) -> None:
        if max_buckets < 2:
            raise ValueError(f"max_buckets must be at least 2, got {max_buckets!r}")
        self.max_buckets = max_buckets
        self._index = 0  # into the widths (see _width)
        self.buckets: dict[int, list[int]] = {}

    @property
    def width(self) -> int:
        return _width(self._index)

    def add(self, when: float, match: bool | None) -> None:
        slot = int(when // self.width)
        counts = self.buckets.get(slot)
        if counts is None:
            while counts is None and len(self.buckets) >= self.max_buckets:
                self._widen()
                slot = int(when // self.width)
                counts = self.buckets.get(slot)
            if counts is None:
                counts = self.buckets[slot] = [0, 0, 0]
        counts[0] += 1
        if match is True:
            counts[1] += 1
        elif match is False:
            counts[2] += 1

    def _widen(self) -> None:
        self.buckets = _merged(self.buckets, _width(self._index + 1) // self.width)
        self._index += 1

    def coarsened(self, at_most: int) -> tuple[int, list[tuple[int, list[int]]]]:
        """``(width, [(bucket start, counts), ...])`` with the widths widened to ``at_most``.

        The buckets run without gaps from the first to the last one that holds results; empty
        ones in between are kept (with zero counts), so a chart shows the hole.
        """
        if at_most < 2:
            raise ValueError(f"at_most must be at least 2, got {at_most!r}")
        width_index = self._index
        buckets = self.buckets
        if not buckets:
            return self.width, []
        while max(buckets) - min(buckets) + 1 > at_most:
            buckets = _merged(buckets, _width(width_index + 1) // _width(width_index))
            width_index += 1
        width = _width(width_index)
        span = range(min(buckets), max(buckets) + 1)
        return width, [(slot * width, list(buckets.get(slot, [0, 0, 0]))) for slot in span]


def _merged(buckets: dict[int, list[int]], factor: int) -> dict[int, list[int]]:
    """The buckets ``factor`` times wider: each new one sums the old ones it covers."""
    merged: dict[int, list[int]] = {}
    for slot, counts in buckets.items():
        into = merged.setdefault(slot // factor, [0, 0, 0])
        for i in range(3):
            into[i] += counts[i]
    return merged


def macro_f1(tp: dict[str, int], fp: dict[str, int], fn: dict[str, int]) -> float | None:
    """Macro-averaged F1 over every class seen as a label or a prediction (as scikit-learn).

    Per class ``F1 = 2·TP / (2·TP + FP + FN)``; a class never predicted correctly scores 0.
    """
    classes = set(tp) | set(fp) | set(fn)
    scores = [
        2 * tp.get(c, 0) / denominator
        for c in classes
        if (denominator := 2 * tp.get(c, 0) + fp.get(c, 0) + fn.get(c, 0))
    ]
    return sum(scores) / len(scores) if scores else None


def shares(counts: Iterable[int], total: int) -> list[float]:
    """Each count as a fraction of ``total`` (zeros when ``total`` is zero)."""
    return [c / total if total else 0.0 for c in counts]
