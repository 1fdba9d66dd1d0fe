"""Live throughput with a pure-Python CPU-bound candidate: thread runner vs process pool.

    python benchmarks/cpu_bound.py [--quick]

The live function and the candidate each burn ~2 ms of pure-Python CPU.  A candidate on a
shadowdeco worker thread competes with the live path for the GIL; in a
``shadowdeco.ProcessPool`` it runs on the other core.  Sampling is 100 %; the live caller is
one thread making calls back to back.  The cases run round-robin, one batch each per round,
the first case moving by one each round, so a noisy neighbour slows every case alike; each
ratio is the median of the per-round ratios to the undecorated batch of the same round.
Budget (issue 7): with the process pool, live keeps >= 0.9x its undecorated throughput on
this 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import shadowdeco
from shadowdeco import shadow


def burn(n: int) -> int:
    """~2 ms of pure-Python work for n=20_000 here."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    calls, rounds = (100, 3) if opts.quick else (400, 9)
    n = 20_000

    pool = shadowdeco.ProcessPool(1)
    pool.submit(burn, 10).result()  # start the worker before timing

    @shadow(candidate=burn, name="cpu-thread", sinks=[], max_queue=100_000)
    def live_thread(k: int) -> int:
        return burn(k)

    @shadow(candidate=burn, name="cpu-process", executor=pool, sinks=[], max_queue=100_000)
    def live_process(k: int) -> int:
        return burn(k)

    cases: dict[str, Callable[[int], Any]] = {
        "undecorated": burn,
        "shadowdeco, thread runner": live_thread,
        "shadowdeco, ProcessPool(1)": live_process,
    }
    rates: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases)
    for round_no in range(rounds):
        shift = round_no % len(order)
        for name in order[shift:] + order[:shift]:
            fn = cases[name]
            start = time.perf_counter()
            for _ in range(calls):
                fn(n)
            rates[name].append(calls / (time.perf_counter() - start))
            # Let the shadows of this batch finish outside the timed region.
            shadowdeco.flush(300)

    def ratio_of(name: str) -> float:
        return statistics.median(
            a / b for a, b in zip(rates[name], rates["undecorated"], strict=True)
        )

    print(f"## CPU-bound candidate ({calls} calls x {rounds} rounds, {os.cpu_count()} cores)\n")
    print("| case | live calls/s (median) | ratio to undecorated (median of rounds) |")
    print("|---|---:|---:|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):,.0f} | {ratio_of(name):.2f}x |")
    for name, fn in (("thread", live_thread), ("process", live_process)):
        stats = fn.shadow.stats()
        print(
            f"\n- {name}: sampled {stats.sampled:,}, emitted {stats.emitted:,}, "
            f"dropped {dict(stats.dropped)}, candidate errors {stats.candidate_errors}"
        )
    ratio = ratio_of("shadowdeco, ProcessPool(1)")
    verdict = "PASS" if ratio >= 0.9 else "FAIL"
    print(f"\n- {verdict}: live with a ProcessPool candidate >= 0.9x undecorated: {ratio:.2f}x")
    shadowdeco.shutdown(30)
    pool.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
