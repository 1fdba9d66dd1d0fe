"""The soak, short: random candidate behaviours from several threads, exact accounting."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def test_short_soak_keeps_live_right_and_accounting_exact(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Four threads of random faults leave every live value right and every call accounted."""
    spec = importlib.util.spec_from_file_location("shadowdeco_soak", SOAK)
    assert spec is not None
    assert spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    code = soak.main(["--threads", "4", "--calls", "2000", "--max-queue", "500", "--seed", "7"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "OK: live values right, accounting exact" in out
