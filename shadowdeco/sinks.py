"""Where paired results go.

>>> from shadowdeco import shadow, sinks
>>> memory = sinks.Memory()
>>> @shadow(candidate=lambda x: x + 1, sinks=[memory])
... def predict(x):
...     return x + 1
>>> predict(1)
2
>>> [r.match for r in memory.wait(1, timeout=5)]
[True]

A sink is anything with an ``emit(result)`` method (optionally ``flush(timeout)`` and
``close()``), or a plain callable taking the result.  Sinks run on shadowdeco's emitter thread,
never on the live path; whatever they raise is counted as a sink error and logged, never
passed on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ._result import ShadowResult

__all__ = ["Logging", "Memory", "Sink", "SinkLike"]


@runtime_checkable
class Sink(Protocol):
    """The sink protocol: ``emit`` is required; ``flush(timeout)`` and ``close()`` optional."""

    def emit(self, result: ShadowResult) -> None: ...


SinkLike = Sink | Callable[[ShadowResult], object]


class Memory:
    """Keeps every result in memory: for tests, notebooks and small experiments.

    Thread-safe.  ``results`` is a copy; ``wait(n, timeout)`` blocks until ``n`` results
    arrived (or the timeout passed) and returns them.
    """

    def __init__(self) -> None:
        self._results: list[ShadowResult] = []
        self._cond = threading.Condition()

    def emit(self, result: ShadowResult) -> None:
        with self._cond:
            self._results.append(result)
            self._cond.notify_all()

    @property
    def results(self) -> list[ShadowResult]:
        with self._cond:
            return list(self._results)

    def wait(self, n: int, timeout: float = 5.0) -> list[ShadowResult]:
        """Wait until at least ``n`` results arrived or ``timeout`` seconds passed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._results) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return list(self._results)

    def clear(self) -> None:
        with self._cond:
            self._results.clear()

    def __len__(self) -> int:
        with self._cond:
            return len(self._results)

    def __repr__(self) -> str:
        return f"Memory(<{len(self)} results>)"


class Logging:
    """One log record per result on a stdlib logger (the default sink).

    The message is short and human (experiment, match, both durations, candidate status); the
    whole result dict rides in ``extra={"shadow": {...}}`` for structured handlers.
    """

    def __init__(self, logger: str | logging.Logger = "shadowdeco", level: int = logging.INFO):
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = level

    def emit(self, result: ShadowResult) -> None:
        logger = self.logger
        if not logger.isEnabledFor(self.level):
            return
        logger.log(
            self.level,
            "shadow %s: match=%s live=%s candidate=%s %s",
            result.experiment,
            result.match,
            _ms(result.live.duration),
            _ms(result.candidate.duration),
            result.candidate.status,
            extra={"shadow": result.to_dict()},
        )

    def __repr__(self) -> str:
        return f"Logging({self.logger.name!r})"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}ms"


def as_emit(sink: object, *, param: str = "sinks") -> Callable[[ShadowResult], Any]:
    """The emit callable of a sink object or plain callable; TypeError for anything else."""
    emit = getattr(sink, "emit", None)
    if callable(emit):
        return emit  # type: ignore[no-any-return]
    if callable(sink):
        return sink
    raise TypeError(
        f"{param} must hold sinks (objects with emit(result)) or callables, got {sink!r}"
    )
