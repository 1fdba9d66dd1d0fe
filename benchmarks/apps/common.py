"""What both benchmark apps share: the ~1 ms of work, and the shadow set-up read from the
environment, so ``benchmarks/middleware.py`` can start one server per configuration.

Environment (set by the benchmark):

* ``BENCH_SHADOW``: ``off`` (no middleware, the default) or a sampling rate (``0``, ``0.1``, ``1``);
* ``BENCH_CANDIDATE``: ``inproc`` (a second copy of the app in this process, the default) or a
  base URL served by another process;
* ``BENCH_TOKEN``: what ``GET /health`` answers, a random string the benchmark gives each
  server, so that its readiness probe knows the answer comes from the server it started and not
  from another program that took the port (``ok`` when unset);
* ``BENCH_OUT``: a directory; each server process writes its results to
  ``shadow-<pid>.jsonl`` there and its counters to ``stats-<pid>.json``: at interpreter exit
  (gunicorn), or at the end of the app's lifespan shutdown, after the middleware drained its
  mirrors (uvicorn: on SIGTERM it re-raises the signal once it has shut down, so the process
  ends without running exit handlers).
"""

from __future__ import annotations

import atexit
import json
import os
import random
from typing import Any

# Registered before shadowdeco is imported: atexit runs handlers last-in first-out, so this
# one runs after shadowdeco's own exit flush and sees the final counters.
_middlewares: list[Any] = []


def write_stats(when: str = "exit") -> None:
    """Write this process's counters to ``stats-<pid>.json`` (``when``: exit or lifespan)."""
    out = os.environ.get("BENCH_OUT")
    if not out or not _middlewares:
        return
    exp = _middlewares[0].shadow
    stats = exp.stats()
    record = {
        "pid": os.getpid(),
        "when": when,
        "closed_before_this_handler": exp.closed,  # True: the exit flush already ran
        "sampled": stats.sampled,
        "skipped": stats.skipped,
        "emitted": stats.emitted,
        "dropped": dict(stats.dropped),
        "in_flight": stats.in_flight,
        "matched": stats.matched,
        "mismatched": stats.mismatched,
        "candidate_errors": stats.candidate_errors,
        "timeouts": stats.timeouts,
        "sink_errors": stats.sink_errors,
    }
    path = os.path.join(out, f"stats-{os.getpid()}.json")
    with open(path, "w", encoding="utf-8") as file:
        json.dump(record, file)


atexit.register(write_stats)

from shadowdeco import sinks  # noqa: E402 - after the atexit registration, on purpose

# A small dense network in pure Python: ~0.5-0.8 ms of CPU per call on a slow core.
_rng = random.Random(0)
N_IN, N_HIDDEN = 16, 112
_W1 = [[_rng.uniform(-1, 1) for _ in range(N_IN)] for _ in range(N_HIDDEN)]
_W2 = [[_rng.uniform(-1, 1) for _ in range(N_HIDDEN)] for _ in range(N_HIDDEN)]
_W3 = [_rng.uniform(-1, 1) for _ in range(N_HIDDEN)]


def score(features: list[float]) -> dict[str, Any]:
    """The endpoint's work: a forward pass, returned as a small JSON-ready dict."""
    x = [float(v) for v in features[:N_IN]]
    x += [0.0] * (N_IN - len(x))
    h = [max(0.0, sum(w * v for w, v in zip(row, x, strict=True))) for row in _W1]
    h = [max(0.0, sum(w * v for w, v in zip(row, h, strict=True))) for row in _W2]
    y = sum(w * v for w, v in zip(_W3, h, strict=True))
    return {"score": round(y, 6), "label": "positive" if y > 0 else "negative"}


def shadow_options() -> dict[str, Any] | None:
    """The middleware's options for this process, or None when it runs without one."""
    mode = os.environ.get("BENCH_SHADOW", "off")
    if mode == "off":
        return None
    out = os.environ["BENCH_OUT"]
    return {
        "name": "bench-middleware",
        "sample": float(mode),
        "sinks": [sinks.JsonLines(os.path.join(out, f"shadow-{os.getpid()}.jsonl"))],
    }


def health_token() -> str:
    """What ``GET /health`` answers: this server's token (see the module docstring)."""
    return os.environ.get("BENCH_TOKEN", "ok")


def candidate_url() -> str | None:
    """The URL candidate's base URL, or None for an in-process copy of the app."""
    candidate = os.environ.get("BENCH_CANDIDATE", "inproc")
    return None if candidate == "inproc" else candidate


def remember(middleware: Any) -> Any:
    """Keep the middleware, so its counters can be written at exit."""
    _middlewares.append(middleware)
    return middleware
