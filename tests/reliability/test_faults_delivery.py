"""Fault catalogue, delivery side: comparators, sinks, files, serializers, the config file."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from reliability_helpers import settle, wait_settled

import shadowdeco
from shadowdeco import _delivery, shadow, sinks


def test_comparator_raises() -> None:
    """A raising comparator leaves match unknown, counts a compare error, emits the result."""
    memory = sinks.Memory()

    def broken(live: Any, candidate: Any) -> bool:
        raise ValueError("comparator bug")

    @shadow(candidate=lambda x: x, compare=broken, sinks=[memory])
    def predict(x: int) -> int:
        return x

    assert [predict(i) for i in range(5)] == list(range(5))
    stats = settle(predict.shadow)
    assert (stats.emitted, stats.compare_errors, stats.matched, stats.mismatched) == (5, 5, 0, 0)
    assert [r.match for r in memory.results] == [None] * 5


def test_comparator_returns_a_value_whose_truth_raises() -> None:
    """A comparator result that cannot be turned into a bool counts as a compare error."""

    class Ambiguous:
        def __bool__(self) -> bool:
            raise ValueError("truth value is ambiguous")

    memory = sinks.Memory()

    @shadow(candidate=lambda x: x, compare=lambda a, b: Ambiguous(), sinks=[memory])
    def predict(x: int) -> int:
        return x

    assert predict(1) == 1
    stats = settle(predict.shadow)
    assert (stats.emitted, stats.compare_errors) == (1, 1)
    assert memory.results[0].match is None


def test_sink_raises() -> None:
    """Sinks raising an Exception or SystemExit are counted; the other sinks get every result."""
    memory = sinks.Memory()

    def raises_os_error(result: Any) -> None:
        raise OSError("disk full")

    def raises_system_exit(result: Any) -> None:
        raise SystemExit(1)

    @shadow(candidate=lambda x: x, sinks=[raises_os_error, raises_system_exit, memory])
    def predict(x: int) -> int:
        return x

    assert [predict(i) for i in range(10)] == list(range(10))
    stats = settle(predict.shadow)
    assert (stats.emitted, stats.sink_errors, len(memory)) == (10, 20, 10)
    assert predict(10) == 10  # the sinks' threads survived
    stats = settle(predict.shadow)
    assert (stats.emitted, stats.sink_errors, len(memory)) == (11, 22, 11)


def test_sink_flush_raises() -> None:
    """A sink whose flush() raises makes flush() False and counts one sink error per flush."""
    memory = sinks.Memory()

    class BadFlush:
        def emit(self, result: Any) -> None:
            memory.emit(result)

        def flush(self, timeout: float | None = None) -> bool:
            raise RuntimeError("cannot flush")

    @shadow(candidate=lambda x: x, sinks=[BadFlush()])
    def predict(x: int) -> int:
        return x

    assert predict(1) == 1
    assert not predict.shadow.flush(10)
    stats = wait_settled(predict.shadow)
    assert (stats.emitted, stats.sink_errors, len(memory)) == (1, 1, 1)


def test_sink_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A blocked sink holds a bounded queue and loses the rest, counted; other sinks get all."""
    monkeypatch.setattr(_delivery, "max_pending", 4)
    memory = sinks.Memory()
    other = sinks.Memory()
    entered = threading.Event()
    release = threading.Event()
    received: list[Any] = []

    def blocked(result: Any) -> None:
        entered.set()
        release.wait(30)
        received.append(result)

    @shadow(candidate=lambda x: x, name="blocked", sinks=[memory, blocked])
    def predict(x: int) -> int:
        return x

    @shadow(candidate=lambda x: -x, name="unaffected", sinks=[other])
    def negate(x: int) -> int:
        return -x

    for i in range(12):
        assert predict(i) == i
        # One at a time: the free sinks never fall behind (the bound applies to them too).
        assert len(memory.wait(i + 1, timeout=10)) == i + 1
    assert entered.wait(10)
    for i in range(5):  # another experiment is not held up
        assert negate(i) == -i
        assert len(other.wait(i + 1, timeout=10)) == i + 1
    stats = wait_settled(predict.shadow)
    assert (stats.emitted, stats.sink_errors, len(memory)) == (12, 0, 12)
    assert dict(stats.sink_drops) == {"test_sink_blocks.<locals>.blocked": 8}
    assert not predict.shadow.flush(0.05)  # the stuck sink is not idle
    release.set()
    settle(predict.shadow)
    assert [r.candidate.value for r in received] == [0, 1, 2, 3]
    settle(negate.shadow)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_sink_writes_to_a_full_device() -> None:
    """JsonLines on /dev/full counts a sink error and every line lost; live never notices."""
    jsonl = sinks.JsonLines("/dev/full", flush_interval=3600)

    @shadow(candidate=lambda x: x, sinks=[jsonl])
    def predict(x: int) -> int:
        return x

    assert [predict(i) for i in range(20)] == list(range(20))
    assert not predict.shadow.flush(10)  # the write fails with ENOSPC
    stats = wait_settled(predict.shadow)
    assert (stats.emitted, stats.sink_errors) == (20, 1)
    assert (jsonl.lines_written, jsonl.lines_lost) == (0, 20)
    assert predict(20) == 20
    assert not predict.shadow.flush(10)
    stats = wait_settled(predict.shadow)
    assert (stats.emitted, stats.sink_errors, jsonl.lines_lost) == (21, 2, 21)


def test_file_removed_under_a_jsonlines_sink(tmp_path: Path) -> None:
    """A JsonLines file deleted while in use is recreated and later results land in it."""
    path = tmp_path / "shadow.jsonl"
    jsonl = sinks.JsonLines(path, flush_interval=3600)

    @shadow(candidate=lambda x: x, sinks=[jsonl])
    def predict(x: int) -> int:
        return x

    assert [predict(i) for i in range(5)] == list(range(5))
    settle(predict.shadow)
    assert len(path.read_text().splitlines()) == 5
    path.unlink()
    assert [predict(i) for i in range(5, 12)] == list(range(5, 12))
    stats = settle(predict.shadow)
    values = [json.loads(line)["candidate"]["value"] for line in path.read_text().splitlines()]
    assert sorted(values) == list(range(5, 12))  # several workers: any order
    assert (stats.emitted, stats.sink_errors, jsonl.lines_written, jsonl.lines_lost) == (
        12,
        0,
        12,
        0,
    )


def test_directory_removed_under_a_jsonlines_sink(tmp_path: Path) -> None:
    """When the sink's directory disappears, lines are lost and counted, and writing resumes."""
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "shadow.jsonl"
    jsonl = sinks.JsonLines(path, flush_interval=3600)

    @shadow(candidate=lambda x: x, sinks=[jsonl])
    def predict(x: int) -> int:
        return x

    assert predict(0) == 0
    settle(predict.shadow)
    path.unlink()
    directory.rmdir()
    assert [predict(i) for i in range(1, 4)] == [1, 2, 3]
    assert not predict.shadow.flush(10)  # cannot reopen the file
    stats = wait_settled(predict.shadow)
    assert (stats.emitted, stats.sink_errors, jsonl.lines_lost) == (4, 1, 3)
    directory.mkdir()
    assert predict(4) == 4
    stats = settle(predict.shadow)
    assert (stats.emitted, stats.sink_errors) == (5, 1)
    values = [json.loads(line)["candidate"]["value"] for line in path.read_text().splitlines()]
    assert values == [4]


def test_serializer_raises(tmp_path: Path) -> None:
    """A raising serializer leaves a line that says so for each value; no sink error."""

    def serializer(value: Any) -> Any:
        raise RuntimeError("redaction bug")

    shadowdeco.configure(serializer=serializer)
    path = tmp_path / "out.jsonl"

    @shadow(candidate=lambda x: x, sinks=[sinks.JsonLines(path, flush_interval=3600)])
    def predict(x: int) -> int:
        return x

    assert predict(7) == 7
    stats = settle(predict.shadow)
    assert (stats.emitted, stats.sink_errors, stats.matched) == (1, 0, 1)
    (line,) = path.read_text().splitlines()
    value = json.loads(line)["candidate"]["value"]
    assert value == {"$type": "builtins.int", "$error": "RuntimeError: redaction bug"}


def test_serializer_returns_what_json_cannot_hold(tmp_path: Path) -> None:
    """A serializer returning non-JSON values still leaves one line, marked with $error."""
    shadowdeco.configure(serializer=lambda value: {value})  # a set: JSON cannot hold it
    path = tmp_path / "out.jsonl"

    @shadow(candidate=lambda x: x, sinks=[sinks.JsonLines(path, flush_interval=3600)])
    def predict(x: int) -> int:
        return x

    assert predict(7) == 7
    stats = settle(predict.shadow)
    assert (stats.emitted, stats.sink_errors) == (1, 0)
    (line,) = path.read_text().splitlines()
    assert "$error" in json.loads(line)


def test_config_file_is_broken(tmp_path: Path) -> None:
    """A config file that does not parse or has the wrong shape is ignored; the last good stays."""
    config = tmp_path / "shadow.json"
    config.write_text(json.dumps({"experiments": {"cfg": {"enabled": False}}}))
    shadowdeco.configure(config_file=config, config_interval=3600)

    @shadow(candidate=lambda x: x, name="cfg", sinks=[])
    def predict(x: int) -> int:
        return x

    assert not predict.shadow.enabled
    assert [predict(i) for i in range(3)] == [0, 1, 2]
    for broken in (
        "{not json",
        "",
        "[1, 2]",
        json.dumps({"experiments": {"cfg": {"sample": 2}}}),
        json.dumps({"experiments": {"cfg": {"enabled": "yes"}}}),
        json.dumps({"experiments": {"cfg": {"enabled": True}}, "typo": 1}),
    ):
        config.write_text(broken)
        assert shadowdeco.reload_config() is False, broken
        assert not predict.shadow.enabled
        assert predict(1) == 1
    assert predict.shadow.stats().sampled == 0
    config.write_text(json.dumps({"experiments": {"cfg": {"enabled": True, "sample": 1.0}}}))
    assert shadowdeco.reload_config() is True
    assert [predict(i) for i in range(4)] == [0, 1, 2, 3]
    stats = settle(predict.shadow)
    assert (stats.sampled, stats.emitted) == (4, 4)
    config.unlink()
    assert shadowdeco.reload_config() is False  # gone: code settings and the last config stay
    assert predict(5) == 5
    assert settle(predict.shadow).emitted == 5


def test_sink_closed_while_in_use(tmp_path: Path) -> None:
    """A JsonLines sink closed by someone else raises on emit, which is counted, not lost."""
    path = tmp_path / "out.jsonl"
    jsonl = sinks.JsonLines(path, flush_interval=3600)
    memory = sinks.Memory()

    @shadow(candidate=lambda x: x, sinks=[jsonl, memory])
    def predict(x: int) -> int:
        return x

    assert predict(0) == 0
    settle(predict.shadow)
    jsonl.close()
    assert [predict(i) for i in range(1, 4)] == [1, 2, 3]
    stats = settle(predict.shadow)
    assert (stats.emitted, stats.sink_errors, len(memory)) == (4, 3, 4)
    assert len(path.read_text().splitlines()) == 1
