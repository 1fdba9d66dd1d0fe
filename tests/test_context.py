"""I6 Context: candidates run in a copy of the caller's contextvars, traced as shadow."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import KINDS, MODES, build
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import shadowdeco
from shadowdeco import shadow, sinks

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_candidate_sees_the_callers_context(kind: str, mode: str) -> None:
    """Context variables set by the caller are visible to the candidate."""
    memory = sinks.Memory()
    target = build(kind, mode, request_id.get, request_id.get, sinks=[memory])
    token = request_id.set("req-7")
    try:
        assert target() == "req-7"
    finally:
        request_id.reset(token)
    target.experiment.flush(10)
    assert memory.results[0].candidate.value == "req-7"


@pytest.mark.parametrize("mode", MODES)
def test_candidate_changes_to_context_do_not_leak(mode: str) -> None:
    """A candidate setting a context variable does not change the caller's value."""

    def candidate() -> None:
        request_id.set("changed-by-candidate")

    target = build("function", mode, lambda: None, candidate, sinks=[])
    target()
    target.experiment.flush(10)
    assert request_id.get() == "none"


@pytest.mark.parametrize("mode", MODES)
def test_in_shadow_is_true_only_inside_the_candidate(mode: str) -> None:
    """in_shadow() lets code suppress side effects in the candidate only."""
    memory = sinks.Memory()
    target = build("function", mode, shadowdeco.in_shadow, shadowdeco.in_shadow, sinks=[memory])
    assert target() is False
    target.experiment.flush(10)
    assert memory.results[0].candidate.value is True
    assert shadowdeco.in_shadow() is False


def test_context_callable_runs_in_the_callers_context() -> None:
    """A context= callable is evaluated in the caller's context copy, off the live path."""
    memory = sinks.Memory()

    @shadow(candidate=lambda: 1, context=lambda: {"request": request_id.get()}, sinks=[memory])
    def predict() -> int:
        return 1

    token = request_id.set("req-9")
    predict()
    request_id.reset(token)
    predict.shadow.flush(10)
    assert memory.results[0].context == {"request": "req-9"}


# OpenTelemetry allows one global tracer provider per process: set it once, clear per test.
_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
trace.set_tracer_provider(_PROVIDER)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.mark.parametrize("mode", MODES)
def test_candidate_spans_are_children_of_the_live_span(
    mode: str, spans: InMemorySpanExporter
) -> None:
    """The candidate runs in a shadow span, a child of the live span; ids are recorded."""
    tracer = trace.get_tracer("test")
    memory = sinks.Memory()

    def candidate() -> None:
        with tracer.start_as_current_span("candidate-work"):
            pass

    if mode == "sync":

        @shadow(candidate=candidate, sinks=[memory])
        def predict() -> None:
            return None

        with tracer.start_as_current_span("live") as live_span:
            predict()
        predict.shadow.flush(10)
    else:

        async def async_candidate() -> None:
            candidate()

        @shadow(candidate=async_candidate, sinks=[memory])
        async def apredict() -> None:
            return None

        async def main() -> Any:
            with tracer.start_as_current_span("live") as span:
                await apredict()
            await apredict.shadow.aflush(10)
            return span

        live_span = asyncio.run(main())

    by_name = {s.name: s for s in spans.get_finished_spans()}
    shadow_span = by_name[f"shadow {memory.results[0].experiment}"]
    assert shadow_span.attributes is not None
    assert shadow_span.attributes["shadowdeco.shadow"] is True
    assert shadow_span.attributes["shadowdeco.candidate.status"] == "ok"
    assert shadow_span.parent is not None
    assert shadow_span.parent.span_id == live_span.get_span_context().span_id
    child = by_name["candidate-work"]
    assert child.parent is not None
    assert child.parent.span_id == shadow_span.get_span_context().span_id
    (result,) = memory.results
    assert result.trace_id == format(live_span.get_span_context().trace_id, "032x")
    assert result.span_id == format(live_span.get_span_context().span_id, "016x")
    assert trace.get_current_span().get_span_context().is_valid is False


@pytest.mark.parametrize("outside", ["nothing", "baggage only"])
def test_no_shadow_span_without_a_live_span(outside: str, spans: InMemorySpanExporter) -> None:
    """Outside a span (OpenTelemetry's context empty, or holding baggage alone) the candidate
    runs without a span of its own and the result links to no trace."""
    memory = sinks.Memory()

    @shadow(candidate=lambda: None, sinks=[memory])
    def predict() -> None:
        return None

    token = None
    if outside == "baggage only":
        token = otel_context.attach(baggage.set_baggage("tenant", "a"))
        assert otel_context.get_current()  # not empty: the full look-up runs
    try:
        predict()
    finally:
        if token is not None:
            otel_context.detach(token)
    assert predict.shadow.flush(10)
    assert spans.get_finished_spans() == ()
    (result,) = memory.results
    assert (result.trace_id, result.span_id) == (None, None)
