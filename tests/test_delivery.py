"""Delivery: each sink on its own thread and bounded queue, isolated from the others."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from helpers import BlockedComparator, assert_adds_up, echo

import shadowdeco
from shadowdeco import ShadowResult, _delivery, shadow, sinks


def test_a_hanging_sink_does_not_stop_the_other_sinks() -> None:
    """A sink that blocks forever leaves every other sink receiving results."""
    release = threading.Event()
    entered = threading.Event()
    memory = sinks.Memory()

    def hanging(result: ShadowResult) -> None:
        entered.set()
        release.wait(30)

    @shadow(candidate=abs, sinks=[hanging, memory])
    def predict(x: int) -> int:
        return abs(x)

    @shadow(candidate=abs, name="other", sinks=[memory])
    def other(x: int) -> int:
        return abs(x)

    try:
        for i in range(20):
            assert predict(-i) == i
            assert other(-i) == i
        assert entered.wait(10)
        assert len(memory.wait(40, timeout=10)) == 40
        assert other.shadow.flush(10)
        assert not predict.shadow.flush(0.1)  # honest: the hanging sink has not caught up
        stats = predict.shadow.stats()
        assert (stats.emitted, stats.in_flight) == (20, 0)
        assert_adds_up(stats)
    finally:
        release.set()
    assert predict.shadow.flush(10)


def test_a_sink_too_far_behind_loses_results_counted_per_sink(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the per-sink bound, a slow sink misses results; stats().sink_drops counts them."""
    release = threading.Event()
    entered = threading.Event()
    memory = sinks.Memory()
    monkeypatch.setattr(_delivery, "max_pending", 5)

    def slow(result: ShadowResult) -> None:
        entered.set()
        release.wait(30)

    @shadow(candidate=abs, sinks=[slow, memory], max_queue=100)
    def predict(x: int) -> int:
        return x

    try:
        predict(0)
        assert entered.wait(10)  # the slow sink holds the first result
        for i in range(1, 20):
            predict(i)
            # One at a time, so the fast sink never falls behind; the slow one does.
            assert len(memory.wait(i + 1, timeout=10)) == i + 1
        release.set()
        assert predict.shadow.flush(10)
        stats = predict.shadow.stats()
        assert stats.emitted == 20
        ((name, count),) = stats.sink_drops.items()
        assert name.endswith("<locals>.slow")
        assert count == 15  # 5 pending (the one in the sink included), 15 missed
        assert_adds_up(stats)
    finally:
        release.set()


def test_a_shared_sink_gets_one_worker_and_every_result() -> None:
    """One sink object shared by experiments receives every result once."""
    seen: list[str] = []
    lock = threading.Lock()

    def shared(result: ShadowResult) -> None:
        with lock:
            seen.append(result.experiment)

    fns = [shadow(candidate=abs, name=f"s{i}", sinks=[shared])(abs) for i in range(3)]
    for _ in range(10):
        for fn in fns:
            fn(-1)
    assert shadowdeco.flush(10)
    assert sorted(seen) == sorted(["s0", "s1", "s2"] * 10)
    names = {t.name for t in threading.enumerate() if t.name.startswith("shadowdeco-sink-")}
    assert len([n for n in names if "shared" in n]) == 1


def test_sink_errors_are_counted_before_flush_returns() -> None:
    """After flush(), sink errors of the flushed results are in stats()."""

    def broken(result: Any) -> None:
        raise RuntimeError("sink down")

    @shadow(candidate=abs, sinks=[broken])
    def predict(x: int) -> int:
        return x

    for i in range(5):
        predict(i)
    assert predict.shadow.flush(10)
    assert predict.shadow.stats().sink_errors == 5


class Flushed(sinks.Memory):
    """A Memory sink that counts its flush() calls."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self, timeout: float | None = None) -> bool:
        self.flushes += 1
        return True


def test_a_hanging_sink_does_not_stop_flush_from_flushing_the_others() -> None:
    """flush() is False while one sink hangs, but the sinks that caught up are flushed
    (written, fsynced) all the same; the hanging one is not flushed from the caller."""
    release, entered = threading.Event(), threading.Event()
    flushed_while_hanging: list[int] = []

    class Hanging(Flushed):
        def emit(self, result: ShadowResult) -> None:
            entered.set()
            release.wait(30)

    hanging, healthy = Hanging(), Flushed()
    predict = shadow(candidate=abs, name="flush-isolation", sinks=[hanging, healthy])(abs)
    try:
        predict(-1)
        assert entered.wait(10)
        assert healthy.wait(1, timeout=10)
        assert not predict.shadow.flush(0.1)
        flushed_while_hanging = [hanging.flushes, healthy.flushes]
    finally:
        release.set()
    assert flushed_while_hanging == [0, 1]
    assert predict.shadow.flush(10)


def test_shutdown_keeps_to_its_deadline_with_hanging_sinks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Waiting for a sink's thread to stop takes what is left of shutdown's timeout, never
    a fixed 5 s per sink; a sink whose thread did not stop is not closed under it, but by
    its own thread once it gets out of the sink."""
    release = threading.Event()
    waits: list[float | None] = []
    stop = _delivery.SinkWorker.stop

    def recorded(worker: _delivery.SinkWorker, timeout: float | None, then: Any = None) -> None:
        waits.append(timeout)
        stop(worker, timeout, then)

    monkeypatch.setattr(_delivery.SinkWorker, "stop", recorded)

    class Hanging(sinks.Memory):
        def __init__(self) -> None:
            super().__init__()
            self.closed = threading.Event()

        def emit(self, result: ShadowResult) -> None:
            release.wait(30)

        def close(self) -> None:
            self.closed.set()

    hung = [Hanging() for _ in range(3)]
    try:
        for i, sink in enumerate(hung):
            shadow(candidate=abs, name=f"hung-{i}", sinks=[sink])(abs)(-1)
        shadowdeco.shutdown(0.3)
        assert len(waits) >= 3
        assert all(wait is not None and wait <= 0.3 for wait in waits), waits
        assert not any(sink.closed.is_set() for sink in hung)
    finally:
        release.set()
    assert all(sink.closed.wait(10) for sink in hung)  # each by its own thread, once free


def test_a_sink_idle_at_the_close_is_closed_even_with_no_time_left(tmp_path: Any) -> None:
    """close(0) still closes an idle sink, on the sink's own thread (a close that waits, for
    a writer stuck in os.write, cannot hang the caller): the file is closed and its flush
    thread ends."""
    jsonl = sinks.JsonLines(tmp_path / "r.jsonl")
    predict = shadow(candidate=abs, name="closed-at-once", sinks=[jsonl])(abs)
    predict(-1)
    assert predict.shadow.flush(10)
    thread = _delivery.worker_for(jsonl)._thread
    assert thread is not None
    predict.shadow.close(0)
    thread.join(10)
    assert jsonl._closed


def test_two_sinks_of_one_name_are_told_apart() -> None:
    """Two lambdas (or two sinks of one class and path) get names of their own in stats."""
    first, second = (lambda r: None), (lambda r: None)
    names = [_delivery.worker_for(sink).name for sink in (first, second, first)]
    assert names[0] == names[2]
    assert names[0] != names[1]
    assert names[1] == names[0] + "#2"


def test_results_past_the_emitter_bound_are_dropped_as_backlog() -> None:
    """Results waiting to be compared and built (async candidates' go through the emitter
    thread) are bounded by max_pending_results; past it they are dropped as backlog."""
    slow_compare = BlockedComparator()
    memory = sinks.Memory()
    shadowdeco.configure(max_pending_results=2)

    @shadow(candidate=echo, compare=slow_compare, sinks=[memory], name="emitter-bound")
    async def live(x: int) -> int:
        return x

    async def main() -> None:
        for i in range(6):
            assert await live(i) == i
        await asyncio.gather(*list(live.shadow._lane.tasks))
        await asyncio.sleep(0)  # their done-callbacks hand the results over

    try:
        asyncio.run(main())
        assert slow_compare.entered.wait(10)
        stats = live.shadow.stats()
        assert dict(stats.dropped) == {"backlog": 4}  # one in the comparator, two waiting
        assert_adds_up(stats)
    finally:
        slow_compare.release.set()
    assert live.shadow.flush(10)
    stats = live.shadow.stats()
    assert (stats.emitted, stats.in_flight, len(memory)) == (2, 0, 2)


def _burst_then_hang(
    memory: sinks.Memory, count: int, **options: Any
) -> tuple[Any, threading.Event]:
    """``count`` fast shadows queued behind a held one, then one that hangs (until the
    event returned is set): a single worker runs them back to back (the queue never
    empties until the last)."""
    first, last = threading.Event(), threading.Event()
    hanging = threading.Event()

    def candidate(x: object) -> object:
        if x == "first":
            first.wait(30)
        elif x == "last":
            hanging.set()
            last.wait(30)
        return x

    @shadow(candidate=candidate, sinks=[memory], max_concurrency=1, **options)
    def predict(x: object) -> object:
        return x

    predict("first")
    for i in range(count):
        predict(i)
    predict("last")
    first.set()
    assert hanging.wait(10)
    return predict, last


def test_results_before_a_hanging_candidate_reach_the_sinks() -> None:
    """A worker runs the next queued candidate before it hands over the results it has
    (one hand-over for many); when that candidate hangs, the results it holds still reach
    the sinks, without a timeout, while the candidate hangs."""
    memory = sinks.Memory()
    predict, last = _burst_then_hang(memory, 50, timeout=None)
    try:
        results = memory.wait(51, timeout=10)
        assert len(results) == 51
        assert [r.candidate.value for r in results] == ["first", *range(50)]
        stats = predict.shadow.stats()
        assert (stats.emitted, stats.in_flight) == (51, 1), stats
    finally:
        last.set()
    assert predict.shadow.flush(10)
    stats = predict.shadow.stats()
    assert (stats.emitted, stats.dropped) == (52, {}), stats
    assert_adds_up(stats)
    predict.shadow.close()


def test_close_settles_the_results_a_hung_worker_holds() -> None:
    """close() while the worker hangs: what it held is emitted, the hung one is shutdown."""
    memory = sinks.Memory()
    predict, last = _burst_then_hang(memory, 20, timeout=None)
    try:
        predict.shadow.close(timeout=0.5)
        stats = predict.shadow.stats()
        assert (stats.emitted, stats.dropped) == (21, {"shutdown": 1}), stats
        assert len(memory.results) == 21
    finally:
        last.set()


@pytest.mark.parametrize("where", ["build", "run"])
def test_a_bug_of_ours_around_one_result_drops_it_alone(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug of shadowdeco's raising around one result of a burst (building it, one of a
    hand-over of 64; or around its candidate run) counts that call as internal_error: the
    others reach the sinks, and the lane's worker goes on."""
    from shadowdeco import _experiment, _runner

    if where == "build":
        real_build = _experiment.result_of

        def result_of(*fields: Any) -> ShadowResult:
            if fields[5].value == 7:  # the candidate's observation
                raise RuntimeError("a bug in shadowdeco")
            return real_build(*fields)

        monkeypatch.setattr(_experiment, "result_of", result_of)
    else:
        real_run = _runner.run_in_thread

        def run_in_thread(job: Any) -> Any:
            if job.args == (7,):
                raise RuntimeError("a bug in shadowdeco")
            return real_run(job)

        monkeypatch.setattr(_runner, "run_in_thread", run_in_thread)
    memory = sinks.Memory()
    predict, last = _burst_then_hang(memory, 100, timeout=None)
    last.set()
    assert predict.shadow.flush(10)
    stats = predict.shadow.stats()
    assert (stats.emitted, stats.dropped) == (101, {"internal_error": 1}), stats
    values = [r.candidate.value for r in memory.results]
    assert values == ["first", *(i for i in range(100) if i != 7), "last"]
    predict.shadow.close()


def test_a_burst_past_a_sinks_bound_counts_each_lost_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Results handed over together to a sink that is too far behind: those past its bound
    are counted one by one, the others delivered."""
    monkeypatch.setattr(_delivery, "max_pending", 5)
    release = threading.Event()

    def slow(result: ShadowResult) -> None:
        release.wait(30)

    first = threading.Event()

    def candidate(x: object) -> object:
        if x == "first":
            first.wait(30)
        return x

    @shadow(candidate=candidate, sinks=[slow], max_concurrency=1, timeout=None)
    def bounded(x: object) -> object:
        return x

    try:
        bounded("first")
        for i in range(30):
            bounded(i)
        first.set()
        assert bounded.shadow._wait_settled(10)
        stats = bounded.shadow.stats()
        # Five taken (one in the sink's hands, four queued); the 26 others are lost.
        assert (stats.emitted, stats.sink_drops) == (31, {_delivery.sink_name(slow): 26})
    finally:
        release.set()
    assert bounded.shadow.flush(10)
    bounded.shadow.close()


def test_a_hung_comparator_holds_up_only_its_own_results() -> None:
    """A worker stuck in the comparator counts as stuck: the lane adds a worker, and the
    calls after it are compared and delivered while it hangs."""
    comparing, release = threading.Event(), threading.Event()

    def compare(live: object, candidate: object) -> bool:
        if live == "hang":
            comparing.set()
            release.wait(30)
        return live == candidate

    memory = sinks.Memory()

    @shadow(candidate=lambda x: x, compare=compare, sinks=[memory], max_concurrency=4)
    def predict(x: object) -> object:
        return x

    try:
        predict("hang")
        assert comparing.wait(10)
        for i in range(20):
            predict(i)
        results = memory.wait(20, timeout=10)
        assert sorted(r.live.value for r in results) == list(range(20))
    finally:
        release.set()
    assert predict.shadow.flush(10)
    assert predict.shadow.stats().emitted == 21
    predict.shadow.close()


def test_close_never_compares_held_results_on_its_own_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The results a hung worker holds are compared on shadowdeco's threads, not on the
    thread that calls close() (a slow comparator would hold close() past its timeout)."""
    from shadowdeco import _runner

    monkeypatch.setattr(_runner, "STUCK", 3600.0)  # the timer leaves them to close()
    threads: set[threading.Thread] = set()

    def compare(live: object, candidate: object) -> bool:
        threads.add(threading.current_thread())
        return live == candidate

    memory = sinks.Memory()
    predict, last = _burst_then_hang(memory, 20, timeout=None, compare=compare)
    try:
        assert predict.shadow.stats().emitted == 0  # all held
        predict.shadow.close(timeout=0.2)
    finally:
        last.set()
    stats = predict.shadow.stats()
    assert (stats.emitted, stats.dropped) == (21, {"shutdown": 1}), stats
    assert threads
    assert threading.current_thread() not in threads


def test_a_result_offered_to_a_stopped_sink_worker_is_counted_not_lost() -> None:
    """A result built while close() stops its sinks' workers (the emitter was past the
    closed check) is refused by the stopped worker, and so counted as that sink's drop,
    rather than queued behind the stop marker where no thread would ever take it."""
    memory = sinks.Memory()

    @shadow(candidate=lambda x: x, sinks=[memory])
    def predict(x: object) -> object:
        return x

    predict(1)
    assert predict.shadow.flush(10)
    results = memory.results
    worker = _delivery.worker_for(memory)
    worker.stop(10)
    assert worker.offer_many(predict.shadow, results * 3) == 3
    assert not worker.offer(predict.shadow, results[0])
    assert worker.wait_idle(1)  # nothing pending that no thread will take
    predict.shadow.close()
