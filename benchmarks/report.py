"""How fast ``shadowdeco report`` reads a log, and how much memory it holds while it does.

    python benchmarks/report.py                # 1,000,000 lines; about 2-3 minutes here
    python benchmarks/report.py --lines 100000 # a smoke run

One run:

1. writes a JSON Lines log of ``--lines`` results in the v1 shape (two experiments, one with
   categorical outputs and ~3 % candidate errors, one with numeric outputs; a day of
   timestamps; string keys), with ``json.dumps`` per line;
2. times, each in a fresh subprocess so the peak resident memory (``ru_maxrss``) is that
   case's own:
   * **baseline**: the interpreter with ``shadowdeco.report`` imported, nothing read;
   * **json.loads loop**: every line parsed and dropped: the floor for any JSON reader;
   * **report**: ``build_report`` then ``render_text``: what ``shadowdeco report FILE`` does;
   * **report, 1/10 of the log** and **report, whole log, --labels**: the first shows that
     memory does not grow with the log (bounded reservoirs and counters), the second what a
     labels file of one label per result costs (labels are held in memory by design);
3. prints a Markdown table: seconds, results per second, peak RSS, RSS above the baseline.

The cases run round-robin, ``--repeat`` rounds (default 3), so a noisy neighbour slows one run
of every case rather than all runs of one; each row reports the fastest run's time and the
largest peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
from typing import Any

CHILD = r"""
import json, resource, sys, time
mode, path, labels = sys.argv[1], sys.argv[2], sys.argv[3] or None
from shadowdeco import report
start = time.perf_counter()
results = 0
if mode == "loads":
    with open(path, "rb") as handle:
        for line in handle:
            json.loads(line)
            results += 1
elif mode == "report":
    built = report.build_report([path], labels=labels)
    text = report.render_text(built)
    results = built.results
elapsed = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": elapsed, "results": results, "peak_kib": peak_kib}))
"""


def write_log(path: str, lines: int, labels_path: str, subset_path: str, subset: int) -> None:
    """The benchmark log, its first ``subset`` lines, and one label per categorical key."""
    rng = random.Random(7)
    start = _dt.datetime(2026, 11, 27, tzinfo=_dt.timezone.utc).timestamp()
    classes = ("stay", "churn", "upsell", "downgrade")
    with (
        open(path, "w", encoding="utf-8") as log,
        open(subset_path, "w", encoding="utf-8") as part,
        open(labels_path, "w", encoding="utf-8") as labels,
    ):
        labels.write("key,label\n")
        for i in range(lines):
            when = _dt.datetime.fromtimestamp(start + i * 86400 / lines, tz=_dt.timezone.utc)
            categorical = i % 2 == 0
            if categorical:
                truth = classes[rng.randrange(4)]
                live_value: Any = truth if rng.random() < 0.9 else classes[rng.randrange(4)]
                cand_value: Any = truth if rng.random() < 0.92 else classes[rng.randrange(4)]
                labels.write(f"u{i},{truth}\n")
            else:
                live_value = round(rng.gauss(100, 20), 3)
                cand_value = round(live_value + rng.gauss(0, 3), 3)
            failed = rng.random() < 0.03
            record = {
                "v": 1,
                "experiment": "churn-v2" if categorical else "price-v3",
                "id": f"{rng.getrandbits(64):016x}",
                "started_at": when.isoformat(),
                "key": f"u{i}",
                "live": {
                    "status": "ok",
                    "value": live_value,
                    "error": None,
                    "duration_s": rng.lognormvariate(-5, 0.5),
                },
                "candidate": {
                    "status": "error" if failed else "ok",
                    "value": None if failed else cand_value,
                    "error": {"type": "ValueError", "message": "bad input"} if failed else None,
                    "duration_s": rng.lognormvariate(-4.5, 0.6),
                },
                "queue_s": rng.random() / 1000,
                "match": None if failed else live_value == cand_value,
                "score": None,
                "inputs": None,
                "context": None,
                "trace_id": None,
                "span_id": None,
            }
            line = json.dumps(record) + "\n"
            log.write(line)
            if i < subset:
                part.write(line)


def case_timeout(lines: int) -> float:
    """Seconds one case may take: generous (the report takes ~13-16 µs a line here), but bounded,
    so a hung child fails the run instead of stalling it."""
    return 600 + lines * 1e-3


def run_case(mode: str, path: str, labels: str | None, timeout: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, path, labels or ""],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    )
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "shadow.jsonl")
        subset_log = os.path.join(tmp, "subset.jsonl")
        labels = os.path.join(tmp, "labels.csv")
        subset = max(1, args.lines // 10)
        write_log(log, args.lines, labels, subset_log, subset)
        size_mb = os.path.getsize(log) / 1e6
        cases = [
            ("baseline: import only", "none", log, None),
            ("json.loads loop", "loads", log, None),
            ("report (build + render_text)", "report", log, None),
            (f"report, first {subset:,} lines", "report", subset_log, None),
            ("report with --labels (one per categorical result)", "report", log, labels),
        ]
        # Round-robin: each round runs every case once, so a busy moment on a shared machine
        # slows one run of each case rather than every run of one case.
        runs: list[list[dict[str, Any]]] = [[] for _ in cases]
        for _ in range(args.repeat):
            for i, (_, mode, path, label_file) in enumerate(cases):
                runs[i].append(run_case(mode, path, label_file, case_timeout(args.lines)))
        rows = []
        for (name, *_), case_runs in zip(cases, runs, strict=True):
            fastest = min(r["seconds"] for r in case_runs)
            peak = max(r["peak_kib"] for r in case_runs) / 1024
            rows.append((name, case_runs[0]["results"], fastest, peak))

    print(f"# shadowdeco report: {args.lines:,} lines, {size_mb:,.0f} MB\n")
    print(
        f"Python {platform.python_version()} on {platform.system()} "
        f"({os.cpu_count()} CPUs); fastest of {args.repeat} runs, peak RSS the largest.\n"
    )
    baseline = rows[0][3]
    print("| case | results | seconds | results/s | peak RSS (MB) | above baseline (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, results, seconds, peak in rows:
        rate = f"{results / seconds:,.0f}" if results and seconds else "-"
        secs = f"{seconds:.2f}" if results else "-"
        print(f"| {name} | {results:,} | {secs} | {rate} | {peak:,.1f} | {peak - baseline:,.1f} |")
    report_rate = rows[2][1] / rows[2][2]
    loads_rate = rows[1][1] / rows[1][2]
    print(
        f"\nThe report reads {report_rate:,.0f} results/s, {report_rate / loads_rate:.2f}x "
        f"the bare json.loads loop; {rows[2][3] - baseline:,.1f} MB above baseline for the "
        f"whole log against {rows[3][3] - baseline:,.1f} MB for a tenth of it."
    )


if __name__ == "__main__":
    main()
