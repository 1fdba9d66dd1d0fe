"""executor=: candidates in any concurrent.futures.Executor, e.g. a process pool."""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.spawn
import operator
import os
import pickle
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest
from helpers import assert_adds_up

import shadowdeco
from shadowdeco import _pool, shadow, sinks
from shadowdeco._runner import BATCH


@pytest.fixture
def pool() -> Iterator[ProcessPoolExecutor]:
    # spawn: forking a process that runs threads (ours, pytest's) is unsafe.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as executor:
        yield executor


def test_a_module_level_candidate_runs_in_a_process_pool(pool: ProcessPoolExecutor) -> None:
    """The candidate runs in another process, marked as shadow there, and is compared."""
    memory = sinks.Memory()

    @shadow(candidate=operator.mul, executor=pool, sinks=[memory])
    def predict(a: int, b: int) -> int:
        return a * b

    @shadow(candidate=shadowdeco.in_shadow, executor=pool, sinks=[memory])
    def where() -> bool:
        return shadowdeco.in_shadow()

    assert [predict(i, 3) for i in range(5)] == [0, 3, 6, 9, 12]
    assert where() is False
    assert shadowdeco.flush(60)
    by_exp = {}
    for r in memory.results:
        by_exp.setdefault(r.experiment, []).append(r)
    assert all(r.match for r in by_exp[predict.shadow.name])
    (where_result,) = by_exp[where.shadow.name]
    assert where_result.candidate.value is True  # in_shadow() inside the worker process


def test_unpicklable_candidates_are_recorded_as_errors(pool: ProcessPoolExecutor) -> None:
    """A candidate a process pool cannot pickle is a candidate error, not the caller's."""
    memory = sinks.Memory()

    @shadow(candidate=lambda x: x, executor=pool, sinks=[memory])
    def predict(x: int) -> int:
        return x

    assert predict(1) == 1
    assert predict.shadow.flush(60)
    (result,) = memory.results
    assert result.candidate.status == "error"
    assert result.candidate.error is not None
    text = (result.candidate.error[0] + result.candidate.error[1]).lower()
    assert "pickle" in text or "local object" in text  # the wording moved in Python 3.13


def test_a_killed_worker_process_is_a_candidate_error(pool: ProcessPoolExecutor) -> None:
    """A candidate that kills its worker process leaves live alone and is counted."""
    memory = sinks.Memory()

    @shadow(candidate=os._exit, executor=pool, sinks=[memory])
    def predict(code: int) -> int:
        return code

    assert predict(3) == 3
    assert predict.shadow.flush(60)
    assert predict(4) == 4  # the pool is broken now: submitting fails at once
    assert predict.shadow.flush(60)
    assert [r.candidate.error[0] for r in memory.results if r.candidate.error] == [
        "concurrent.futures.process.BrokenProcessPool"
    ] * 2
    assert_adds_up(predict.shadow.stats())


def test_any_executor_works() -> None:
    """A ThreadPoolExecutor is an executor too."""
    memory = sinks.Memory()
    with ThreadPoolExecutor(2) as executor:

        @shadow(candidate=abs, executor=executor, sinks=[memory])
        def predict(x: int) -> int:
            return abs(x)

        for i in range(-5, 5):
            predict(i)
        assert predict.shadow.flush(10)
    assert len(memory) == 10
    assert all(r.match for r in memory.results)


def test_samples_an_executor_cancels_at_its_shutdown_are_dropped_as_shutdown() -> None:
    """shutdown(cancel_futures=True) on the user's pool: the samples it cancels are dropped
    as shutdown, not recorded as candidate errors (nor mismatches)."""
    pool = ThreadPoolExecutor(1)
    entered, release = threading.Event(), threading.Event()

    def candidate(x: int) -> int:
        if x == 0:
            entered.set()
            release.wait(30)
        return x

    @shadow(candidate=candidate, executor=pool, sinks=[], max_concurrency=3)
    def predict(x: int) -> int:
        return x

    for i in range(3):
        predict(i)
    assert entered.wait(10)
    pool.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert predict.shadow.flush(10)
    stats = predict.shadow.stats()
    assert (stats.emitted, stats.candidate_errors, dict(stats.dropped)) == (1, 0, {"shutdown": 2})


def test_thread_executors_run_in_the_callers_context_and_leave_no_mark() -> None:
    """A thread pool candidate sees the caller's contextvars; the pool's threads stay clean."""
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    memory = sinks.Memory()
    with ThreadPoolExecutor(1) as executor:

        @shadow(candidate=var.get, executor=executor, sinks=[memory])
        def predict() -> str:
            return var.get()

        var.set("caller")
        assert predict() == "caller"
        assert predict.shadow.flush(10)
        assert memory.results[0].candidate.value == "caller"
        assert executor.submit(shadowdeco.in_shadow).result() is False


def test_a_process_pool_replaces_itself_after_a_worker_dies() -> None:
    """shadowdeco.ProcessPool counts a dead worker, starts afresh, and later calls work."""
    memory = sinks.Memory()
    pool = shadowdeco.ProcessPool(1)
    try:

        @shadow(candidate=os._exit, name="killer", executor=pool, sinks=[memory])
        def kill(code: int) -> int:
            return code

        @shadow(candidate=operator.neg, name="after", executor=pool, sinks=[memory])
        def neg(x: int) -> int:
            return -x

        assert kill(3) == 3
        assert kill.shadow.flush(60)
        assert neg(5) == -5
        assert neg.shadow.flush(60)
        assert pool.restarts == 1
        statuses = {r.experiment: r.candidate.status for r in memory.results}
        assert statuses == {"killer": "error", "after": "ok"}
        assert [r.match for r in memory.results if r.experiment == "after"] == [True]
    finally:
        pool.shutdown()


def test_a_process_pool_checks_its_options() -> None:
    """A bad max_workers or nice fails at construction, naming it and the value."""
    with pytest.raises(ValueError, match="max_workers must be a positive int or None, got 0"):
        shadowdeco.ProcessPool(0)
    for bad in (-1, 20, True, 2.5, "10"):
        with pytest.raises(ValueError, match=f"nice must be an int from 0 to 19, got {bad!r}"):
            shadowdeco.ProcessPool(1, nice=bad)


@pytest.mark.skipif(not hasattr(os, "nice"), reason="no os.nice on this platform")
@pytest.mark.parametrize("nice", [None, 0, 5])
def test_process_pool_workers_yield_the_cpu_to_live(nice: int | None) -> None:
    """Worker processes lower their CPU priority (by 10 unless told): when the machine is
    busy they take the CPU the live processes leave, not a share of theirs."""
    pool = shadowdeco.ProcessPool(1) if nice is None else shadowdeco.ProcessPool(1, nice=nice)
    try:
        worker_nice = pool.submit(os.nice, 0).result(timeout=60)
    finally:
        pool.shutdown()
    expected = 10 if nice is None else nice
    assert worker_nice == min(19, os.nice(0) + expected)


# --------------------------------------------------------------------------------------------
# ProcessPool batches: several calls in one message, their answers written together


def _unpicklable() -> object:
    return threading.Lock()


def test_a_process_pool_runs_a_batch_and_answers_each_call() -> None:
    """call_each: one answer per call, in order; a call that fails fails alone."""
    pool = shadowdeco.ProcessPool(1)
    try:
        answers = pool.call_each(
            [
                (pow, (2, 10), {}),
                (operator.truediv, (1, 0), {}),
                (_unpicklable, (), {}),
                (divmod, (7, 2), {}),
            ]
        )
    finally:
        pool.shutdown()
    assert [kind for kind, _ in answers] == ["returned", "raised", "raised", "returned"]
    assert answers[0][1] == 1024
    assert isinstance(answers[1][1], ZeroDivisionError)
    assert isinstance(answers[2][1], TypeError)
    assert "cannot send the result back" in str(answers[2][1])
    assert answers[3][1] == (3, 1)


def test_a_worker_that_dies_in_a_batch_is_counted_and_replaced() -> None:
    """The calls whose answers had not come back (the worker writes a batch's answers at its
    end) get BrokenProcessPool; a fresh worker takes the next batch."""
    pool = shadowdeco.ProcessPool(1)
    try:
        answers = pool.call_each([(abs, (-1,), {}), (os._exit, (3,), {}), (abs, (-2,), {})])
        assert pool.restarts == 1
        assert pool.call_each([(abs, (-3,), {})]) == [("returned", 3)]
    finally:
        pool.shutdown()
    assert [kind for kind, _ in answers] == ["raised"] * 3
    assert all(isinstance(value, BrokenProcessPool) for _, value in answers)


def test_a_long_batch_writes_its_answers_as_it_goes() -> None:
    """A worker writes the answers it has once 50 ms passed: when it dies later in the
    batch, those answers stand."""
    pool = shadowdeco.ProcessPool(1)
    try:
        answers = pool.call_each([(abs, (-1,), {}), (time.sleep, (0.1,), {}), (os._exit, (3,), {})])
    finally:
        pool.shutdown()
    assert answers[:2] == [("returned", 1), ("returned", None)]
    assert answers[2][0] == "raised"
    assert isinstance(answers[2][1], BrokenProcessPool)


def test_answers_come_back_while_a_later_call_of_the_batch_runs_on(tmp_path: Any) -> None:
    """The answers before a call that runs on (it may hang until killed) are written within
    50 ms, by the worker's own thread, and ``arrived`` is told of each as it comes."""
    pool = shadowdeco.ProcessPool(1)
    told: list[tuple[int, Any]] = []
    first = threading.Event()

    def arrived(index: int, answer: Any) -> None:
        told.append((index, answer))
        first.set()

    caller = threading.Thread(
        target=pool.call_each,
        args=([(abs, (-1,), {}), (_gate, (str(tmp_path),), {})],),
        kwargs={"arrived": arrived},
    )
    try:
        caller.start()
        _wait_for_file(str(tmp_path / "entered"))
        assert first.wait(30), "the first answer waited for the call after it"
        assert told == [(0, ("returned", 1))]
    finally:
        (tmp_path / "release").touch()
        caller.join(60)
        pool.shutdown()
    assert told == [(0, ("returned", 1)), (1, ("returned", "released"))]


def _queued_into_one_batch(
    call_each: Callable[[Callable[[Any], Any], Any], Any], n: int
) -> tuple[Any, sinks.Memory]:
    """``n`` samples on a one-worker pool that is busy when they come: the first waits for
    the worker alone, the rest queue behind it into one batch.  ``call_each(real, calls)``
    stands in for the pool's ``call_each`` (``real``)."""
    memory = sinks.Memory()
    pool = shadowdeco.ProcessPool(1)
    slots = pool._slots = _Slots(1)
    real = pool.call_each
    pool.call_each = lambda calls, **options: call_each(  # type: ignore[method-assign]
        functools.partial(real, **options), calls
    )
    try:
        # One worker thread: a second one (for a "stuck" first) would take half the queue.
        @shadow(
            candidate=operator.neg, executor=pool, sinks=[memory], timeout=None, max_concurrency=1
        )
        def predict(x: int) -> int:
            return -x

        slots.acquire()  # the worker is busy: the first batch waits for it
        try:
            assert predict(0) == 0
            assert slots.waiting.wait(10)
            for i in range(1, n):
                assert predict(i) == -i
        finally:
            slots.release()
        assert predict.shadow.flush(60)
    finally:
        pool.shutdown()
    return predict, memory


def test_jobs_that_wait_go_to_the_worker_in_one_message() -> None:
    """A lane sends the jobs that queued while its worker process was busy as one batch, and
    each gets its own result."""
    sizes: list[int] = []

    def spy(real: Callable[[Any], Any], calls: Any) -> Any:
        sizes.append(len(calls))
        return real(calls)

    predict, memory = _queued_into_one_batch(spy, 10)
    assert sizes == [1, 9]
    assert sorted(r.candidate.value for r in memory.results) == sorted(-i for i in range(10))
    assert all(r.match for r in memory.results)
    assert_adds_up(predict.shadow.stats())


def test_a_lane_runs_no_more_threads_than_its_process_pool_has_workers() -> None:
    """More would only wait for a worker process, each taking the GIL from the live thread
    whenever the pool's slot is handed on (batches went round four threads)."""
    pool = shadowdeco.ProcessPool(1)
    try:

        @shadow(candidate=time.sleep, executor=pool, max_queue=10_000, sinks=[])
        def predict(seconds: float) -> None:
            return None

        pool.call(abs, -1)  # a worker started
        for _ in range(300):
            predict(0.002)  # slow: a thread-run lane grows up to max_concurrency (4)
        assert predict.shadow.flush(60)
        assert predict.shadow.max_concurrency == 4
        assert predict.shadow._lane.threads() == 1
    finally:
        pool.shutdown()
    assert_adds_up(predict.shadow.stats())


def test_a_hung_comparator_holds_up_only_its_own_batch_in_a_process_pool_lane() -> None:
    """A worker that hangs comparing (out of the pool) is stuck: the timer adds one past the
    one-thread-per-process bound, and it takes the pool's free worker process."""
    release, comparing = threading.Event(), threading.Event()
    later: list[Any] = []
    four = threading.Event()

    def compare(live: int, candidate: int) -> bool:
        if live == 0:
            comparing.set()
            release.wait(60)
        return live == candidate

    def sink(result: Any) -> None:
        later.append(result)
        if len(later) == 4:
            four.set()

    pool = shadowdeco.ProcessPool(1)
    try:

        @shadow(candidate=operator.neg, executor=pool, compare=compare, sinks=[sink])
        def predict(x: int) -> int:
            return -x

        pool.call(abs, -1)  # a worker started
        predict(0)
        assert comparing.wait(30)
        for i in range(1, 5):
            predict(i)
        try:
            assert four.wait(30), "the lane waited for the hung comparator"
        finally:
            release.set()
        assert predict.shadow.flush(30)
    finally:
        pool.shutdown()
    # The four that came after, then the hung one's, once its comparator returned.
    assert [r.live.value for r in later[4:]] == [0]
    assert sorted(r.live.value for r in later[:4]) == [-4, -3, -2, -1]
    assert_adds_up(predict.shadow.stats())


def test_a_batch_takes_at_most_half_the_timeout() -> None:
    """The batch size: the most (BATCH) without a timeout, one until a run was measured, and
    then as many runs as fit in half the timeout, by the longest run lately."""
    pool = shadowdeco.ProcessPool(1)
    try:

        @shadow(candidate=operator.neg, executor=pool, sinks=[], timeout=10.0)
        def predict(x: int) -> int:
            return -x

        lane = predict.shadow._lane
        assert lane.batch_limit() == 1
        with predict.shadow._lock:
            lane._record_run_locked(0.001)
        assert lane.batch_limit() == BATCH
        with predict.shadow._lock:
            lane._record_run_locked(0.5)  # one long run counts at once
        assert lane.batch_limit() == 10
        with predict.shadow._lock:
            lane._record_run_locked(0.001)  # and is forgotten slowly
        assert lane.batch_limit() == 10
        with predict.shadow._lock:
            lane._record_run_locked(30.0)
        assert lane.batch_limit() == 1
        predict.shadow.timeout = None
        assert lane.batch_limit() == BATCH
    finally:
        pool.shutdown()


def test_an_unpicklable_input_fails_only_its_own_call_in_a_batch() -> None:
    """When one job of a batch will not pickle, the batch goes one call at a time."""
    memory = sinks.Memory()
    pool = shadowdeco.ProcessPool(1)
    slots = pool._slots = _Slots(1)
    try:

        @shadow(candidate=repr, executor=pool, sinks=[memory], timeout=None, max_concurrency=1)
        def predict(x: object) -> str:
            return repr(x)

        slots.acquire()
        try:
            predict(0)
            assert slots.waiting.wait(10)
            predict(1)
            predict(lambda: 0)  # copied as it is, but cannot be pickled
            predict(2)
        finally:
            slots.release()
        assert predict.shadow.flush(60)
    finally:
        pool.shutdown()
    assert sorted(r.candidate.status for r in memory.results) == ["error", "ok", "ok", "ok"]
    (failed,) = [r for r in memory.results if r.candidate.status == "error"]
    assert "lambda" in failed.live.value
    assert_adds_up(predict.shadow.stats())


def test_a_traced_call_with_a_process_pool_candidate_links_to_the_live_span() -> None:
    """A job the live call's span traces runs alone, in its context: the result carries the
    live span's ids, as with the thread runner."""
    from opentelemetry.sdk.trace import TracerProvider

    memory = sinks.Memory()
    provider = TracerProvider(shutdown_on_exit=False)
    pool = shadowdeco.ProcessPool(1)
    try:

        @shadow(candidate=operator.neg, executor=pool, sinks=[memory])
        def predict(x: int) -> int:
            return -x

        predict(1)  # untraced, for contrast
        with provider.get_tracer("test").start_as_current_span("live") as live:
            predict(2)
        assert predict.shadow.flush(60)
    finally:
        pool.shutdown()
        provider.shutdown()
    by_input = {r.live.value: r for r in memory.results}
    assert by_input[-1].trace_id is None
    context = live.get_span_context()
    assert by_input[-2].trace_id == format(context.trace_id, "032x")
    assert by_input[-2].span_id == format(context.span_id, "016x")
    assert by_input[-2].candidate.value == -2


def test_a_shut_down_process_pool_drops_its_samples_as_shutdown() -> None:
    """Calls to a ProcessPool after its shutdown are dropped as shutdown, not recorded as
    candidate errors; live carries on."""
    pool = shadowdeco.ProcessPool(1)
    assert pool.call(abs, -1) == 1  # a worker, idle when the pool shuts down
    pool.shutdown()
    with pytest.raises(shadowdeco.PoolClosed):
        pool.call(abs, -1)

    @shadow(candidate=operator.neg, executor=pool, sinks=[])
    def predict(x: int) -> int:
        return -x

    assert [predict(i) for i in range(3)] == [0, -1, -2]
    assert predict.shadow.flush(30)
    stats = predict.shadow.stats()
    assert (stats.sampled, stats.emitted, dict(stats.dropped)) == (3, 0, {"shutdown": 3})
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(abs, 1)


def test_a_batch_the_worker_cannot_unpickle_fails_each_call() -> None:
    """A candidate the worker process cannot import fails every call of its batch, and the
    worker serves the next batch."""
    module = types.ModuleType("shadowdeco_test_parent_only")
    exec("def double(x):\n    return 2 * x\n", module.__dict__)  # noqa: S102 - a module only here
    sys.modules[module.__name__] = module
    pool = shadowdeco.ProcessPool(1)
    try:
        answers = pool.call_each([(module.double, (1,), {}), (module.double, (2,), {})])
        assert [kind for kind, _ in answers] == ["raised", "raised"]
        assert all(isinstance(value, ImportError) for _, value in answers)
        assert pool.call_each([(abs, (-4,), {})]) == [("returned", 4)]
        assert pool.restarts == 0
    finally:
        pool.shutdown()
        del sys.modules[module.__name__]


def test_a_failed_batch_stays_one_answer_when_its_error_will_not_pickle() -> None:
    """The one answer for a batch that did not unpickle keeps its kind when the error itself
    cannot be pickled: the parent counts on one answer for the whole batch."""

    class Unpicklable(Exception):  # a local class: pickle cannot find it
        pass

    kind, error = pickle.loads(_pool._answer(("failed", Unpicklable("x"))))  # noqa: S301 - ours
    assert kind == "failed"
    assert isinstance(error, TypeError)
    assert "cannot send the result back" in str(error)


# --------------------------------------------------------------------------------------------
# ProcessPool faults: hung and dead workers, shutdown, a lane that waits for a worker


class _Slots(threading.BoundedSemaphore):
    """A pool's worker slots that say when a call has to wait for one."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.waiting = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        if super().acquire(blocking=False):
            return True
        self.waiting.set()
        return super().acquire(blocking, timeout)

    def __enter__(self) -> bool:
        return self.acquire()


def _gate(directory: str) -> str:
    """A candidate (in a worker process) that says it began, then waits to be let go."""
    open(os.path.join(directory, "entered"), "w").close()
    while not os.path.exists(os.path.join(directory, "release")):
        time.sleep(0.01)
    return "released"


def _wait_for_file(path: str) -> None:
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_a_short_answer_list_does_not_end_the_lane() -> None:
    """A batch that comes back with fewer answers than calls (it must not, but a forked
    process once shared its workers' pipes) fails the unanswered calls: the lane's thread
    lives on and every sample is accounted for."""

    def short(real: Any, calls: Any) -> Any:
        return real.func(calls)[:-1]  # not told as they come: only in the short list

    predict, memory = _queued_into_one_batch(short, 4)
    stats = predict.shadow.stats()
    assert_adds_up(stats)
    assert stats.emitted == 4
    errors = [r.candidate.error for r in memory.results if r.candidate.status == "error"]
    assert [error[0] for error in errors] == ["concurrent.futures.process.BrokenProcessPool"] * 2


def test_a_hung_candidate_has_its_worker_killed_at_the_timeout() -> None:
    """A candidate that hangs in a ProcessPool is a timeout at its deadline, and its worker
    process is killed then (counted in restarts, replaced): the next sample runs."""
    memory = sinks.Memory()
    pool = shadowdeco.ProcessPool(1)
    try:

        @shadow(candidate=time.sleep, executor=pool, sinks=[memory], timeout=0.5)
        def predict(seconds: float) -> None:
            return None

        pool.call(abs, -1)  # a worker started: the hung call runs, rather than starts, late
        predict(3600)
        assert predict.shadow.flush(60)
        assert pool.restarts == 1
        pool.call(abs, -1)
        predict(0)
        assert predict.shadow.flush(60)
    finally:
        pool.shutdown()
    assert [r.candidate.status for r in memory.results] == ["timeout", "ok"]
    assert memory.results[1].match is True
    assert_adds_up(predict.shadow.stats())


def test_a_worker_that_died_while_idle_is_counted_and_the_call_runs_on_a_fresh_one() -> None:
    """An idle worker killed from outside (the OOM killer): the next call finds it dead when
    it sends (nothing ran), counts it, and runs on a fresh worker."""
    pool = shadowdeco.ProcessPool(1)
    try:
        first = pool.call(os.getpid)
        (worker,) = pool._workers
        worker.process.kill()
        worker.process.join(30)
        second = pool.call(os.getpid)
        assert pool.restarts == 1
        assert second != first
        assert pool.call(os.getpid) == second
    finally:
        pool.shutdown()


def test_shutdown_lets_submitted_calls_finish() -> None:
    """shutdown(wait=True) runs the calls already submitted (the Executor contract) and
    refuses only new ones."""
    pool = shadowdeco.ProcessPool(1)
    slots = pool._slots = _Slots(1)
    slots.acquire()  # the worker is busy: the submitted calls wait
    futures = [pool.submit(abs, -i) for i in range(4)]
    assert slots.waiting.wait(10)
    closer = threading.Thread(target=pool.shutdown)
    closer.start()
    while not pool._closed:  # shutdown began: the calls are still to run
        time.sleep(0.001)
    slots.release()
    closer.join(60)
    assert not closer.is_alive()
    assert [future.result(timeout=0) for future in futures] == [0, 1, 2, 3]
    assert pool.restarts == 0
    with pytest.raises(shadowdeco.PoolClosed):
        pool.submit(abs, -1)


def test_shutdown_waits_for_a_call_in_progress(
    tmp_path: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    """A call in progress when the pool shuts down gets all its answers; the shutdown is no
    crash (restarts stays 0) and the worker writes nothing to stderr."""
    pool = shadowdeco.ProcessPool(1)
    answers: list[Any] = []
    caller = threading.Thread(
        target=lambda: answers.extend(
            pool.call_each([(_gate, (str(tmp_path),), {}), (abs, (-2,), {})])
        )
    )
    caller.start()
    _wait_for_file(str(tmp_path / "entered"))
    closer = threading.Thread(target=pool.shutdown)
    closer.start()
    closer.join(2)  # long enough for a shutdown that stops the worker to have done so
    (tmp_path / "release").touch()
    closer.join(60)
    caller.join(60)
    assert answers == [("returned", "released"), ("returned", 2)]
    assert pool.restarts == 0
    assert not pool._workers
    assert "Traceback" not in capfd.readouterr().err


def test_errors_of_classes_from_the_main_script_keep_their_name_in_a_worker() -> None:
    """A worker process imports the main script as __mp_main__: its exception classes are
    named as live names them (__main__), so both arms' errors compare equal."""
    from shadowdeco._result import error_of

    custom = type("Custom", (Exception,), {"__module__": "__mp_main__"})
    assert error_of(custom("x")) == ("__main__.Custom", "x")


def test_waiting_for_a_worker_process_does_not_count_against_the_timeout() -> None:
    """The timeout counts from when a worker process takes the job: a job that waited for a
    busy pool longer than the timeout still runs, and is compared."""
    memory = sinks.Memory()
    pool = shadowdeco.ProcessPool(1)
    slots = pool._slots = _Slots(1)
    try:

        @shadow(candidate=operator.neg, executor=pool, sinks=[memory], timeout=0.1)
        def predict(x: int) -> int:
            return -x

        pool.call(abs, -1)  # a worker started: its start-up is not what this test is about
        slots.acquire()
        try:
            predict(1)
            assert slots.waiting.wait(10)
            time.sleep(0.3)  # three timeouts, waiting for the worker
        finally:
            slots.release()
        assert predict.shadow.flush(60)
    finally:
        pool.shutdown()
    assert [r.candidate.status for r in memory.results] == ["ok"]
    assert memory.results[0].match is True


def test_a_worker_slow_to_start_is_no_timeout(tmp_path: Any) -> None:
    """A new worker's start-up (a spawned interpreter importing the main module, slow on a
    loaded machine) is not its first batch's time: no timeout, no worker killed, and no
    loop of replacements each killed while starting."""
    slow = tmp_path / "slow-python"
    slow.write_text(f'#!/bin/sh\nsleep 1\nexec "{sys.executable}" "$@"\n')
    slow.chmod(0o755)
    memory = sinks.Memory()
    was = multiprocessing.spawn.get_executable()
    multiprocessing.spawn.set_executable(str(slow))
    pool = shadowdeco.ProcessPool(1)
    try:

        @shadow(candidate=abs, executor=pool, sinks=[memory], timeout=0.5)
        def predict(x: int) -> int:
            return abs(x)

        for i in range(3):
            predict(-i)
        assert predict.shadow.flush(60)
    finally:
        pool.shutdown()
        multiprocessing.spawn.set_executable(was)
    assert [r.candidate.status for r in memory.results] == ["ok"] * 3
    assert pool.restarts == 0


def test_closing_an_experiment_stops_its_hung_process_candidate(tmp_path: Any) -> None:
    """shadowdeco.shutdown() then pool.shutdown(), as the docs say to stop: a candidate hung
    in a worker (no timeout) is dropped as shutdown and its worker killed, so the pool's
    shutdown returns rather than wait for it for ever."""
    pool = shadowdeco.ProcessPool(1)

    @shadow(candidate=_gate, executor=pool, sinks=[], timeout=None)
    def predict(directory: str) -> str:
        return "live"

    predict(str(tmp_path))
    _wait_for_file(str(tmp_path / "entered"))
    predict.shadow.close(timeout=0.5)
    stopping = threading.Thread(target=pool.shutdown)
    stopping.start()
    stopping.join(60)
    assert not stopping.is_alive(), "pool.shutdown() waited on the hung candidate"
    assert dict(predict.shadow.stats().dropped) == {"shutdown": 1}
    assert pool.restarts == 1
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("Spawn")]


def test_a_worker_that_cannot_be_started_is_a_candidate_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No more processes (EAGAIN): the sample is a candidate error, the lane lives on, and
    once processes can start again the next sample runs."""
    memory = sinks.Memory()
    pool = shadowdeco.ProcessPool(1)

    def cannot(self: Any) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    try:

        @shadow(candidate=operator.neg, executor=pool, sinks=[memory], timeout=30)
        def predict(x: int) -> int:
            return -x

        with monkeypatch.context() as patch:
            patch.setattr(_pool._Worker, "start", cannot)
            assert predict(3) == -3
            assert predict.shadow.flush(60)
        assert predict(4) == -4
        assert predict.shadow.flush(60)
    finally:
        pool.shutdown()
    assert [r.candidate.status for r in memory.results] == ["error", "ok"]
    assert memory.results[0].candidate.error is not None
    assert "Resource temporarily unavailable" in memory.results[0].candidate.error[1]
    assert_adds_up(predict.shadow.stats())


def _hang_at_two(x: int) -> int:
    """A candidate (in a worker process) that hangs on 2 and negates anything else."""
    if x == 2:
        time.sleep(3600)
    return -x


def test_a_hang_in_a_batch_makes_timeouts_only_of_the_calls_it_held_up() -> None:
    """Batch-mates answered before a call hangs are results, not timeouts: the worker writes
    their answers while the hung call runs, and the lane claims each as it comes.  The hung
    call and those queued behind it in the batch are timeouts; the worker is killed."""
    memory = sinks.Memory()
    pool = shadowdeco.ProcessPool(1)
    slots = pool._slots = _Slots(1)
    try:

        @shadow(candidate=_hang_at_two, executor=pool, sinks=[memory], timeout=3, max_concurrency=1)
        def predict(x: int) -> int:
            return -x

        pool.call(abs, -1)  # a worker started: the batch runs, rather than starts, late
        slots.acquire()  # the worker is busy: the calls below queue into one batch
        try:
            assert predict(0) == 0
            assert slots.waiting.wait(10)
            for i in range(1, 5):
                assert predict(i) == -i
        finally:
            slots.release()
        assert predict.shadow.flush(60)
        assert pool.restarts == 1
    finally:
        pool.shutdown()
    by_input = sorted((-r.live.value, r.candidate.status) for r in memory.results)
    assert by_input == [(0, "ok"), (1, "ok"), (2, "timeout"), (3, "timeout"), (4, "timeout")]
    assert_adds_up(predict.shadow.stats())
