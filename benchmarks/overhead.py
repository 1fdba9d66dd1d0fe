"""Per-call overhead of ``@shadow`` beside its peers, measured in one run on one machine.

    python benchmarks/overhead.py            # full run (make bench), under 3 minutes
    python benchmarks/overhead.py --quick    # a smoke run, under 20 seconds

Every case calls the same trivial function ``f(x): return x`` (with an int, then with a ~1 KB
dict) through one wrapper: a bare call, ``functools.wraps`` and ``wrapt`` pass-throughs,
``laboratory`` (the Python port of GitHub's Scientist, which runs the candidate inline),
``ThreadPoolExecutor.submit``, and ``@shadow`` unsampled and sampled.

How it measures, and why:

* calls are unrolled ten to a loop iteration, so loop overhead is ~1/10 of a loop step per call;
* the cases run round-robin, one sample of each per round, so a noisy neighbour on a shared
  machine hits every case alike; each row reports the median (and min) over the rounds;
* sampled ``@shadow`` calls and ``submit`` hand work to background threads: they are timed in
  batches that fit the queue (``max_queue`` is set above the batch), and the queue is drained
  between batches, outside the timed region, so no call is dropped and nothing grows unbounded.
  Only the caller's cost is timed; the background threads still compete for the GIL during a
  batch, as they would in production.

The budgets from DESIGN.md are ratios within this one run, never absolute times.
"""

from __future__ import annotations

import argparse
import copy
import functools
import itertools
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import laboratory
import wrapt

import shadowdeco
from shadowdeco import shadow

UNROLL = 10  # calls per loop iteration in the timed loops below
BATCH = 2_000  # calls per timed batch for the cases that hand work to a background thread
POOL_WORKERS = 4  # ThreadPoolExecutor(4) and shadowdeco's default max_concurrency

# A model's feature dict: 32 str -> float entries, about 1 KB as JSON.
PAYLOAD = {f"feature_{i:02d}": 1.0 / (i + 7) + i for i in range(32)}

WRAPT = "wrapt.FunctionWrapper pass-through"
POOL = f"ThreadPoolExecutor({POOL_WORKERS}).submit"
UNSAMPLED = "shadowdeco unsampled"
SAMPLED = "shadowdeco sampled"


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


# --------------------------------------------------------------------------------------------
# Cases


@dataclass
class Case:
    name: str
    group: str  # "int" or "dict": ratios compare within a group
    time_n: Callable[[int], int]  # n calls -> ns
    drain: Callable[[], None] | None = None  # after each timed batch, untimed
    n: int = 0
    samples: list[float] = field(default_factory=list)  # ns per call, one per round
    drain_ns: int = 0  # total time spent draining (background work)
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


def _flusher(decorated: Any) -> Callable[[], None]:
    experiment = decorated.shadow

    def drain() -> None:
        if not experiment.flush(60):
            raise RuntimeError(f"{experiment.name}: flush did not finish within 60 s")

    return drain


def build_cases(pool: ThreadPoolExecutor) -> tuple[list[Case], list[Any]]:
    wraps_f = _wraps_passthrough(f)
    wrapt_f = wrapt.FunctionWrapper(f, _wrapt_wrapper)
    wrapt_deco_f = _wrapt_decorator(f)
    lab_f = _laboratory(f)
    pool_drain = _PoolDrain(pool, POOL_WORKERS)
    submit = pool.submit

    unsampled = shadow(candidate=f, name="bench-unsampled", sample=0.0, sinks=[])(f)
    sampled = shadow(candidate=f, name="bench-sampled", sample=1.0, sinks=[], max_queue=2 * BATCH)(
        f
    )
    experiments = [unsampled, sampled]

    cases: list[Case] = []
    for group, arg in (("int", 42), ("dict", PAYLOAD)):
        label = "int" if group == "int" else "1 KB dict"

        def call(fn: Callable[[Any], Any], arg: Any = arg) -> Callable[[int], int]:
            return functools.partial(_time_call, fn, arg)

        cases += [
            Case(f"bare call ({label})", group, call(f)),
            Case(f"functools.wraps pass-through ({label})", group, call(wraps_f)),
            Case(f"{WRAPT} ({label})", group, call(wrapt_f)),
            Case(f"@wrapt.decorator pass-through ({label})", group, call(wrapt_deco_f)),
            Case(f"laboratory, candidate inline ({label})", group, call(lab_f)),
            Case(
                f"{POOL} ({label})",
                group,
                functools.partial(_time_submit, submit, f, arg),
                drain=pool_drain,
            ),
        ]
        if group == "dict":
            cases.append(Case(f"copy.deepcopy alone ({label})", group, call(copy.deepcopy)))
        cases += [
            Case(f"{UNSAMPLED} ({label})", group, call(unsampled)),
            Case(f"{SAMPLED} ({label})", group, call(sampled), drain=_flusher(sampled)),
        ]
    return cases, experiments


def _find(cases: list[Case], prefix: str, group: str) -> Case:
    return next(c for c in cases if c.group == group and c.name.startswith(prefix))


# --------------------------------------------------------------------------------------------
# Running


def calibrate(case: Case, target_ns: float) -> None:
    """Warm the case up (threads started, caches filled) and pick n for ~target_ns a sample."""
    probe = BATCH if case.drain is not None else 1_000
    case.measure(probe)
    per_call = case.measure(probe)
    if case.drain is not None:
        batches = max(1, round(target_ns / per_call / BATCH))
        case.n = batches * BATCH
    else:
        case.n = max(UNROLL, round(target_ns / per_call / UNROLL) * UNROLL)
    case.drain_ns = case.drained_calls = 0


def run(cases: list[Case], rounds: int, target_ms: float) -> None:
    for case in cases:
        calibrate(case, target_ms * 1e6)
    for r in range(rounds):
        # Round-robin, starting one case later each round, so no case always follows another.
        shift = r % len(cases)
        for case in cases[shift:] + cases[:shift]:
            case.samples.append(case.measure(case.n))


# --------------------------------------------------------------------------------------------
# Reporting


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _paired_ratio(a: Case, b: Case) -> float:
    """Median of per-round ratios: each round's two samples ran moments apart."""
    return statistics.median(x / y for x, y in zip(a.samples, b.samples, strict=True))


def report(cases: list[Case], experiments: list[Any], rounds: int, quick: bool) -> bool:
    wrapt_impl = "C extension" if wrapt.FunctionWrapper.__module__ == "_wrappers" else "pure Python"
    print("## Machine\n")
    print(f"- nproc: {os.cpu_count()}; CPU: {_cpu_model()}")
    print(
        f"- Python {platform.python_version()} ({platform.python_implementation()}), {sys.platform}"
    )
    print(
        f"- wrapt {wrapt.__version__} ({wrapt_impl}), laboratory {laboratory.__version__}, ", end=""
    )
    print(f"shadowdeco {shadowdeco.__version__}")
    mode = "quick" if quick else "full"
    print(f"- {mode} run: {rounds} rounds, round-robin; batches of {BATCH} for background cases")
    print(
        f"- payload: {len(PAYLOAD)}-entry str -> float dict, {len(json.dumps(PAYLOAD))} B as JSON"
    )
    print()

    print(f"| case | ns/call median | ns/call min | ratio to {WRAPT} | ratio to {POOL} |")
    print("|---|---:|---:|---:|---:|")
    for case in cases:
        wrapt_case = _find(cases, WRAPT, case.group)
        pool_case = _find(cases, POOL, case.group)
        print(
            f"| {case.name} | {case.median:,.0f} | {min(case.samples):,.0f} "
            f"| {case.median / wrapt_case.median:.2f} | {case.median / pool_case.median:.2f} |"
        )
    print()
    print(
        "Calls per sample: "
        + ", ".join(f"{c.name.split(' (')[0]} ({c.group}) {c.n:,}" for c in cases)
    )
    print()

    print("## Background work (not on the live path; drain time after each batch)\n")
    for case in cases:
        if case.drained_calls:
            per_call = case.drain_ns / case.drained_calls
            print(f"- {case.name}: {per_call / 1000:.1f} µs per call to drain")
    print()

    ok = True
    print("## Shadowdeco accounting\n")
    for decorated in experiments:
        stats = decorated.shadow.stats()
        dropped = dict(stats.dropped)
        print(
            f"- {decorated.shadow.name}: sampled {stats.sampled:,}, skipped {stats.skipped:,}, "
            f"emitted {stats.emitted:,}, dropped {stats.dropped_total} {dropped or ''}"
        )
        if stats.dropped_total:
            ok = False
    print()

    print("## Budgets (DESIGN.md)\n")
    unsampled = _find(cases, UNSAMPLED, "int")
    sampled = _find(cases, SAMPLED, "int")
    wrapt_int = _find(cases, WRAPT, "int")
    pool_int = _find(cases, POOL, "int")
    for label, case, base, limit in (
        ("unsampled call ≤ 1.25x wrapt pass-through", unsampled, wrapt_int, 1.25),
        ("sampled call, immutable input ≤ 0.4x ThreadPoolExecutor.submit", sampled, pool_int, 0.4),
    ):
        ratio = case.median / base.median
        verdict = "PASS" if ratio <= limit else "FAIL"
        print(
            f"- {verdict}: {label}: {ratio:.2f}x "
            f"({case.median:,.0f} / {base.median:,.0f} ns; "
            f"median of per-round ratios {_paired_ratio(case, base):.2f}x)"
        )
    if not ok:
        print("\nINVALID: sampled calls were dropped; the sampled rows are not live-path costs.")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and iterations")
    options = parser.parse_args(argv)
    rounds, target_ms = (5, 6.0) if options.quick else (25, 60.0)

    started = time.perf_counter()
    pool = ThreadPoolExecutor(POOL_WORKERS)
    try:
        cases, experiments = build_cases(pool)
        run(cases, rounds, target_ms)
        ok = report(cases, experiments, rounds, options.quick)
    finally:
        pool.shutdown(wait=True)
        shadowdeco.shutdown()
    print(f"\n(total {time.perf_counter() - started:.1f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
