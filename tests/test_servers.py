"""The middleware under real servers, over real HTTP on 127.0.0.1 (DESIGN: Middleware, I7).

Each test starts gunicorn (Flask, Django; sync workers, also ``--preload``) or uvicorn
(Starlette) as a subprocess serving a small app of ``tests/servers/``, and stops it with
SIGTERM, as a deploy would.  The apps write their shadow results with ``sinks.JsonLines`` to
``results.<pid>.jsonl`` and their experiment's ``stats()`` at shutdown to ``stats.<pid>.json``
in a directory of the test's, which the test reads after the graceful stop.  A URL candidate
is a tiny ``http.server`` in a thread of this process.  No absolute times are asserted:
latency is compared with the same app served without the middleware, in the same test.
"""

from __future__ import annotations

import contextlib
import gc
import http.client
import http.server
import importlib.util
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import warnings
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVERS = REPO / "tests" / "servers"
EXAMPLES = REPO / "examples"

_NEEDED = ("flask", "django", "starlette", "fastapi", "gunicorn", "uvicorn")
_MISSING = [name for name in _NEEDED if importlib.util.find_spec(name) is None]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(_MISSING), reason=f"needs the test extra ({', '.join(_MISSING)})"),
    pytest.mark.skipif(sys.platform == "win32", reason="gunicorn and fork are POSIX-only"),
]

MIB = 1 << 20
#: the only header that may differ between two servers answering the same request
VOLATILE = frozenset({"date"})
#: the path the readiness probe requests (results for it are left out of the counts)
READY = "/hello"
#: a candidate that takes a while, so that mirrors are still pending at the SIGTERM
SLOW_CANDIDATE = {"SHADOW_MODE": "on", "SHADOW_CANDIDATE": "slow", "SHADOW_SLEEP": "0.3"}
HOSTILE = {
    "SHADOW_MODE": "on",
    "SHADOW_TIMEOUT": "2.5",  # past it, "hang" (20 s) times out; "slow" (2 s) finishes
    "SHADOW_MAX_CONCURRENCY": "32",  # hung threads still hold their slot (DESIGN I8)
    "SHADOW_DRAIN": "1",
    "SHADOWDECO_EXIT_TIMEOUT": "1",
}
BEHAVIORS = ("crash", "hang", "slow")
#: sent with every hostile request: never forwarded to a URL candidate, never recorded
CREDENTIALS = {"Authorization": "Bearer not-for-the-candidate", "Cookie": "session=live-only"}


# --------------------------------------------------------------------------------------------
# A client


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    seconds: float

    def seen(self) -> tuple[Any, ...]:
        """What a client sees: status line, headers in order (but Date), body bytes."""
        headers = tuple((k.lower(), v) for k, v in self.headers if k.lower() not in VOLATILE)
        return (self.status, self.reason, headers, self.body)


def fetch(
    port: int,
    method: str = "GET",
    path: str = "/hello",
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    conn: http.client.HTTPConnection | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One request with ``http.client``: on ``conn`` (kept alive) or a connection of its own.

    A generator ``body`` is sent with chunked transfer encoding.
    """
    own = conn is None
    if conn is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        start = time.perf_counter()
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return Reply(
            response.status,
            response.reason,
            tuple(response.getheaders()),
            data,
            time.perf_counter() - start,
        )
    finally:
        if own:
            conn.close()


def chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    """``total`` bytes in pieces: a body without Content-Length (chunked)."""
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        yield b"x" * piece
        sent += piece


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Any, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition()`` until true, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


# --------------------------------------------------------------------------------------------
# Servers


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHADOW_", "SHADOWDECO_"))}
    path = [str(SERVERS), str(REPO)]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class Server:
    """gunicorn (2 sync workers) or uvicorn serving an app of tests/servers on a free port.

    ``out`` receives the server's log, its results and stats files.
    """

    def __init__(
        self, out: Path, app: str, *, uvicorn: bool = False, preload: bool = False, **env: str
    ) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.app = app
        self.uvicorn = uvicorn
        self.preload = preload
        self.env = {**_base_env(), "SHADOW_OUT": str(out), **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def _argv(self) -> list[str]:
        if self.uvicorn:
            return [
                sys.executable, "-m", "uvicorn", self.app,
                "--host", "127.0.0.1", "--port", str(self.port),
                "--lifespan", "on", "--no-access-log",
            ]  # fmt: skip
        return [
            sys.executable, "-m", "gunicorn", "-c", "gunicorn_conf.py",
            "-b", f"127.0.0.1:{self.port}", "-w", "2",
            *(["--preload"] if self.preload else []),
            self.app,
        ]  # fmt: skip

    def start(self) -> Server:
        for _ in range(3):  # a port taken between our probe and the server's bind: another
            self.port = free_port()
            with open(self.out / "server.log", "ab") as log:
                self.proc = subprocess.Popen(
                    self._argv(), cwd=SERVERS, env=self.env, stdout=log, stderr=subprocess.STDOUT
                )
            if self._wait_ready(30.0):
                return self
            self.stop()
        raise AssertionError(f"{self.app} did not start:\n{self.log()}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                if fetch(self.port, "GET", READY, timeout=5).status == 200:
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def terminate(self) -> None:
        """SIGTERM: a graceful stop."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 45.0) -> int | None:
        """SIGTERM, wait (bounded), then SIGKILL; the exit status."""
        proc = self.proc
        if proc is None:
            return None
        self.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        return proc.returncode

    def stopped_cleanly(self, returncode: int | None) -> bool:
        # uvicorn >= 0.29 re-raises the signal it caught once it has shut down.
        return returncode == 0 or (self.uvicorn and returncode == -signal.SIGTERM)

    def log(self) -> str:
        path = self.out / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def results(self) -> list[dict[str, Any]]:
        lines = []
        for path in sorted(self.out.glob("results.*.jsonl")):
            text = path.read_text()
            # A write of the server's sink may be under way: its last line is not ended yet.
            complete = text[: text.rfind("\n") + 1]
            lines.extend(json.loads(line) for line in complete.splitlines())
        return lines

    def stats(self) -> list[dict[str, Any]]:
        records = []
        for path in sorted(self.out.glob("stats.*.json")):
            records.extend(json.loads(path.read_text()))
        return records


def request_of(result: dict[str, Any]) -> dict[str, Any]:
    """The mirrored request a result records (method, path, query, headers, body)."""
    return result["inputs"]["args"][0]  # type: ignore[no-any-return]


def is_probe(result: dict[str, Any]) -> bool:
    request = request_of(result)
    return request["path"] == READY and request["query"] == ""


def check_stats(records: list[dict[str, Any]], results: list[dict[str, Any]]) -> dict[str, int]:
    """Every process's counters add up and nothing is left in flight; returns the drops."""
    assert records, "no stats were written"
    dropped: Counter[str] = Counter()
    for stats in records:
        assert stats["in_flight"] == 0, stats
        assert stats["sampled"] == stats["emitted"] + sum(stats["dropped"].values()), stats
        assert stats["sink_errors"] == 0, stats
        dropped.update(stats["dropped"])
    assert sum(s["emitted"] for s in records) == len(results)
    return dict(dropped)


class CandidateService:
    """The "candidate service" of URL candidates: an HTTP/1.1 server in a thread of this process.

    By the request header ``X-Candidate-Behavior``: ``crash`` closes the connection without an
    answer, ``hang`` answers only when the test ends, ``slow`` takes 2 s.
    """

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                service.handle(self)

            do_HEAD = do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        class Quiet(http.server.ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a hung answer written after the client gave up: expected

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in handler.headers.items()}
        with self.lock:
            self.seen.append((handler.command, handler.path, headers))
        behavior = handler.headers.get("X-Candidate-Behavior", "")
        if behavior == "crash":
            handler.close_connection = True
            return
        if behavior == "hang":
            self.release.wait(20)
        elif behavior == "slow":
            time.sleep(2.0)
        payload = b"candidate\n"
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(payload)

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class Pool:
    """The servers several tests share, started on first use, stopped together at the end."""

    def __init__(self, root: Path, service: CandidateService) -> None:
        self.root = root
        self.started: dict[str, Server] = {}
        flask, starlette = "flask_app:app", "starlette_app:app"
        url = service.url
        self.specs: dict[str, tuple[str, bool, dict[str, str]]] = {
            "gunicorn-flask-plain": (flask, False, {"SHADOW_MODE": "off"}),
            "gunicorn-flask-shadow": (flask, False, {"SHADOW_MODE": "on"}),
            "gunicorn-flask-hostile": (flask, False, {**HOSTILE, "SHADOW_CANDIDATE": "hostile"}),
            "uvicorn-starlette-plain": (starlette, True, {"SHADOW_MODE": "off"}),
            "uvicorn-starlette-shadow": (starlette, True, {"SHADOW_MODE": "on"}),
            # the candidate service over HTTP: the URL candidate, its keep-alive and timeout
            "uvicorn-starlette-hostile": (starlette, True, {**HOSTILE, "SHADOW_CANDIDATE": url}),
        }  # fmt: skip

    def __getitem__(self, name: str) -> Server:
        if name not in self.started:
            app, uvicorn, env = self.specs[name]
            self.started[name] = Server(self.root / name, app, uvicorn=uvicorn, **env).start()
        return self.started[name]

    def stop_all(self) -> None:
        for server in self.started.values():
            server.terminate()
        for server in self.started.values():
            server.stop()


@pytest.fixture(scope="module")
def service() -> Iterator[CandidateService]:
    candidate_service = CandidateService()
    yield candidate_service
    candidate_service.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, service: CandidateService) -> Iterator[Pool]:
    pool = Pool(tmp_path_factory.mktemp("servers"), service)
    yield pool
    pool.stop_all()


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    """A server of one test's own, always stopped (again) at the end."""
    try:
        yield server.start()
    finally:
        server.stop()


KINDS = ["gunicorn-flask", "uvicorn-starlette"]


@contextlib.contextmanager
def client(server: Server) -> Iterator[http.client.HTTPConnection | None]:
    """A kept-alive connection for uvicorn; None (one per request) for gunicorn's sync
    workers, which close every connection after its response."""
    if not server.uvicorn:
        yield None
        return
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        yield conn
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# Transparency


@pytest.mark.parametrize("kind", KINDS)
def test_responses_are_byte_identical_with_and_without_the_middleware(
    servers: Pool, kind: str, tmp_path: Path
) -> None:
    """Status line, headers (but Date) and body bytes are the same with the middleware as
    without it, for every kind of request, a 5 MiB upload and a streamed response included."""
    plain, shadowed = servers[f"{kind}-plain"], servers[f"{kind}-shadow"]
    flag = tmp_path / "go"
    flag.touch()  # the streamed response need not wait
    requests: list[tuple[str, str, Any, dict[str, str]]] = [
        ("GET", "/hello?n=1", None, {}),
        ("GET", "/json?x=1&y=%C3%A9", None, {"Accept": "application/json"}),
        ("HEAD", "/hello?n=2", None, {}),
        ("POST", "/echo", b'{"a": [1, 2]}', {"Content-Type": "application/json"}),
        ("PUT", "/echo", b"not mirrored by default", {"Content-Type": "text/plain"}),
        ("GET", "/nowhere", None, {}),
        ("GET", f"/stream?flag={urllib.parse.quote(str(flag))}", None, {}),
        ("POST", "/upload", b"u" * (5 * MIB), {"Content-Type": "application/octet-stream"}),
    ]
    with client(plain) as plain_conn, client(shadowed) as shadow_conn:
        for method, path, body, headers in requests:
            without = fetch(plain.port, method, path, body, headers, conn=plain_conn)
            with_ = fetch(shadowed.port, method, path, body, headers, conn=shadow_conn)
            assert with_.seen() == without.seen(), (method, path)
        # Chunked (no Content-Length): a generator can be sent once, so one each.
        without = fetch(plain.port, "POST", "/upload", chunks(5 * MIB), conn=plain_conn)
        with_ = fetch(shadowed.port, "POST", "/upload", chunks(5 * MIB), conn=shadow_conn)
    assert with_.seen() == without.seen()
    assert json.loads(with_.body) == {"length": 5 * MIB}  # served live, not mirrored


@pytest.mark.parametrize("kind", KINDS)
def test_a_streamed_response_arrives_chunk_by_chunk(
    servers: Pool, kind: str, tmp_path: Path
) -> None:
    """The first chunk reaches the client while the app still holds the others back: the app
    sends them only once the client has created the flag file."""
    shadowed = servers[f"{kind}-shadow"]
    flag = tmp_path / "go"
    conn = http.client.HTTPConnection("127.0.0.1", shadowed.port, timeout=10)
    try:
        conn.request("GET", f"/stream?flag={urllib.parse.quote(str(flag))}")
        response = conn.getresponse()
        assert response.status == 200
        first = b""
        while len(first) < len(b"chunk-0\n"):  # a buffering middleware would time out here
            piece = response.read1(64)
            assert piece, "the response ended early"
            first += piece
        assert first == b"chunk-0\n"
        assert not flag.exists()  # so the app cannot have produced the rest yet
        flag.touch()
        rest = response.read()
    finally:
        conn.close()
    assert first + rest == b"".join(f"chunk-{i}\n".encode() for i in range(5))


# --------------------------------------------------------------------------------------------
# Isolation: hostile candidates


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_candidates_leave_live_responses_and_latency_unchanged(
    servers: Pool, service: CandidateService, kind: str
) -> None:
    """A candidate that crashes, hangs past its timeout or takes 2 s changes neither the live
    response nor its latency, next to the same app without the middleware.

    gunicorn's candidate runs in the worker (a WSGI app); uvicorn's is the candidate service
    over HTTP (a URL candidate).
    """
    plain, hostile = servers[f"{kind}-plain"], servers[f"{kind}-hostile"]
    rounds = 15
    seconds: dict[str, list[float]] = {"without": [], **{b: [] for b in BEHAVIORS}}
    with client(plain) as plain_conn, client(hostile) as hostile_conn:
        expected = fetch(plain.port, "GET", "/json?x=7", conn=plain_conn).seen()
        for _ in range(rounds):  # interleaved, so that drift hits both sides alike
            reply = fetch(plain.port, "GET", "/json?x=7", conn=plain_conn)
            seconds["without"].append(reply.seconds)
            for behavior in BEHAVIORS:
                headers = {"X-Candidate-Behavior": behavior, **CREDENTIALS}
                reply = fetch(hostile.port, "GET", "/json?x=7", None, headers, conn=hostile_conn)
                assert reply.seen() == expected, behavior
                seconds[behavior].append(reply.seconds)
    without = statistics.median(seconds["without"])
    medians = {behavior: statistics.median(seconds[behavior]) for behavior in BEHAVIORS}
    shown = ", ".join(f"{b} {m * 1000:.2f} ms" for b, m in medians.items())
    print(f"{kind}: live median without {without * 1000:.2f} ms; with {shown}")  # see -rP
    for behavior, with_ in medians.items():
        assert with_ <= 3 * without + 0.05, (behavior, with_, without)

    # The candidates really misbehaved: their results say so.
    def outcome(result: dict[str, Any]) -> str:
        return dict(map(tuple, request_of(result)["headers"])).get("x-candidate-behavior", "")

    def seen_all() -> bool:
        statuses = {(outcome(r), r["candidate"]["status"]) for r in hostile.results()}
        return {("crash", "error"), ("hang", "timeout"), ("slow", "ok")} <= statuses

    assert wait_until(seen_all, 20.0), Counter(
        (outcome(r), r["candidate"]["status"]) for r in hostile.results()
    )
    for result in hostile.results():
        assert result["live"]["status"] == "ok"
        if outcome(result) == "slow" and result["candidate"]["status"] == "ok":
            assert result["candidate"]["duration_s"] >= 1.9
        recorded = {name for name, _ in request_of(result)["headers"]}
        assert not recorded & {"authorization", "cookie"}  # never in the results
    if hostile.uvicorn:  # the URL candidate: what the candidate service received
        with service.lock:
            sent = [headers for _, path, headers in service.seen if path.startswith("/json")]
        assert len(sent) >= rounds * len(BEHAVIORS)  # a dropped one may be sent again
        for headers in sent:
            assert headers.get("x-shadow-request") == "1"
            assert not headers.keys() & {"authorization", "cookie"}


# --------------------------------------------------------------------------------------------
# Accounting and the graceful stop (DESIGN I4, I7)


@pytest.mark.parametrize(
    ("kind", "preload"),
    [("gunicorn-flask", False), ("gunicorn-flask", True), ("uvicorn-starlette", False)],
    ids=["gunicorn", "gunicorn-preload", "uvicorn"],
)
def test_a_graceful_stop_drains_every_mirror_into_the_sink(
    kind: str, preload: bool, tmp_path: Path
) -> None:
    """After SIGTERM, with a slow candidate still busy, every mirrored request is in the sink,
    a 5 MiB upload was served live and counted ``body_too_large``, and ``stats()`` adds up.

    With ``--preload`` the app, its middleware and its experiment are built in the gunicorn
    master and forked: each worker still mirrors its own requests.
    """
    uvicorn = kind.startswith("uvicorn")
    app = "starlette_app:app" if uvicorn else "flask_app:app"
    server = Server(
        tmp_path / "server",
        app,
        uvicorn=uvicorn,
        preload=preload,
        **SLOW_CANDIDATE,
        SHADOWDECO_EXIT_TIMEOUT="20",
        SHADOW_DRAIN="20",
    )
    mirrored = 0
    live_pids: set[int] = set()
    with running(server):
        if not uvicorn:
            # One request held in each worker at once: both workers serve, and so mirror.
            hold = tmp_path / "hold"
            with ThreadPoolExecutor(2) as pool:
                path = f"/whoami?hold={urllib.parse.quote(str(hold))}"
                held = [pool.submit(fetch, server.port, "GET", path) for _ in range(2)]
                inside = wait_until(lambda: len(list(tmp_path.glob("hold.*"))) >= 2, 15.0)
                hold.touch()
                replies = [future.result() for future in held]
            assert inside, server.log()
            live_pids = {json.loads(reply.body)["pid"] for reply in replies}
            assert len(live_pids) == 2
            mirrored += 2
        with client(server) as conn:
            for i in range(30):
                assert fetch(server.port, "GET", f"/json?x={i}", conn=conn).status == 200
            assert fetch(server.port, "POST", "/echo", b"abc", conn=conn).body == b"abc"
            chunked = fetch(server.port, "POST", "/echo", chunks(3000, 1000), conn=conn)
            assert chunked.body == b"x" * 3000  # no Content-Length, under max_body: mirrored
            mirrored += 32
            put = fetch(server.port, "PUT", "/echo", b"not mirrored", conn=conn)
            assert put.status == 200
            for body in (b"u" * (5 * MIB), chunks(5 * MIB)):
                upload = fetch(server.port, "POST", "/upload", body, conn=conn)
                assert json.loads(upload.body) == {"length": 5 * MIB}
        sigterm_at = time.time()
        returncode = server.stop()
    log = server.log()
    assert server.stopped_cleanly(returncode), log

    # Work was still pending at the SIGTERM, and finished before the process ended.
    finished = [
        float(line)
        for path in server.out.glob("candidate-finished.*.log")
        for line in path.read_text().split()
    ]
    assert max(finished) > sigterm_at, "nothing was pending at the SIGTERM: a weaker test"

    results = server.results()
    mine = [r for r in results if not is_probe(r)]
    assert len(mine) == mirrored, log
    assert len({r["id"] for r in results}) == len(results)
    assert all(r["candidate"]["status"] == "ok" and r["match"] is True for r in mine)
    requests = Counter((request_of(r)["method"], request_of(r)["path"]) for r in mine)
    assert requests[("GET", "/json")] == 30
    assert requests[("POST", "/echo")] == 2
    assert sorted(request_of(r)["body_len"] for r in mine if request_of(r)["path"] == "/echo") == [
        3,
        3000,
    ]
    assert ("PUT", "/echo") not in requests
    assert ("POST", "/upload") not in requests
    assert sorted(request_of(r)["query"] for r in mine if request_of(r)["path"] == "/json") == (
        sorted(f"x={i}" for i in range(30))
    )
    assert check_stats(server.stats(), results) == {"body_too_large": 2}

    if not uvicorn:
        # gunicorn: one results file per worker, or one shared by the forked workers.
        assert len(list(server.out.glob("results.*.jsonl"))) == (1 if preload else 2)
        # The mirror of each /whoami ran in the worker that served it.
        mirrored_in = {
            json.loads(r["candidate"]["value"]["body"])["pid"]
            for r in mine
            if request_of(r)["path"] == "/whoami"
        }
        assert mirrored_in == live_pids


def test_a_hung_candidate_holds_request_bodies_up_to_max_pending_bytes(tmp_path: Path) -> None:
    """uvicorn, a candidate that hangs (one at a time): 1 MiB uploads are mirrored until the
    bodies held reach ``max_pending_bytes`` (2.5 MiB: two of them); every later one is served
    live and counted ``bytes_full``, not queued behind the hung candidate."""
    server = Server(
        tmp_path / "server",
        "starlette_app:app",
        uvicorn=True,
        SHADOW_MODE="on",
        SHADOW_CANDIDATE="hostile",
        SHADOW_TIMEOUT="15",  # < the hang: no result lets a body go while the test runs
        SHADOW_MAX_CONCURRENCY="1",
        SHADOW_MAX_PENDING_BYTES=str(2 * MIB + MIB // 2),
        SHADOW_DRAIN="1",
    )
    with running(server), client(server) as conn:
        for _ in range(6):
            reply = fetch(
                server.port,
                "POST",
                "/upload",
                b"u" * MIB,
                {"X-Candidate-Behavior": "hang"},
                conn=conn,
            )
            assert json.loads(reply.body) == {"length": MIB}
    log = server.log()
    [stats] = server.stats()
    assert stats["sampled"] == 6 + 1, log  # and the readiness probe
    assert stats["dropped"].get("bytes_full") == 4, stats
    assert (
        stats["sampled"] == stats["emitted"] + sum(stats["dropped"].values()) + stats["in_flight"]
    )


def test_a_django_view_under_gunicorn_is_unchanged_and_mirrored(tmp_path: Path) -> None:
    """A Django project's WSGI application, wrapped the way its wsgi.py would: responses
    are byte-identical to the unwrapped one's, and every mirror is in the sink at the end."""
    app = "django_app:application"
    plain = Server(tmp_path / "plain", app, SHADOW_MODE="off")
    shadowed = Server(tmp_path / "shadow", app, SHADOW_MODE="on")
    requests: list[tuple[str, str, Any, dict[str, str]]] = [
        ("GET", "/hello?n=1", None, {}),
        ("GET", "/items/7?q=%C3%A9", None, {}),
        ("HEAD", "/hello?n=2", None, {}),
        ("POST", "/echo", b"payload", {"Content-Type": "text/plain"}),
        ("GET", "/items/not-a-number", None, {}),
        ("PUT", "/echo", b"not mirrored", {"Content-Type": "text/plain"}),
    ]
    with running(plain), running(shadowed):
        for method, path, body, headers in requests:
            without = fetch(plain.port, method, path, body, headers)
            with_ = fetch(shadowed.port, method, path, body, headers)
            assert with_.seen() == without.seen(), (method, path)
        returncode = shadowed.stop()
    assert shadowed.stopped_cleanly(returncode), shadowed.log()
    results = shadowed.results()
    mine = [r for r in results if not is_probe(r)]
    assert sorted((request_of(r)["method"], request_of(r)["path"]) for r in mine) == [
        ("GET", "/hello"),
        ("GET", "/items/7"),
        ("GET", "/items/not-a-number"),
        ("HEAD", "/hello"),
        ("POST", "/echo"),
    ]
    assert all(r["match"] is True for r in mine)
    assert {r["live"]["value"]["status"] for r in mine} == {200, 404}
    assert check_stats(shadowed.stats(), results) == {}


# --------------------------------------------------------------------------------------------
# Known bugs (in-process middleware, URL candidate: the candidate service of this process)


def live_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"live\n"]


def serve(app: Any, method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    """One request through a WSGI app, as a server sends it (``close()`` included)."""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        **{"HTTP_" + name.upper(): value for name, value in headers.items()},
    }
    app_iter = app(environ, lambda status, headers, *exc: None)
    try:
        return b"".join(app_iter)
    finally:
        close = getattr(app_iter, "close", None)  # a list response has none
        if close is not None:
            close()


def test_a_request_the_candidate_service_drops_reaches_it_once(
    service: CandidateService,
) -> None:
    """A mirrored request sent on a fresh connection is not sent again when the candidate
    service drops it: the result records the error."""
    from shadowdeco import sinks
    from shadowdeco.middleware import ShadowWSGIMiddleware

    memory = sinks.Memory()
    app = ShadowWSGIMiddleware(live_app, service.url, name="url-candidate-retry", sinks=[memory])
    body = serve(app, "POST", "/retry-check", b"once", X_CANDIDATE_BEHAVIOR="crash")
    assert body == b"live\n"
    assert app.shadow.flush(5)
    assert [r.candidate.status for r in memory.results] == ["error"]
    with service.lock:
        received = [path for _, path, _ in service.seen if path == "/retry-check"]
    assert len(received) == 1


def test_closing_an_experiment_closes_its_url_candidate_connections(
    service: CandidateService,
) -> None:
    """Once a URL candidate's experiment is closed, no connection to the candidate service is
    left for the garbage collector to close."""
    from shadowdeco.middleware import ShadowWSGIMiddleware

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = ShadowWSGIMiddleware(live_app, service.url, name="url-candidate-close", sinks=[])
        assert serve(app, "GET", "/connection-check") == b"live\n"
        assert app.shadow.flush(5)
        app.shadow.close()
        gc.collect()
    assert any(path == "/connection-check" for _, path, _ in service.seen)
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == []


class GoneMidBody(io.RawIOBase):
    """A request body of which the client sends 4 bytes, then goes away (a read error)."""

    def __init__(self) -> None:
        self.sent = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.sent:
            raise OSError("the client went away")
        self.sent = True
        buffer[:4] = b"abcd"
        return 4


def test_a_client_gone_mid_body_meets_the_live_app_as_without_the_middleware() -> None:
    """A request whose client disconnects mid-body reaches the live app exactly as it would
    without the middleware (here: Flask answers 400), and is counted, not mirrored."""
    from flask import Flask, request

    from shadowdeco.middleware import ShadowWSGIMiddleware

    flask_app = Flask("gone-mid-body")

    @flask_app.post("/echo")
    def echo() -> bytes:
        return request.get_data()

    def status_of(app: Any) -> str:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/echo",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_LENGTH": "10",
            "CONTENT_TYPE": "application/octet-stream",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": GoneMidBody(),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        status: list[str] = []
        app_iter = app(environ, lambda s, headers, *exc: status.append(s))
        try:
            b"".join(app_iter)
        finally:
            getattr(app_iter, "close", lambda: None)()
        return status[0]

    without = status_of(flask_app.wsgi_app)
    middleware = ShadowWSGIMiddleware(
        flask_app.wsgi_app, lambda environ, start_response: [], name="gone-mid-body", sinks=[]
    )
    with_ = status_of(middleware)
    assert middleware.shadow.stats().dropped == {"incomplete_body": 1}
    assert without.startswith("400")
    assert with_ == without


def test_a_graceful_uvicorn_stop_drains_decorated_functions_too(tmp_path: Path) -> None:
    """Under uvicorn, the lifespan shutdown the middleware observes drains every pending
    shadow of the process, those of ``@shadow``-decorated functions included (DESIGN I7)."""
    server = Server(
        tmp_path / "server", "starlette_decorated:app", uvicorn=True, SHADOW_SLEEP="0.3"
    )
    with running(server):
        with client(server) as conn:
            for i in range(8):
                assert fetch(server.port, "GET", f"/predict?x={i}", conn=conn).status == 200
        returncode = server.stop()
    assert server.stopped_cleanly(returncode), server.log()
    assert len(server.results()) == 8


# --------------------------------------------------------------------------------------------
# Examples


@pytest.mark.parametrize(
    "example", ["flask_app.py", "fastapi_app.py", "django_wsgi.py", "in_front_of_the_api.py"]
)
def test_the_example_runs_its_selftest(example: str, tmp_path: Path) -> None:
    """Each middleware example serves a request in its --selftest mode and prints the result."""
    env = {**_base_env(), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / example), "--selftest"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "selftest ok" in proc.stdout, proc.stdout
