"""Bad options fail at decoration with an error naming the parameter and the value."""

from __future__ import annotations

import functools
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import shadowdeco
from shadowdeco import sampling, shadow, sinks

BAD = [
    ({"sample": 1.5}, ValueError, "sample must be a rate between 0 and 1, got 1.5"),
    ({"sample": -0.1}, ValueError, "sample must be a rate between 0 and 1, got -0.1"),
    ({"sample": math.nan}, ValueError, "sample must be a rate between 0 and 1, got nan"),
    ({"sample": "all"}, TypeError, "sample must be .*got 'all'"),
    ({"sample": True}, TypeError, "sample must be .*got True"),
    ({"timeout": -1}, ValueError, "timeout must be a positive number of seconds or None, got -1"),
    ({"timeout": math.nan}, ValueError, "timeout must be .* got nan"),
    ({"timeout": 0}, ValueError, "timeout must be .* got 0"),
    ({"timeout": "1s"}, TypeError, "timeout must be .* got '1s'"),
    ({"max_concurrency": 0}, ValueError, "max_concurrency must be a positive int, got 0"),
    ({"max_concurrency": -2}, ValueError, "max_concurrency must be a positive int, got -2"),
    ({"max_concurrency": 2.5}, TypeError, "max_concurrency must be a positive int, got 2.5"),
    ({"max_queue": 0}, ValueError, "max_queue must be a positive int, got 0"),
    ({"max_queue": None}, TypeError, "max_queue must be a positive int, got None"),
    ({"compare": "equal"}, TypeError, "compare must be a callable .*got 'equal'"),
    ({"sinks": "stdout"}, TypeError, "sinks must be a list of sinks or None, got 'stdout'"),
    ({"sinks": [42]}, TypeError, "sinks must hold sinks .*got 42"),
    (
        {"copy_inputs": "deep"},
        TypeError,
        "copy_inputs must be True, False or a callable, got 'deep'",
    ),
    ({"adapt": 1}, TypeError, "adapt must be a callable or None, got 1"),
    ({"key": "user_id"}, TypeError, "key must be a callable or None, got 'user_id'"),
    ({"record_inputs": "yes"}, TypeError, "record_inputs must be a bool, got 'yes'"),
    ({"context": 5}, TypeError, "context must be a mapping, a callable or None, got 5"),
    ({"enabled": 1}, TypeError, "enabled must be a bool, got 1"),
    ({"executor": object()}, TypeError, "executor must be a concurrent.futures.Executor"),
    ({"name": ""}, TypeError, "name must be a non-empty str, got ''"),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD, ids=[str(b[0]) for b in BAD])
def test_bad_options_fail_at_decoration(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each bad option raises before any function is decorated, naming itself."""
    with pytest.raises(error, match=message):
        shadow(candidate=abs, **options)


@pytest.mark.parametrize(
    ("candidate", "error"), [(None, TypeError), (3, TypeError), ("no such", ValueError)]
)
def test_bad_candidates_fail_at_decoration(candidate: Any, error: type[Exception]) -> None:
    """A candidate must be a callable or a method name."""
    with pytest.raises(error, match="candidate must be a callable or a method name"):
        shadow(candidate=candidate)


def test_bad_process_settings_fail_in_configure() -> None:
    """configure() checks its arguments too."""
    with pytest.raises(TypeError, match="serializer must be a callable or None, got 1"):
        shadowdeco.configure(serializer=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="disabled must be a bool"):
        shadowdeco.configure(disabled="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_pending_results must be a positive int, got 0"):
        shadowdeco.configure(max_pending_results=0)
    with pytest.raises(TypeError, match="default_sinks must hold sinks"):
        shadowdeco.configure(default_sinks=[1])


def test_nothing_is_registered_when_validation_fails() -> None:
    """A failed decoration leaves no experiment behind."""
    with pytest.raises(ValueError, match="timeout"):
        shadow(candidate=abs, name="never", timeout=-1)
    assert shadowdeco.experiments() == []


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: shadowdeco.configure(default_sinks=5), TypeError, "default_sinks must be"),
        (lambda: shadowdeco.configure(config_file=5), TypeError, "config_file must be a path"),
        (lambda: shadowdeco.configure(config_interval=0), ValueError, "config_interval must be"),
        (lambda: shadowdeco.flush("x"), TypeError, "timeout must be .* got 'x'"),
        (lambda: shadowdeco.shutdown(math.nan), ValueError, "timeout must be .* got nan"),
        (lambda: shadowdeco.ProcessPool(mp_context="bogus"), ValueError, "mp_context must be"),
        (lambda: shadowdeco.ProcessPool(mp_context=1), TypeError, "mp_context must be"),
        (lambda: sampling.rate(1.5), ValueError, "p must be a rate between 0 and 1, got 1.5"),
        (lambda: sampling.header("x", 5), TypeError, "value must be a header value"),
        (lambda: sinks.Memory().wait("a"), TypeError, "n must be an int, got 'a'"),
        (lambda: sinks.Memory().wait(1, "soon"), TypeError, "timeout must be .* got 'soon'"),
        (lambda: sinks.Logging(level="LOUD"), ValueError, "level must be a logging level"),
        (lambda: sinks.Logging(level=2.5), TypeError, "level must be a logging level"),
        (lambda: sinks.Logging(logger=5), TypeError, "logger must be a logger"),
    ],
)
def test_bad_arguments_elsewhere_name_the_parameter(
    call: Any, error: type[Exception], message: str
) -> None:
    """Every public function names the bad parameter and its value."""
    with pytest.raises(error, match=message):
        call()


def test_experiment_methods_check_their_timeout() -> None:
    fn = shadow(candidate=abs, name="timeouts-checked", sinks=[])(abs)
    for method in (fn.shadow.flush, fn.shadow.close):
        with pytest.raises(TypeError, match="timeout must be a number of seconds or None"):
            method("1")  # type: ignore[arg-type]


def test_a_bad_configure_call_changes_nothing() -> None:
    """configure() checks every argument before it applies any."""
    memory = sinks.Memory()
    with pytest.raises(TypeError, match="disabled"):
        shadowdeco.configure(default_sinks=[memory], disabled="no")  # type: ignore[arg-type]
    shadow(candidate=abs, name="configure-atomic")(abs)(-1)
    shadowdeco.flush(10)
    assert len(memory) == 0


def test_a_logging_level_may_be_given_by_name(caplog: pytest.LogCaptureFixture) -> None:
    sink = sinks.Logging(level="warning")
    assert sink.level == logging.WARNING
    fn = shadow(candidate=abs, name="logged-by-name", sinks=[sink])(abs)
    with caplog.at_level(logging.WARNING, logger="shadowdeco"):
        fn(-1)
        assert fn.shadow.flush(10)
    assert fn.shadow.stats().sink_errors == 0
    assert [r.levelno for r in caplog.records if "logged-by-name" in r.getMessage()] == [
        logging.WARNING
    ]


def test_a_partial_is_named_after_the_function_it_binds() -> None:
    """Two partials of different functions get different default names (not both
    'functools.partial')."""
    one = shadow(candidate=abs, sinks=[])(functools.partial(_scaled, 2))
    two = shadow(candidate=abs, sinks=[])(functools.partial(_shifted, 2))
    assert one.shadow.name == f"{__name__}._scaled"
    assert two.shadow.name == f"{__name__}._shifted"


def _scaled(k: int, x: int) -> int:
    return k * x


def _shifted(k: int, x: int) -> int:
    return k + x


def test_an_infinite_timeout_waits_without_limit() -> None:
    fn = shadow(candidate=abs, name="forever-ok", sinks=[])(abs)
    fn(-1)
    assert fn.shadow.flush(math.inf)
    assert shadowdeco.flush(math.inf)


def test_an_async_candidate_with_an_executor_fails_at_decoration() -> None:
    async def candidate(x: int) -> int:
        return x

    with (
        ThreadPoolExecutor(1) as pool,
        pytest.raises(TypeError, match=r"async candidate .* not in an executor"),
    ):
        shadow(candidate=candidate, executor=pool)
