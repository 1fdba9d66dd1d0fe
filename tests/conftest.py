"""Shared fixtures: every test starts with no experiments and leaves none behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import shadowdeco


@pytest.fixture(autouse=True)
def _clean_shadowdeco() -> Iterator[None]:
    yield
    shadowdeco.shutdown(timeout=5)
    shadowdeco.configure(default_sinks=None, serializer=None, disabled=False, config_file=None)
