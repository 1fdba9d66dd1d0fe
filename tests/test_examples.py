"""The examples, the README quickstart and every docstring example run as shown."""

from __future__ import annotations

import doctest
import importlib
import re
import subprocess
from pathlib import Path

import pytest
from helpers import run_python

REPO = Path(__file__).resolve().parents[1]
MODULES = [
    "shadowdeco",
    "shadowdeco._decorator",
    "shadowdeco._experiment",
    "shadowdeco._result",
    "shadowdeco._runner",
    "shadowdeco.compare",
    "shadowdeco.sampling",
    "shadowdeco.sinks",
    "shadowdeco.testing",
    "shadowdeco._pool",
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_python(*args, cwd=REPO, timeout=120)


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module: str) -> None:
    """Each module's docstring examples pass as doctests."""
    failures, _ = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert failures == 0


def test_the_readme_quickstart_runs() -> None:
    """The README's quickstart block runs as written."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S)
    assert block is not None
    proc = run("-c", block.group(1))
    assert proc.returncode == 0, proc.stderr
    assert "Stats(sampled=" in proc.stdout


@pytest.mark.parametrize("example", ["demo.py", "process_pool.py"])
def test_examples_run(example: str) -> None:
    """Each example runs to the end."""
    proc = run(str(REPO / "examples" / example))
    assert proc.returncode == 0, proc.stderr


def test_the_overhead_benchmark_runs() -> None:
    """benchmarks/overhead.py --quick runs and drops nothing."""
    pytest.importorskip("laboratory", reason="the bench extra (make test installs it)")
    proc = run(str(REPO / "benchmarks" / "overhead.py"), "--quick")
    assert proc.returncode == 0, proc.stderr
    assert "unsampled" in proc.stdout


def test_the_sinks_benchmark_runs() -> None:
    """benchmarks/sinks.py --quick runs end to end with no drops (it exits 1 on any)."""
    proc = run(str(REPO / "benchmarks" / "sinks.py"), "--quick")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "results/s" in proc.stdout


def test_the_url_client_benchmark_runs() -> None:
    """benchmarks/url_client.py --quick starts its server and prints the three clients'
    rows."""
    pytest.importorskip("gunicorn", reason="the dev extra (make test installs it)")
    proc = run(str(REPO / "benchmarks" / "url_client.py"), "--quick")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "x |" in line]
    assert len(rows) == 3, proc.stdout


def test_the_user_test_example_passes() -> None:
    """examples/test_with_shadowdeco.py passes under pytest, with the plugin's fixtures."""
    proc = run(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(REPO / "examples" / "test_with_shadowdeco.py"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout
