"""Runtime control: the registry, settable options, the kill switch and the config file."""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import Gate, assert_adds_up

import shadowdeco
from shadowdeco import sampling, shadow, sinks


def test_experiment_is_found_by_name_and_by_attribute() -> None:
    """fn.shadow and shadowdeco.experiment(name) are the same Experiment."""

    @shadow(candidate=abs, name="churn-v2", sinks=[])
    def predict(x: int) -> int:
        return abs(x)

    assert shadowdeco.experiment("churn-v2") is predict.shadow
    assert shadowdeco.experiments() == [predict.shadow]
    with pytest.raises(KeyError, match=r"no experiment named 'nope'.*churn-v2"):
        shadowdeco.experiment("nope")


def test_default_name_is_the_module_qualified_name() -> None:
    """Without name=, the experiment is named module.qualname."""

    @shadow(candidate=abs, sinks=[])
    def predict(x: int) -> int:
        return x

    assert predict.shadow.name == (
        "test_runtime.test_default_name_is_the_module_qualified_name.<locals>.predict"
    )


def test_same_name_same_settings_share_the_experiment() -> None:
    """Decorating twice with the same name and settings shares one experiment."""
    memory = sinks.Memory()
    deco = shadow(candidate=abs, name="shared", sinks=[memory])
    one = deco(lambda x: -x)
    two = deco(lambda x: +x)
    assert one.shadow is two.shadow


def test_same_name_other_settings_is_an_error() -> None:
    """A second experiment under a used name with other settings fails at decoration."""
    shadow(candidate=abs, name="taken", sinks=[])(lambda x: x)
    with pytest.raises(ValueError, match="name 'taken' is already used"):
        shadow(candidate=round, name="taken", sinks=[])(lambda x: x)


def test_a_second_decoration_agrees_with_the_settings_as_decorated() -> None:
    """What changed while serving (sample, candidate, timeout, enabled: by code or by the
    config file) does not make the same decoration, made again, a conflict."""
    deco = shadow(candidate=abs, name="steered", sample=0.5, sinks=[], timeout=2.0)
    one = deco(lambda x: x)
    one.shadow.sample = 0.05
    one.shadow.candidate = round
    one.shadow.timeout = 1.0
    one.shadow.enabled = False
    assert deco(lambda x: x).shadow is one.shadow
    with pytest.raises(ValueError, match="already used"):
        shadow(candidate=round, name="steered", sample=0.05, sinks=[], timeout=1.0)(abs)


def test_a_candidate_swapped_out_is_freed() -> None:
    """The experiment remembers its candidate as decorated (for a second decoration to
    compare with) without keeping it alive: a model swapped out while serving is freed."""

    class Model:
        def predict(self, x: int) -> int:
            return x

    @dataclasses.dataclass
    class Callable_:  # compares by value (a dataclass's __eq__), still not kept alive
        weights: list[float]

        def __call__(self, x: int) -> int:
            return x

    makers: list[Callable[[], Any]] = [lambda: Model().predict, lambda: Callable_([0.5])]
    for make in makers:
        first = make()
        gone = weakref.ref(getattr(first, "__self__", first))
        deco = shadow(candidate=first, name="swapped-out", sinks=[])
        fn = deco(abs)
        assert deco(abs).shadow is fn.shadow  # the same decoration again: shared
        fn.shadow.candidate = Model().predict
        del first, deco  # the decorator (as a factory keeps it) holds what it was given
        gc.collect()
        assert gone() is None
        fn.shadow.close()


@pytest.mark.parametrize(
    ("value", "error"), [("1.5", TypeError), (0, ValueError), (float("nan"), ValueError)]
)
def test_a_bad_timeout_set_while_serving_names_the_parameter(
    value: object, error: type[Exception]
) -> None:
    """A bad timeout fails where it is set, not in the timer thread every experiment shares."""
    fn = shadow(candidate=abs, name="timed", sinks=[])(abs)
    with pytest.raises(error, match="timeout"):
        fn.shadow.timeout = value  # type: ignore[assignment]
    assert fn.shadow.timeout == 10.0
    fn.shadow.timeout = None
    assert fn.shadow.timeout is None


@pytest.mark.parametrize(
    ("attribute", "value"),
    [("name", "renamed"), ("max_concurrency", 1), ("max_queue", 2), ("record_inputs", True)],
)
def test_settings_fixed_at_decoration_are_read_only(attribute: str, value: Any) -> None:
    """Only enabled, sample, candidate and timeout change while serving: a renamed experiment
    would be listed under a name ``experiment()`` cannot find, and the others are bounds and
    choices the decoration was checked against."""

    @shadow(candidate=lambda x: x, name="fixed-settings", sinks=[])
    def f(x: int) -> int:
        return x

    before = getattr(f.shadow, attribute)
    with pytest.raises(AttributeError):
        setattr(f.shadow, attribute, value)
    assert getattr(f.shadow, attribute) == before
    assert shadowdeco.experiment("fixed-settings") is f.shadow


def test_enabled_can_be_switched_while_serving() -> None:
    """enabled turns shadowing off and on at once."""

    @shadow(candidate=abs, sinks=[])
    def predict(x: int) -> int:
        return x

    predict(1)
    predict.shadow.enabled = False
    predict(2)
    predict.shadow.enabled = True
    predict(3)
    assert predict.shadow.stats().sampled == 2


def test_sample_can_be_changed_while_serving() -> None:
    """sample accepts a rate or a sampler at runtime, and rejects bad values."""

    @shadow(candidate=abs, sample=0.0, sinks=[])
    def predict(x: int) -> int:
        return x

    predict(1)
    predict.shadow.sample = sampling.when(lambda x: x > 10)
    predict(5)
    predict(50)
    assert predict.shadow.stats().sampled == 1
    with pytest.raises(ValueError, match=r"sample must be a rate between 0 and 1, got 2"):
        predict.shadow.sample = 2
    assert isinstance(predict.shadow.sample, sampling.Sampler)


def test_candidate_swap_while_calls_are_in_flight() -> None:
    """Calls in flight finish with the candidate they started with; new ones use the new one."""
    memory = sinks.Memory()
    gate = Gate()

    def old(x: int) -> str:
        gate(x)
        return "old"

    @shadow(candidate=old, max_concurrency=1, sinks=[memory])
    def predict(x: int) -> int:
        return x

    predict(1)
    predict(2)  # queued behind the gate, with the old candidate
    assert gate.wait_entered()
    predict.shadow.candidate = lambda x: "new"
    predict(3)
    gate.release.set()
    assert predict.shadow.flush(10)
    assert sorted(r.candidate.value for r in memory.results) == ["new", "old", "old"]
    with pytest.raises(TypeError, match="candidate must be a callable or a method name, got 3"):
        predict.shadow.candidate = 3


def test_swapping_candidates_from_threads_keeps_exact_accounting() -> None:
    """Swaps racing with calls from 4 threads lose no result."""
    memory = sinks.Memory()

    @shadow(candidate=lambda x: "a", max_queue=10_000, sinks=[memory])
    def predict(x: int) -> int:
        return x

    def caller() -> None:
        for i in range(500):
            predict(i)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(200):
        predict.shadow.candidate = (lambda x: "a") if i % 2 else (lambda x: "b")
    for t in threads:
        t.join()
    assert predict.shadow.flush(20)
    stats = predict.shadow.stats()
    assert stats.emitted == len(memory) == 2000
    assert {r.candidate.value for r in memory.results} <= {"a", "b"}
    assert_adds_up(stats)


def test_configure_disabled_is_a_kill_switch() -> None:
    """configure(disabled=True) stops every experiment until it is lifted."""

    @shadow(candidate=abs, sinks=[])
    def predict(x: int) -> int:
        return x

    shadowdeco.configure(disabled=True)
    predict(1)
    assert predict.shadow.stats().sampled == 0
    shadowdeco.configure(disabled=False)
    predict(1)
    assert predict.shadow.stats().sampled == 1


def test_default_sinks_apply_to_experiments_without_sinks() -> None:
    """configure(default_sinks=...) is where experiments without sinks= send results."""
    memory = sinks.Memory()
    shadowdeco.configure(default_sinks=[memory])

    @shadow(candidate=abs)
    def predict(x: int) -> int:
        return abs(x)

    predict(-3)
    predict.shadow.flush(10)
    assert memory.results[0].candidate.value == 3


def test_the_default_sink_logs_each_result(caplog: pytest.LogCaptureFixture) -> None:
    """With no sinks configured, results go to the 'shadowdeco' logger, never lost."""

    @shadow(candidate=abs, name="logged")
    def predict(x: int) -> int:
        return abs(x)

    with caplog.at_level(logging.INFO, logger="shadowdeco"):
        predict(-3)
        predict.shadow.flush(10)
    (record,) = [r for r in caplog.records if r.getMessage().startswith("shadow logged")]
    assert "match=True" in record.getMessage()
    assert record.shadow["candidate"]["value"] == 3  # type: ignore[attr-defined]


def test_flush_all_and_close_all() -> None:
    """shadowdeco.flush() waits for every experiment."""
    memory = sinks.Memory()
    fns = [shadow(candidate=abs, name=f"e{i}", sinks=[memory])(abs) for i in range(3)]
    for fn in fns:
        fn(-1)
    assert shadowdeco.flush(10)
    assert len(memory) == 3


def write_config(path: Path, config: Any) -> None:
    path.write_text(config if isinstance(config, str) else json.dumps(config))


def test_config_file_steers_experiments(tmp_path: Path) -> None:
    """The config file sets enabled and sample, for experiments made before and after."""
    path = tmp_path / "shadow.json"
    write_config(path, {"experiments": {"a": {"enabled": False}, "b": {"sample": 0.0}}})

    @shadow(candidate=abs, name="a", sinks=[])
    def a(x: int) -> int:
        return x

    shadowdeco.configure(config_file=path)

    @shadow(candidate=abs, name="b", sinks=[])
    def b(x: int) -> int:
        return x

    assert a.shadow.enabled is False
    assert b.shadow.sample == 0.0
    write_config(path, {"enabled": False})
    assert shadowdeco.reload_config()
    a.shadow.enabled = True
    a(1)
    assert a.shadow.stats().sampled == 0  # the file's kill switch
    write_config(path, {"enabled": True})
    assert shadowdeco.reload_config()
    a(1)
    assert a.shadow.stats().sampled == 1


@pytest.mark.parametrize(
    "broken",
    [
        "{not json",
        "[]",
        '{"experiments": {"a": {"sample": 5}}}',
        '{"experiments": {"a": {"colour": "red"}}}',
        '{"enabled": "yes"}',
        '{"surprise": 1}',
        "[" * 100_000,  # json.load raises RecursionError on it
    ],
)
def test_a_broken_config_is_logged_and_the_last_good_one_stays(
    tmp_path: Path, broken: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken file changes nothing and says why in the log."""
    path = tmp_path / "shadow.json"
    write_config(path, {"experiments": {"a": {"sample": 0.5}}})

    @shadow(candidate=abs, name="a", sinks=[])
    def a(x: int) -> int:
        return x

    shadowdeco.configure(config_file=path)
    assert a.shadow.sample == 0.5
    write_config(path, broken)
    with caplog.at_level(logging.ERROR, logger="shadowdeco"):
        assert shadowdeco.reload_config() is False
    assert a.shadow.sample == 0.5
    assert any(
        "config file" in r.getMessage() and "ignored" in r.getMessage() for r in caplog.records
    )


def test_the_watcher_rereads_a_changed_file(tmp_path: Path) -> None:
    """The watcher thread applies an edited file without being asked."""
    path = tmp_path / "shadow.json"
    write_config(path, {"experiments": {"a": {"sample": 1.0}}})

    @shadow(candidate=abs, name="a", sinks=[])
    def a(x: int) -> int:
        return x

    shadowdeco.configure(config_file=path, config_interval=0.01)
    from shadowdeco._experiment import _state

    watcher = _state.config
    assert watcher is not None
    watcher.loaded.clear()
    write_config(path, {"experiments": {"a": {"sample": 0.25, "enabled": True}}})
    for _ in range(100):  # each wait ends at the watcher's next load, not after a sleep
        assert watcher.loaded.wait(10)
        watcher.loaded.clear()
        if a.shadow.sample == 0.25:
            break
    assert a.shadow.sample == 0.25


def test_a_config_file_never_lifts_the_environment_kill_switch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SHADOWDECO_DISABLED stays in force whatever the config file says."""
    from shadowdeco._experiment import _state

    monkeypatch.setattr(_state, "env_disabled", True)
    path = tmp_path / "shadow.json"
    write_config(path, {"enabled": True})

    @shadow(candidate=abs, sinks=[])
    def predict(x: int) -> int:
        return x

    shadowdeco.configure(config_file=path)
    shadowdeco.configure(disabled=False)
    predict(1)
    assert predict.shadow.stats().sampled == 0


def test_the_file_s_kill_switch_goes_with_the_file(tmp_path: Path) -> None:
    """A file saying enabled: false stops shadowing while it is watched; once the process
    stops watching it (or watches another), its switch no longer holds."""
    path = tmp_path / "shadow.json"
    write_config(path, {"enabled": False})
    fn = shadow(candidate=abs, name="file-switch", sinks=[])(abs)
    shadowdeco.configure(config_file=path)
    fn(-1)
    assert fn.shadow.stats().sampled == 0
    shadowdeco.configure(config_file=None)
    fn(-1)
    assert fn.shadow.stats().sampled == 1
    shadowdeco.configure(config_file=path)
    shadowdeco.configure(config_file=tmp_path / "missing.json")  # code settings apply
    fn(-1)
    assert fn.shadow.stats().sampled == 2


def test_a_config_rate_keeps_a_by_key_sampler_stable(tmp_path: Path) -> None:
    """The file's sample changes a by_key sampler's rate, not its per-key decision."""
    path = tmp_path / "shadow.json"
    write_config(path, {"experiments": {"k": {"sample": 0.5}}})

    @shadow(candidate=abs, name="k", sample=sampling.by_key(str, 0.1), sinks=[])
    def predict(x: int) -> int:
        return x

    shadowdeco.configure(config_file=path)
    sampler = predict.shadow.sample
    assert isinstance(sampler, sampling.ByKey)
    assert sampler.rate == 0.5
    assert [sampler(i) for i in range(50)] == [sampler(i) for i in range(50)]


def test_a_config_rate_keeps_the_code_s_predicates_and_caps(tmp_path: Path) -> None:
    """On a sampler that is not a plain rate (a route predicate, a per-second cap), the
    file's sample is a rate in front of it: the predicate still decides (a route kept out of
    shadowing stays out) and the cap still holds; changed again, it does not stack."""
    path = tmp_path / "shadow.json"
    write_config(path, {"experiments": {"routes": {"sample": 0.5}}})
    only_safe = sampling.when(lambda route: route == "/predict")

    @shadow(candidate=abs, name="routes", sample=only_safe & sampling.per_second(1000), sinks=[])
    def handle(route: str) -> str:
        return route

    shadowdeco.configure(config_file=path)
    sampler = handle.shadow._sampler
    assert not any(sampler("/charge") for _ in range(200))  # never, whatever the rate
    assert 40 < sum(sampler("/predict") for _ in range(200)) < 160
    write_config(path, {"experiments": {"routes": {"sample": 1.0}}})
    assert shadowdeco.reload_config()
    sampler = handle.shadow._sampler
    assert all(sampler("/predict") for _ in range(200))  # the code's sampler alone again
    assert not sampler("/charge")


def test_a_temporary_override_leaves_the_config_rate_as_it_was(tmp_path: Path) -> None:
    """shadowdeco.testing swaps settings for a check and restores them as they were: the
    config file's rate is not applied a second time on top of itself."""
    path = tmp_path / "shadow.json"
    write_config(path, {"experiments": {"capped": {"sample": 0.5}}})
    cap = sampling.per_second(1000)
    fn = shadow(candidate=abs, name="capped", sample=cap, sinks=[])(abs)
    shadowdeco.configure(config_file=path)
    steered = fn.shadow._sampler
    with fn.shadow._override(sample=1.0):
        pass
    assert fn.shadow._sampler is steered
    assert shadowdeco.reload_config()
    assert repr(fn.shadow._sampler) == repr(steered)  # rate(0.5) & the cap, once


def test_the_file_s_rate_sets_the_rates_inside_a_composition(tmp_path: Path) -> None:
    """rate(0.1) & per_second(n): the file's sample replaces the rate and keeps the cap;
    by_key inside a composition keeps its key (stable per-key decisions)."""
    path = tmp_path / "shadow.json"
    write_config(path, {"experiments": {"capped": {"sample": 1.0}, "keyed": {"sample": 0.5}}})
    capped = shadow(
        candidate=abs,
        name="capped",
        sample=sampling.rate(0.1) & sampling.per_second(1000),
        sinks=[],
    )(abs)
    keyed = shadow(
        candidate=abs,
        name="keyed",
        sample=sampling.by_key(str, 0.1) & sampling.when(lambda x: x >= 0),
        sinks=[],
    )(abs)
    shadowdeco.configure(config_file=path)
    assert repr(capped.shadow._sampler) == repr(sampling.ALWAYS & sampling.per_second(1000))
    sampler = keyed.shadow._sampler
    assert "by_key(" in repr(sampler)
    assert "0.5" in repr(sampler)
    assert [sampler(i) for i in range(100)] == [sampler(i) for i in range(100)]


def test_the_file_s_rate_goes_in_front_of_a_composition_with_two_rates(tmp_path: Path) -> None:
    """Setting each of two rates to the file's would multiply them: with more than one, the
    file's rate goes in front and the code's sampler stays as it is."""
    path = tmp_path / "shadow.json"
    write_config(path, {"experiments": {"two": {"sample": 0.5}}})
    code = sampling.by_key(str, 0.2) & sampling.rate(0.3)
    fn = shadow(candidate=abs, name="two", sample=code, sinks=[])(abs)
    shadowdeco.configure(config_file=path)
    assert repr(fn.shadow._sampler) == repr(sampling.rate(0.5) & code)


def test_switching_files_keeps_the_kill_switch_on_throughout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From one file saying enabled: false to another saying the same, shadowing is never
    on in between; a watcher stopped meanwhile applies nothing."""
    from shadowdeco import _experiment

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_config(a, {"enabled": False})
    write_config(b, {"enabled": False})
    shadowdeco.configure(config_file=a)
    old = _experiment._state.config
    seen: list[bool] = []
    refresh = _experiment._refresh_all
    monkeypatch.setattr(
        _experiment, "_refresh_all", lambda: (seen.append(_experiment._state.killed()), refresh())
    )
    shadowdeco.configure(config_file=b)
    assert seen
    assert all(seen)
    assert old is not None
    write_config(a, {"enabled": True})
    assert old.load() is False  # stopped: another file rules
    assert _experiment._state.killed()


def test_a_middleware_made_again_after_a_swap_still_shares_its_experiment(
    candidate_server: Any,
) -> None:
    """The URL candidate compares by value: the same middleware made again (an app
    factory) after the candidate was swapped shares the experiment, as before the swap."""
    from shadowdeco.middleware import ShadowWSGIMiddleware

    first = ShadowWSGIMiddleware(abs, candidate_server.url, name="mirror", sinks=[])
    first.shadow.candidate = candidate_server.url + "/v2"
    again = ShadowWSGIMiddleware(abs, candidate_server.url, name="mirror", sinks=[])
    assert again.shadow is first.shadow


def test_shutdown_closes_the_default_sinks() -> None:
    """configure(default_sinks=...) sinks are flushed and closed by shutdown(), once."""

    class Closable(sinks.Memory):
        calls: list[str]

        def flush(self, timeout: float | None = None) -> bool:
            self.calls.append("flush")
            return True

        def close(self) -> None:
            self.calls.append("close")

    default = Closable()
    default.calls = []
    shadowdeco.configure(default_sinks=[default])
    shadow(candidate=abs, name="defaulted")(abs)(-1)
    shadowdeco.shutdown(5)
    assert len(default) == 1
    assert default.calls.count("close") == 1
    assert default.calls[-1] == "close"


def test_close_leaves_shared_sinks_open_and_shutdown_closes_them_once() -> None:
    """A sink is closed when no experiment uses it any more, once."""

    class Closable(sinks.Memory):
        closes = 0

        def close(self) -> None:
            self.closes += 1

    shared, own = Closable(), Closable()
    one = shadow(candidate=abs, name="one", sinks=[shared, own])(abs)
    two = shadow(candidate=abs, name="two", sinks=[shared])(abs)
    one.shadow.close()
    assert (shared.closes, own.closes) == (0, 1)  # `two` still uses the shared one
    two(-1)
    shadowdeco.shutdown(5)
    assert (shared.closes, own.closes) == (1, 1)
    assert len(shared) == 1
