"""Live throughput with a pure-Python CPU-bound candidate: thread runner vs process pool.

    python benchmarks/cpu_bound.py [--quick]

The live function and the candidate each burn ~2 ms of pure-Python CPU.  A candidate on a
shadowdeco worker thread competes with the live path for the GIL; in a
``shadowdeco.ProcessPool`` it runs on the other core.  Sampling is 100 %; the live caller is
one thread making calls back to back.  Ratios are to the undecorated function in the same
run (rounds interleaved; medians).  Budget (issue 7): with the process pool, live keeps
>= 0.9x its undecorated throughput on this 2-core machine.
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
    calls, rounds = (100, 3) if opts.quick else (400, 5)
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
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn(n)
            rates[name].append(calls / (time.perf_counter() - start))
            # Let the shadows of this batch finish outside the timed region.
            shadowdeco.flush(300)

    base = statistics.median(rates["undecorated"])
    print(f"## CPU-bound candidate ({calls} calls x {rounds} rounds, {os.cpu_count()} cores)\n")
    print("| case | live calls/s (median) | ratio to undecorated |")
    print("|---|---:|---:|")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median:,.0f} | {median / base:.2f}x |")
    for name, fn in (("thread", live_thread), ("process", live_process)):
        stats = fn.shadow.stats()
        print(
            f"\n- {name}: sampled {stats.sampled:,}, emitted {stats.emitted:,}, "
            f"dropped {dict(stats.dropped)}, candidate errors {stats.candidate_errors}"
        )
    ratio = statistics.median(rates["shadowdeco, ProcessPool(1)"]) / base
    verdict = "PASS" if ratio >= 0.9 else "FAIL"
    print(f"\n- {verdict}: live with a ProcessPool candidate >= 0.9x undecorated: {ratio:.2f}x")
    shadowdeco.shutdown(30)
    pool.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
