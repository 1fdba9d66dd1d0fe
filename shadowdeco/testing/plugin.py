"""The pytest plugin (entry point ``pytest11``): fixtures for tests of shadowed code.

* ``shadow_results``: a :class:`~shadowdeco.testing.ShadowCapture` of every result produced
  during the test, whatever sinks the experiments have; ``.wait(n, timeout)``,
  ``.for_experiment(name)``.
* ``shadow_inline``: sampled calls return only once their shadow is recorded, so a test can
  assert on ``shadow_results`` right after the call.

Both undo themselves after the test, also when it fails.  At the end of the test
``shadow_results`` waits for the experiments sampled during it, and warns
(:class:`~shadowdeco.testing.IncompleteCaptureWarning`) about one still not settled.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import ShadowCapture, capture, inline


@pytest.fixture
def shadow_results() -> Iterator[ShadowCapture]:
    """Every ShadowResult produced during the test."""
    with capture() as results:
        yield results


@pytest.fixture
def shadow_inline() -> Iterator[None]:
    """Sampled calls wait for their shadow before returning (deterministic tests)."""
    with inline():
        yield
