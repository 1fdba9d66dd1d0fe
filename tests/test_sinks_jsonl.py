"""sinks.JsonLines: whole lines from many threads, rotation, reopen, mode 0600, loud failures."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import run_script

import shadowdeco
from shadowdeco import Observation, ShadowResult, _delivery, shadow, sinks

REPO = Path(__file__).resolve().parents[1]

OK = Observation("ok", 1, None, 0.001)


def result(n: int = 0, **changes: Any) -> ShadowResult:
    """A result whose id is ``r<n>``, so lines can be told apart and put in order."""
    fields: dict[str, Any] = {
        "experiment": "jsonl",
        "id": f"r{n:06d}",
        "started_at": 1_700_000_000.0,
        "key": None,
        "live": OK,
        "candidate": OK,
        "queue_s": 0.0,
        "match": True,
    }
    fields.update(changes)
    return ShadowResult(**fields)


def no_constants(name: str) -> Any:
    raise AssertionError(f"JSON constant {name} in the file")


def read_lines(*paths: str | Path) -> list[dict[str, Any]]:
    """Every line of the files, parsed strictly: each must be whole, valid JSON."""
    records = []
    for path in paths:
        data = Path(path).read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{path} ends inside a line"
        records.extend(
            json.loads(line, parse_constant=no_constants) for line in data.decode().splitlines()
        )
    return records


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in records]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll an observable effect until it shows or the deadline passes."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.01)
    return True


@pytest.fixture
def jsonl_path(tmp_path: Path) -> str:
    return str(tmp_path / "shadow.jsonl")


@pytest.fixture
def open_sinks() -> Iterator[list[sinks.JsonLines]]:
    """Sinks made directly (not through an experiment) are closed after the test."""
    made: list[sinks.JsonLines] = []
    yield made
    for sink in made:
        with contextlib.suppress(OSError):  # a test may have left it failing on purpose
            sink.close()


@pytest.fixture
def make(open_sinks: list[sinks.JsonLines]) -> Callable[..., sinks.JsonLines]:
    def make(path: str | Path, **options: Any) -> sinks.JsonLines:
        # A long interval unless a test asks otherwise: only the test's own calls write.
        sink = sinks.JsonLines(path, **{"flush_interval": 3600, **options})
        open_sinks.append(sink)
        return sink

    return make


# --------------------------------------------------------------------------------------------
# Lines


def test_many_threads_give_whole_distinct_lines(
    jsonl_path: str, make: Callable[..., sinks.JsonLines]
) -> None:
    """N threads emitting M results each to one file give exactly N x M whole JSON lines."""
    threads_n, per_thread = 8, 500
    sink = make(jsonl_path)
    start = threading.Barrier(threads_n)

    def work(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            sink.emit(result(t * per_thread + i))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.close()

    records = read_lines(jsonl_path)
    assert len(records) == threads_n * per_thread
    assert all(r["v"] == 1 for r in records)
    assert len(set(ids(records))) == threads_n * per_thread
    assert (sink.lines_written, sink.lines_lost) == (threads_n * per_thread, 0)


def test_results_reach_the_file_through_shadow(jsonl_path: str) -> None:
    """Decorated calls end up as lines, and shadowdeco.flush() writes the buffered ones."""
    # A long interval: only flush() can have written the lines checked below.
    jsonl = sinks.JsonLines(jsonl_path, flush_interval=3600)

    @shadow(candidate=lambda x: x * 2, name="jsonl-e2e", sinks=[jsonl])
    def double(x: int) -> int:
        return x * 2

    assert [double(i) for i in range(100)] == [i * 2 for i in range(100)]
    assert shadowdeco.flush(10)

    records = read_lines(jsonl_path)
    assert len(records) == 100
    assert {r["experiment"] for r in records} == {"jsonl-e2e"}
    assert sorted(r["live"]["value"] for r in records) == [i * 2 for i in range(100)]
    assert all(r["match"] is True for r in records)


def test_shutdown_closes_the_file(jsonl_path: str) -> None:
    """shadowdeco.shutdown() writes what is buffered and closes the sink."""
    jsonl = sinks.JsonLines(jsonl_path, flush_interval=3600)

    @shadow(candidate=lambda x: x, name="jsonl-shutdown", sinks=[jsonl])
    def same(x: int) -> int:
        return x

    same(1)
    shadowdeco.shutdown(10)
    assert len(read_lines(jsonl_path)) == 1
    with pytest.raises(ValueError, match="is closed"):
        jsonl.emit(result())


def test_pending_lines_are_written_at_interpreter_exit(tmp_path: Path) -> None:
    """A program that exits without flushing still leaves every line in the file."""
    proc = run_script(
        """
        from shadowdeco import shadow, sinks

        jsonl = sinks.JsonLines("exit.jsonl", flush_interval=3600)

        @shadow(candidate=lambda x: x + 1, sinks=[jsonl])
        def predict(x):
            return x + 1

        for i in range(50):
            predict(i)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(read_lines(tmp_path / "exit.jsonl")) == 50


def test_interval_flush_writes_without_flush(
    jsonl_path: str, make: Callable[..., sinks.JsonLines]
) -> None:
    """Buffered lines reach the file after flush_interval without any call to flush()."""
    sink = make(jsonl_path, flush_interval=0.05)
    sink.emit(result(1))
    assert wait_until(lambda: os.path.getsize(jsonl_path) > 0)
    assert ids(read_lines(jsonl_path)) == ["r000001"]


def test_non_finite_and_unserializable_values_give_valid_json(
    jsonl_path: str, make: Callable[..., sinks.JsonLines]
) -> None:
    """NaN, infinities, odd objects and lone surrogates still give strict, valid JSON lines."""
    sink = make(jsonl_path)
    nan_obs = Observation("ok", [math.nan, math.inf, -math.inf], None, math.nan)
    sink.emit(result(1, live=nan_obs, candidate=nan_obs, score=math.nan, queue_s=math.inf))
    sink.emit(result(2, key=object(), context={"lock": threading.Lock()}))
    sink.emit(result(3, live=Observation("ok", "half \ud800 a pair", None, 0.0)))
    sink.close()

    first, second, third = read_lines(jsonl_path)
    assert first["live"]["value"] == ["NaN", "Infinity", "-Infinity"]
    assert first["score"] == "NaN"
    assert first["queue_s"] == "Infinity"  # to_dict keeps it raw: the fallback converts it
    assert first["live"]["duration_s"] == "NaN"
    assert "$error" in first
    assert second["key"]["$type"] == "builtins.object"
    assert third["live"]["value"] == "half \ud800 a pair"


def test_a_serializer_that_returns_garbage_still_leaves_a_line(
    jsonl_path: str, make: Callable[..., sinks.JsonLines]
) -> None:
    """What a custom serializer returns that JSON cannot hold is converted and flagged."""
    sink = make(jsonl_path, serializer=lambda value: {1, 2} if value == 1 else value)
    sink.emit(result(1))
    sink.close()
    (record,) = read_lines(jsonl_path)
    assert record["live"]["value"] == [1, 2]
    assert "TypeError" in record["$error"]


def test_a_result_that_cannot_be_encoded_leaves_a_line_with_its_id(
    jsonl_path: str, make: Callable[..., sinks.JsonLines]
) -> None:
    """A result whose dict cannot even be built is written as its id and the error."""
    sink = make(jsonl_path)
    sink.emit(result(7, started_at=1e300))  # no datetime for that timestamp
    sink.close()
    (record,) = read_lines(jsonl_path)
    assert (record["v"], record["id"], record["experiment"]) == (1, "r000007", "jsonl")
    assert "$error" in record


# --------------------------------------------------------------------------------------------
# Mode 0600


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("permissive_umask")
def test_files_are_created_0600_whatever_the_umask(
    jsonl_path: str, make: Callable[..., sinks.JsonLines]
) -> None:
    """The file, and each file rotation creates, has mode exactly 0600 even with umask 0."""
    sink = make(jsonl_path, max_bytes=2000, backups=3)
    for i in range(30):
        sink.emit(result(i))
    sink.flush()
    assert os.path.exists(jsonl_path + ".1")
    for path in (jsonl_path, jsonl_path + ".1"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


@pytest.mark.usefixtures("permissive_umask")
def test_mode_is_applied_exactly(tmp_path: Path, make: Callable[..., sinks.JsonLines]) -> None:
    """A mode given to the sink is the mode the file gets, not one narrowed by the umask."""
    make(tmp_path / "group.jsonl", mode=0o640)
    assert stat.S_IMODE(os.stat(tmp_path / "group.jsonl").st_mode) == 0o640


@pytest.mark.usefixtures("permissive_umask")
def test_an_existing_file_keeps_its_mode(
    tmp_path: Path, make: Callable[..., sinks.JsonLines]
) -> None:
    """The sink appends to a file that exists without changing its mode (whoever made it
    chose it): mode applies to the files the sink creates."""
    path = tmp_path / "shared.jsonl"
    path.write_text('{"earlier": true}\n')
    path.chmod(0o644)
    sink = make(path, mode=0o600)
    sink.emit(result(1))
    sink.flush()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert len(path.read_text().splitlines()) == 2


# --------------------------------------------------------------------------------------------
# Rotation


def test_rotation_keeps_every_line(jsonl_path: str, make: Callable[..., sinks.JsonLines]) -> None:
    """With enough backups, every line is in path, path.1 …, whole, none over max_bytes."""
    sink = make(jsonl_path, max_bytes=2000, backups=1000)
    for i in range(300):
        sink.emit(result(i))
    sink.close()

    backups = sorted(
        (p for p in Path(jsonl_path).parent.iterdir() if p.name.startswith("shadow.jsonl.")),
        key=lambda p: int(p.suffix[1:]),
    )
    assert len(backups) > 10
    files = [*reversed(backups), Path(jsonl_path)]  # oldest first
    assert ids(read_lines(*files)) == [f"r{i:06d}" for i in range(300)]
    assert all(p.stat().st_size <= 2000 for p in files)


def test_rotation_drops_the_oldest_past_backups(
    jsonl_path: str, make: Callable[..., sinks.JsonLines]
) -> None:
    """Past ``backups`` files the oldest are dropped, and the newest lines are all kept."""
    sink = make(jsonl_path, max_bytes=2000, backups=2)
    for i in range(300):
        sink.emit(result(i))
    sink.close()

    assert not os.path.exists(jsonl_path + ".3")
    kept = ids(read_lines(jsonl_path + ".2", jsonl_path + ".1", jsonl_path))
    assert kept == [f"r{i:06d}" for i in range(300 - len(kept), 300)]
    assert 0 < len(kept) < 300


def test_rotation_with_no_backups_truncates_in_place(
    jsonl_path: str, make: Callable[..., sinks.JsonLines]
) -> None:
    """With backups=0 the file is truncated in place, keeping only the newest lines."""
    sink = make(jsonl_path, max_bytes=2000, backups=0)
    for i in range(100):
        sink.emit(result(i))
    sink.close()

    assert not os.path.exists(jsonl_path + ".1")
    kept = ids(read_lines(jsonl_path))
    assert kept == [f"r{i:06d}" for i in range(100 - len(kept), 100)]
    assert os.path.getsize(jsonl_path) <= 2000


def test_a_line_longer_than_max_bytes_is_written_whole(
    jsonl_path: str, make: Callable[..., sinks.JsonLines]
) -> None:
    """A line larger than max_bytes goes, whole, into a file of its own."""
    sink = make(jsonl_path, max_bytes=500, backups=5)
    sink.emit(result(1))
    sink.emit(result(2, live=Observation("ok", "x" * 2000, None, 0.0)))
    sink.emit(result(3))
    sink.close()
    assert ids(read_lines(jsonl_path + ".2", jsonl_path + ".1", jsonl_path)) == [
        "r000001",
        "r000002",
        "r000003",
    ]


# --------------------------------------------------------------------------------------------
# Moved or deleted under the sink (logrotate)


def test_reopens_after_the_file_is_removed(
    jsonl_path: str, make: Callable[..., sinks.JsonLines]
) -> None:
    """Lines written after the file was deleted land in a new file at the path."""
    sink = make(jsonl_path)
    sink.emit(result(1))
    sink.flush()
    os.remove(jsonl_path)
    sink.emit(result(2))
    sink.flush()
    assert ids(read_lines(jsonl_path)) == ["r000002"]
    assert stat.S_IMODE(os.stat(jsonl_path).st_mode) == 0o600


def test_reopens_after_the_file_is_renamed(
    jsonl_path: str, make: Callable[..., sinks.JsonLines]
) -> None:
    """Lines written after the file was moved away land in a new file at the path."""
    sink = make(jsonl_path)
    sink.emit(result(1))
    sink.flush()
    os.rename(jsonl_path, jsonl_path + ".old")
    sink.emit(result(2))
    sink.close()
    assert ids(read_lines(jsonl_path + ".old")) == ["r000001"]
    assert ids(read_lines(jsonl_path)) == ["r000002"]


# --------------------------------------------------------------------------------------------
# Write errors


def sink_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "shadowdeco.sinks" and r.levelno >= logging.WARNING
    ]


def test_a_rotation_that_keeps_failing_is_retried_once_an_interval(
    jsonl_path: str,
    make: Callable[..., sinks.JsonLines],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A directory that no longer lets the file be renamed: the lines go on into the current
    file (past max_bytes, rather than lost), rotation is retried once per flush_interval,
    not before every line, and the burst is one warning and one error."""
    sink = make(jsonl_path, max_bytes=600)
    renames: list[str] = []

    def refused(src: str, dst: str) -> None:
        renames.append(src)
        raise PermissionError(13, "Permission denied", dst)

    sink.emit(result(0))
    monkeypatch.setattr(os, "replace", refused)
    errors = 0
    with caplog.at_level(logging.INFO, logger="shadowdeco.sinks"):
        for n in range(1, 20):
            try:
                sink.emit(result(n))
            except OSError:
                errors += 1
        sink.flush()
    assert (len(renames), errors) == (1, 1)
    assert (sink.lines_written, sink.lines_lost) == (20, 0)
    assert len(read_lines(jsonl_path)) == 20
    assert len(sink_warnings(caplog)) == 1
    assert not [r for r in caplog.records if "writes again" in r.getMessage()]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_counted_logged_once_and_never_reaches_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On /dev/full writes fail as sink errors, warned once; other sinks and callers go on."""
    calls = 1000  # several buffers' worth: emit() fails too, not only flush()
    jsonl = sinks.JsonLines("/dev/full", flush_interval=3600)
    memory = sinks.Memory()

    @shadow(candidate=lambda x: x + 1, name="jsonl-full", sinks=[jsonl, memory])
    def inc(x: int) -> int:
        return x + 1

    with caplog.at_level(logging.INFO, logger="shadowdeco"):
        assert [inc(i) for i in range(calls)] == [i + 1 for i in range(calls)]
        assert not inc.shadow.flush(10)  # the sink's flush() raised: not flushed
        jsonl.emit(result(1))
        with pytest.raises(OSError) as raised:
            jsonl.flush()
        assert raised.value.errno == errno.ENOSPC
        jsonl.emit(result(2))
        with pytest.raises(OSError):
            jsonl.close()

    stats = inc.shadow.stats()
    assert stats.emitted == calls
    assert stats.sink_errors >= 2  # at least one emit() and the experiment's flush()
    assert len(memory.results) == calls
    assert (jsonl.lines_written, jsonl.lines_lost) == (0, calls + 2)
    (warning,) = sink_warnings(caplog)
    assert "/dev/full" in warning.getMessage()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("then", ["more results", "flush"])
def test_a_failed_interval_write_is_a_sink_error_too(then: str) -> None:
    """The interval write runs on the sink's timer thread, with no caller to raise to: its
    failure is counted in stats().sink_errors when the sink's thread hands over the next
    results, or raised by the next flush() (which then is False), whichever comes first."""
    jsonl = sinks.JsonLines("/dev/full", flush_interval=3600)

    @shadow(candidate=lambda x: x + 1, name=f"jsonl-interval-{then}", sinks=[jsonl])
    def inc(x: int) -> int:
        return x + 1

    worker = _delivery.worker_for(jsonl)
    for i in range(5):
        inc(i)
    assert inc.shadow._wait_settled(10)  # every result emitted,
    assert worker.wait_idle(10)  # and handed to the sink: five lines in its buffer
    jsonl._flush_in_background()  # what the timer thread does every flush_interval
    assert (jsonl.lines_written, jsonl.lines_lost) == (0, 5)
    if then == "flush":
        assert not inc.shadow.flush(10)
    else:
        inc(5)
        assert inc.shadow._wait_settled(10)
        assert worker.wait_idle(10)
    assert inc.shadow.stats().sink_errors == 1
    if then == "flush":  # reported once: nothing buffered since, nothing more to say
        assert inc.shadow.flush(10)
        assert inc.shadow.stats().sink_errors == 1


def test_a_subclass_that_overrides_emit_gets_its_emit_called(jsonl_path: str) -> None:
    """The batched hand-over is JsonLines' own: a subclass's emit() (a filter) still runs."""

    class Mismatches(sinks.JsonLines):
        def emit(self, result: ShadowResult) -> None:
            if result.match is False:
                super().emit(result)

    sink = Mismatches(jsonl_path, flush_interval=3600)
    predict = shadow(candidate=lambda x: x % 2, name="jsonl-subclass", sinks=[sink])(abs)
    for i in range(10):
        predict(i)
    assert predict.shadow.flush(10)
    assert sink.lines_written == 8  # 0 and 1 match their candidate; the rest do not
    sink.close()


def test_its_thread_hands_over_what_queued_in_one_call(
    jsonl_path: str, make: Callable[..., sinks.JsonLines], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results that queued while the sink was busy reach it in one call, one lock for all
    the lines; every line lands once, in order."""
    sink = make(jsonl_path)
    sizes: list[int] = []
    emit_batch = sink._emit_batch

    def watched(results: list[ShadowResult]) -> list[int]:
        sizes.append(len(results))
        return emit_batch(results)

    monkeypatch.setattr(sink, "_emit_batch", watched)

    @shadow(candidate=lambda x: x, name="jsonl-batched", sinks=[sink])
    def same(x: int) -> int:
        return x

    with sink._lock:  # the sink is busy: its thread waits here with the first result
        for i in range(50):
            same(i)
        assert same.shadow._wait_settled(10)  # all emitted: queued for the held sink
    assert same.shadow.flush(10)
    assert sum(sizes) == 50
    assert max(sizes) > 1
    assert [r["live"]["value"] for r in read_lines(jsonl_path)] == list(range(50))


def test_a_batch_counts_an_error_for_each_line_that_failed(
    jsonl_path: str, make: Callable[..., sinks.JsonLines], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose write fails is counted as the results one by one would be: a sink
    error per result whose emit would have raised, and the others written."""
    sink = make(jsonl_path)
    add = sink._add_locked

    def every_third_fails(line: bytes) -> OSError | None:
        if json.loads(line)["live"]["value"] % 3 == 0:
            return OSError(errno.EIO, "injected")
        return add(line)

    monkeypatch.setattr(sink, "_add_locked", every_third_fails)

    @shadow(candidate=lambda x: x, name="jsonl-batch-errors", sinks=[sink])
    def same(x: int) -> int:
        return x

    with sink._lock:
        for i in range(30):
            same(i)
        assert same.shadow._wait_settled(10)
    assert same.shadow.flush(10)
    assert same.shadow.stats().sink_errors == 10
    assert [r["live"]["value"] for r in read_lines(jsonl_path)] == [i for i in range(30) if i % 3]


def test_writing_resumes_when_the_error_clears(
    tmp_path: Path, make: Callable[..., sinks.JsonLines], caplog: pytest.LogCaptureFixture
) -> None:
    """While the directory is gone writes fail, warned once; once it is back, lines land."""
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "shadow.jsonl"
    sink = make(path)
    sink.emit(result(1))
    sink.flush()
    path.unlink()
    directory.rmdir()

    with caplog.at_level(logging.INFO, logger="shadowdeco.sinks"):
        for n in (2, 3, 4):
            sink.emit(result(n))
            with pytest.raises(FileNotFoundError):
                sink.flush()
        assert len(sink_warnings(caplog)) == 1
        directory.mkdir()
        sink.emit(result(5))
        sink.flush()

    assert ids(read_lines(path)) == ["r000005"]
    assert (sink.lines_written, sink.lines_lost) == (2, 3)
    assert any("writes again" in r.getMessage() for r in caplog.records)


class ShortThenFull:
    """Stands in for ``os`` in the sink: one write stops inside a line, the next one fails."""

    def __init__(self, cut: int) -> None:
        self.cut = cut
        self.calls = 0
        self.ftruncate_works = True

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: Any) -> int:
        self.calls += 1
        if self.calls == 1:
            return os.write(fd, bytes(data[: self.cut]))
        if self.calls == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    def ftruncate(self, fd: int, length: int) -> None:
        if not self.ftruncate_works:
            raise OSError(errno.EPERM, "not today")
        os.ftruncate(fd, length)


@pytest.mark.parametrize("ftruncate_works", [True, False])
def test_a_write_failing_midway_leaves_no_partial_line(
    jsonl_path: str,
    make: Callable[..., sinks.JsonLines],
    monkeypatch: pytest.MonkeyPatch,
    ftruncate_works: bool,
) -> None:
    """A line cut short by a failing write is removed (or kept apart); later lines are whole."""
    sink = make(jsonl_path)
    first_line_bytes = len(json.dumps(result(0).to_dict(), separators=(",", ":"))) + 1
    fake = ShortThenFull(cut=first_line_bytes + 50)  # one whole line, then part of the next
    fake.ftruncate_works = ftruncate_works
    monkeypatch.setattr(sinks, "os", fake)

    for i in range(3):
        sink.emit(result(i))
    with pytest.raises(OSError):
        sink.flush()
    assert (sink.lines_written, sink.lines_lost) == (1, 2)
    for i in range(3, 5):
        sink.emit(result(i))
    sink.flush()

    lines = Path(jsonl_path).read_bytes().split(b"\n")
    assert lines[-1] == b""  # the file ends with a whole line
    parsed, fragments = [], []
    for line in lines[:-1]:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            fragments.append(line)
    assert ids(parsed) == ["r000000", "r000003", "r000004"]
    # The fragment is cut off again, or, if it cannot be, left alone on a line of its own.
    assert len(fragments) == (0 if ftruncate_works else 1)
    assert (sink.lines_written, sink.lines_lost) == (3, 2)


def test_a_descriptor_closed_under_the_sink_is_replaced(
    jsonl_path: str, make: Callable[..., sinks.JsonLines]
) -> None:
    """When its file descriptor is closed by someone else, the sink opens the path again."""
    sink = make(jsonl_path)
    sink.emit(result(1))
    sink.flush()
    fd = sink._fd
    assert fd is not None
    os.close(fd)
    sink.emit(result(2))
    sink.flush()
    assert ids(read_lines(jsonl_path)) == ["r000001", "r000002"]
    assert (sink.lines_written, sink.lines_lost) == (2, 0)


# --------------------------------------------------------------------------------------------
# Construction


def test_a_missing_directory_fails_at_construction_naming_the_path(tmp_path: Path) -> None:
    """A path in a directory that does not exist fails at once, and says which path."""
    path = tmp_path / "nowhere" / "shadow.jsonl"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        sinks.JsonLines(path)
    assert not path.parent.exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_a_read_only_directory_fails_at_construction_naming_the_path(tmp_path: Path) -> None:
    """A path in a directory that cannot be written fails at once, and says which path."""
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="ro"):
            sinks.JsonLines(directory / "shadow.jsonl")
    finally:
        directory.chmod(0o700)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_a_read_only_file_fails_at_construction_naming_the_path(tmp_path: Path) -> None:
    """An existing file that cannot be written fails at once, and says which path."""
    path = tmp_path / "locked.jsonl"
    path.write_text("")
    path.chmod(0o400)
    with pytest.raises(PermissionError, match=r"locked\.jsonl"):
        sinks.JsonLines(path)


def test_a_directory_as_path_fails_at_construction(tmp_path: Path) -> None:
    """A path naming a directory fails at once, and says which path."""
    with pytest.raises(IsADirectoryError, match=re.escape(str(tmp_path))):
        sinks.JsonLines(tmp_path)


@pytest.mark.parametrize(
    ("options", "error", "param"),
    [
        ({"max_bytes": 0}, ValueError, "max_bytes"),
        ({"max_bytes": -1}, ValueError, "max_bytes"),
        ({"max_bytes": 1.5}, TypeError, "max_bytes"),
        ({"max_bytes": True}, TypeError, "max_bytes"),
        ({"backups": -1}, ValueError, "backups"),
        ({"backups": "5"}, TypeError, "backups"),
        ({"flush_interval": 0}, ValueError, "flush_interval"),
        ({"flush_interval": -1.0}, ValueError, "flush_interval"),
        ({"flush_interval": math.nan}, ValueError, "flush_interval"),
        ({"flush_interval": math.inf}, ValueError, "flush_interval"),
        ({"flush_interval": "1"}, TypeError, "flush_interval"),
        ({"fsync": "yes"}, TypeError, "fsync"),
        ({"serializer": 42}, TypeError, "serializer"),
        ({"mode": -1}, ValueError, "mode"),
        ({"mode": 0o10000}, ValueError, "mode"),
        ({"mode": "0600"}, TypeError, "mode"),
    ],
)
def test_bad_options_name_the_parameter_and_value(
    jsonl_path: str, options: dict[str, Any], error: type[Exception], param: str
) -> None:
    """A bad option fails at construction with the parameter's name and the value."""
    (value,) = options.values()
    with pytest.raises(error) as raised:
        sinks.JsonLines(jsonl_path, **options)
    message = str(raised.value)
    assert param in message
    assert repr(value) in message
    assert not os.path.exists(jsonl_path)


@pytest.mark.parametrize(("path", "error"), [(42, TypeError), ("", ValueError)])
def test_a_bad_path_is_refused(path: Any, error: type[Exception]) -> None:
    """A path that is not a non-empty str or os.PathLike is refused, naming path."""
    with pytest.raises(error, match="path"):
        sinks.JsonLines(path)


# --------------------------------------------------------------------------------------------
# Lifecycle


def test_close_is_idempotent_and_emit_after_close_raises(
    jsonl_path: str, make: Callable[..., sinks.JsonLines]
) -> None:
    """Closing twice is harmless; emit() after close() raises ValueError; flush() is a no-op."""
    sink = make(jsonl_path)
    sink.emit(result(1))
    sink.close()
    sink.close()
    with pytest.raises(ValueError, match=r"JsonLines\(.*shadow\.jsonl'\) is closed"):
        sink.emit(result(2))
    assert sink.flush() is True
    assert ids(read_lines(jsonl_path)) == ["r000001"]


def test_repr_and_attributes(
    tmp_path: Path, make: Callable[..., sinks.JsonLines], monkeypatch: pytest.MonkeyPatch
) -> None:
    """repr shows the absolute path; path, lines_written and lines_lost are readable."""
    monkeypatch.chdir(tmp_path)
    sink = make("relative.jsonl")
    assert sink.path == str(tmp_path / "relative.jsonl")
    assert repr(sink) == f"JsonLines({str(tmp_path / 'relative.jsonl')!r})"
    sink.emit(result(1))
    sink.flush()
    assert (sink.lines_written, sink.lines_lost) == (1, 0)


def test_fsync_flushes_to_disk(jsonl_path: str, make: Callable[..., sinks.JsonLines]) -> None:
    """With fsync=True, flush() and close() still write every line."""
    sink = make(jsonl_path, fsync=True)
    sink.emit(result(1))
    sink.flush()
    sink.emit(result(2))
    sink.close()
    assert ids(read_lines(jsonl_path)) == ["r000001", "r000002"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_write_the_parents_buffer(tmp_path: Path) -> None:
    """After fork each line is written once: the child drops the parent's buffered lines."""
    proc = run_script(
        """
        import os, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: on purpose
        from shadowdeco import Observation, ShadowResult, sinks

        ok = Observation("ok", 1, None, 0.0)

        def result(i):
            return ShadowResult("fork", str(i), 0.0, None, ok, ok, 0.0, True)

        sink = sinks.JsonLines("fork.jsonl", flush_interval=3600)
        sink.emit(result("parent"))  # buffered at fork
        pid = os.fork()
        if pid == 0:
            sink.emit(result("child"))
            sink.close()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        sink.close()
        print(os.waitstatus_to_exitcode(status))
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"
    assert sorted(ids(read_lines(tmp_path / "fork.jsonl"))) == ["child", "parent"]
