"""The OpenTelemetry sink: result spans tied to the live span, metrics by outcome, arm and drop."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from helpers import Gate
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import StatusCode

import shadowdeco
from shadowdeco import _delivery, otel, shadow, sinks
from shadowdeco.otel import MAX_VALUE_BYTES, OpenTelemetry


class Telemetry:
    """SDK providers of one test, read in memory; never the process-wide ones."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)
        self.tracer = self.tracer_provider.get_tracer("test")

    def sink(self, **options: Any) -> OpenTelemetry:
        return OpenTelemetry(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **options
        )

    def result_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == "shadowdeco.result"]

    def points(self, name: str, experiment: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """The data points of metric ``name`` for ``experiment``, by their other attributes."""
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        attrs = dict(point.attributes or {})
                        if attrs.pop("experiment") == experiment:
                            found[tuple(sorted(attrs.items()))] = point
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    shadowdeco.shutdown(timeout=5)  # before the providers go: the sinks flush into them
    t.tracer_provider.shutdown()
    t.meter_provider.shutdown()


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_result_span_is_a_child_of_the_live_span_and_links_to_it(telemetry: Telemetry) -> None:
    """The result span is the live span's child, links to it and is marked as shadow."""
    memory = sinks.Memory()

    @shadow(candidate=lambda x: x, name="otel-child", sinks=[telemetry.sink(), memory])
    def predict(x: int) -> int:
        return x

    with telemetry.tracer.start_as_current_span("live") as live:
        assert predict(1) == 1
    assert predict.shadow.flush(10)

    live_ctx = live.get_span_context()
    (span,) = telemetry.result_spans()
    assert span.parent is not None
    assert span.parent.span_id == live_ctx.span_id
    assert span.context is not None
    assert span.context.trace_id == live_ctx.trace_id
    (link,) = span.links
    assert (link.context.trace_id, link.context.span_id) == (live_ctx.trace_id, live_ctx.span_id)
    attrs = attributes(span)
    assert attrs["shadowdeco.shadow"] is True
    assert attrs["shadowdeco.experiment"] == "otel-child"
    (result,) = memory.results
    assert attrs["shadowdeco.result.id"] == result.id
    assert span.start_time == int(result.started_at * 1e9)
    assert span.end_time is not None
    assert span.start_time <= span.end_time
    assert span.status.status_code is StatusCode.UNSET


def test_a_live_trace_that_was_not_sampled_gets_no_result_span(telemetry: Telemetry) -> None:
    """The result span follows its trace's sampling decision, as the candidate's span does:
    a parent-based sampler (the SDK's default) drops it when the live span was not sampled.
    The result keeps the live ids (for logs) and the metrics count it."""
    memory = sinks.Memory()

    @shadow(candidate=lambda x: x, name="otel-unsampled", sinks=[telemetry.sink(), memory])
    def predict(x: int) -> int:
        return x

    unsampling = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    with unsampling.get_tracer("test").start_as_current_span("live") as live:
        assert not live.get_span_context().trace_flags.sampled
        assert predict(1) == 1
    with telemetry.tracer.start_as_current_span("live, sampled"):
        assert predict(2) == 2
    assert predict.shadow.flush(10)

    unsampled, sampled = sorted(memory.results, key=lambda r: r.live.value)
    assert unsampled.trace_id == format(live.get_span_context().trace_id, "032x")
    assert (unsampled.trace_sampled, sampled.trace_sampled) == (False, True)
    (span,) = telemetry.result_spans()
    assert span.context is not None
    assert format(span.context.trace_id, "032x") == sampled.trace_id
    counted = telemetry.points("shadowdeco.results", "otel-unsampled")
    assert sum(point.value for point in counted.values()) == 2


def test_untraced_live_call_gives_a_root_span(telemetry: Telemetry) -> None:
    """A live call outside any span gives a root result span with no link."""
    memory = sinks.Memory()

    @shadow(candidate=lambda x: x, name="otel-root", sinks=[telemetry.sink(), memory])
    def predict(x: int) -> int:
        return x

    predict(1)
    assert predict.shadow.flush(10)

    (span,) = telemetry.result_spans()
    assert span.parent is None
    assert not span.links
    assert attributes(span)["shadowdeco.shadow"] is True
    assert memory.results[0].trace_id is None
    assert memory.results[0].trace_sampled is None


def test_attributes_describe_the_result_but_hold_no_values_by_default(
    telemetry: Telemetry,
) -> None:
    """Status, match and durations are attributes; values, key, inputs and context are not."""

    @shadow(
        candidate=lambda x: x + 1,
        name="otel-attrs",
        sinks=[telemetry.sink()],
        key=lambda x: f"user-{x}",
        record_inputs=True,
        context={"route": "/predict"},
    )
    def predict(x: int) -> int:
        return x

    predict(1)
    assert predict.shadow.flush(10)

    attrs = attributes(telemetry.result_spans()[0])
    assert attrs["shadowdeco.match"] is False
    assert attrs["shadowdeco.live.status"] == "ok"
    assert attrs["shadowdeco.candidate.status"] == "ok"
    for name in ("live.duration_s", "candidate.duration_s", "queue_s"):
        assert isinstance(attrs[f"shadowdeco.{name}"], float)
    assert "shadowdeco.score" not in attrs
    assert "shadowdeco.candidate.error.type" not in attrs
    private = {"key", "inputs", "context", "live.value", "candidate.value"}
    assert not {f"shadowdeco.{name}" for name in private} & set(attrs)


def test_values_are_recorded_as_json_when_asked(telemetry: Telemetry) -> None:
    """With record_values=True, values, key, inputs and context are JSON attributes."""

    @shadow(
        candidate=lambda x: {"label": [x, "b"]},
        name="otel-values",
        sinks=[telemetry.sink(record_values=True)],
        key=lambda x: f"user-{x}",
        record_inputs=True,
        context={"route": "/predict"},
    )
    def predict(x: int) -> dict[str, Any]:
        return {"label": [x, "a"]}

    predict(7)
    assert predict.shadow.flush(10)

    attrs = attributes(telemetry.result_spans()[0])
    assert json.loads(attrs["shadowdeco.live.value"]) == {"label": [7, "a"]}
    assert json.loads(attrs["shadowdeco.candidate.value"]) == {"label": [7, "b"]}
    assert json.loads(attrs["shadowdeco.key"]) == "user-7"
    assert json.loads(attrs["shadowdeco.inputs"]) == {"args": [7], "kwargs": {}}
    assert json.loads(attrs["shadowdeco.context"]) == {"route": "/predict"}


def test_recorded_values_are_cut_to_4_kib(telemetry: Telemetry) -> None:
    """A long value is truncated to 4 KiB of UTF-8, marked with an ellipsis."""

    @shadow(
        candidate=lambda: "é" * 5000,
        name="otel-long",
        sinks=[telemetry.sink(record_values=True)],
    )
    def predict() -> str:
        return "short"

    predict()
    assert predict.shadow.flush(10)

    attrs = attributes(telemetry.result_spans()[0])
    value = attrs["shadowdeco.candidate.value"]
    assert len(value.encode("utf-8")) <= MAX_VALUE_BYTES
    assert value.startswith('"éé')
    assert value.endswith("…")
    assert attrs["shadowdeco.live.value"] == '"short"'


def test_each_outcome_is_counted_and_failures_mark_the_span(telemetry: Telemetry) -> None:
    """Match, mismatch, candidate error and timeout each count once; failures set ERROR."""
    release = threading.Event()

    def candidate(kind: str) -> str:
        if kind == "same":
            return kind
        if kind == "different":
            return "other"
        if kind == "raise":
            raise ValueError("boom")
        release.wait(30)  # held past the timeout, released after the flush
        return kind

    @shadow(candidate=candidate, name="otel-outcomes", timeout=0.2, sinks=[telemetry.sink()])
    def predict(kind: str) -> str:
        return kind

    try:
        for kind in ("same", "different", "raise", "hang"):
            assert predict(kind) == kind
        assert predict.shadow.flush(10)
    finally:
        release.set()

    counts = {
        dict(attrs)["outcome"]: point.value
        for attrs, point in telemetry.points("shadowdeco.results", "otel-outcomes").items()
    }
    assert counts == {"match": 1, "mismatch": 1, "candidate_error": 1, "timeout": 1}
    by_status = {attributes(s)["shadowdeco.candidate.status"]: s for s in telemetry.result_spans()}
    assert by_status["ok"].status.status_code is StatusCode.UNSET
    assert by_status["error"].status.status_code is StatusCode.ERROR
    assert attributes(by_status["error"])["shadowdeco.candidate.error.type"] == "ValueError"
    for span in telemetry.result_spans():  # the message may hold personal data: not by default
        assert "boom" not in json.dumps(attributes(span)) + str(span.status.description)
        assert not span.events
    assert by_status["timeout"].status.status_code is StatusCode.ERROR
    assert attributes(by_status["timeout"])["shadowdeco.candidate.status"] == "timeout"
    assert "shadowdeco.match" not in attributes(by_status["timeout"])


def test_a_score_is_recorded_and_counted_as_unknown(telemetry: Telemetry) -> None:
    """A score-only comparison is an attribute, and its outcome is unknown."""

    @shadow(
        candidate=lambda: 1.0,
        name="otel-score",
        compare=lambda live, cand: 0.25,
        sinks=[telemetry.sink()],
    )
    def predict() -> float:
        return 1.0

    predict()
    assert predict.shadow.flush(10)

    attrs = attributes(telemetry.result_spans()[0])
    assert attrs["shadowdeco.score"] == 0.25
    assert "shadowdeco.match" not in attrs
    outcomes = telemetry.points("shadowdeco.results", "otel-score")
    assert [dict(a)["outcome"] for a in outcomes] == ["unknown"]


def test_duration_histogram_has_points_for_both_arms(telemetry: Telemetry) -> None:
    """Every result records the live and the candidate duration, in seconds."""

    @shadow(candidate=lambda x: x, name="otel-durations", sinks=[telemetry.sink()])
    def predict(x: int) -> int:
        return x

    for i in range(3):
        predict(i)
    assert predict.shadow.flush(10)

    points = telemetry.points("shadowdeco.duration", "otel-durations")
    assert set(points) == {(("arm", "live"),), (("arm", "candidate"),)}
    for point in points.values():
        assert point.count == 3
        assert 0 <= point.sum < 10


def test_dropped_counter_reports_exact_drops_by_reason(telemetry: Telemetry) -> None:
    """Drops are observed from stats() at collection: exact counts by reason, and in flight."""
    gate = Gate()

    @shadow(
        candidate=gate,
        name="otel-drops",
        max_concurrency=1,
        max_queue=1,
        sinks=[telemetry.sink()],
    )
    def predict(x: int) -> int:
        return x

    try:
        predict(0)
        assert gate.wait_entered()  # the one worker is busy: one call may wait, the rest drop
        for i in range(1, 5):
            assert predict(i) == i
        dropped = telemetry.points("shadowdeco.dropped", "otel-drops")
        assert {k: p.value for k, p in dropped.items()} == {(("reason", "queue_full"),): 3}
        in_flight = telemetry.points("shadowdeco.in_flight", "otel-drops")
        assert [p.value for p in in_flight.values()] == [2]
    finally:
        gate.release.set()
    assert predict.shadow.flush(10)

    dropped = telemetry.points("shadowdeco.dropped", "otel-drops")
    assert [p.value for p in dropped.values()] == [3]
    assert [p.value for p in telemetry.points("shadowdeco.in_flight", "otel-drops").values()] == [0]
    assert predict.shadow.stats().dropped == {"queue_full": 3}


def test_dropped_counter_reports_what_a_slow_sink_missed(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results a sink fell too far behind to receive are reported as sink_backlog, by sink."""
    telemetry.sink()  # registers the instruments; the experiment below feeds only `slow`
    monkeypatch.setattr(_delivery, "max_pending", 2)
    release = threading.Event()
    entered = threading.Event()

    def slow(result: Any) -> None:
        entered.set()
        release.wait(30)

    @shadow(candidate=abs, name="otel-slow-sink", sinks=[slow])
    def predict(x: int) -> int:
        return x

    try:
        predict(0)
        assert entered.wait(10)
        for i in range(1, 8):
            predict(i)
        for _ in range(1000):  # until the emitter has offered all 8 results (bounded)
            if predict.shadow.stats().emitted == 8:
                break
            release.wait(0.01)
        dropped = telemetry.points("shadowdeco.dropped", "otel-slow-sink")
        ((attributes, point),) = dropped.items()
        assert dict(attributes)["reason"] == "sink_backlog"
        assert dict(attributes)["sink"].endswith("<locals>.slow")
        assert point.value == 6  # 2 pending (one inside the sink), 6 missed
    finally:
        release.set()


def test_a_failing_observation_never_breaks_the_collection(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When reading the registry fails, the observable instruments report nothing."""
    telemetry.sink()

    def broken() -> list[shadowdeco.Experiment]:
        raise RuntimeError("registry unavailable")

    monkeypatch.setattr(otel, "experiments", broken)

    @shadow(candidate=lambda: 1, name="otel-broken-registry", sinks=[])
    def predict() -> int:
        return 1

    predict()
    assert predict.shadow.flush(10)
    assert telemetry.points("shadowdeco.dropped", "otel-broken-registry") == {}
    assert telemetry.points("shadowdeco.in_flight", "otel-broken-registry") == {}
    assert list(otel._observe_dropped(CallbackOptions())) == []
    assert list(otel._observe_in_flight(CallbackOptions())) == []


class _RaisingTracer(trace.NoOpTracer):
    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        raise RuntimeError("tracer broken")


class _RaisingTracerProvider(trace.NoOpTracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _RaisingTracer()


@pytest.mark.parametrize("breakage", ["raising tracer", "closed sink", "shut-down providers"])
def test_a_broken_sink_or_provider_never_breaks_the_live_call(
    telemetry: Telemetry, breakage: str
) -> None:
    """A raising tracer, a closed sink or shut-down providers leave live and other sinks intact."""
    if breakage == "raising tracer":
        sink = OpenTelemetry(
            tracer_provider=_RaisingTracerProvider(), meter_provider=telemetry.meter_provider
        )
    else:
        sink = telemetry.sink()
    if breakage == "closed sink":
        sink.close()
    elif breakage == "shut-down providers":
        telemetry.tracer_provider.shutdown()
        telemetry.meter_provider.shutdown()
    memory = sinks.Memory()
    name = "otel-" + breakage.replace(" ", "-")

    @shadow(candidate=lambda x: x, name=name, sinks=[sink, memory])
    def predict(x: int) -> int:
        return x

    assert predict(3) == 3
    predict.shadow.flush(10)
    stats = predict.shadow.stats()
    assert (stats.emitted, stats.in_flight) == (1, 0)
    assert len(memory.results) == 1
    expected_errors = {"raising tracer": 1, "closed sink": 1, "shut-down providers": 0}
    assert stats.sink_errors == expected_errors[breakage]
    if breakage == "raising tracer":  # the span failed, the metrics were still recorded
        counts = telemetry.points("shadowdeco.results", name)
        assert [p.value for p in counts.values()] == [1]


def test_flush_pushes_spans_out_of_a_batching_processor() -> None:
    """Experiment.flush reaches the provider's force_flush, so batched spans are exported."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=600_000))
    sink = OpenTelemetry(tracer_provider=provider)

    @shadow(candidate=lambda: 1, name="otel-batch", sinks=[sink])
    def predict() -> int:
        return 1

    try:
        predict()
        assert predict.shadow.flush(10)
        assert [s.name for s in exporter.get_finished_spans()] == ["shadowdeco.result"]
    finally:
        shadowdeco.shutdown(timeout=5)
        provider.shutdown()


def test_close_leaves_the_users_providers_running(telemetry: Telemetry) -> None:
    """close() marks the sink closed and shuts nothing down."""
    sink = telemetry.sink()
    sink.close()
    assert sink.closed
    assert sink.flush(1) is True
    with telemetry.tracer.start_as_current_span("after-close"):
        pass
    assert [s.name for s in telemetry.spans.get_finished_spans()] == ["after-close"]


def test_options_are_checked_when_the_sink_is_built() -> None:
    """A bad option fails at construction, naming the parameter."""
    with pytest.raises(TypeError, match="record_values"):
        OpenTelemetry(record_values="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="span_name"):
        OpenTelemetry(span_name="")


def test_the_sink_is_available_from_the_sinks_module() -> None:
    """sinks.OpenTelemetry is the otel module's class, loaded on first use."""
    assert sinks.OpenTelemetry is OpenTelemetry
    assert "OpenTelemetry" in sinks.__all__
    with pytest.raises(AttributeError, match="NoSuchSink"):
        _ = sinks.NoSuchSink


def test_span_name_is_configurable(telemetry: Telemetry) -> None:
    """span_name names every result span."""

    @shadow(candidate=lambda: 1, name="otel-named", sinks=[telemetry.sink(span_name="shadow.r")])
    def predict() -> int:
        return 1

    predict()
    assert predict.shadow.flush(10)
    names: Sequence[str] = [s.name for s in telemetry.spans.get_finished_spans()]
    assert names == ["shadow.r"]
