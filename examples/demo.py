"""A live model and a candidate in shadow mode, end to end (``python examples/demo.py``).

The live model answers every call; the candidate runs in the background on the same inputs,
and each pair of answers lands in a sink.  At the end we read the paired results and the
experiment's counters: does the candidate work, how does it differ, how slow is it?
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import shadowdeco
from shadowdeco import compare, shadow, sinks


def churn_v2(features: dict[str, float]) -> str:
    """The candidate: a new threshold, a bit slower, and it chokes on a negative tenure."""
    time.sleep(0.002)  # a heavier model
    if features["tenure"] < 0:
        raise ValueError("tenure must be >= 0")
    score = 0.7 * features["usage_drop"] + 0.3 * (1 - min(features["tenure"], 10) / 10)
    return "churn" if score > 0.45 else "stay"


memory = sinks.Memory()


@shadow(
    candidate=churn_v2,
    name="churn-v2",
    sinks=[memory],
    compare=compare.equal,
    timeout=1.0,
    key=lambda features: features["customer"],
)
def churn_v1(features: dict[str, float]) -> str:
    """The live model."""
    score = 0.6 * features["usage_drop"] + 0.4 * (1 - min(features["tenure"], 10) / 10)
    return "churn" if score > 0.5 else "stay"


def main() -> None:
    rng = random.Random(7)
    customers = [
        {
            "customer": f"c{i:03d}",
            "usage_drop": rng.random(),
            "tenure": rng.choice([-1, *range(12)]),
        }
        for i in range(200)
    ]

    def serve(batch: list[dict[str, float]]) -> None:
        for features in batch:
            churn_v1(features)  # callers get v1's answer, at v1's speed

    threads = [threading.Thread(target=serve, args=(customers[i::4],)) for i in range(4)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    served = time.perf_counter() - started
    shadowdeco.flush(10)

    results = memory.results
    stats = churn_v1.shadow.stats()
    print(f"\nserved {len(customers)} calls from 4 threads in {served * 1000:.0f} ms")
    print(
        f"sampled={stats.sampled} emitted={stats.emitted} dropped={dict(stats.dropped)} "
        f"in_flight={stats.in_flight}"
    )
    print(
        f"agreement: {stats.matched}/{stats.matched + stats.mismatched} "
        f"candidate errors: {stats.candidate_errors} timeouts: {stats.timeouts}"
    )
    errors = Counter(r.candidate.error[0] for r in results if r.candidate.error)
    print(f"candidate errors by type: {dict(errors)}")
    live_ms = sorted((r.live.duration or 0) * 1000 for r in results)
    cand_ms = sorted((r.candidate.duration or 0) * 1000 for r in results)
    print(
        f"p50 latency: live {live_ms[len(live_ms) // 2]:.3f} ms, "
        f"candidate {cand_ms[len(cand_ms) // 2]:.3f} ms"
    )
    pairs = Counter(
        (r.live.value, r.candidate.value) for r in results if r.candidate.status == "ok"
    )
    print("live vs candidate:")
    for (live, cand), n in sorted(pairs.items()):
        print(f"  {live:>5} -> {cand:<5} {n}")
    print("one result as JSON:", results[0].to_dict())
    assert stats.sampled == stats.emitted + sum(stats.dropped.values()) + stats.in_flight


if __name__ == "__main__":
    main()
