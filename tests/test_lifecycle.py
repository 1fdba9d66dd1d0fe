"""I7 Lifecycle: exit flushes, fork starts fresh, async tasks are kept and counted."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from pathlib import Path

import pytest
from helpers import BlockedComparator, assert_adds_up, echo, run_script

import shadowdeco
from shadowdeco import _delivery, shadow, sinks

REPO = Path(__file__).resolve().parents[1]


async def never(x: int) -> int:
    """An async candidate that never finishes."""
    await asyncio.Event().wait()
    return x


def test_pending_results_are_flushed_at_interpreter_exit(tmp_path: Path) -> None:
    """A program that exits with shadows pending still writes every result."""
    proc = run_script(
        """
        import json, time
        from shadowdeco import shadow

        out = open("results.jsonl", "w")

        def slow(x):
            time.sleep(0.05)  # the candidate's own work, still running at exit
            return x

        @shadow(candidate=slow, sinks=[lambda r: out.write(json.dumps(r.to_dict()) + "\\n")])
        def predict(x):
            return x

        for i in range(10):
            predict(i)
        print(predict.shadow.stats().emitted)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) < 10  # work really was pending when the program ended
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["candidate"]["value"] for line in lines) == list(range(10))


def test_pending_results_reach_an_opentelemetry_sdk_set_up_after_import(
    tmp_path: Path,
) -> None:
    """The SDK's TracerProvider shuts itself down at exit (an atexit handler registered
    after shadowdeco's, so run before it): the exit flush comes first all the same."""
    proc = run_script(
        """
        import time
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor, SpanExporter, SpanExportResult)
        from shadowdeco import shadow, sinks

        class Printed(SpanExporter):
            def export(self, spans):
                print(*(span.name for span in spans), flush=True)
                return SpanExportResult.SUCCESS

        sink = sinks.OpenTelemetry()  # the global provider, looked up when a result comes
        provider = TracerProvider()  # shutdown_on_exit=True, the SDK's default
        provider.add_span_processor(BatchSpanProcessor(Printed()))
        trace.set_tracer_provider(provider)  # set up after the sink, as apps may

        def slow(x):
            time.sleep(0.05)  # the candidate's own work, still running at exit
            return x

        @shadow(candidate=slow, sinks=[sink])
        def predict(x):
            return x

        for i in range(3):
            predict(i)
        print("pending", predict.shadow.stats().in_flight, flush=True)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines[0] == "pending"
    assert int(lines[1]) > 0  # work really was pending at exit
    assert lines.count("shadowdeco.result") == 3, proc.stdout


@pytest.mark.parametrize("work", [0.0, 1.2], ids=["quick", "longer-than-the-timeout"])
def test_calls_made_by_the_app_s_exit_handlers_are_still_shadowed(
    tmp_path: Path, work: float
) -> None:
    """An exit handler the app registered at start-up (draining its own backlog) runs
    before shadowdeco's final shutdown: its calls are shadowed and written too, also when
    the handler's own work takes longer than the exit timeout (which bounds shadowdeco's
    waiting, not the app's)."""
    proc = run_script(
        f"""
        import atexit, json, time
        from shadowdeco import shadow

        out = open("results.jsonl", "w")

        @atexit.register
        def drain_backlog():
            time.sleep({work})  # the app's own work at exit
            for i in range(3):
                predict(100 + i)

        @shadow(candidate=abs, sinks=[lambda r: out.write(json.dumps(r.to_dict()) + "\\n")])
        def predict(x):
            return x

        predict(1)
        """,
        tmp_path,
        SHADOWDECO_EXIT_TIMEOUT="1",
    )
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["candidate"]["value"] for line in lines) == [1, 100, 101, 102]


def test_exit_is_not_held_up_by_a_hung_candidate(tmp_path: Path) -> None:
    """A candidate that never ends delays exit by at most SHADOWDECO_EXIT_TIMEOUT."""
    proc = run_script(
        """
        import threading
        from shadowdeco import shadow

        forever = threading.Event()

        @shadow(candidate=lambda x: forever.wait(), timeout=None)
        def predict(x):
            return x

        predict(1)
        print("served")
        """,
        tmp_path,
        SHADOWDECO_EXIT_TIMEOUT="0.2",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "served"


def test_a_forked_child_starts_fresh_and_does_not_deadlock(tmp_path: Path) -> None:
    """After fork the child runs its own workers; the parent's pending work counts as fork."""
    proc = run_script(
        """
        import os, threading, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: on purpose
        from shadowdeco import shadow, sinks

        memory = sinks.Memory()
        gate = threading.Event()

        def candidate(x):
            if x == "parent":
                gate.wait(30)
            return x

        @shadow(candidate=candidate, sinks=[memory])
        def predict(x):
            return x

        predict("parent")  # a worker is busy and holds the experiment's state at fork
        pid = os.fork()
        if pid == 0:
            ok = predict("child") == "child" and predict.shadow.flush(10)
            stats = predict.shadow.stats()
            ok = ok and dict(stats.dropped) == {"fork": 1} and stats.emitted == 1
            ok = ok and [r.candidate.value for r in memory.results] == ["child"]
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        gate.set()
        assert predict.shadow.flush(10)
        print(os.waitstatus_to_exitcode(status), predict.shadow.stats().emitted)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "1"]


def test_kill_switch_environment_variable(tmp_path: Path) -> None:
    """SHADOWDECO_DISABLED=1 turns every experiment off."""
    proc = run_script(
        """
        from shadowdeco import shadow

        @shadow(candidate=abs, sinks=[])
        def predict(x):
            return x

        predict(-1)
        print(predict.shadow.stats().sampled)
        """,
        tmp_path,
        SHADOWDECO_DISABLED="1",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"


def test_a_loop_closed_under_pending_candidates_counts_them() -> None:
    """asyncio.run ending with async candidates pending drops them as loop_closed."""

    @shadow(candidate=never, timeout=None, sinks=[])
    async def predict(x: int) -> int:
        return x

    async def main() -> None:
        for i in range(3):
            assert await predict(i) == i

    asyncio.run(main())
    stats = predict.shadow.stats()
    assert dict(stats.dropped) == {"loop_closed": 3}
    assert stats.in_flight == 0
    assert_adds_up(stats)


def test_a_loop_closed_without_cancelling_its_tasks_counts_them_at_the_next_flush() -> None:
    """loop.close() with candidate tasks pending (nothing cancels them, nothing will run
    them): flush() counts them as loop_closed rather than waiting for them for ever."""

    @shadow(candidate=never, timeout=None, sinks=[])
    async def predict(x: int) -> int:
        return x

    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(predict(1)) == 1
    loop.run_until_complete(asyncio.sleep(0))  # the candidate's task starts, and waits
    loop.close()
    assert predict.shadow.flush(10)
    stats = predict.shadow.stats()
    assert (dict(stats.dropped), stats.in_flight) == ({"loop_closed": 1}, 0)


def test_candidates_orphaned_by_loop_close_give_their_queue_places_back() -> None:
    """Counted as loop_closed, tasks of a closed loop (the one running and the one waiting
    for a concurrency slot) free their max_queue places: later calls are not queue_full."""

    @shadow(candidate=never, timeout=None, max_queue=2, max_concurrency=1, sinks=[])
    async def predict(x: int) -> int:
        return x

    for _ in range(3):
        loop = asyncio.new_event_loop()
        for i in range(2):
            assert loop.run_until_complete(predict(i)) == i
        loop.run_until_complete(asyncio.sleep(0))  # one task runs, one waits for its slot
        loop.close()
        assert predict.shadow.flush(10)
    stats = predict.shadow.stats()
    assert (stats.sampled, dict(stats.dropped)) == (6, {"loop_closed": 6})
    assert not predict.shadow._lane.tasks  # let go: their inputs are not kept for good


def test_results_built_after_close_are_dropped_not_written() -> None:
    """A result still being built when close() let go of the sinks (a slow comparator) is
    dropped as shutdown: no second thread is started for the closed sink."""
    slow_compare = BlockedComparator()
    memory = sinks.Memory()

    @shadow(candidate=echo, compare=slow_compare, sinks=[memory], name="late-results")
    async def live(x: int) -> int:
        return x

    async def main() -> None:
        for i in range(2):
            await live(i)
        await asyncio.gather(*list(live.shadow._lane.tasks))
        await asyncio.sleep(0)

    asyncio.run(main())
    assert slow_compare.entered.wait(10)
    live.shadow.close(0.1)
    slow_compare.release.set()
    assert live.shadow._wait_settled(10)
    stats = live.shadow.stats()
    assert (stats.emitted, dict(stats.dropped)) == (0, {"shutdown": 2})
    assert len(memory) == 0
    assert id(memory) not in _delivery._workers


def test_a_cancelled_live_call_is_counted_not_shadowed() -> None:
    """A live call cancelled (a caller's timeout, a loop shutting down) has no answer to
    compare with: counted as live_cancelled, and no candidate is started for it."""
    started = []

    async def candidate(x: int) -> int:
        started.append(x)
        return x

    @shadow(candidate=candidate, sinks=[])
    async def slow(x: int) -> int:
        await asyncio.Event().wait()
        return x

    async def main() -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(slow(1), 0.01)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert slow.shadow.flush(10)
    stats = slow.shadow.stats()
    assert (stats.sampled, stats.emitted, dict(stats.dropped)) == (1, 0, {"live_cancelled": 1})
    assert started == []


def test_async_candidate_tasks_are_referenced_until_done() -> None:
    """A pending candidate task survives garbage collection and completes."""
    memory = sinks.Memory()
    release: asyncio.Event

    async def candidate(x: int) -> int:
        await release.wait()
        return x

    @shadow(candidate=candidate, sinks=[memory])
    async def predict(x: int) -> int:
        return x

    async def main() -> None:
        nonlocal release
        release = asyncio.Event()
        await predict(5)
        await asyncio.sleep(0)  # let the task start and block
        gc.collect()
        assert len(predict.shadow._lane.tasks) == 1
        release.set()
        assert await predict.shadow.aflush(10)

    asyncio.run(main())
    assert [r.candidate.value for r in memory.results] == [5]


def test_shutdown_closes_and_forgets_every_experiment() -> None:
    """shutdown() flushes, closes and unregisters all experiments."""
    memory = sinks.Memory()

    @shadow(candidate=abs, name="one", sinks=[memory])
    def one(x: int) -> int:
        return abs(x)

    one(-1)
    assert [e.name for e in shadowdeco.experiments()] == ["one"]
    shadowdeco.shutdown(5)
    assert shadowdeco.experiments() == []
    assert len(memory) == 1
    assert one.shadow.closed
    assert one(-2) == 2


def test_async_candidates_cancelled_while_queued_give_their_place_back() -> None:
    """Loops closing under queued async candidates do not shrink max_queue for good."""

    @shadow(candidate=never, timeout=None, max_concurrency=1, max_queue=3, sinks=[])
    async def predict(x: int) -> int:
        return x

    async def burst() -> None:
        for i in range(3):
            await predict(i)
        await asyncio.sleep(0)  # let the first task start; the others wait in the queue

    for _ in range(3):
        asyncio.run(burst())
    stats = predict.shadow.stats()
    assert dict(stats.dropped) == {"loop_closed": 9}
    assert predict.shadow._lane.waiting == 0


def test_async_candidates_see_the_context_of_the_call_start() -> None:
    """What live sets in its context while it runs is invisible to an async candidate."""
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="start")
    memory = sinks.Memory()

    async def candidate() -> str:
        return var.get()

    @shadow(candidate=candidate, sinks=[memory])
    async def predict() -> str:
        var.set("changed by live")
        return var.get()

    async def main() -> None:
        await predict()
        assert await predict.shadow.aflush(10)

    asyncio.run(main())
    assert memory.results[0].candidate.value == "start"


def test_close_counts_pending_async_candidates_as_shutdown() -> None:
    """close() settles pending async candidates as shutdown, then cancels them."""

    @shadow(candidate=never, timeout=None, sinks=[])
    async def predict(x: int) -> int:
        return x

    async def main() -> None:
        await predict(1)
        await asyncio.sleep(0)
        predict.shadow.close(timeout=0)
        await asyncio.sleep(0)

    asyncio.run(main())
    stats = predict.shadow.stats()
    assert dict(stats.dropped) == {"shutdown": 1}
    assert stats.in_flight == 0


@pytest.mark.parametrize("first", ["cold", "warm", "nested"])
def test_a_fork_inside_a_sampled_call_is_counted_once(tmp_path: Path, first: str) -> None:
    """A child forked during a sampled live call counts it as fork, not also as a result:
    whether it is the first call, or comes when the background's threads run, or the child
    makes a sampled call (its threads start) before the forking one returns."""
    proc = run_script(
        """
        import os, warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        from shadowdeco import shadow

        first = os.environ["FIRST"]

        @shadow(candidate=lambda fork: "c", sinks=[])
        def predict(fork):
            if not fork:
                return 1
            pid = os.fork()
            if pid == 0 and first == "nested":
                predict(False)
            return pid

        if first != "cold":  # the parent's result, in the child's counters too
            predict(False)
            predict.shadow.flush(5)
        pid = predict(True)
        if pid == 0:
            predict.shadow.flush(5)
            s = predict.shadow.stats()
            counts = (dict(s.dropped), s.emitted, s.in_flight)
            emitted = {"cold": 0, "warm": 1, "nested": 2}[first]
            os._exit(0 if counts == ({"fork": 1}, emitted, 0) else 1)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """,
        tmp_path,
        FIRST=first,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"


def test_multiprocessing_children_flush_before_they_end(tmp_path: Path) -> None:
    """A forked multiprocessing child flushes its pending shadows as it exits."""
    proc = run_script(
        """
        import multiprocessing, time, warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        from shadowdeco import shadow

        def slow(x):
            time.sleep(0.05)  # the candidate's own work, still running as the child ends
            return x

        def child():
            def sink(result):  # unbuffered: the child ends with os._exit()
                with open("child.jsonl", "a") as out:
                    out.write("x\\n")

            @shadow(candidate=slow, name="child", sinks=[sink])
            def predict(x):
                return x

            for i in range(5):
                predict(i)

        if __name__ == "__main__":
            p = multiprocessing.get_context("fork").Process(target=child)
            p.start()
            p.join(30)
            print(p.exitcode)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"
    assert (tmp_path / "child.jsonl").read_text().count("x") == 5
