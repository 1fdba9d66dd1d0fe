"""Results per second from decorated calls to a JSON Lines file, beside a raw json.dumps loop.

    python benchmarks/sinks.py            # full run (make bench), under 3 minutes
    python benchmarks/sinks.py --quick    # a smoke run, under 20 seconds

What one run measures, each case on the same N results:

* **end to end** (the DESIGN budget): N calls of a trivial decorated function (trivial
  candidate, ``sample=1.0``) with a ``sinks.JsonLines`` sink in a temporary directory, timed from
  the first call until ``shadowdeco.flush()`` returns, i.e. until every result is written to
  the file; from 1, 2 and 4 calling threads;
* **end to end, no sink** (``sinks=[]``) and **with a no-op sink** (a function that does
  nothing): the same calls, to split the sink's share into delivery (a thread and a queue per
  sink) and the JsonLines work itself;
* **JsonLines alone**: ``emit`` of N pre-built results in a loop, then ``flush()``;
* **raw loop**: ``json.dumps(d) + "\\n"`` written to a file for N dicts
  (``result.to_dict()`` of results captured beforehand with a ``sinks.Memory``).

The last two cycle through 1,000 captured results (N lines in all): holding N of them would
leave hundreds of thousands of objects alive in this process, which every full pass of the
garbage collector walks, and the end-to-end cases, which allocate a few objects per result,
would pay for the harness's data (up to a third of their time, measured).

Every experiment has ``max_queue`` and ``configure(max_pending_results=...)`` at N, so nothing is
dropped however far the callers run ahead of the background: the run measures throughput, not
the drop policy.  After each round the file must hold exactly N lines, and at the end every
experiment's stats must show no drop, no sink drop and no sink error; otherwise the script exits 1.

The cases run round-robin (one sample of each per round, the starting case moving by one each
round), so a noisy neighbour slows all of them alike; rows report the median over the rounds,
and the ratio to the raw loop is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import _machine

import shadowdeco
from shadowdeco import ShadowResult, shadow, sinks

BUDGET = 50_000  # results per second end to end, no drops (DESIGN.md)
CAPTURED = 1_000  # results captured for the raw loop and JsonLines alone, cycled to N

RAW = "raw loop: json.dumps + write"
E2E = "end to end → JsonLines"
NO_SINK = "end to end, no sink (sinks=[])"
NO_OP = "end to end, a no-op sink"
ALONE = "JsonLines alone: emit of N results, then flush"


def live(x: Any) -> Any:
    return x


def candidate(x: Any) -> Any:
    return x


def discard(result: ShadowResult) -> None:
    """A sink that does nothing: what is left is the cost of delivery itself."""


# --------------------------------------------------------------------------------------------
# Accounting, across the rounds: every experiment is checked before it is closed


@dataclass
class Accounting:
    sampled: int = 0
    emitted: int = 0
    lines: int = 0
    problems: list[str] = field(default_factory=list)

    def check_experiment(self, decorated: Any, n: int) -> None:
        stats = decorated.shadow.stats()
        name = decorated.shadow.name
        self.sampled += stats.sampled
        self.emitted += stats.emitted
        if stats.sampled != n or stats.emitted != n:
            self.problems.append(f"{name}: sampled {stats.sampled}, emitted {stats.emitted}")
        if stats.dropped_total or stats.sink_errors or sum(stats.sink_drops.values()):
            self.problems.append(
                f"{name}: dropped {dict(stats.dropped)}, sink_drops {dict(stats.sink_drops)}, "
                f"sink_errors {stats.sink_errors}"
            )

    def check_file(self, path: str, n: int, what: str) -> None:
        with open(path, "rb") as file:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))
        self.lines += lines
        if lines != n:
            self.problems.append(f"{what}: {lines:,} lines in {path}, expected {n:,}")


# --------------------------------------------------------------------------------------------
# Cases: each sample runs N results and returns the seconds it took


@dataclass(eq=False)
class Case:
    name: str
    run: Callable[[Case], float]  # one sample: N results, seconds taken
    samples: list[float] = field(default_factory=list)  # results per second, one per round
    call_shares: list[float] = field(default_factory=list)  # end to end: calls / total time

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def ratio(self, base: Case) -> float:
        return statistics.median(a / b for a, b in zip(self.samples, base.samples, strict=True))


class Bench:
    def __init__(self, n: int, directory: str, accounting: Accounting) -> None:
        self.n = n
        self.directory = directory
        self.accounting = accounting
        self.counter = 0
        self.results, self.dicts = self._capture()

    def _path(self, label: str) -> str:
        self.counter += 1
        return os.path.join(self.directory, f"{label}-{self.counter}.jsonl")

    def _capture(self) -> tuple[list[ShadowResult], list[dict[str, Any]]]:
        """CAPTURED real results of the same decorated function, through a Memory sink."""
        memory = sinks.Memory()
        count = min(self.n, CAPTURED)
        decorated: Any = shadow(
            candidate=candidate,
            name="bench-sinks-capture",
            sample=1.0,
            max_queue=count,
            sinks=[memory],
        )(live)
        for i in range(count):
            decorated(i)
        if not shadowdeco.flush(120):
            raise RuntimeError("capture: flush did not finish within 120 s")
        self.accounting.check_experiment(decorated, count)
        decorated.shadow.close()
        results = memory.results
        return results, [r.to_dict() for r in results]

    # -- the cases -----------------------------------------------------------------------------

    def raw_loop(self) -> float:
        path = self._path("raw")
        dicts = itertools.islice(itertools.cycle(self.dicts), self.n)
        start = time.perf_counter()
        with open(path, "w", encoding="utf-8") as file:
            write = file.write
            for d in dicts:
                write(json.dumps(d) + "\n")
        elapsed = time.perf_counter() - start
        self.accounting.check_file(path, self.n, RAW)
        os.remove(path)
        return elapsed

    def sink_alone(self) -> float:
        path = self._path("alone")
        sink = sinks.JsonLines(path)
        emit = sink.emit
        results = itertools.islice(itertools.cycle(self.results), self.n)
        start = time.perf_counter()
        for result in results:
            emit(result)
        sink.flush()
        elapsed = time.perf_counter() - start
        sink.close()
        if sink.lines_written != self.n or sink.lines_lost:
            self.accounting.problems.append(
                f"{ALONE}: lines_written {sink.lines_written}, lines_lost {sink.lines_lost}"
            )
        self.accounting.check_file(path, self.n, ALONE)
        os.remove(path)
        return elapsed

    def end_to_end(self, threads: int, *, sink: str, case: Case) -> float:
        """N decorated calls from ``threads`` threads, until shadowdeco.flush() returns.

        ``sink``: "jsonl" (a JsonLines file), "no-op" (:func:`discard`) or "none".
        """
        path: str | None = None
        sink_list: list[Any] = []
        if sink == "jsonl":
            path = self._path(f"e2e-{threads}t")
            sink_list = [sinks.JsonLines(path)]
        elif sink == "no-op":
            sink_list = [discard]
        self.counter += 1
        decorated: Any = shadow(
            candidate=candidate,
            name=f"bench-sinks-{self.counter}",
            sample=1.0,
            max_queue=self.n,
            sinks=sink_list,
        )(live)
        per_thread = self.n // threads
        barrier = threading.Barrier(threads)

        def calls(first: int) -> None:
            barrier.wait(60)
            for i in range(first, first + per_thread):
                decorated(i)

        workers = [
            threading.Thread(target=calls, args=(k * per_thread,)) for k in range(threads - 1)
        ]
        for worker in workers:
            worker.start()
        if threads > 1:
            # The main thread is one of the callers; it starts the clock once all are ready.
            barrier.wait(60)
        start = time.perf_counter()
        for i in range((threads - 1) * per_thread, self.n):
            decorated(i)
        for worker in workers:
            worker.join()
        called = time.perf_counter()
        if not shadowdeco.flush(120):
            raise RuntimeError(f"{decorated.shadow.name}: flush did not finish within 120 s")
        elapsed = time.perf_counter() - start
        case.call_shares.append((called - start) / elapsed)
        self.accounting.check_experiment(decorated, self.n)
        decorated.shadow.close()  # also closes its JsonLines sink: no other experiment uses it
        if path is not None:
            self.accounting.check_file(path, self.n, case.name)
            os.remove(path)
        return elapsed


def build_cases(bench: Bench) -> list[Case]:
    cases = [
        Case(RAW, lambda _case: bench.raw_loop()),
        Case(ALONE, lambda _case: bench.sink_alone()),
        Case(NO_SINK, lambda case: bench.end_to_end(1, sink="none", case=case)),
        Case(NO_OP, lambda case: bench.end_to_end(1, sink="no-op", case=case)),
    ]
    for threads in (1, 2, 4):
        label = f"{E2E}, {threads} calling thread{'s' if threads > 1 else ''}"
        cases.append(Case(label, functools.partial(_end_to_end, bench, threads)))
    return cases


def _end_to_end(bench: Bench, threads: int, case: Case) -> float:
    return bench.end_to_end(threads, sink="jsonl", case=case)


def run(cases: list[Case], rounds: int, n: int) -> None:
    for case in cases:  # warm-up: threads started, caches and allocator filled
        case.run(case)
        case.call_shares.clear()
    for r in range(rounds):
        shift = r % len(cases)
        for case in cases[shift:] + cases[:shift]:
            case.samples.append(n / case.run(case))


# --------------------------------------------------------------------------------------------
# Reporting


def report(cases: list[Case], bench: Bench, rounds: int, quick: bool) -> bool:
    line_bytes = statistics.mean(len(json.dumps(d)) + 1 for d in bench.dicts[:1000])
    print("## Machine\n")
    print(f"- {_machine.summary()}")
    print(f"- shadowdeco {shadowdeco.__version__}")
    print(
        f"- {'quick' if quick else 'full'} run: {rounds} rounds, round-robin, "
        f"N = {bench.n:,} results per sample (~{line_bytes:.0f} bytes a line)\n"
    )

    raw = next(c for c in cases if c.name == RAW)
    print("| case | results/s median | min | max | ratio to raw loop |")
    print("|---|---:|---:|---:|---:|")
    for case in cases:
        print(
            f"| {case.name} | {case.median:,.0f} | {min(case.samples):,.0f} "
            f"| {max(case.samples):,.0f} | {case.ratio(raw):.2f} |"
        )
    print("\nRatios are medians of per-round ratios to the raw loop.\n")

    print("End to end: share of the time until the callers' last call returned (median);")
    print("the rest is waiting in shadowdeco.flush() for the background to finish.\n")
    for case in cases:
        if case.call_shares:
            print(f"- {case.name}: {statistics.median(case.call_shares):.0%}")
    print()

    accounting = bench.accounting
    ok = not accounting.problems
    print("## Accounting\n")
    print(
        f"- sampled {accounting.sampled:,}, emitted {accounting.emitted:,}, "
        f"lines checked on disk {accounting.lines:,}"
    )
    for problem in accounting.problems:
        print(f"- PROBLEM: {problem}")
    if ok:
        print("- no drop, no sink drop, no sink error; every file held exactly N lines")
    print()

    print("## Budget (DESIGN.md)\n")
    e2e = next(c for c in cases if c.name.startswith(E2E))
    verdict = "PASS" if ok and e2e.median >= BUDGET else "FAIL"
    print(
        f"- {verdict}: end to end to a JSONL file ≥ {BUDGET:,} results/s with no drops: "
        f"{e2e.median:,.0f} results/s (1 calling thread, median), "
        f"{'no drops' if ok else 'DROPS OR ERRORS'}; {e2e.ratio(raw):.2f}x the raw loop"
    )
    if not ok:
        print("\nINVALID: results were dropped or lost; the rates above are not comparable.")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and results")
    options = parser.parse_args(argv)
    rounds, n = (5, 6_000) if options.quick else (9, 30_000)

    started = time.perf_counter()
    # Bounds at N: the callers may run ahead of the background by a whole sample.
    shadowdeco.configure(max_pending_results=n)
    directory = tempfile.mkdtemp(prefix="shadowdeco-bench-sinks-")
    try:
        bench = Bench(n, directory, Accounting())
        cases = build_cases(bench)
        run(cases, rounds, n)
        ok = report(cases, bench, rounds, options.quick)
    finally:
        shadowdeco.shutdown()
        shutil.rmtree(directory, ignore_errors=True)
    print(f"\n(total {time.perf_counter() - started:.1f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
