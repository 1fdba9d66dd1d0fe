"""Bad options fail at decoration with an error naming the parameter and the value."""

from __future__ import annotations

import math
from typing import Any

import pytest

import shadowdeco
from shadowdeco import shadow

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
