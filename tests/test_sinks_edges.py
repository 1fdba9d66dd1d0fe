"""Sinks at their edges, found by a review (each test failed before its fix): a sink's
quirks never reach a caller, flush() and close() keep their timeouts whatever a sink does,
and JsonLines keeps every line through logrotate, rotation, fsync and a reused descriptor."""

from __future__ import annotations

import array
import contextlib
import dataclasses
import fcntl
import json
import os
import termios
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

import shadowdeco
from shadowdeco import Observation, ShadowResult, shadow, sinks
from shadowdeco.otel import OpenTelemetry

OK = Observation("ok", 1, None, 0.001)


def result(n: int) -> ShadowResult:
    return ShadowResult(
        experiment="edges",
        id=f"r{n:06d}",
        started_at=1_700_000_000.0,
        key=None,
        live=OK,
        candidate=OK,
        queue_s=0.0,
        match=True,
    )


# Before the fix: A sink whose attribute lookup raises something other than AttributeError (a
# delegating wrapper) makes the first sampled call raise into the caller -- the live call
# already ran -- and leaves that sampled call in flight forever (never emitted, never dropped).


class Delegating:
    """Emits through a backend; unknown attributes are looked up in its settings dict."""

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}
        self.got: list[ShadowResult] = []

    def emit(self, result: ShadowResult) -> None:
        self.got.append(result)

    def __getattr__(self, name: str) -> Any:
        if (name.startswith("_") and name != "__qualname__") or Delegating.tame:
            raise AttributeError(name)
        return self.settings[name]  # KeyError, not AttributeError

    tame = False


@pytest.fixture(autouse=True)
def _tame_after() -> Any:
    Delegating.tame = False
    yield
    Delegating.tame = True  # let the conftest's shutdown() through


def test_a_sink_attribute_error_never_reaches_the_caller() -> None:
    sink = Delegating()
    live_calls: list[int] = []

    @shadow(candidate=abs, name="delegating-sink", sinks=[sink])
    def predict(x: int) -> int:
        live_calls.append(x)
        return abs(x)

    try:
        value = predict(-3)
        raised = None
    except BaseException as exc:
        value, raised = None, exc
    assert raised is None, f"the caller got {raised!r} (live call already ran: {live_calls})"
    assert value == 3


def test_a_sampled_call_ends_emitted_or_dropped() -> None:
    sink = Delegating()

    @shadow(candidate=abs, name="delegating-sink-2", sinks=[sink])
    def predict(x: int) -> int:
        return abs(x)

    assert predict(-3) == 3
    assert predict.shadow.flush(10)
    stats = predict.shadow.stats()
    assert stats.in_flight == 0, f"sampled call never settled: {stats}"


# Before the fix: A sink whose flush() hangs (idle, so not skipped) hangs
# Experiment.flush(timeout) and close(timeout) on the caller's thread, and keeps the next sink
# from being flushed.


class HangingFlush:
    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def emit(self, result: ShadowResult) -> None:
        pass

    def flush(self, timeout: float | None = None) -> bool:
        self.entered.set()
        self.release.wait(30)  # a network exporter stuck on a dead peer
        return True


def test_flush_with_timeout_returns_although_a_sink_flush_hangs(tmp_path: Path) -> None:
    hanging = HangingFlush()
    jsonl = sinks.JsonLines(tmp_path / "r.jsonl", flush_interval=3600)

    @shadow(candidate=abs, name="hanging-flush", sinks=[hanging, jsonl])
    def predict(x: int) -> int:
        return abs(x)

    predict(-1)
    outcome: list[bool] = []
    caller = threading.Thread(target=lambda: outcome.append(predict.shadow.flush(0.5)), daemon=True)
    try:
        caller.start()
        caller.join(5)  # 10x the flush timeout
        returned = not caller.is_alive()
        healthy_written = jsonl.lines_written
    finally:
        hanging.release.set()
        caller.join(30)
    assert returned, "flush(0.5) still blocked after 5 s: a sink's flush() ran on the caller"
    assert healthy_written == 1


def test_close_with_timeout_returns_although_a_sink_flush_hangs() -> None:
    hanging = HangingFlush()

    @shadow(candidate=abs, name="hanging-flush-close", sinks=[hanging])
    def predict(x: int) -> int:
        return abs(x)

    predict(-1)
    caller = threading.Thread(target=lambda: predict.shadow.close(0.5), daemon=True)
    try:
        caller.start()
        caller.join(5)
        returned = not caller.is_alive()
    finally:
        hanging.release.set()
        caller.join(30)
    assert returned, "close(0.5) still blocked after 5 s"


# Before the fix: JsonLines.close() takes the sink's lock with no timeout: while the interval-
# flush thread is stuck in a write (a FIFO whose reader stalled; an NFS hard mount),
# Experiment.close(1) hangs in the sink's close() on the caller's thread, although the sink's
# worker is idle.

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def pending_bytes(fd: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_close_with_timeout_returns_while_interval_write_is_blocked(tmp_path: Path) -> None:
    fifo = tmp_path / "stalled.jsonl"
    os.mkfifo(fifo, 0o600)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    fcntl.fcntl(reader, F_SETPIPE_SZ, 4096)
    size = fcntl.fcntl(reader, 1032)  # F_GETPIPE_SZ
    jsonl = sinks.JsonLines(fifo, flush_interval=0.1)

    @shadow(candidate=lambda x: x, name="stalled-fifo", sinks=[jsonl])
    def predict(x: str) -> str:
        return x

    for i in range(4):  # ~16 KB buffered: below the 64 KiB write threshold, above the pipe
        predict(str(i) * 2000)
    assert predict.shadow._wait_settled(10)
    # The interval thread's write fills the pipe and blocks, holding the sink's lock.
    deadline = time.monotonic() + 10
    while pending_bytes(reader) < size and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    assert pending_bytes(reader) == size

    caller = threading.Thread(target=lambda: predict.shadow.close(1), daemon=True)
    caller.start()
    caller.join(6)
    returned = not caller.is_alive()
    # Unblock everything: drain the pipe until the writer is done.
    stop = time.monotonic() + 20
    while (caller.is_alive() or pending_bytes(reader)) and time.monotonic() < stop:
        try:
            os.read(reader, 65536)
        except BlockingIOError:
            threading.Event().wait(0.01)
    caller.join(10)
    os.close(reader)
    assert returned, "Experiment.close(1) still blocked after 6 s in JsonLines.close()"


# Before the fix: Rotation does not look at the file first: after logrotate moved the file to
# path.1 and created a new path (its "create" mode), the sink's next size rotation writes its
# buffered lines into the moved file and then os.replace(path, path.1)s the new empty file over
# it: every line of the moved file -- including the ones just written -- is gone, yet counted in
# lines_written and not in lines_lost.


def all_ids(*paths: Path) -> set[str]:
    found = set()
    for p in paths:
        if p.exists():
            found |= {json.loads(line)["id"] for line in p.read_text().splitlines()}
    return found


def test_logrotate_then_size_rotation_keeps_the_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    sink = sinks.JsonLines(path, max_bytes=4000, backups=1, flush_interval=3600)
    for i in range(5):
        sink.emit(result(i))
    assert sink.flush()
    # logrotate (create mode, rotate 1): move the file away, create an empty one.
    os.rename(path, f"{path}.1")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    # The sink goes on; its check is not due, and a size rotation comes first.
    n = 5
    ident = sink._ident
    while sink._ident == ident:  # up to the sink's first size rotation
        sink.emit(result(n))
        n += 1
    sink.close()
    # One rotation with backups=1: every line since logrotate is in path.1 or path.
    kept = all_ids(path, Path(f"{path}.1"))
    since = {f"r{i:06d}" for i in range(5, n)}
    assert since <= kept, (
        f"lost {len(since - kept)} of the {len(since)} lines written since logrotate; "
        f"lines_written={sink.lines_written} lines_lost={sink.lines_lost}"
    )


# Before the fix: JsonLines(fsync=True): flush()/close() fsync only the file open now.  Lines
# written into the previous file just before a rotation (or before a moved file is let go) are
# never fsynced: the old descriptor is closed without os.fsync, so flush() returns having made
# durable only part of what it wrote.


class RecordingOs:
    """Stands in for ``os`` in the sink module: remembers which files were fsynced, and
    which files lines were written to."""

    def __init__(self) -> None:
        self.fsynced: set[int] = set()
        self.written: set[int] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: Any) -> int:
        self.written.add(os.fstat(fd).st_ino)
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        self.fsynced.add(os.fstat(fd).st_ino)
        os.fsync(fd)


@pytest.mark.parametrize("how", ["rotation", "moved"])
def test_flush_fsyncs_every_file_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    path = tmp_path / "durable.jsonl"
    fake = RecordingOs()
    monkeypatch.setattr(sinks, "os", fake)
    if how == "rotation":
        sink = sinks.JsonLines(path, max_bytes=2000, backups=5, fsync=True, flush_interval=3600)
        for i in range(40):  # several rotations
            sink.emit(result(i))
    else:
        sink = sinks.JsonLines(path, fsync=True, flush_interval=3600)
        # ~70 KB: written at once, to the file that is then moved away (logrotate)
        for i in range(400):
            sink.emit(result(i))
        os.rename(path, str(path) + ".old")
        sink.emit(result(1000))
    assert sink.flush()
    sink.close()
    not_synced = fake.written - fake.fsynced
    assert not not_synced, (
        f"flush()/close() with fsync=True left {len(not_synced)} of {len(fake.written)} "
        "written files never fsynced"
    )


# Before the fix: The sink knows its descriptor may be closed under it and its number reused by
# another file ("forget it without closing it", _check_file).  close() with nothing buffered
# skips that check and os.close()s the number anyway: it closes the application's other file.


def test_close_never_closes_a_descriptor_it_no_longer_owns(tmp_path: Path) -> None:
    sink = sinks.JsonLines(tmp_path / "r.jsonl", flush_interval=3600)
    sink.emit(result(1))
    assert sink.flush()
    fd = sink._fd
    assert fd is not None
    os.close(fd)  # closed under the sink (a bug elsewhere; the sink is meant to cope)
    other = os.open(tmp_path / "app.db", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert other == fd  # the lowest free number: the app's file now has it
        sink.close()
        try:
            os.fstat(other)
            still_open = True
        except OSError:
            still_open = False
        assert still_open, "JsonLines.close() closed the application's file descriptor"
    finally:
        with contextlib.suppress(OSError):
            os.close(other)


def test_lines_never_go_into_a_file_that_reused_its_descriptor(tmp_path: Path) -> None:
    """Before the next check (once per flush_interval) a full buffer is written to whatever
    file now has the number: the app's file gets JSON lines, the sink counts them written."""
    sink = sinks.JsonLines(tmp_path / "r.jsonl", flush_interval=3600)
    sink.emit(result(1))
    assert sink.flush()
    fd = sink._fd
    assert fd is not None
    os.close(fd)
    other = os.open(tmp_path / "app.db", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert other == fd
        for i in range(400):  # past the 64 KiB buffer: written from emit()
            sink.emit(result(i))
        assert os.path.getsize(tmp_path / "app.db") == 0, "JSON lines written into app.db"
    finally:
        os.close(other)
        with contextlib.suppress(OSError):
            sink.close()


# Before the fix: OpenTelemetry.flush(timeout) with little or no time left: the SDK
# MeterProvider raises on its timeout (it does not return False), the sink lets that through,
# and shadowdeco counts a sink error (and logs an ERROR traceback) for what is only a flush that
# ran out of time. close(t) hits this whenever its flush used up the timeout; timeouts under 1
# ms become 0 ms.


def test_a_flush_out_of_time_is_not_a_sink_error() -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    tracers = TracerProvider(shutdown_on_exit=False)
    sink = OpenTelemetry(tracer_provider=tracers, meter_provider=meters)

    @shadow(candidate=abs, name="otel-flush-timeout", sinks=[sink])
    def predict(x: int) -> int:
        return abs(x)

    try:
        predict(-1)
        assert predict.shadow.flush(10)  # everything delivered and flushed
        assert predict.shadow.stats().sink_errors == 0
        predict.shadow.flush(0.0005)  # nothing pending; only no time to flush the providers
        errors = predict.shadow.stats().sink_errors
    finally:
        shadowdeco.shutdown(5)
        tracers.shutdown()
        meters.shutdown()
    assert errors == 0, f"a flush that ran out of time counted {errors} sink error(s)"


# Before the fix: shadowdeco.dropped was read from the registry only, and close() counts the
# calls it could not finish as dropped ("shutdown") as it unregisters the experiment: those
# drops were never reported.


def dropped_points(reader: InMemoryMetricReader, experiment: str) -> dict[str, int]:
    found: dict[str, int] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "shadowdeco.dropped":
                    continue
                for point in metric.data.data_points:
                    attrs = dict(point.attributes or {})
                    if attrs.get("experiment") == experiment:
                        found[str(attrs["reason"])] = point.value
    return found


def test_shutdown_drops_of_a_closed_experiment_are_reported() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    entered, release = threading.Event(), threading.Event()

    def hanging(x: int) -> int:
        entered.set()
        release.wait(30)
        return x

    @shadow(
        candidate=hanging,
        name="otel-close-drops",
        max_concurrency=1,
        sinks=[OpenTelemetry(meter_provider=provider)],
    )
    def predict(x: int) -> int:
        return x

    try:
        for i in range(4):
            predict(i)
        assert entered.wait(10)
        dropped_points(reader, "otel-close-drops")  # a collection before: nothing dropped yet
        predict.shadow.close(0.2)
        stats = predict.shadow.stats()
        assert stats.dropped.get("shutdown", 0) >= 3, stats
        reported = dropped_points(reader, "otel-close-drops")
    finally:
        release.set()
        shadowdeco.shutdown(5)
        provider.shutdown()
    assert reported.get("shutdown") == stats.dropped["shutdown"], (
        f"stats() dropped {dict(stats.dropped)} but the OTel counter reports {reported}"
    )


# Before the fix: flush() looked only at the default sinks configured now, so results handed
# to defaults that configure(default_sinks=...) had just replaced were not waited for nor
# flushed (flush() returned True with them unwritten).


def test_replaced_default_sinks_are_flushed_and_closed(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    old = sinks.JsonLines(path, flush_interval=3600)
    shadowdeco.configure(default_sinks=[old])

    @shadow(candidate=abs, name="defaults-swapped")
    def predict(x: int) -> int:
        return abs(x)

    for i in range(5):
        predict(-i)
    # Let the results reach the old sink (its worker) without flushing it.
    worker = shadowdeco._delivery.worker_for(old)
    assert predict.shadow._wait_settled(10)
    assert worker.wait_idle(10)
    assert old.lines_written == 0  # buffered, not written

    shadowdeco.configure(default_sinks=[sinks.Memory()])
    assert predict.shadow.flush(10)  # says: everything sampled so far is written
    assert old.lines_written == 5, "flush() returned True with 5 lines still unwritten"
    old.close()


def test_flush_waits_for_a_replaced_default_sink_still_busy() -> None:
    """The old default sink has not even received the result when flush() returns True."""
    entered, release = threading.Event(), threading.Event()
    got: list[ShadowResult] = []

    def slow(result: ShadowResult) -> None:
        entered.set()
        release.wait(30)
        got.append(result)

    shadowdeco.configure(default_sinks=[slow])

    @shadow(candidate=abs, name="defaults-swapped-busy")
    def predict(x: int) -> int:
        return abs(x)

    try:
        predict(-1)
        predict(-2)
        assert entered.wait(10)
        shadowdeco.configure(default_sinks=[sinks.Memory()])
        flushed = predict.shadow.flush(0.5)
        delivered = len(got)
    finally:
        release.set()
    assert not flushed or delivered == 2, f"flush() True with {2 - delivered} results undelivered"


# Before the fix: the Logging sink dropped the record of a result it could not turn into a
# dict (a sink error), where JsonLines writes a line that says so.


def test_logging_keeps_the_record_of_a_result_it_cannot_convert(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="shadowdeco")
    broken = dataclasses.replace(result(1), inputs=42)  # type: ignore[arg-type]
    sinks.Logging().emit(broken)
    (record,) = [r for r in caplog.records if getattr(r, "shadow", None)]
    assert "result not serializable" in record.shadow["$error"]  # type: ignore[attr-defined]
    assert record.shadow["id"] == broken.id  # type: ignore[attr-defined]


# Before the fix: Experiment.flush() after close() made new delivery workers for the sinks
# close() had let go of, which then kept them alive until shutdown().


def test_flush_after_close_leaves_the_closed_sinks_alone(tmp_path: Path) -> None:
    jsonl = sinks.JsonLines(tmp_path / "r.jsonl")
    predict = shadow(candidate=abs, name="flush-after-close", sinks=[jsonl])(abs)
    predict(-1)
    predict.shadow.close(10)
    assert predict.shadow.flush(10)
    assert id(jsonl) not in shadowdeco._delivery._workers
