"""The OpenTelemetry sink: a span and metrics per paired result, through ``opentelemetry-api``.

>>> from shadowdeco import shadow, sinks
>>> otel = sinks.OpenTelemetry()          # the global tracer and meter providers
>>> @shadow(candidate=lambda x: x * 2, sinks=[otel])
... def predict(x):
...     return x * 2
>>> predict(21)
42
>>> predict.shadow.flush(5)
True

**Spans.** One span per result, named ``shadowdeco.result``.  When the live call ran inside a
span, the result span is that span's child *and* links to it (backends that lose the parent
relation still connect them); otherwise it is a root span.  It starts when the live call
started and ends when the candidate ended (live duration + queue wait + candidate duration,
never later than the emit), so a busy emitter does not stretch it.  Every span carries
``shadowdeco.shadow=True``, the experiment, the match, both statuses and durations; its status is
ERROR when the candidate raised or timed out.

**Metrics** (meter ``shadowdeco``):

* ``shadowdeco.results`` (counter): results by ``experiment`` and ``outcome`` — ``timeout``,
  ``candidate_error`` (the candidate raised, even if live raised alike), else ``match``,
  ``mismatch`` or ``unknown`` (not comparable: a score-only comparator, a comparator error);
* ``shadowdeco.duration`` (histogram, seconds): by ``experiment`` and ``arm`` (``live`` /
  ``candidate``; a timed-out candidate records the time until its timeout);
* ``shadowdeco.dropped`` (observable counter): drops by ``experiment`` and ``reason``, read from
  :meth:`Experiment.stats` when the metric reader collects — exact and cumulative, and no work
  on the live path;
* ``shadowdeco.in_flight`` (observable gauge): sampled calls not yet emitted or dropped.

The observable instruments report every registered experiment, whichever sinks it has.

**Values.** Inputs, outputs, keys, context and error messages may hold personal data: they
become attributes only with ``record_values=True``, as JSON strings of the serialized value
(the serializer ``to_dict()`` uses), cut to 4 KiB.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from typing import Any, Final

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.util.types import AttributeValue

from . import __version__
from ._experiment import add_drops, experiments, flush_before_exit_handlers, retired_drops
from ._result import ShadowResult

__all__ = ["OpenTelemetry"]

log = logging.getLogger("shadowdeco")

#: Longest value attribute, in UTF-8 bytes (``record_values=True``).
MAX_VALUE_BYTES: Final = 4096

# Seconds.  The SDK's default buckets (0, 5, 10, 25, ... 10000) suit milliseconds; model
# calls range from sub-millisecond to many seconds.
_DURATION_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    30.0,
)


class OpenTelemetry:
    """Emit each result as a span and as metrics, through ``opentelemetry-api``.

    Args:
        tracer_provider: where spans go; None: the global provider (looked up lazily, so
            one set after this sink is built still applies).
        meter_provider: where metrics go; None: the global provider.
        record_values: also record inputs, outputs, key, context and error messages as span
            attributes (off by default: they may hold personal data).
        span_name: the name of every result span.

    The providers are the user's: :meth:`flush` flushes them when they can (the SDK's do),
    :meth:`close` never shuts them down.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        record_values: bool = False,
        span_name: str = "shadowdeco.result",
    ) -> None:
        if not isinstance(record_values, bool):
            raise TypeError(f"record_values must be a bool, got {record_values!r}")
        if not isinstance(span_name, str):
            raise TypeError(f"span_name must be a non-empty str, got {span_name!r}")
        if not span_name:
            raise ValueError(f"span_name must be a non-empty str, got {span_name!r}")
        self.record_values: Final = record_values
        self.span_name: Final = span_name
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._closed = False
        # The SDK's providers shut down in an exit handler: the exit flush must come first
        # (see flush_before_exit_handlers; also done whenever an experiment is created, and
        # at this sink's first result, for a global provider set up after both).
        self._exit_order_checked = False
        flush_before_exit_handlers()
        self._tracer = trace.get_tracer("shadowdeco", __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter("shadowdeco", __version__, meter_provider=meter_provider)
        self._results = meter.create_counter(
            "shadowdeco.results",
            unit="{result}",
            description="Paired shadow results, by experiment and outcome.",
        )
        self._durations = _duration_histogram(meter)
        # Instruments of the same name on the same meter are one instrument: a second sink on
        # the same provider reuses the first one's callbacks, which report the same numbers.
        meter.create_observable_counter(
            "shadowdeco.dropped",
            callbacks=[_observe_dropped],
            unit="{result}",
            description="Sampled calls dropped instead of shadowed, by experiment and reason.",
        )
        meter.create_observable_gauge(
            "shadowdeco.in_flight",
            callbacks=[_observe_in_flight],
            unit="{call}",
            description="Sampled calls not yet emitted or dropped, by experiment.",
        )

    @property
    def closed(self) -> bool:
        return self._closed

    def emit(self, result: ShadowResult) -> None:
        """Record ``result``; raises (counted as a sink error by shadowdeco) when closed."""
        if self._closed:
            raise RuntimeError("this OpenTelemetry sink is closed")
        if not self._exit_order_checked:
            self._exit_order_checked = True
            flush_before_exit_handlers()
        # The metrics and the span do not depend on each other: a failing one does not
        # stop the other (and its error still propagates, to be counted).
        try:
            self._record_metrics(result)
        finally:
            self._record_span(result)

    def flush(self, timeout: float | None = None) -> bool:
        """Flush the providers that can be flushed (the SDK's); True if all of them did."""
        if self._closed:
            return True
        tracer_provider = self._tracer_provider or trace.get_tracer_provider()
        meter_provider = self._meter_provider or metrics.get_meter_provider()
        deadline = None if timeout is None else time.monotonic() + timeout
        ok = True
        for provider in (tracer_provider, meter_provider):
            force_flush = getattr(provider, "force_flush", None)
            if not callable(force_flush):
                continue
            if deadline is None:
                flushed = force_flush()
            else:  # both providers within the one timeout, in whole milliseconds (rounded up)
                left = max(0.0, deadline - time.monotonic())
                try:
                    flushed = force_flush(math.ceil(left * 1000))
                except Exception:
                    # The SDK's MeterProvider raises when its time runs out, where the
                    # TracerProvider returns False: out of time is not a failure.
                    if time.monotonic() < deadline:
                        raise
                    flushed = False
            ok = flushed is not False and ok
        return ok

    def close(self) -> None:
        """Stop emitting.  The providers stay up: they belong to the application."""
        self._closed = True

    def __repr__(self) -> str:
        values = ", record_values=True" if self.record_values else ""
        return f"OpenTelemetry(span_name={self.span_name!r}{values})"

    # -- metrics -------------------------------------------------------------------------------

    def _record_metrics(self, result: ShadowResult) -> None:
        name = result.experiment
        self._results.add(1, {"experiment": name, "outcome": outcome(result)})
        if result.live.duration is not None:
            self._durations.record(result.live.duration, {"experiment": name, "arm": "live"})
        if result.candidate.duration is not None:
            self._durations.record(
                result.candidate.duration, {"experiment": name, "arm": "candidate"}
            )

    # -- the span ------------------------------------------------------------------------------

    def _record_span(self, result: ShadowResult) -> None:
        parent = _live_span_context(result)
        context = Context()  # a root span unless the live call was traced, whatever thread
        links: list[Link] = []
        if parent is not None:
            context = trace.set_span_in_context(NonRecordingSpan(parent), context)
            links.append(Link(parent))
        start = int(result.started_at * 1e9)
        span = self._tracer.start_span(
            self.span_name,
            context=context,
            attributes=self._attributes(result),
            links=links,
            start_time=start,
        )
        cand = result.candidate
        if cand.status != "ok":
            kind = cand.error[0] if cand.error is not None else "unknown"
            description = (
                f"candidate timed out ({kind})"
                if cand.status == "timeout"
                else f"candidate raised {kind}"
            )
            span.set_status(Status(StatusCode.ERROR, description))
        span.end(end_time=_end_time(result, start))

    def _attributes(self, result: ShadowResult) -> dict[str, AttributeValue]:
        live, cand = result.live, result.candidate
        attrs: dict[str, AttributeValue] = {
            "shadowdeco.shadow": True,
            "shadowdeco.experiment": result.experiment,
            "shadowdeco.result.id": result.id,
            "shadowdeco.live.status": live.status,
            "shadowdeco.candidate.status": cand.status,
        }
        if result.match is not None:
            attrs["shadowdeco.match"] = result.match
        if result.score is not None:
            attrs["shadowdeco.score"] = result.score
        if live.duration is not None:
            attrs["shadowdeco.live.duration_s"] = live.duration
        if cand.duration is not None:
            attrs["shadowdeco.candidate.duration_s"] = cand.duration
        if result.queue_s is not None:
            attrs["shadowdeco.queue_s"] = result.queue_s
        if live.error is not None:
            attrs["shadowdeco.live.error.type"] = live.error[0]
        if cand.error is not None:
            attrs["shadowdeco.candidate.error.type"] = cand.error[0]
        if self.record_values:
            attrs.update(_value_attributes(result))
        return attrs


def outcome(result: ShadowResult) -> str:
    """The ``outcome`` attribute of the results counter."""
    status = result.candidate.status
    if status == "timeout":
        return "timeout"
    if status == "error":
        return "candidate_error"
    if result.match is True:
        return "match"
    if result.match is False:
        return "mismatch"
    return "unknown"


def _duration_histogram(meter: metrics.Meter) -> metrics.Histogram:
    name, unit = "shadowdeco.duration", "s"
    description = "Duration of each arm of a shadowed call, by experiment and arm."
    try:
        return meter.create_histogram(
            name, unit, description, explicit_bucket_boundaries_advisory=_DURATION_BUCKETS
        )
    except TypeError:  # opentelemetry-api before 1.23 has no bucket advice
        return meter.create_histogram(name, unit, description)


def _live_span_context(result: ShadowResult) -> SpanContext | None:
    if not result.trace_id or not result.span_id:
        return None
    # The live span's sampled flag goes with it, so a parent-based sampler keeps or drops
    # the result span with the trace it belongs to (as it does the candidate's span).  A
    # result built elsewhere without the flag (None) is taken as sampled.
    sampled = result.trace_sampled is not False
    parent = SpanContext(
        trace_id=int(result.trace_id, 16),
        span_id=int(result.span_id, 16),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )
    return parent if parent.is_valid else None


def _end_time(result: ShadowResult, start: int) -> int:
    """When the candidate ended (or timed out), in the span's clock; never after now."""
    elapsed = sum(
        d or 0.0 for d in (result.live.duration, result.queue_s, result.candidate.duration)
    )
    return max(start, min(start + int(elapsed * 1e9), time.time_ns()))


def _value_attributes(result: ShadowResult) -> dict[str, AttributeValue]:
    data = result.to_dict()
    attrs: dict[str, AttributeValue] = {}
    for arm in ("live", "candidate"):
        obs = data[arm]
        if obs["status"] == "ok":
            attrs[f"shadowdeco.{arm}.value"] = _json(obs["value"])
        error = obs["error"]  # through the serializer: {"type", "message"}, or its own shape
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            attrs[f"shadowdeco.{arm}.error.message"] = _truncate(str(message))
    for field in ("key", "inputs", "context"):
        if data[field] is not None:
            attrs[f"shadowdeco.{field}"] = _json(data[field])
    return attrs


def _json(value: Any) -> str:
    # default=str: a custom serializer may leave something json cannot write.
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return _truncate(text)


def _truncate(text: str) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= MAX_VALUE_BYTES:
        return text
    ellipsis = "…"
    cut = raw[: MAX_VALUE_BYTES - len(ellipsis.encode("utf-8"))]
    return cut.decode("utf-8", errors="ignore") + ellipsis


# -- observable instruments: run by the metric reader's collection, never raise ------------------


def _observe_dropped(_options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    observations: list[metrics.Observation] = []
    try:
        # Closed experiments' drops stay counted (close() drops what it cannot finish).
        totals = retired_drops()
        for exp in experiments():
            add_drops(totals.setdefault(exp.name, {}), exp.stats())
        for name, counts in sorted(totals.items()):
            for reason, count in sorted(counts.items(), key=str):
                if isinstance(reason, tuple):
                    attributes = {"experiment": name, "reason": reason[0], "sink": reason[1]}
                else:
                    attributes = {"experiment": name, "reason": reason}
                observations.append(metrics.Observation(count, attributes))
    except Exception:  # a metric collection must never fail because of shadowdeco
        log.debug("shadowdeco: observing drops failed", exc_info=True)
    return observations


def _observe_in_flight(_options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    observations: list[metrics.Observation] = []
    try:
        for exp in experiments():
            observations.append(
                metrics.Observation(exp.stats().in_flight, {"experiment": exp.name})
            )
    except Exception:  # a metric collection must never fail because of shadowdeco
        log.debug("shadowdeco: observing in-flight calls failed", exc_info=True)
    return observations
