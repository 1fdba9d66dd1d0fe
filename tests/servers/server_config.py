"""What every test server shares: its shadow settings, read from environment variables.

tests/test_servers.py starts the apps of this directory under gunicorn and uvicorn with:

``SHADOW_OUT``
    directory for ``results.<pid>.jsonl`` (a ``sinks.JsonLines``), ``stats.<pid>.json`` (the
    experiment's ``stats()`` at shutdown) and ``candidate-finished.<pid>.log``.
``SHADOW_MODE``
    ``off`` (no middleware), ``on``, ``disabled`` (the middleware with ``enabled=False``).
``SHADOW_CANDIDATE``
    ``app`` (the unwrapped app itself: identical answers), ``slow`` (the same after
    ``SHADOW_SLEEP`` seconds), ``hostile`` (by the request header ``X-Candidate-Behavior``:
    ``crash`` raises, ``hang`` waits 20 s, ``slow`` takes 2 s), or a base URL.
``SHADOW_TIMEOUT``, ``SHADOW_MAX_CONCURRENCY``, ``SHADOW_MAX_PENDING_BYTES``, ``SHADOW_DRAIN``
    (the ASGI ``drain_timeout``): the middleware's options of those names.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from shadowdeco import Experiment, sinks

MODE = os.environ.get("SHADOW_MODE", "off")
CANDIDATE = os.environ.get("SHADOW_CANDIDATE", "app")
SLEEP = float(os.environ.get("SHADOW_SLEEP", "0.3"))
OUT = Path(os.environ.get("SHADOW_OUT", "."))

#: how long a "hang" candidate hangs, and an app waits for a file the test creates
HANG_S = 20.0
WAIT_S = 15.0


def options(name: str) -> dict[str, Any]:
    """The middleware's keyword options for this server."""
    # Named with the pid of the process that builds it: a worker, or with gunicorn --preload
    # the master, whose workers then share the file (JsonLines appends whole lines, O_APPEND).
    path = OUT / f"results.{os.getpid()}.jsonl"
    return {
        "name": name,
        "sinks": [sinks.JsonLines(path, flush_interval=0.2)],
        "enabled": MODE == "on",
        "timeout": float(os.environ.get("SHADOW_TIMEOUT", "10")),
        "max_concurrency": int(os.environ.get("SHADOW_MAX_CONCURRENCY", "4")),
        "max_pending_bytes": int(os.environ.get("SHADOW_MAX_PENDING_BYTES", str(64 << 20))),
        "record_body": True,
    }


def wait_for(path: str, timeout: float = WAIT_S) -> bool:
    """Wait (bounded) until the file ``path`` exists: the test creates it when it is ready."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def candidate_finished() -> None:
    """Note when a slow candidate ended (wall clock): the test compares it with its SIGTERM."""
    with open(OUT / f"candidate-finished.{os.getpid()}.log", "a") as log:
        log.write(f"{time.time()}\n")


def write_stats(experiments: Iterable[Experiment]) -> None:
    """Write each experiment's ``stats()`` to ``stats.<pid>.json`` (atomically)."""
    records = []
    for exp in experiments:
        stats = exp.stats()
        record: dict[str, Any] = {"name": exp.name}
        for field in dataclasses.fields(stats):
            value = getattr(stats, field.name)
            record[field.name] = dict(value) if isinstance(value, Mapping) else value
        records.append(record)
    if not any(r["sampled"] or r["skipped"] for r in records):
        return  # a process that served nothing (the gunicorn master)
    target = OUT / f"stats.{os.getpid()}.json"
    partial = target.with_suffix(".part")
    partial.write_text(json.dumps(records))
    os.replace(partial, target)


# --------------------------------------------------------------------------------------------
# Candidates


def wsgi_candidate(live: Any) -> Any:
    """The WSGI candidate (or base URL) that ``SHADOW_CANDIDATE`` names, built on ``live``."""
    if CANDIDATE == "app":
        return live
    if CANDIDATE == "slow":

        def slow(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            time.sleep(SLEEP)
            try:
                return list(live(environ, start_response))
            finally:
                candidate_finished()

        return slow
    if CANDIDATE == "hostile":

        def hostile(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            behavior = environ.get("HTTP_X_CANDIDATE_BEHAVIOR", "")
            if behavior == "crash":
                raise RuntimeError("the candidate crashed")
            if behavior == "hang":
                time.sleep(HANG_S)
            elif behavior == "slow":
                time.sleep(2.0)
            return live(environ, start_response)

        return hostile
    return CANDIDATE  # a base URL


def asgi_candidate(live: Any) -> Any:
    """The ASGI candidate (or base URL) that ``SHADOW_CANDIDATE`` names, built on ``live``."""
    import asyncio

    if CANDIDATE == "app":
        return live
    if CANDIDATE == "slow":

        async def slow(scope: Any, receive: Any, send: Any) -> None:
            await asyncio.sleep(SLEEP)
            try:
                await live(scope, receive, send)
            finally:
                candidate_finished()

        return slow
    if CANDIDATE == "hostile":

        async def hostile(scope: Any, receive: Any, send: Any) -> None:
            behavior = dict(scope["headers"]).get(b"x-candidate-behavior", b"")
            if behavior == b"crash":
                raise RuntimeError("the candidate crashed")
            if behavior == b"hang":
                await asyncio.sleep(HANG_S)
            elif behavior == b"slow":
                await asyncio.sleep(2.0)
            await live(scope, receive, send)

        return hostile
    return CANDIDATE  # a base URL
