"""Shared fixtures: every test starts with no experiments and leaves none behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from http_helpers import CandidateServer

import shadowdeco
from shadowdeco import sinks


@pytest.fixture(autouse=True)
def _clean_shadowdeco() -> Iterator[None]:
    yield
    shadowdeco.shutdown(timeout=5)
    shadowdeco.configure(
        default_sinks=None,
        serializer=None,
        disabled=False,
        config_file=None,
        max_pending_results=10_000,
    )


@pytest.fixture
def memory() -> sinks.Memory:
    return sinks.Memory()


@pytest.fixture
def candidate_server() -> Iterator[CandidateServer]:
    """A candidate service on 127.0.0.1, stopped after the test (after the experiments)."""
    server = CandidateServer()
    thread = threading.Thread(target=server.serve_forever, name="candidate-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.gate.set()
        shadowdeco.shutdown(timeout=5)  # the mirrors' kept-alive connections close first
        server.shutdown()
        server.server_close()
        thread.join(10)
