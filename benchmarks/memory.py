"""Memory and drop accounting of 1,000,000 sampled calls against a candidate that hangs forever.

    python benchmarks/memory.py                    # full run (make bench): 1,000,000 calls
    python benchmarks/memory.py --quick            # a smoke run: 100,000 calls
    python benchmarks/memory.py --calls 300000     # any number of calls

The live function is ``def live(x): return x``, decorated with ``@shadow(sample=1.0,
max_concurrency=4, max_queue=1000, timeout=None, sinks=[])`` and a candidate that blocks forever
on an ``Event`` that is never set.  The first four sampled calls take the four worker threads
for good (the lane starts with one; the timer adds one each time every running candidate has
been stuck for ten switch intervals, 50 ms: the run waits for the four before it goes on); the
next 1,000 wait in the queue; every later call is dropped as ``queue_full`` on the live path,
before its inputs are copied.

The bound: what shadowdeco holds is ``max_concurrency + max_queue`` admitted calls (their
``Job``, the snapshot of their inputs, a copy of the caller's ``contextvars``), so
O(max_concurrency + max_queue) snapshots of inputs, independent of the number of calls.  The run
checks it twice, each in a fresh subprocess so that its peak RSS is its own:

* with an int input (a new int object every call) and with a fresh ~1 KB dict every call
  (32 ``str -> float`` entries, as in ``overhead.py``): the memory held grows with the input's
  size, not with the number of calls;
* with ``tracemalloc`` on (Python allocations: current and peak) and off (the process's RSS:
  ``VmRSS`` and its high-water mark ``VmHWM`` from ``/proc/self/status``, the same as
  ``ru_maxrss``; ``tracemalloc`` itself costs memory and time, so RSS is read without it).

At each checkpoint (10,000, 100,000 and 1,000,000 calls, those below ``--calls``, then
``--calls`` itself) the counters must be exact: ``sampled == calls``, ``in_flight ==
max_queue + max_concurrency``, ``emitted == 0`` and ``dropped == {"queue_full": calls -
(max_queue + max_concurrency)}``.  The script exits 1 if they are not, or if the traced peak
grows by more than 256 KB from the first checkpoint to the last.  That needs two checkpoints:
``--calls`` must be above the first one, 10,000 (with one, the check would compare it with
itself and always pass).  Each child process has a generous timeout (10 minutes, plus 100 µs a
call; a traced call takes ~15 µs here), so a hung child fails the run instead of stalling it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
import tracemalloc
from typing import Any

import _machine

import shadowdeco
from shadowdeco import shadow

MAX_CONCURRENCY = 4
MAX_QUEUE = 1000
ADMITTED = MAX_QUEUE + MAX_CONCURRENCY  # running + waiting: what is ever held
CHECKPOINTS = (10_000, 100_000, 1_000_000)  # the first one must be below --calls: see above
PEAK_SLACK = 256 * 1024  # bytes of traced-peak growth tolerated after the first checkpoint

# A model's feature dict: 32 str -> float entries, about 1 KB as JSON (as in overhead.py).
PAYLOAD = {f"feature_{i:02d}": 1.0 / (i + 7) + i for i in range(32)}

_NEVER = threading.Event()
_ENTERED = threading.Semaphore(0)


def hanging(x: Any) -> Any:
    _ENTERED.release()
    _NEVER.wait()
    return x


def live(x: Any) -> Any:
    return x


# --------------------------------------------------------------------------------------------
# The child: one input kind, tracemalloc on or off


def _status() -> dict[str, int]:
    """VmRSS and VmHWM in bytes (from /proc/self/status; ru_maxrss where it is missing)."""
    found: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    found[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    if "VmHWM" not in found:
        found["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        found.setdefault("VmRSS", found["VmHWM"])
    return found


def child(kind: str, traced: bool, calls: int) -> dict[str, Any]:
    if traced:
        tracemalloc.start()
    fn = shadow(
        candidate=hanging,
        name=f"memory-{kind}",
        sample=1.0,
        max_concurrency=MAX_CONCURRENCY,
        max_queue=MAX_QUEUE,
        timeout=None,
        sinks=[],
    )(live)
    exp = fn.shadow
    payload = PAYLOAD

    def snapshot(done: int, elapsed: float) -> dict[str, Any]:
        stats = exp.stats()
        point: dict[str, Any] = {
            "calls": done,
            "seconds": elapsed,
            "sampled": stats.sampled,
            "emitted": stats.emitted,
            "dropped": dict(stats.dropped),
            "in_flight": stats.in_flight,
            **_status(),
        }
        if traced:
            point["traced_current"], point["traced_peak"] = tracemalloc.get_traced_memory()
        return point

    before = snapshot(0, 0.0)
    points = []
    # The first calls take every worker for good (added by the timer as each one is stuck).
    for i in range(MAX_CONCURRENCY):
        fn(i)
    if not all(_ENTERED.acquire(timeout=30) for _ in range(MAX_CONCURRENCY)):
        raise RuntimeError(f"{MAX_CONCURRENCY} workers did not all start within 30 s")
    done = MAX_CONCURRENCY
    elapsed = 0.0
    for upto in sorted({c for c in CHECKPOINTS if c < calls} | {calls}):
        start = time.perf_counter()
        if kind == "int":
            for i in range(done, upto):
                fn(i)  # a new int object each call (past 256)
        else:
            for _ in range(done, upto):
                fn(dict(payload))  # a fresh ~1 KB dict each call
        elapsed += time.perf_counter() - start
        done = upto
        points.append(snapshot(done, elapsed))
    shadowdeco.shutdown(0.1)  # the hung calls are dropped as "shutdown"; workers are daemons
    return {"kind": kind, "traced": traced, "before": before, "points": points}


# --------------------------------------------------------------------------------------------
# The parent: run the children, check, print


def _exact(point: dict[str, Any]) -> bool:
    calls = point["calls"]
    return (
        point["sampled"] == calls
        and point["emitted"] == 0
        and point["in_flight"] == ADMITTED
        and point["dropped"] == {"queue_full": calls - ADMITTED}
        and point["sampled"]
        == point["emitted"] + sum(point["dropped"].values()) + point["in_flight"]
    )


def _mb(n: float) -> str:
    return f"{n / 2**20:.2f}"


def _child_timeout(calls: int) -> float:
    """Seconds a child may take: generous (a traced call takes ~15 µs here), but bounded."""
    return 600 + calls * 100e-6


def _run_child(kind: str, traced: bool, calls: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, "--calls", str(calls)]
    if traced:
        command.append("--traced")
    out = subprocess.run(
        command, check=True, capture_output=True, text=True, timeout=_child_timeout(calls)
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--calls", type=int, default=None, help="sampled calls (1,000,000)")
    parser.add_argument("--quick", action="store_true", help="100,000 calls (smoke run)")
    parser.add_argument("--child", choices=("int", "dict"), help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    calls = options.calls or (100_000 if options.quick else 1_000_000)
    if calls <= CHECKPOINTS[0]:
        # One checkpoint only: the flatness check would compare it with itself.
        parser.error(
            f"--calls must be above {CHECKPOINTS[0]:,}, the first checkpoint: the memory is "
            "checked flat between it and a later one"
        )
    if options.child:
        print(json.dumps(child(options.child, options.traced, calls)))
        return 0

    started = time.perf_counter()
    print("## Memory\n")
    print(
        f"- nproc: {os.cpu_count()}; {_machine.python()} on {sys.platform}; "
        f"shadowdeco {shadowdeco.__version__}"
    )
    print(
        f"- {calls:,} sampled calls per run against a hanging candidate; max_concurrency="
        f"{MAX_CONCURRENCY}, max_queue={MAX_QUEUE}, timeout=None; each run in its own process\n"
    )
    runs = [_run_child(kind, traced, calls) for traced in (True, False) for kind in ("int", "dict")]
    labels = {"int": "int (new object each call)", "dict": "1 KB dict (fresh each call)"}

    ok = True
    print("### Checkpoints\n")
    print(
        "| input | tracemalloc | calls | s | sampled | dropped queue_full | in flight "
        "| exact | traced current MB | traced peak MB | VmRSS MB | VmHWM MB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for run in runs:
        traced = run["traced"]
        for point in [run["before"], *run["points"]]:
            exact = _exact(point) if point["calls"] else point["sampled"] == 0
            ok = ok and exact
            tm = (_mb(point["traced_current"]), _mb(point["traced_peak"])) if traced else ("-", "-")
            print(
                f"| {labels[run['kind']]} | {'on' if traced else 'off'} | {point['calls']:,} "
                f"| {point['seconds']:.1f} | {point['sampled']:,} "
                f"| {point['dropped'].get('queue_full', 0):,} | {point['in_flight']:,} "
                f"| {'yes' if exact else '**NO**'} | {tm[0]} | {tm[1]} "
                f"| {_mb(point['VmRSS'])} | {_mb(point['VmHWM'])} |"
            )
    print()

    print("### The bound\n")
    print(
        "| input | held by the admitted calls (traced, at the end, above before the first call) "
        "| per admitted call | traced peak growth after the first checkpoint "
        "| VmHWM growth after the first checkpoint (tracemalloc off) | calls/s (tracemalloc off) "
        "| verdict |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for kind in ("int", "dict"):
        traced_run = next(r for r in runs if r["kind"] == kind and r["traced"])
        plain_run = next(r for r in runs if r["kind"] == kind and not r["traced"])
        first, last = traced_run["points"][0], traced_run["points"][-1]
        held = last["traced_current"] - traced_run["before"]["traced_current"]
        peak_growth = last["traced_peak"] - first["traced_peak"]
        hwm_growth = plain_run["points"][-1]["VmHWM"] - plain_run["points"][0]["VmHWM"]
        last_plain = plain_run["points"][-1]
        # Two checkpoints at least: one compared with itself shows no growth whatever happened.
        flat = len(traced_run["points"]) >= 2 and peak_growth <= PEAK_SLACK
        exact = all(_exact(p) for r in (traced_run, plain_run) for p in r["points"])
        ok = ok and flat and exact
        verdict = "**PASS**" if flat and exact else "**FAIL**"
        print(
            f"| {labels[kind]} | {held / 1024:,.0f} KB | {held / ADMITTED:,.0f} B "
            f"| {peak_growth / 1024:+,.1f} KB | {hwm_growth / 1024:+,.0f} KB "
            f"| {last_plain['calls'] / last_plain['seconds']:,.0f} | {verdict} |"
        )
    print(
        f"\nBound: {ADMITTED:,} admitted calls (max_queue {MAX_QUEUE:,} + max_concurrency "
        f"{MAX_CONCURRENCY}) are held, whatever the number of calls; every later call is a "
        "counted `queue_full` drop."
    )
    print(f"\nVerdict: {'PASS' if ok else 'FAIL'} (bounded memory, exact drop count)")
    print(f"\n(total {time.perf_counter() - started:.1f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
