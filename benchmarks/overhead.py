"""Per-call overhead of ``@shadow`` beside its peers, measured in one run on one machine.

    python benchmarks/overhead.py            # full run (make bench), under 3 minutes
    python benchmarks/overhead.py --quick    # a smoke run, under 20 seconds

Every case calls the same trivial function ``f(x): return x`` (with an int, then with a ~1 KB
dict) through one wrapper: a bare call, ``functools.wraps`` and ``wrapt`` pass-throughs,
``laboratory`` (the Python port of GitHub's Scientist, which runs the candidate inline),
``ThreadPoolExecutor.submit``, and ``@shadow`` unsampled and sampled.

The unsampled rows run at ``sample=1e-9``, not ``0.0``: at a rate of exactly 0 (or 1) the
wrapper skips the random draw, which a call left out at any rate in between pays for, so a
rate of 0 would time a cheaper call than an unsampled call in production.  A full run makes
about three million unsampled calls, so one of them is sampled now and then (well under one run
in a hundred): it is shadowed like any other (one call fits the default ``max_queue`` of
1,000), flushed before the accounting is read, and shown there as sampled, never as a drop.

How it measures, and why:

* calls are unrolled ten to a loop step, so the loop adds ~1/10 of a step per call;
* the cases run round-robin, one sample of each per round, so a noisy neighbour on a shared
  machine hits every case alike; a row reports the median (and min) over the rounds, and its
  ratios are medians of per-round ratios (each pair of samples ran moments apart);
* sampled ``@shadow`` calls and ``submit`` hand work to background threads: they are timed in
  batches that fit the queue (``max_queue`` is above the batch) and the queue is drained between
  batches, outside the timed region, so no call is dropped and nothing grows without bound.
  Only the caller's time is counted, but the background threads share the GIL with the caller
  during a batch, as they would in production.  The "caller only" rows raise the interpreter's
  switch interval to 1 s during the timed batch, so the background mostly waits its turn: what
  remains is the caller's own work.

The budgets from DESIGN.md are ratios within this one run, never absolute times.
"""

from __future__ import annotations

import argparse
import copy
import functools
import itertools
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import _machine
import laboratory
import wrapt

import shadowdeco
from shadowdeco import shadow

UNROLL = 10  # calls per loop step in the timed loops below
BATCH = 2_000  # calls per timed batch for the cases that hand work to background threads
POOL_WORKERS = 4  # ThreadPoolExecutor(4), and shadowdeco's default max_concurrency
CALLER_ONLY_SWITCH_INTERVAL = 1.0  # seconds; see the module docstring
UNSAMPLED_RATE = 1e-9  # the unsampled rows' sample: above 0, so each call draws; see above

# A model's feature dict: 32 str -> float entries, about 1 KB as JSON.
PAYLOAD = {f"feature_{i:02d}": 1.0 / (i + 7) + i for i in range(32)}

WRAPT = "wrapt.FunctionWrapper pass-through"
POOL = f"ThreadPoolExecutor({POOL_WORKERS}).submit"
UNSAMPLED = "shadowdeco unsampled"
SAMPLED = "shadowdeco sampled"
CALLER_ONLY = "caller only"


def f(x: Any) -> Any:
    return x


# --------------------------------------------------------------------------------------------
# Timed loops: one perf_counter_ns pair around n calls, ten calls per loop step


def _time_call(fn: Callable[[Any], Any], arg: Any, n: int) -> int:
    steps = itertools.repeat(None, n // UNROLL)
    start = time.perf_counter_ns()
    for _ in steps:
        fn(arg)
        fn(arg)
        fn(arg)
        fn(arg)
        fn(arg)
        fn(arg)
        fn(arg)
        fn(arg)
        fn(arg)
        fn(arg)
    return time.perf_counter_ns() - start


def _time_submit(submit: Callable[..., Any], fn: Callable[[Any], Any], arg: Any, n: int) -> int:
    steps = itertools.repeat(None, n // UNROLL)
    start = time.perf_counter_ns()
    for _ in steps:
        submit(fn, arg)
        submit(fn, arg)
        submit(fn, arg)
        submit(fn, arg)
        submit(fn, arg)
        submit(fn, arg)
        submit(fn, arg)
        submit(fn, arg)
        submit(fn, arg)
        submit(fn, arg)
    return time.perf_counter_ns() - start


def _caller_only(time_n: Callable[[int], int]) -> Callable[[int], int]:
    """time_n with background threads kept off the GIL (mostly) during the timed batch."""

    def timed(n: int) -> int:
        old = sys.getswitchinterval()
        sys.setswitchinterval(CALLER_ONLY_SWITCH_INTERVAL)
        try:
            return time_n(n)
        finally:
            sys.setswitchinterval(old)

    return timed


# --------------------------------------------------------------------------------------------
# The peers


def _wraps_passthrough(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def _wrapt_wrapper(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    return wrapped(*args, **kwargs)


# The two spellings of a wrapt pass-through.  ``FunctionWrapper`` is what ``@shadow`` builds on,
# so it is the baseline of the unsampled budget.
_wrapt_decorator = wrapt.decorator(_wrapt_wrapper)


def _laboratory(fn: Callable[..., Any]) -> Callable[..., Any]:
    # laboratory's own decorator: a new Experiment per call, control and candidate run inline
    # in random order, a Result compares them, publish() is the default no-op.
    decorated: Callable[..., Any] = laboratory.Experiment.decorator(candidate=fn)(fn)
    return decorated


class _PoolDrain:
    """Waits until every task submitted so far has finished, outside the timed region.

    One barrier task per worker: when all of them (and the caller) meet at the barrier, each
    worker has finished what it ran before, and the FIFO queue holds nothing older.
    """

    def __init__(self, pool: ThreadPoolExecutor, workers: int) -> None:
        self.pool = pool
        self.workers = workers

    def __call__(self) -> None:
        barrier = threading.Barrier(self.workers + 1)
        for _ in range(self.workers):
            self.pool.submit(barrier.wait, 60)
        barrier.wait(60)


def _flusher(decorated: Any) -> Callable[[], None]:
    experiment = decorated.shadow

    def drain() -> None:
        if not experiment.flush(60):
            raise RuntimeError(f"{experiment.name}: flush did not finish within 60 s")

    return drain


# --------------------------------------------------------------------------------------------
# Cases


@dataclass(eq=False)
class Case:
    name: str
    time_n: Callable[[int], int]  # n calls -> ns
    drain: Callable[[], None] | None = None  # after each timed batch, untimed
    wrapt_base: Case | None = None  # the rows its ratios are taken against (None: itself)
    pool_base: Case | None = None
    n: int = 0
    samples: list[float] = field(default_factory=list)  # ns per call, one per round
    drain_ns: int = 0  # time spent draining: the background's work, caller waiting
    drained_calls: int = 0

    def measure(self, n: int) -> float:
        """ns per call over n calls (n a multiple of UNROLL)."""
        if self.drain is None:
            return self.time_n(n) / n
        elapsed = 0
        done = 0
        while done < n:
            k = min(BATCH, n - done)
            elapsed += self.time_n(k)
            start = time.perf_counter_ns()
            self.drain()
            self.drain_ns += time.perf_counter_ns() - start
            self.drained_calls += k
            done += k
        return elapsed / n

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def ratio(self, base: Case | None) -> float:
        """Median over rounds of this sample / the base's sample of the same round."""
        other = self if base is None else base
        return statistics.median(a / b for a, b in zip(self.samples, other.samples, strict=True))


def build_cases(pool: ThreadPoolExecutor) -> tuple[list[Case], list[Any]]:
    wraps_f = _wraps_passthrough(f)
    wrapt_f = wrapt.FunctionWrapper(f, _wrapt_wrapper)
    wrapt_deco_f = _wrapt_decorator(f)
    lab_f = _laboratory(f)
    pool_drain = _PoolDrain(pool, POOL_WORKERS)
    sampled_options: dict[str, Any] = {"sample": 1.0, "sinks": [], "max_queue": 2 * BATCH}

    unsampled = shadow(candidate=f, name="bench-unsampled", sample=UNSAMPLED_RATE, sinks=[])(f)
    sampled_int = shadow(candidate=f, name="bench-sampled-int", **sampled_options)(f)
    sampled_dict = shadow(candidate=f, name="bench-sampled-dict", **sampled_options)(f)
    sampled_caller = shadow(candidate=f, name="bench-sampled-int-caller", **sampled_options)(f)
    experiments = [unsampled, sampled_int, sampled_dict, sampled_caller]

    cases: list[Case] = []
    for arg, label, sampled in ((42, "int", sampled_int), (PAYLOAD, "1 KB dict", sampled_dict)):

        def call(fn: Callable[[Any], Any], arg: Any = arg) -> Callable[[int], int]:
            return functools.partial(_time_call, fn, arg)

        wrapt_case = Case(f"{WRAPT} ({label})", call(wrapt_f))
        submit = functools.partial(_time_submit, pool.submit, f, arg)
        pool_case = Case(f"{POOL} ({label})", submit, drain=pool_drain)
        group = [
            Case(f"bare call ({label})", call(f)),
            Case(f"functools.wraps pass-through ({label})", call(wraps_f)),
            wrapt_case,
            Case(f"@wrapt.decorator pass-through ({label})", call(wrapt_deco_f)),
            Case(f"laboratory, candidate inline ({label})", call(lab_f)),
            pool_case,
        ]
        if arg is PAYLOAD:
            group.append(Case(f"copy.deepcopy alone ({label})", call(copy.deepcopy)))
        group += [
            Case(f"{UNSAMPLED} ({label})", call(unsampled)),
            Case(f"{SAMPLED} ({label})", call(sampled), drain=_flusher(sampled)),
        ]
        for case in group:
            case.wrapt_base, case.pool_base = wrapt_case, pool_case
        cases += group
        if arg is PAYLOAD:
            continue
        pool_caller = Case(
            f"{POOL} ({label}, {CALLER_ONLY})", _caller_only(submit), drain=pool_drain
        )
        sampled_caller_case = Case(
            f"{SAMPLED} ({label}, {CALLER_ONLY})",
            _caller_only(call(sampled_caller)),
            drain=_flusher(sampled_caller),
        )
        for case in (pool_caller, sampled_caller_case):
            case.wrapt_base, case.pool_base = wrapt_case, pool_caller
        cases += [pool_caller, sampled_caller_case]
    return cases, experiments


def _find(cases: list[Case], name: str) -> Case:
    return next(c for c in cases if c.name == name)


# --------------------------------------------------------------------------------------------
# Running


def calibrate(case: Case, target_ns: float, min_batches: int) -> None:
    """Warm the case up (threads started, caches filled) and pick n for ~target_ns a sample.

    A background case takes at least ``min_batches`` batches a sample: how much of the
    background's work lands inside one batch varies a lot, and several batches average it.
    """
    probe = BATCH if case.drain is not None else 1_000
    case.measure(probe)
    per_call = case.measure(probe)
    if case.drain is not None:
        case.n = max(min_batches, round(target_ns / per_call / BATCH)) * BATCH
    else:
        case.n = max(UNROLL, round(target_ns / per_call / UNROLL) * UNROLL)
    case.drain_ns = case.drained_calls = 0


def run(cases: list[Case], rounds: int, target_ms: float, min_batches: int) -> None:
    for case in cases:
        calibrate(case, target_ms * 1e6, min_batches)
    for r in range(rounds):
        # Round-robin, starting one case later each round, so no case always follows another.
        shift = r % len(cases)
        for case in cases[shift:] + cases[:shift]:
            case.samples.append(case.measure(case.n))


# --------------------------------------------------------------------------------------------
# Reporting


def report(cases: list[Case], experiments: list[Any], rounds: int, quick: bool) -> bool:
    wrapt_impl = "C extension" if wrapt.FunctionWrapper.__module__ == "_wrappers" else "pure Python"
    print("## Machine\n")
    print(f"- {_machine.summary()}")
    print(
        f"- wrapt {wrapt.__version__} ({wrapt_impl}), laboratory {laboratory.__version__}, "
        f"shadowdeco {shadowdeco.__version__}"
    )
    print(
        f"- {'quick' if quick else 'full'} run: {rounds} rounds, round-robin; "
        f"background cases in batches of {BATCH:,}, drained between batches"
    )
    size = len(json.dumps(PAYLOAD))
    print(f"- dict input: {len(PAYLOAD)} str -> float entries, {size:,} bytes as JSON\n")

    print(f"| case | ns/call median | ns/call min | ratio to {WRAPT} | ratio to {POOL} |")
    print("|---|---:|---:|---:|---:|")
    for case in cases:
        print(
            f"| {case.name} | {case.median:,.0f} | {min(case.samples):,.0f} "
            f"| {case.ratio(case.wrapt_base):.2f} | {case.ratio(case.pool_base):.2f} |"
        )
    print(
        "\nRatios are medians of per-round ratios against the row of the same input "
        f"(the {CALLER_ONLY} rows: against {POOL}, {CALLER_ONLY})."
    )
    print("Calls per sample: " + ", ".join(f"{c.n:,}" for c in cases) + " (in table order).\n")

    print("## Background work (after each batch, caller waiting; not on the live path)\n")
    for case in cases:
        if case.drained_calls:
            per_call = case.drain_ns / case.drained_calls / 1000
            print(f"- {case.name}: {per_call:.1f} µs per call to drain")
    print()

    ok = True
    print("## shadowdeco accounting\n")
    for decorated in experiments:
        # The unsampled experiment is never drained between batches: a rare sampled call of
        # it may still be in flight.
        if not decorated.shadow.flush(60):
            print(f"- {decorated.shadow.name}: flush did not finish within 60 s")
            ok = False
        stats = decorated.shadow.stats()
        print(
            f"- {decorated.shadow.name}: sampled {stats.sampled:,}, skipped {stats.skipped:,}, "
            f"emitted {stats.emitted:,}, dropped {stats.dropped_total} {dict(stats.dropped)}"
        )
        ok = ok and stats.dropped_total == 0 and stats.in_flight == 0
    print()

    print("## Budgets (DESIGN.md)\n")
    unsampled = _find(cases, f"{UNSAMPLED} (int)")
    sampled = _find(cases, f"{SAMPLED} (int)")
    sampled_caller = _find(cases, f"{SAMPLED} (int, {CALLER_ONLY})")
    for label, case, base, limit in (
        ("unsampled ≤ 1.25x wrapt pass-through", unsampled, unsampled.wrapt_base, 1.25),
        (
            "sampled, immutable input ≤ 0.4x ThreadPoolExecutor.submit",
            sampled,
            sampled.pool_base,
            0.4,
        ),
    ):
        assert base is not None
        ratio = case.ratio(base)
        print(
            f"- {'PASS' if ratio <= limit else 'FAIL'}: {label}: {ratio:.2f}x "
            f"(medians {case.median:,.0f} / {base.median:,.0f} ns)"
        )
    print(
        f"- (for reading, not a verdict) sampled vs submit, {CALLER_ONLY}: "
        f"{sampled_caller.ratio(sampled_caller.pool_base):.2f}x"
    )
    if not ok:
        print(
            "\nINVALID: sampled calls were dropped or not flushed; the sampled rows are not "
            "live-path costs."
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls (smoke run)")
    options = parser.parse_args(argv)
    # rounds, ms per sample, batches per sample of a background case
    rounds, target_ms, min_batches = (7, 3.0, 1) if options.quick else (31, 20.0, 4)

    started = time.perf_counter()
    pool = ThreadPoolExecutor(POOL_WORKERS)
    try:
        cases, experiments = build_cases(pool)
        run(cases, rounds, target_ms, min_batches)
        ok = report(cases, experiments, rounds, options.quick)
    finally:
        pool.shutdown(wait=True)
        shadowdeco.shutdown()
    print(f"\n(total {time.perf_counter() - started:.1f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
