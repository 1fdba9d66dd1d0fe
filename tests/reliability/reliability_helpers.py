"""Shared checks of the fault catalogue: exact accounting once the faults have played out."""

from __future__ import annotations

from helpers import run_script

import shadowdeco

__all__ = ["adds_up", "run_script", "settle", "wait_settled"]


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
