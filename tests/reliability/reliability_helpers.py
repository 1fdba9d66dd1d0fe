"""Shared checks of the fault catalogue: exact accounting once the faults have played out."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import shadowdeco

REPO = Path(__file__).resolve().parents[2]


def settle(exp: shadowdeco.Experiment, timeout: float = 20) -> shadowdeco.Stats:
    """Flush ``exp`` and check that every sampled call ended exactly once."""
    assert exp.flush(timeout), exp.stats()
    return adds_up(exp.stats())


def wait_settled(exp: shadowdeco.Experiment, timeout: float = 20) -> shadowdeco.Stats:
    """Wait until nothing is in flight, without waiting on the sinks (one may be stuck)."""
    assert exp._wait_settled(timeout), exp.stats()
    return adds_up(exp.stats())


def adds_up(stats: shadowdeco.Stats) -> shadowdeco.Stats:
    assert stats.in_flight == 0, stats
    assert stats.sampled == stats.emitted + sum(stats.dropped.values()), stats
    return stats


def run_script(
    source: str, tmp_path: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` in a fresh interpreter (cwd ``tmp_path``) with shadowdeco importable."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        check=False,
    )
