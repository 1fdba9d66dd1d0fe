"""Soak: many threads, many calls, a candidate that misbehaves at random; exact accounting.

    python benchmarks/soak.py [--threads 8] [--calls 1000000] [--seconds N]

Each of ``--threads`` threads makes up to ``--calls`` calls (or stops after ``--seconds``) to
a decorated function whose candidate picks a behaviour per call: ok, raise an Exception, raise
a BaseException, slow, hang past a short timeout, mutate its inputs, return an unserializable
value.  Results go to a JsonLines file in a temporary directory; ``max_queue`` is small, so
samples are dropped.  At the end it flushes and checks:

* every live call returned the right value and the caller's inputs were never changed;
* ``sampled == emitted + sum(dropped)``, nothing in flight, every call sampled;
* the file holds exactly one line per emitted result (less what the sink itself missed,
  counted in ``sink_drops``), no live call twice, and every ok candidate value equals the
  live value (the candidate saw the inputs as they were when the call began);
* the stats' candidate errors and timeouts equal the lines that say so; when the sink missed
  lines, the lines that say so are at most the counts, and short of them by no more than the
  lines missed in all.

It prints a summary and exits 1 on any violation.  ``make soak`` runs the full size;
``tests/reliability/test_soak.py`` runs a short one in ``make test``.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import random
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import shadowdeco
from shadowdeco import shadow, sinks

BEHAVIOURS: dict[str, float] = {
    "ok": 0.46,
    "raise": 0.12,
    "base_exception": 0.05,
    "slow": 0.10,
    "hang": 0.01,
    "mutate": 0.16,
    "unserializable": 0.10,
}

#: Ring of recent inputs per thread, re-checked later: a late mutation would show there.
RECHECK = 64


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8, help="calling threads (8)")
    parser.add_argument("--calls", type=int, default=1_000_000, help="calls per thread (1e6)")
    parser.add_argument("--seconds", type=float, default=None, help="stop calling after N s")
    parser.add_argument("--max-queue", type=int, default=200, help="experiment max_queue")
    parser.add_argument("--max-concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=0.05, help="candidate timeout (s)")
    parser.add_argument("--hang", type=float, default=0.15, help="how long a hang lasts (s)")
    parser.add_argument("--slow", type=float, default=0.001, help="how long slow is (s)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads < 1 or args.calls < 1:
        parser.error("--threads and --calls must be positive")
    if args.hang <= args.timeout:
        parser.error("--hang must be longer than --timeout")
    return args


class CandidateError(Exception):
    pass


class CandidateBaseError(BaseException):
    pass


def make_candidate(args: argparse.Namespace, tally: dict[str, itertools.count[int]]) -> Any:
    names = list(BEHAVIOURS)
    cumulative = list(itertools.accumulate(BEHAVIOURS.values()))
    choose = random.Random(args.seed).random
    lock = threading.Lock()
    pause = threading.Event()  # never set: waiting on it is how a candidate takes time

    def candidate(data: dict[str, Any]) -> Any:
        with lock:
            r = choose() * cumulative[-1]
        behaviour = names[next(i for i, c in enumerate(cumulative) if r < c)]
        next(tally[behaviour])
        value = data["x"]
        if behaviour == "raise":
            raise CandidateError(f"candidate failed on {value}")
        if behaviour == "base_exception":
            raise CandidateBaseError(value)
        if behaviour == "slow":
            pause.wait(args.slow)
        elif behaviour == "hang":
            pause.wait(args.hang)
        elif behaviour == "mutate":
            data["x"] = -1
            data["items"].append("candidate")
            data["items"][0] = None
        elif behaviour == "unserializable":
            return threading.Lock()
        return value

    return candidate


class Problems:
    """Violations found, from any thread (the first 50 are kept)."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, text: str) -> None:
        with self._lock:
            self.count += 1
            if len(self.found) < 50:
                self.found.append(text)


def call_from_threads(
    args: argparse.Namespace, predict: Any, problem: Problems
) -> tuple[int, float]:
    """Run the calling threads; every live value and input is checked. (calls, seconds)"""
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    made = [0] * args.threads

    def caller(tid: int) -> None:
        recent: collections.deque[tuple[int, dict[str, Any]]] = collections.deque()
        base = tid * args.calls
        for i in range(args.calls):
            if deadline is not None and not i % 1024 and time.monotonic() > deadline:
                return
            x = base + i
            data = {"x": x, "items": [x]}
            try:
                got = predict(data)
            except BaseException as exc:
                problem(f"thread {tid}: the caller got {exc!r}")
                return
            made[tid] += 1
            if got != x:
                problem(f"thread {tid}: live returned {got!r} for {x}")
            if data != {"x": x, "items": [x]}:
                problem(f"thread {tid}: the caller's inputs changed: {data!r}")
            recent.append((x, data))
            if len(recent) > RECHECK:
                old_x, old = recent.popleft()
                if old != {"x": old_x, "items": [old_x]}:
                    problem(f"thread {tid}: inputs changed later: {old!r}")

    started = time.perf_counter()
    threads = [threading.Thread(target=caller, args=(t,)) for t in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(made), time.perf_counter() - started


def check_stats(stats: shadowdeco.Stats, calls: int, problem: Problems) -> None:
    if stats.in_flight != 0:
        problem(f"in_flight is {stats.in_flight} after flush")
    if stats.sampled != stats.emitted + sum(stats.dropped.values()) + stats.in_flight:
        problem(f"stats do not add up: {stats}")
    if stats.sampled != calls or stats.skipped != 0:
        problem(f"sampled {stats.sampled} / skipped {stats.skipped} of {calls} calls")
    if stats.sink_errors or stats.compare_errors:
        problem(f"sink errors {stats.sink_errors}, compare errors {stats.compare_errors}")
    if stats.matched + stats.mismatched + stats.timeouts != stats.emitted:
        problem(f"matched + mismatched + timeouts != emitted: {stats}")
    if set(stats.dropped) - {"queue_full"}:
        problem(f"unexpected drop reasons: {dict(stats.dropped)}")


def check_file(path: str, stats: shadowdeco.Stats, problem: Problems) -> collections.Counter[str]:
    """Read every line back: one per emitted result, no call twice, the right inputs seen."""
    by_status: collections.Counter[str] = collections.Counter()
    seen: set[int] = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            live = record["live"]["value"]
            cand = record["candidate"]
            by_status[cand["status"]] += 1
            if live in seen:
                problem(f"live call {live} emitted twice")
            seen.add(live)
            value = cand["value"]
            if cand["status"] == "ok" and isinstance(value, int) and value != live:
                problem(f"candidate saw other inputs: {value} for live {live}")
    lines = sum(by_status.values())
    missed = sum(stats.sink_drops.values())
    if lines != stats.emitted - missed:
        problem(f"{lines} lines in the file for {stats.emitted} emitted ({missed} missed)")
    # Every error or timeout counted is a line, unless the sink missed it: with no line missed
    # the two agree; with some, a line may be missing, never one too many, and no more missing
    # in all than the sink missed.
    short = 0
    for status, counted in (("error", stats.candidate_errors), ("timeout", stats.timeouts)):
        found = by_status[status]
        if found > counted or (missed == 0 and found != counted):
            problem(f"{found} {status} lines, {counted} counted ({missed} lines missed)")
        short += max(0, counted - found)
    if missed and short > missed:  # (with none missed, the check above said it)
        problem(f"{short} error and timeout lines missing, but the sink missed only {missed}")
    return by_status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak; 0 when every check held, 1 otherwise."""
    args = parse(argv)
    tally: dict[str, itertools.count[int]] = {name: itertools.count() for name in BEHAVIOURS}
    problem = Problems()
    with tempfile.TemporaryDirectory(prefix="shadowdeco-soak-") as tmp:
        path = os.path.join(tmp, "soak.jsonl")

        @shadow(
            candidate=make_candidate(args, tally),
            name=f"soak-{os.getpid()}-{time.monotonic_ns()}",
            sinks=[sinks.JsonLines(path)],
            timeout=args.timeout,
            max_queue=args.max_queue,
            max_concurrency=args.max_concurrency,
        )
        def predict(data: dict[str, Any]) -> int:
            return data["x"]  # type: ignore[no-any-return]

        calls, elapsed = call_from_threads(args, predict, problem)
        if not predict.shadow.flush(120):
            problem(f"flush did not finish in 120 s: {predict.shadow.stats()}")
        stats = predict.shadow.stats()
        check_stats(stats, calls, problem)
        by_status = check_file(path, stats, problem)
        predict.shadow.close(10)

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    behaviours = {name: int(repr(c)[6:-1]) for name, c in tally.items()}
    rate = calls / max(elapsed, 1e-9)
    print(f"soak: {args.threads} threads, {calls:,} calls in {elapsed:.1f} s ({rate:,.0f} calls/s)")
    print(f"  peak RSS {peak_mib:.0f} MiB")
    print(f"  sampled {stats.sampled:,}  emitted {stats.emitted:,}  dropped {dict(stats.dropped)}")
    print(f"  in flight {stats.in_flight}  matched {stats.matched:,}", end="")
    print(f"  mismatched {stats.mismatched:,}")
    print(f"  candidate errors {stats.candidate_errors:,}  timeouts {stats.timeouts:,}")
    print(f"  sink drops {dict(stats.sink_drops)}  sink errors {stats.sink_errors}")
    print(f"  lines {sum(by_status.values()):,} by candidate status {dict(by_status)}")
    print(f"  candidate behaviours run {behaviours}")
    if problem.count:
        print(f"FAIL: {problem.count} violation(s)", file=sys.stderr)
        for text in problem.found:
            print(f"  {text}", file=sys.stderr)
        return 1
    print("OK: live values right, accounting exact")
    return 0


if __name__ == "__main__":
    code = main()
    shadowdeco.shutdown(10)
    sys.exit(code)
