"""Fault catalogue, lifecycle: dead workers, fork, exit, closed loops, close and swap under load."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers import Gate
from reliability_helpers import adds_up, run_script, settle

import shadowdeco
from shadowdeco import _delivery, shadow, sinks


def test_worker_process_is_killed() -> None:
    """A candidate that kills its worker process is a candidate error; live carries on."""
    memory = sinks.Memory()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:

        @shadow(candidate=os._exit, executor=pool, sinks=[memory])
        def predict(code: int) -> int:
            return code

        assert predict(3) == 3
        stats = settle(predict.shadow, timeout=60)
        assert (stats.sampled, stats.emitted, stats.candidate_errors) == (1, 1, 1)
        (result,) = memory.results
        assert result.candidate.error[0] == "concurrent.futures.process.BrokenProcessPool"
        assert predict(4) == 4  # whether the pool is replaced or stays broken: counted
        stats = settle(predict.shadow, timeout=60)
        assert (stats.sampled, stats.emitted) == (2, 2)


def test_fork_with_work_pending(tmp_path: Path) -> None:
    """A child forked with shadows pending counts them as fork and runs its own; the parent
    finishes its own."""
    proc = run_script(
        """
        import json, os, threading, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: on purpose
        from shadowdeco import shadow, sinks

        memory = sinks.Memory()
        entered = threading.Semaphore(0)
        release = threading.Event()

        def candidate(x):
            if x < 0:
                entered.release()
                release.wait(30)
            return x

        @shadow(candidate=candidate, max_concurrency=2, sinks=[memory])
        def predict(x):
            return x

        lives = [predict(-i - 1) for i in range(6)]  # 2 running, 4 waiting at fork
        assert all(entered.acquire(timeout=10) for _ in range(2))
        pid = os.fork()
        if pid == 0:
            lives += [predict(i) for i in range(5)]
            flushed = predict.shadow.flush(10)
            s = predict.shadow.stats()
            report = dict(
                lives=lives, flushed=flushed, sampled=s.sampled, emitted=s.emitted,
                dropped=dict(s.dropped), in_flight=s.in_flight,
                values=sorted(r.candidate.value for r in memory.results),
            )
            with open("child.json", "w") as f:
                json.dump(report, f)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        release.set()
        flushed = predict.shadow.flush(10)
        s = predict.shadow.stats()
        print(json.dumps(dict(
            code=os.waitstatus_to_exitcode(status), lives=lives, flushed=flushed,
            sampled=s.sampled, emitted=s.emitted, dropped=dict(s.dropped), in_flight=s.in_flight,
            values=sorted(r.candidate.value for r in memory.results),
        )))
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    parent = json.loads(proc.stdout)
    child = json.loads((tmp_path / "child.json").read_text())
    assert parent == {
        "code": 0,
        "lives": [-1, -2, -3, -4, -5, -6],
        "flushed": True,
        "sampled": 6,
        "emitted": 6,
        "dropped": {},
        "in_flight": 0,
        "values": [-6, -5, -4, -3, -2, -1],
    }
    assert child == {
        "lives": [-1, -2, -3, -4, -5, -6, 0, 1, 2, 3, 4],
        "flushed": True,
        "sampled": 11,
        "emitted": 5,
        "dropped": {"fork": 6},
        "in_flight": 0,
        "values": [0, 1, 2, 3, 4],
    }


def test_fork_after_a_process_pool_was_used(tmp_path: Path) -> None:
    """A child forked after the pool ran (a --preload warm-up) starts its own worker
    processes: each process gets its own answers, flushes, and the child, exiting normally,
    neither kills nor joins the parent's workers."""
    proc = run_script(
        """
        import json, os, sys, time, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: on purpose
        import shadowdeco
        from shadowdeco import shadow, sinks

        def tag(who, i):
            time.sleep(0.001)
            return who, i

        if __name__ == "__main__":
            pool = shadowdeco.ProcessPool(1)
            memory = sinks.Memory()

            @shadow(candidate=tag, executor=pool, sinks=[memory], max_queue=10_000)
            def live(who, i):
                return who, i

            live("warm", 0)
            assert shadowdeco.flush(30)
            memory.clear()
            warm = pool.call(os.getpid)
            pid = os.fork()
            who = "child" if pid == 0 else "parent"
            wrong = sum(pool.call(tag, who, i) != (who, i) for i in range(100))
            for i in range(100):
                live(who, i)
            report = dict(
                who=who, wrong=wrong, flushed=shadowdeco.flush(30),
                matches=sorted({r.match for r in memory.results}), results=len(memory),
                worker=pool.call(os.getpid) == warm, restarts=pool.restarts,
            )
            if pid == 0:
                with open("child.json", "w") as f:
                    json.dump(report, f)
                shadowdeco.shutdown()
                pool.shutdown()
                sys.exit(0)  # exit handlers run: multiprocessing's must leave the parent's be
            _, status = os.waitpid(pid, 0)
            report["child_code"] = os.waitstatus_to_exitcode(status)
            report["worker_after"] = pool.call(os.getpid) == warm
            report["restarts_after"] = pool.restarts
            print(json.dumps(report))
            shadowdeco.shutdown()
            pool.shutdown()
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    parent = json.loads(proc.stdout)
    child = json.loads((tmp_path / "child.json").read_text())
    common = {"wrong": 0, "flushed": True, "matches": [True], "results": 100, "restarts": 0}
    assert parent == {
        **common,
        "who": "parent",
        "worker": True,
        "child_code": 0,
        "worker_after": True,
        "restarts_after": 0,
    }
    assert child == {**common, "who": "child", "worker": False}


def test_interpreter_exit_with_work_pending(tmp_path: Path) -> None:
    """At exit, pending shadows are written; a hung one is dropped as shutdown at the deadline."""
    proc = run_script(
        """
        import atexit, json

        def report():  # registered before shadowdeco's own hook, so it runs after it
            out = {}
            for fn in (slow_predict, hung_predict):
                s = fn.shadow.stats()
                out[fn.shadow.name] = [s.sampled, s.emitted, dict(s.dropped), s.in_flight]
            print(json.dumps(out))

        atexit.register(report)

        import threading
        from shadowdeco import shadow, sinks

        def slow(x):
            threading.Event().wait(0.02)  # the candidate's own work, still running at exit
            return x

        @shadow(candidate=slow, name="a-slow", sinks=[sinks.JsonLines("out.jsonl")])
        def slow_predict(x):
            return x

        forever = threading.Event()

        @shadow(candidate=lambda x: forever.wait(), name="b-hung", timeout=None, sinks=[])
        def hung_predict(x):
            return x

        assert [slow_predict(i) for i in range(20)] == list(range(20))
        assert hung_predict(1) == 1
        assert slow_predict.shadow.stats().emitted < 20  # really pending
        """,
        tmp_path,
        SHADOWDECO_EXIT_TIMEOUT="1",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "a-slow": [20, 20, {}, 0],
        "b-hung": [1, 0, {"shutdown": 1}, 0],
    }
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["candidate"]["value"] for line in lines) == list(range(20))


def test_event_loop_closed_with_async_candidates_pending() -> None:
    """Closing a loop under pending async candidates drops them as loop_closed; finished ones
    are emitted."""
    memory = sinks.Memory()

    async def candidate(x: int) -> int:
        if x % 2:
            await asyncio.Event().wait()  # never ends
        return x

    @shadow(candidate=candidate, timeout=None, sinks=[memory])
    async def predict(x: int) -> int:
        return x

    async def main() -> list[int]:
        lives = [await predict(i) for i in range(6)]
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, memory.wait, 3, 10)  # the loop keeps running
        return lives

    assert asyncio.run(main()) == list(range(6))
    stats = settle(predict.shadow)
    assert (stats.sampled, stats.emitted, dict(stats.dropped)) == (6, 3, {"loop_closed": 3})
    assert sorted(r.candidate.value for r in memory.results) == [0, 2, 4]


def hammer(
    fn: Callable[[int], int], stop: threading.Event, progress: threading.Semaphore
) -> tuple[threading.Thread, list[str]]:
    """A thread calling ``fn`` until ``stop``; wrong live answers are collected, not raised."""
    errors: list[str] = []

    def run() -> None:
        i = 0
        while not stop.is_set():
            try:
                got = fn(i)
            except BaseException as exc:
                errors.append(repr(exc))
                return
            if got != i:
                errors.append(f"{i} -> {got}")
            progress.release()
            i += 1

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_experiment_closed_while_calls_are_in_flight() -> None:
    """Closing an experiment with calls running, queued and still in their live part drops
    each of them once as shutdown and leaves every live answer right."""
    gate = Gate()
    in_live = threading.Semaphore(0)
    live_release = threading.Event()

    @shadow(candidate=gate, max_concurrency=2, max_queue=100, sinks=[])
    def predict(x: int) -> int:
        if x >= 100:  # a live call still running when close() comes
            in_live.release()
            live_release.wait(30)
        return x

    assert [predict(i) for i in range(2)] == [0, 1]
    assert gate.wait_entered(2)  # two candidates running
    assert [predict(i) for i in range(2, 10)] == list(range(2, 10))  # eight waiting
    results: dict[int, Any] = {}

    def call(x: int) -> None:
        try:
            results[x] = predict(x)
        except BaseException as exc:
            results[x] = exc

    callers = [threading.Thread(target=call, args=(100 + t,)) for t in range(4)]
    for thread in callers:
        thread.start()
    assert all(in_live.acquire(timeout=10) for _ in callers)  # four in their live part
    assert predict.shadow.stats().in_flight == 14
    predict.shadow.close(timeout=0)
    live_release.set()
    for thread in callers:
        thread.join(10)
    assert results == {100 + t: 100 + t for t in range(4)}
    after = [threading.Thread(target=lambda: [call(200 + i) for i in range(50)]) for _ in range(4)]
    for thread in after:
        thread.start()
    for thread in after:
        thread.join(10)
    assert all(results[200 + i] == 200 + i for i in range(50))
    gate.release.set()
    assert gate.finished.wait(10)
    stats = settle(predict.shadow)
    assert (stats.sampled, stats.emitted, dict(stats.dropped)) == (14, 0, {"shutdown": 14})


def test_close_between_the_closed_check_and_the_enqueue() -> None:
    """A call whose live part ends just as close() runs is still settled exactly once."""
    gate = Gate()

    @shadow(candidate=gate, max_concurrency=1, sinks=[])
    def predict(x: int) -> int:
        return x

    assert predict(0) == 0
    assert gate.wait_entered()  # the only worker is busy
    lane = predict.shadow._lane
    real_put = lane.put
    in_put = threading.Event()
    go_on = threading.Event()

    def slow_put(job: Any) -> None:  # widens the window between the check and the enqueue
        in_put.set()
        go_on.wait(10)
        real_put(job)

    lane.put = slow_put  # type: ignore[method-assign]
    caller = threading.Thread(target=predict, args=(1,))
    caller.start()
    assert in_put.wait(10)
    predict.shadow.close(timeout=0)
    go_on.set()
    caller.join(10)
    gate.release.set()
    stats = predict.shadow.stats()
    assert predict.shadow.flush(0.5), stats
    assert dict(predict.shadow.stats().dropped) == {"shutdown": 2}


def test_a_call_ending_while_close_flushes_leaves_the_queue_to_the_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """close() flushes what is queued; a call whose live part ends meanwhile is dropped as
    shutdown on its own, and does not take the queued calls with it."""
    gate = Gate()
    in_live, live_release, flushing = threading.Event(), threading.Event(), threading.Event()

    @shadow(candidate=gate, max_concurrency=1, sinks=[])
    def predict(x: int) -> int:
        if x == 3:
            in_live.set()
            live_release.wait(10)
        return x

    for x in range(3):  # 0 holds the only worker; 1 and 2 wait in the queue
        assert predict(x) == x
    assert gate.wait_entered()
    caller = threading.Thread(target=predict, args=(3,))
    caller.start()
    assert in_live.wait(10)
    exp = predict.shadow
    real_flush = exp.flush

    def flush(timeout: float | None = 10.0) -> bool:
        flushing.set()
        return real_flush(timeout)

    monkeypatch.setattr(exp, "flush", flush)
    closer = threading.Thread(target=exp.close, args=(20,))
    closer.start()
    assert flushing.wait(10)
    live_release.set()  # call 3 ends while close() waits for 0, 1 and 2
    caller.join(10)
    gate.release.set()
    closer.join(30)
    stats = adds_up(exp.stats())
    assert (stats.emitted, dict(stats.dropped)) == (3, {"shutdown": 1})


def test_candidate_swapped_while_calls_are_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """Swapping the candidate under load: each call finishes with the candidate it started with."""
    # Four threads call as fast as they can: on a loaded machine the Memory sink's thread can
    # fall its 10,000 results behind and drop (counted, as designed), which is not what this
    # test is about; room for every result keeps each one to look at.
    monkeypatch.setattr(_delivery, "max_pending", 1_000_000)
    memory = sinks.Memory()
    gate = Gate()
    gated = {"on": True}

    def first(x: int) -> tuple[str, int]:
        if gated["on"]:
            gate(x)
        return ("a", x)

    def second(x: int) -> tuple[str, int]:
        return ("b", x)

    @shadow(candidate=first, max_queue=100_000, sinks=[memory])
    def predict(x: int) -> int:
        return x

    assert predict(-1) == -1
    assert gate.wait_entered()
    predict.shadow.candidate = second  # the call in flight keeps "first"
    gated["on"] = False
    gate.release.set()
    assert memory.wait(1, timeout=10)[0].candidate.value == ("a", -1)

    stop = threading.Event()
    progress = threading.Semaphore(0)
    workers = [hammer(predict, stop, progress) for _ in range(4)]
    for swap in range(400):
        assert progress.acquire(timeout=10)
        predict.shadow.candidate = first if swap % 2 else second
    stop.set()
    for thread, _ in workers:
        thread.join(10)
    assert [errors for _, errors in workers] == [[]] * 4
    stats = settle(predict.shadow)
    assert stats.dropped == {}
    results = memory.results
    assert len(results) == stats.emitted == stats.sampled
    assert all(r.candidate.status == "ok" for r in results)
    assert all(r.candidate.value[1] == r.live.value for r in results)
    assert {r.candidate.value[0] for r in results} == {"a", "b"}


def test_candidate_closes_its_own_experiment() -> None:
    """A candidate that closes its own experiment ends it cleanly, its own call dropped."""

    def candidate(x: int) -> int:
        predict.shadow.close(timeout=0)
        return x

    @shadow(candidate=candidate, name="closes-itself", sinks=[])
    def predict(x: int) -> int:
        return x

    assert predict(1) == 1
    stats = settle(predict.shadow)
    assert (stats.sampled, dict(stats.dropped)) == (1, {"shutdown": 1})
    assert predict.shadow.closed
    assert predict(2) == 2
    assert settle(predict.shadow).sampled == 1
    assert "closes-itself" not in [e.name for e in shadowdeco.experiments()]


def test_sink_closes_its_experiment() -> None:
    """A sink that stops the experiment (say, after too many mismatches) closes it cleanly."""
    memory = sinks.Memory()
    closed = threading.Event()

    class StopAfterThree:
        def emit(self, result: Any) -> None:
            memory.emit(result)
            if len(memory) == 3:
                predict.shadow.close(timeout=0.2)

        def close(self) -> None:
            closed.set()

    @shadow(candidate=lambda x: x, max_concurrency=1, sinks=[StopAfterThree()])
    def predict(x: int) -> int:
        return x

    for i in range(3):
        assert predict(i) == i
        assert len(memory.wait(i + 1, timeout=10)) == i + 1
    assert closed.wait(2)
    assert predict(3) == 3  # closed: live only
    stats = settle(predict.shadow)
    assert (stats.sampled, stats.emitted, stats.sink_errors) == (3, 3, 0)
    assert predict.shadow.name not in [e.name for e in shadowdeco.experiments()]
