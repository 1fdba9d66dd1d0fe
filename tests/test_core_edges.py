"""The runner and the decorator at their edges, found by a review (each test failed before
its fix): async candidates whose task or loop goes away, a config file out of range, races
with ``enabled``, a candidate's own calls, and decorated methods that pickle and copy."""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

import shadowdeco
from shadowdeco import _experiment, _runner, sampling, shadow, sinks


@pytest.fixture(autouse=True)
def _shut_down() -> Iterator[None]:
    yield
    _experiment._state.__dict__.pop("killed", None)
    shadowdeco.configure(config_file=None)
    shadowdeco.shutdown(5)


# Before the fix: An async candidate's task cancelled before its first step (a server cancelling
# every pending task at shutdown, right after a live call returned) is never settled: the
# sampled call stays in flight for ever, flush() never returns True, and its queue place leaks.


def test_candidate_task_cancelled_before_it_starts_is_counted():
    async def cand(x):
        return x

    @shadow(candidate=cand, name="rc-task-cancel-early", sinks=[sinks.Memory()], max_queue=1)
    async def live(x):
        return x

    async def main():
        await live(1)
        # e.g. a graceful shutdown cancelling every other task, before they ran a step
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(main())
    s = live.shadow.stats()
    assert live.shadow.flush(1.0), s
    assert s.sampled == s.emitted + s.dropped_total, s
    assert s.in_flight == 0, s


def test_leaked_queue_place_blocks_later_samples():
    async def cand(x):
        return x

    mem = sinks.Memory()

    @shadow(candidate=cand, name="rc-task-cancel-early-2", sinks=[mem], max_queue=1)
    async def live(x):
        return x

    async def cancelled_early():
        await live(1)
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        await asyncio.sleep(0)

    async def normal():
        await live(2)
        await live.shadow.aflush(2)

    asyncio.run(cancelled_early())
    asyncio.run(normal())
    # the second call was sampled with an empty queue: it must be shadowed, not queue_full
    assert live.shadow.stats().dropped.get("queue_full", 0) == 0, live.shadow.stats()


# Before the fix: A decorated async function driven without an asyncio loop (a coroutine stepped
# by hand, another async framework's runner) raises RuntimeError on sampled calls only, and the
# admitted job is never settled.


def drive(coro):
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the coroutine suspended")


def test_sampled_async_call_without_asyncio_loop_is_transparent():
    @shadow(candidate=lambda x: x, name="rc-noloop", sinks=[])
    async def live(x):
        return x + 1

    live.shadow.enabled = False
    assert drive(live(1)) == 2  # unsampled: works
    live.shadow.enabled = True
    assert drive(live(1)) == 2  # sampled: must behave the same (I1)


def test_sampled_async_call_without_asyncio_loop_accounting():
    @shadow(candidate=lambda x: x, name="rc-noloop-2", sinks=[])
    async def live(x):
        return x + 1

    assert drive(live(1)) == 2
    assert live.shadow.flush(10)
    stats = live.shadow.stats()
    assert stats.sampled == 1
    assert dict(stats.dropped) == {"no_event_loop": 1}


# Before the fix: A config file whose sample is a huge JSON integer raises OverflowError out of
# load(): reload_config() raises into its caller (instead of returning False) and the watcher
# thread dies, so later good files are never applied.


def test_huge_integer_sample_is_rejected_not_raised(tmp_path):
    path = tmp_path / "shadow.json"
    path.write_text(json.dumps({"experiments": {"rc-cfg": {"sample": 0.5}}}))

    @shadow(candidate=abs, name="rc-cfg", sinks=[])
    def live(x):
        return x

    shadowdeco.configure(config_file=str(path), config_interval=0.05)
    assert live.shadow.sample == 0.5
    path.write_text('{"experiments": {"rc-cfg": {"sample": 1' + "0" * 400 + "}}}")
    assert shadowdeco.reload_config() is False  # broken file: logged, ignored


def test_watcher_survives_huge_integer(tmp_path):
    path = tmp_path / "shadow.json"
    path.write_text(json.dumps({"experiments": {"rc-cfg2": {"sample": 0.5}}}))

    @shadow(candidate=abs, name="rc-cfg2", sinks=[])
    def live(x):
        return x

    shadowdeco.configure(config_file=str(path), config_interval=0.05)
    watcher = shadowdeco._experiment._state.config
    errors = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_type)
    try:
        watcher.loaded.clear()
        path.write_text('{"experiments": {"rc-cfg2": {"sample": 1' + "0" * 400 + "}}}")
        assert watcher.loaded.wait(5)
        watcher._thread.join(0.5)
        assert watcher._thread.is_alive(), f"config watcher thread died: {errors}"
    finally:
        threading.excepthook = old_hook


# Before the fix: Experiment._refresh() computes _active from _enabled and the kill switches
# without a lock; a refresh from another thread (a config reload, configure(disabled=...)) that
# read _enabled before `exp.enabled = False` writes its stale True after it: the experiment
# stays active (keeps sampling and shadowing) although enabled is False.


def test_enabled_false_wins_over_a_concurrent_refresh():
    ran = []

    @shadow(candidate=ran.append, name="rc-race-enabled", sinks=[sinks.Memory()])
    def live(x):
        return x

    state = _experiment._state
    original = type(state).killed
    in_refresh, go_on = threading.Event(), threading.Event()

    def slow_killed():  # the other thread is preempted here, after it read _enabled
        if threading.current_thread().name == "refresher":
            in_refresh.set()
            go_on.wait(5)
        return original(state)

    state.killed = slow_killed
    t = threading.Thread(target=_experiment._refresh_all, name="refresher")
    t.start()
    assert in_refresh.wait(5)
    live.shadow.enabled = False  # the operator switches it off
    go_on.set()
    t.join(5)
    del state.killed

    assert live.shadow.enabled is False
    live(1)
    assert live.shadow.flush(5)
    assert live.shadow.stats().sampled == 0, live.shadow.stats()


# Before the fix: Docs: `timeout` is settable while serving and "candidates running now get the
# new deadline". An async candidate run as a task on the caller's loop captured the timeout when
# it started (_run_task(job, exp.timeout)): a hung task never gets the new deadline.


def test_running_async_task_gets_the_new_timeout():
    mem = sinks.Memory()
    started = asyncio.Event()

    async def hangs(x):
        started.set()
        await asyncio.Event().wait()  # hung

    @shadow(candidate=hangs, name="rc-async-timeout-set", timeout=None, sinks=[mem])
    async def live(x):
        return x

    async def main():
        await live(1)
        await started.wait()
        live.shadow.timeout = 0.05  # the operator bounds the hung candidates
        ok = await live.shadow.aflush(3)
        return ok, live.shadow.stats()

    ok, s = asyncio.run(main())
    assert ok, s
    assert s.timeouts == 1, s


# Before the fix: shadow() refuses an async candidate together with executor= (TypeError), but
# the runtime setter `fn.shadow.candidate = async_fn` accepts it silently: every result is then
# a candidate error (the coroutine is never awaited).


def test_swapping_in_an_async_candidate_with_an_executor():
    pool = ThreadPoolExecutor(2)
    mem = sinks.Memory()

    async def v2(x):
        return x

    with pytest.raises(TypeError):
        shadow(candidate=v2, executor=pool, sinks=[])

    @shadow(candidate=lambda x: x, name="rc-swap-exec", executor=pool, sinks=[mem])
    def live(x):
        return x

    try:
        live.shadow.candidate = v2  # either refused as at decoration, or it must work
    except TypeError:
        return
    live(1)
    assert live.shadow.flush(5)
    [result] = mem.wait(1)
    assert result.candidate.status == "ok", result.candidate
    pool.shutdown()


# Before the fix: A candidate that calls the decorated function: the in_shadow() check comes
# after the sampler. At sample=1.0 the inner call is not counted, but with a sampler it is asked
# (user code run, per_second tokens spent) and counted as skipped: sampled + skipped != calls.


def test_candidates_own_calls_are_not_counted_as_skipped():
    asked = []

    def cand(x):
        return live(x + 100)  # the candidate calls the live function (a shared helper)

    def pred(x):
        asked.append(x)
        return x < 100

    @shadow(candidate=cand, name="rc-rec-when", sample=sampling.when(pred), sinks=[])
    def live(x):
        return x

    live(1)  # one call by the application
    assert live.shadow.flush(5)
    s = live.shadow.stats()
    assert s.sampled + s.skipped == 1, s


def test_candidates_own_calls_do_not_spend_the_sampling_budget():
    def cand(x):
        return live(x)

    # two samples per second at most (a burst of 2)
    @shadow(candidate=cand, name="rc-rec-ps", sample=sampling.per_second(2), sinks=[])
    def live(x):
        return x

    live(1)
    assert live.shadow.flush(5)  # its candidate called live(1) once more: in shadow
    live(2)
    assert live.shadow.stats().sampled == 2, live.shadow.stats()


# Before the fix: docs/decorator.md: the decorated callable "binds as a method, pickles by
# reference to its name ... and is its own copy and deepcopy". Only a plain function does: a
# decorated method, classmethod or staticmethod reached through its class or an instance
# (wrapt's bound wrapper) raises NotImplementedError on pickle, copy and deepcopy, where the
# undecorated ones work.


class Model:
    @shadow(candidate=lambda self, x: x, name="rc-pk-method", sinks=[])
    def predict(self, x):
        return x

    @shadow(candidate=lambda x: x, name="rc-pk-static", sinks=[])
    @staticmethod
    def st(x):
        return x

    @shadow(candidate=lambda cls, x: x, name="rc-pk-class", sinks=[])
    @classmethod
    def cm(cls, x):
        return x


class Plain:  # the same, undecorated: what the decorated ones must match (I1)
    def predict(self, x):
        return x

    @staticmethod
    def st(x):
        return x

    @classmethod
    def cm(cls, x):
        return x


CASES = {
    "method via instance": (lambda c: c().predict),
    "function via class": (lambda c: c.predict),
    "staticmethod": (lambda c: c.st),
    "classmethod": (lambda c: c.cm),
}


@pytest.mark.parametrize("case", CASES)
def test_pickles_like_the_undecorated(case):
    get = CASES[case]
    pickle.dumps(get(Plain))  # works undecorated
    args = [Model(), 1] if case == "function via class" else [1]
    assert pickle.loads(pickle.dumps(get(Model)))(*args) == 1  # noqa: S301 - our own bytes


@pytest.mark.parametrize("case", CASES)
def test_copies_like_the_undecorated(case):
    get = CASES[case]
    copy.deepcopy({"fn": get(Plain)})
    copy.copy(get(Model))
    copy.deepcopy({"fn": get(Model)})


def test_an_async_candidate_without_a_timeout_is_never_timed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The task looks at ``timeout`` again every _RECHECK (0 here: at each turn of the
    loop); with none, it waits for the candidate however many looks it takes."""
    monkeypatch.setattr(_runner, "_RECHECK", 0.0)
    mem = sinks.Memory()
    release = asyncio.Event()

    async def slow(x):
        await release.wait()
        return x

    @shadow(candidate=slow, name="rc-async-no-timeout", timeout=None, sinks=[mem])
    async def live(x):
        return x

    async def main():
        await live(1)
        for _ in range(50):  # many looks at the timeout while the candidate waits
            await asyncio.sleep(0)
        release.set()
        assert await live.shadow.aflush(10)

    asyncio.run(main())
    (result,) = mem.results
    assert result.candidate.status == "ok"
