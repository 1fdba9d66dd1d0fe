"""Building blocks for the invariant tests: every binding kind, sync and async."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import shadowdeco
from shadowdeco import shadow

REPO = Path(__file__).resolve().parents[1]
KINDS = ["function", "method", "classmethod", "staticmethod"]
MODES = ["sync", "async"]


class Target:
    """A decorated callable of one kind, and how a user would call it."""

    def __init__(self, kind: str, mode: str, decorated: Any, call: Callable[..., Any]) -> None:
        self.kind = kind
        self.mode = mode
        self.decorated = decorated
        self.call = call  # the callable as a user holds it (a bound method for methods)

    @property
    def experiment(self) -> shadowdeco.Experiment:
        return self.decorated.shadow  # type: ignore[no-any-return]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call once; for async targets run a loop and wait for the shadow before it closes."""
        if self.mode == "sync":
            return self.call(*args, **kwargs)

        async def go() -> Any:
            try:
                return await self.call(*args, **kwargs)
            finally:
                await self.experiment.aflush(10)

        return asyncio.run(go())


def build(
    kind: str,
    mode: str,
    live: Callable[..., Any],
    candidate: Callable[..., Any],
    **options: Any,
) -> Target:
    """Decorate ``live`` as a ``kind`` of callable; ``mode`` makes both arms sync or async.

    An ``async def`` candidate is used as it is (so it can await); a plain one is wrapped.
    """
    if mode == "async":

        async def body(*args: Any, **kwargs: Any) -> Any:
            return live(*args, **kwargs)

        async def cand(*args: Any, **kwargs: Any) -> Any:
            return candidate(*args, **kwargs)

        native = inspect.iscoroutinefunction(candidate)
        deco = shadow(candidate=candidate if native else cand, **options)
        if kind == "function":
            fn = deco(body)
            return Target(kind, mode, fn, fn)
        if kind == "method":

            class M:
                @deco
                async def run(self, *args: Any, **kwargs: Any) -> Any:
                    return await body(*args, **kwargs)

            return Target(kind, mode, M.run, M().run)
        if kind == "classmethod":

            class C:
                @deco
                @classmethod
                async def run(cls, *args: Any, **kwargs: Any) -> Any:
                    return await body(*args, **kwargs)

            return Target(kind, mode, C.run, C.run)

        class S:
            @deco
            @staticmethod
            async def run(*args: Any, **kwargs: Any) -> Any:
                return await body(*args, **kwargs)

        return Target(kind, mode, S.run, S().run)

    deco = shadow(candidate=candidate, **options)
    if kind == "function":

        def sync_body(*args: Any, **kwargs: Any) -> Any:
            return live(*args, **kwargs)

        fn = deco(sync_body)
        return Target(kind, mode, fn, fn)
    if kind == "method":

        class SM:
            @deco
            def run(self, *args: Any, **kwargs: Any) -> Any:
                return live(*args, **kwargs)

        return Target(kind, mode, SM.run, SM().run)
    if kind == "classmethod":

        class SC:
            @deco
            @classmethod
            def run(cls, *args: Any, **kwargs: Any) -> Any:
                return live(*args, **kwargs)

        return Target(kind, mode, SC.run, SC.run)

    class SS:
        @deco
        @staticmethod
        def run(*args: Any, **kwargs: Any) -> Any:
            return live(*args, **kwargs)

    return Target(kind, mode, SS.run, SS().run)


class Gate:
    """A candidate that blocks until released: holds a worker without sleeping."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        self.finished = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        self.entered.release()
        self.release.wait(30)
        self.finished.set()
        return "gate"

    def wait_entered(self, n: int = 1, timeout: float = 10) -> bool:
        return all(self.entered.acquire(timeout=timeout) for _ in range(n))


class BlockedComparator:
    """A comparator that blocks until ``release`` is set; ``entered`` says it was reached."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, live: Any, candidate: Any) -> bool:
        self.entered.set()
        self.release.wait(30)
        return True


async def echo(x: Any) -> Any:
    """An async candidate that returns its argument."""
    return x


def assert_adds_up(stats: shadowdeco.Stats) -> None:
    assert stats.sampled == stats.emitted + sum(stats.dropped.values()) + stats.in_flight, stats
    assert stats.in_flight >= 0, stats


def run_python(
    *args: str, cwd: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a fresh interpreter with ``args`` in ``cwd``, this checkout importable, ``env``
    added to the environment; its output captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        check=False,
    )


def run_script(
    source: str, tmp_path: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` (dedented) in a fresh interpreter (cwd ``tmp_path``) with this checkout
    importable."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    return run_python(str(script), cwd=tmp_path, timeout=timeout, **env)
