"""Requests per second and live latency of a small app under real servers, with and without
the shadowdeco middleware.

    python benchmarks/middleware.py            # full run: 10 rounds, 2 servers each, ~2 min
    python benchmarks/middleware.py --quick    # smoke run: 3 rounds of 100 requests, ~50 s

The app (``benchmarks/apps/``) answers ``POST /predict`` with a small JSON body by running a
tiny dense network in pure Python (~1 ms of CPU with the framework).  It is served

* by **gunicorn** (Flask, 2 sync workers) and by **uvicorn** (FastAPI, 1 worker);
* **without** the middleware, and **with** it at 0 %, 10 % and 100 % sampling, the candidate an
  in-process copy of the same app (so every mirror costs the same CPU again, on the same
  machine); and at 10 % and 100 % with a **URL candidate**: the plain app served by a second
  server of the same kind (2 gunicorn workers, or 1 uvicorn) in its own processes.  That server
  keeps connections alive (gunicorn with ``gthread`` workers), as a service that receives
  mirrored traffic does (gunicorn's sync workers are meant to sit behind a proxy, and the
  proxy keeps the connection); one more gunicorn row at 10 % sends to sync workers, which
  close every connection, so each mirror pays for a new one.

The budget's verdict (DESIGN.md: ≥ 0.9x the throughput at 10 %) is taken with the URL
candidate, as mirroring is deployed: the live server then pays only for the middleware.  With
an in-process copy of the app as the candidate, 10 % sampling adds a tenth of the app's own work
to the live server, so 1/1.1 = 0.91x is the ceiling whatever the middleware costs; that row is
printed beside the verdict, for reading.

Every sampled request is recorded by a ``sinks.JsonLines`` sink in a temporary directory, as a
real deployment would.  All the servers are started at once by this script and stay up for the
whole run.  The configurations are loaded in turn, in bursts: one round loads each server once,
the first one moving by one each round, so a noisy neighbour slows every configuration alike.

Each configuration runs on **two servers** (``INSTANCES``), each its own processes; a round's
req/s of a configuration is the mean of its two bursts, and its ratio is to the mean of the two
servers without the middleware in that round.  Two servers that differ in nothing but their
processes do not serve alike: in an A/A probe (four identical gunicorn servers loaded by turns,
CPU per request of each worker thread from ``/proc``) they stood 2-4 % apart with the machine
quiet and up to 17 % apart in a noisy phase, as much as a 10 % mirror costs; one server per
configuration made each verdict a draw of that luck as much as a measure of the middleware.
The table prints the two baseline servers' ratio to each other (the A/A control): how far
apart two equal configurations can stand in this run.
After each burst the script waits until every server is idle (its mirrors' backlog drained:
the "drain" column), so no burst pays for the previous one's mirrors.  A configuration's CPU
per request counts the live server's processes from the start of its burst until that quiet
point, so it includes the in-process mirrors' work (a URL candidate server's CPU is shown
beside it).  The baseline's CPU per request over this one's ("CPU-based ratio") is the
throughput ratio a live server whose cores were all busy with this app would see; on a shared
machine it is steadier than req/s, and it is printed beside the budget's verdict as a
cross-check.

Placement: the live servers run on the first half of the CPUs, the load generator (this
process) and the URL candidates' servers on the other half (``sched_setaffinity``; on 2 CPUs,
one each).  Those two stand for other machines: on shared cores their CPU was charged to live,
and with the candidate app served next to it, 10 % could not reach 0.9x however little the
middleware cost.  A live server's in-process mirrors (its lane threads) stay on its CPU.
Every server runs with ``PYTHONHASHSEED=0``: a process keeps its hash layout for the whole run,
and a baseline's luck would move every ratio of its table.

The load comes from this process on 127.0.0.1: 8 threads, each with its own keep-alive
``http.client`` connection (gunicorn's sync workers close it after each response, so there it
reconnects), sending a fixed number of requests per burst (or until a time cap).  req/s is the
median over the rounds; each ratio is the median of the per-round ratios to the same server
without the middleware (with their interquartile range: how noisy the machine was); p50 and
p99 are over every measured request of the configuration.  The client shares its CPU with the
URL candidates' servers, so its own CPU time over each burst (``time.process_time()``: this
process, every thread) is shown as a share of one core, median and max over the bursts; a row
with a burst above 70 % is flagged "client-bound": its req/s may be the client's limit as much
as the server's (a flag to read, not a failure).

At the end every server is stopped gracefully (SIGTERM; SIGKILL only past a bound), and so it
is when the run fails (a server not ready at start-up, a crash), is interrupted (Ctrl-C) or is
itself sent SIGTERM: no server outlives the script.  A process of a server's group still alive
5 s after its main process ended is killed, and named among the problems.  Each server
process writes its counters after its shadows were drained (gunicorn: at interpreter exit,
after shadowdeco's exit flush; uvicorn: at the end of the lifespan shutdown, after the
middleware's drain), and the script checks, for every server with the middleware, that every
request it answered was sampled or skipped (``sampled + skipped == served``), that every
sampled request was emitted (``sampled == emitted``, nothing in flight) and the JSONL files
hold exactly one line per emitted result, and that nothing was dropped, mismatched or a
candidate error (the candidate is a copy of the live app, on a machine that keeps up: each of
these is a lost or broken mirror, and the row would not measure what it says).  A broken count,
or a failed request, prints INVALID with the problems and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.metadata
import itertools
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _machine

APPS = Path(__file__).resolve().parent / "apps"
BUDGET = 0.9  # DESIGN.md: middleware at 10 %, under a real server, >= 0.9x the throughput
CLIENT_BOUND = 0.7  # a burst whose client used more than this share of a core is flagged
THREADS = 8
INSTANCES = 2  # servers per configuration, each its own processes: see the module docstring
GUNICORN_WORKERS = 2
START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0
STRAGGLER_TIMEOUT = 5.0  # after a server's main process ended, for the rest of its group
TIMES = "\u00d7"  # the multiplication sign, for ratios


@dataclass(frozen=True)
class Config:
    server: str  # "gunicorn" or "uvicorn"
    label: str
    shadow: str  # "off" or a sampling rate
    url_candidate: bool = False
    # gunicorn only: the URL candidate's server closes every connection (sync workers), so
    # each mirror opens a new one; otherwise it keeps them alive (gthread workers).
    candidate_closes: bool = False


def configs() -> list[Config]:
    out = []
    for server in ("gunicorn", "uvicorn"):
        out += [
            Config(server, "without middleware", "off"),
            Config(server, "middleware, 0 %", "0"),
            Config(server, "middleware, 10 %", "0.1"),
            Config(server, "middleware, 10 %, URL candidate", "0.1", url_candidate=True),
        ]
        if server == "gunicorn":
            out.append(
                Config(
                    server,
                    "middleware, 10 %, URL candidate closing connections",
                    "0.1",
                    url_candidate=True,
                    candidate_closes=True,
                )
            )
        out += [
            Config(server, "middleware, 100 %", "1"),
            Config(server, "middleware, 100 %, URL candidate", "1", url_candidate=True),
        ]
    return out


BASELINE = "without middleware"
BUDGET_ROW = "middleware, 10 %, URL candidate"
IN_PROCESS_ROW = "middleware, 10 %"


# --------------------------------------------------------------------------------------------
# Servers


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now and not given to another server of this run.

    The kernel may give a probe's port again once the probe closed: two servers started at
    once could then get the same one, the second fail to bind, and its readiness probe reach
    the first, which then served both configurations (one make bench run ended with a row of
    no CPU at all).
    """
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def new_token() -> str:
    """A random string for a server's ``GET /health`` answer (``BENCH_TOKEN``).

    The port is probed free, closed, and bound later by the server: in between another program
    (or a server left by an earlier run) may take it, and a bare 200 on /health would then pass
    for this server being ready.  The token says the answer comes from the server started here.
    """
    return secrets.token_hex(16)


class Server:
    """One server started by this script, in its own process group."""

    def __init__(
        self,
        kind: str,
        env: dict[str, str],
        log_path: Path,
        workers: int,
        cpus: set[int],
        *,
        keep_alive: bool = False,
        idle_s: int | None = None,
    ) -> None:
        self.kind = kind
        self.port = free_port()
        self.token = env["BENCH_TOKEN"]  # what its /health must answer
        self.log_path = log_path
        self.probes = 0
        if kind == "gunicorn":
            args = [
                "-m", "gunicorn",
                "--chdir", str(APPS),
                "--bind", f"127.0.0.1:{self.port}",
                "--workers", str(workers),
                # sync workers close each connection after its response; gthread keeps it
                *(["--worker-class", "gthread", "--threads", "4"] if keep_alive
                  else ["--worker-class", "sync"]),
                # how long a kept-alive connection may idle (gunicorn's default: 2 s)
                *(["--keep-alive", str(idle_s)] if idle_s is not None else []),
                "--graceful-timeout", str(int(STOP_TIMEOUT)),
                "--log-level", "warning",
                "wsgi_app:app",
            ]  # fmt: skip
        else:
            args = [
                "-m", "uvicorn",
                "--app-dir", str(APPS),
                "--host", "127.0.0.1",
                "--port", str(self.port),
                "--workers", "1",
                "--log-level", "warning",
                "--no-access-log",
                "asgi_app:app",
            ]  # fmt: skip
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: its workers are found by pgid
            # Its CPUs, inherited by its workers (forked later) and their threads.
            # Servers start before the load threads exist.
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,  # noqa: PLW1509
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited at start-up:\n{self.log_tail()}")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/health")
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                pass
            else:
                if response.status == 200 and body == self.token.encode():
                    self.probes += 1  # a GET: mirrored too, when sampled
                    return
                if response.status == 200:
                    raise RuntimeError(
                        f"port {self.port} answered /health with {body[:60]!r}, not the token "
                        f"given to this {self.kind}: another program holds the port"
                    )
            finally:
                conn.close()
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} not ready after {START_TIMEOUT} s:\n{self.log_tail()}")

    def terminate(self) -> None:
        """A graceful stop: SIGTERM to the server's main process."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the server's whole process group (main process, workers), reaped."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def wait_stopped(self) -> None:
        """Wait for the stop; past ``STOP_TIMEOUT``, SIGKILL the server's process group, and
        so for a process of its group still alive ``STRAGGLER_TIMEOUT`` after it stopped."""
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.kind} did not stop within {STOP_TIMEOUT} s") from None
        finally:
            # gunicorn's master returns once its workers are reaped; wait for stragglers.
            deadline = time.monotonic() + STRAGGLER_TIMEOUT
            while self._group_alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            straggler = self._group_alive()
            if straggler:  # not left running: it would load the machine of the next run
                self.kill()
            self._log.close()
        if straggler:
            raise RuntimeError(
                f"{self.kind} on port {self.port}: processes of its group still ran "
                f"{STRAGGLER_TIMEOUT:.0f} s after it stopped (killed)"
            )

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def cpu_by_group(pgids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of every process in each process group (master, workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    wanted = set(pgids)
    total = dict.fromkeys(pgids, 0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        group = int(fields[2])
        if group in wanted:
            total[group] += int(fields[11]) + int(fields[12])  # utime, stime
    return {group: n / ticks for group, n in total.items()}


def server_env(config: Config, out: Path, candidate: str, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHADOWDECO_")}
    env.update(
        BENCH_TOKEN=token,
        BENCH_SHADOW=config.shadow,
        BENCH_CANDIDATE=candidate,
        BENCH_OUT=str(out),
        SHADOWDECO_EXIT_TIMEOUT="30",  # room to drain a 100 % backlog at the stop
        PYTHONUNBUFFERED="1",
        # The same string hashing in every server: one source less of per-process luck.
        PYTHONHASHSEED="0",
    )
    return env


# --------------------------------------------------------------------------------------------
# Load


def bodies() -> list[bytes]:
    """64 distinct request bodies: an id and 16 features."""
    out = []
    for i in range(64):
        features = [round(((i * 7 + j * 13) % 29) / 14.5 - 1.0, 3) for j in range(16)]
        out.append(json.dumps({"id": i, "features": features}).encode())
    return out


@dataclass
class Load:
    seconds: float
    latencies: list[float]  # seconds, one per successful request
    errors: list[str]
    cpu_s: float = 0.0  # this process's CPU time (every thread) over the load: the client's

    @property
    def client_share(self) -> float:
        """The client's CPU over the load, as a share of one core."""
        return self.cpu_s / self.seconds if self.seconds > 0 else 0.0


def run_load(port: int, requests: int, cap_s: float, threads: int = THREADS) -> Load:
    """``requests`` POSTs from ``threads`` threads, each on its own keep-alive connection,
    or as many as fit in ``cap_s`` seconds."""
    payloads = bodies()
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    barrier = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        barrier.wait()
        try:
            while (i := next(counter)) < requests and time.perf_counter() < deadline[0]:
                body = payloads[i % len(payloads)]
                start = time.perf_counter()
                try:
                    conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()  # a fresh connection for the next request
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status != 200:
                    with lock:
                        errors.append(f"HTTP {response.status}")
                    continue
                mine.append(time.perf_counter() - start)
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    cpu0 = time.process_time()  # the main thread only waits from here on: the rest is the load
    start = time.perf_counter()
    deadline[0] = start + cap_s
    barrier.wait()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - start
    return Load(seconds, latencies, errors, time.process_time() - cpu0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --------------------------------------------------------------------------------------------
# The targets: every configuration's server runs for the whole benchmark, loaded in turn


@dataclass
class Target:
    config: Config
    instance: int  # which of the configuration's servers (1..INSTANCES); 0: merged
    out: Path
    server: Server
    candidate_server: Server | None
    rps: list[float] = field(default_factory=list)  # one per round
    ratios: list[float] = field(default_factory=list)  # to the baseline of the same round
    latencies: list[float] = field(default_factory=list)  # every measured request
    cpu_s: float = 0.0  # the live server's, over every burst, in-process mirrors included
    candidate_cpu_s: float = 0.0  # the URL candidate server's
    measured: int = 0  # requests measured, over every burst
    drain_s: list[float] = field(default_factory=list)  # quiet again after each burst
    client_share: list[float] = field(default_factory=list)  # client's CPU / a core, per burst
    served: int = 0  # every request answered: readiness probe, warm-up, measured
    errors: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    lines: int = 0
    candidate_errors: dict[str, int] = field(default_factory=dict)  # by type, from the lines

    @property
    def cpu_ms_per_request(self) -> float:
        """Total, not a median: the kernel counts CPU in 10 ms ticks, too coarse per burst."""
        return self.cpu_s / max(self.measured, 1) * 1e3

    @property
    def candidate_cpu_ms_per_request(self) -> float:
        return self.candidate_cpu_s / max(self.measured, 1) * 1e3

    @property
    def servers(self) -> list[Server]:
        return [self.server] + ([self.candidate_server] if self.candidate_server else [])

    @property
    def workers(self) -> int:
        return GUNICORN_WORKERS if self.config.server == "gunicorn" else 1


def placement() -> tuple[set[int], set[int]]:
    """(the live servers' CPUs, everyone else's): the live servers get the first half of this
    process's CPUs to themselves; the load generator and the URL candidates' servers share the
    rest, standing for other machines.  Empty sets (no pinning) below 2 CPUs."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        return set(), set()
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])


def start_targets(
    root: Path,
    live_cpus: set[int],
    other_cpus: set[int],
    targets: list[Target],
    started: list[Server],
) -> None:
    """Start every configuration's servers, then wait until each one is ready.

    ``targets`` and ``started`` (every server, as it starts) are filled as it goes, so a
    failure or an interrupt half-way leaves in them all that must be stopped.
    """
    for i, config in enumerate(configs()):
        for instance in range(1, INSTANCES + 1):
            out = root / f"{i:02d}-{instance}-{config.server}"
            out.mkdir()
            workers = GUNICORN_WORKERS if config.server == "gunicorn" else 1
            candidate_server = None
            candidate = "inproc"
            # One token for the live server and its URL candidate: the readiness probe is
            # mirrored when sampled, and the candidate, a copy of the live app, must answer it
            # the same.
            token = new_token()
            if config.url_candidate:
                env = server_env(Config(config.server, "candidate", "off"), out, "inproc", token)
                candidate_server = Server(
                    config.server,
                    env,
                    out / "candidate.log",
                    workers,
                    other_cpus,
                    keep_alive=not config.candidate_closes,
                )
                started.append(candidate_server)
                candidate = candidate_server.url
            env = server_env(config, out, candidate, token)
            server = Server(config.server, env, out / "server.log", workers, live_cpus)
            started.append(server)
            targets.append(Target(config, instance, out, server, candidate_server))
    for target in targets:
        for server in target.servers:
            server.wait_ready()


def cpu_of(servers: list[Server]) -> float:
    return sum(cpu_by_group([s.proc.pid for s in servers]).values())


def wait_quiet(servers: list[Server], window: float = 0.2, cap: float = 30.0) -> float:
    """Wait until the servers use at most one clock tick of CPU in ``window`` seconds (their
    mirrors' backlog is drained); the seconds waited."""
    start = time.monotonic()
    tick = 1 / os.sysconf("SC_CLK_TCK")
    before = cpu_of(servers)
    while time.monotonic() - start < cap:
        time.sleep(window)
        after = cpu_of(servers)
        if after - before <= tick + 1e-9:
            break
        before = after
    return max(0.0, time.monotonic() - start - window)


def burst(target: Target, everyone: list[Server], requests: int, cap_s: float) -> float:
    """Load one target with ``requests`` requests; its throughput (requests per second)."""
    live0 = cpu_of([target.server])
    candidate0 = cpu_of(target.servers[1:])
    load = run_load(target.server.port, requests, cap_s)
    target.drain_s.append(wait_quiet(everyone))
    target.cpu_s += cpu_of([target.server]) - live0
    target.candidate_cpu_s += cpu_of(target.servers[1:]) - candidate0
    n = len(load.latencies)
    target.served += n
    target.errors += load.errors
    target.latencies += load.latencies
    target.measured += n
    target.client_share.append(load.client_share)
    return n / load.seconds


def stop_targets(targets: list[Target], servers: list[Server]) -> list[str]:
    """SIGTERM every server at once, wait for each, then read what each target left."""
    problems = []
    for server in servers:
        if server.proc.poll() is not None:  # died before the stop: say how
            problems.append(
                f"{server.kind} on port {server.port} exited before the stop "
                f"(code {server.proc.returncode}):\n{server.log_tail()}"
            )
        server.terminate()
    for server in servers:
        try:
            server.wait_stopped()
        except RuntimeError as exc:
            problems.append(str(exc))
    for target in targets:
        target.stats = merged_stats(target.out)
        target.lines, target.candidate_errors = read_results(target.out)
        problems += check(target)
        problems += [f"{where(target)}: {e}" for e in target.errors[:3]]
    return problems


def where(target: Target) -> str:
    """The configuration, and which of its servers."""
    server = f", server {target.instance}" if target.instance else ""
    return f"{target.config.server}, {target.config.label}{server}"


def merged(targets: list[Target]) -> list[Target]:
    """One target per configuration: its servers' bursts of each round averaged (req/s), the
    rest pooled; ``ratios`` then filled, per round, against the same round's baseline."""
    groups: dict[Config, list[Target]] = {}
    for t in targets:
        groups.setdefault(t.config, []).append(t)
    rows = []
    for config, group in groups.items():
        first = group[0]
        row = Target(config, 0, first.out, first.server, first.candidate_server)
        row.rps = [statistics.fmean(burst) for burst in zip(*(t.rps for t in group), strict=True)]
        for t in group:
            row.latencies += t.latencies
            row.cpu_s += t.cpu_s
            row.candidate_cpu_s += t.candidate_cpu_s
            row.measured += t.measured
            row.drain_s += t.drain_s
            row.client_share += t.client_share
            row.served += t.served
            row.errors += t.errors
            row.lines += t.lines
            for key, value in t.stats.items():
                if key == "dropped":
                    for reason, n in value.items():
                        row.stats.setdefault(key, {})[reason] = row.stats[key].get(reason, 0) + n
                else:
                    row.stats[key] = row.stats.get(key, 0) + value
            for kind, n in t.candidate_errors.items():
                row.candidate_errors[kind] = row.candidate_errors.get(kind, 0) + n
        rows.append(row)
    for row in rows:
        base = baseline_of(row, rows)
        if row is not base:
            row.ratios = [a / b for a, b in zip(row.rps, base.rps, strict=True)]
    return rows


def baseline_of(target: Target, targets: list[Target]) -> Target:
    """The same server's configuration without the middleware (among ``targets``)."""
    return next(
        t
        for t in targets
        if t.config.server == target.config.server
        and t.config.label == BASELINE
        and t.instance == target.instance
    )


def a_a(targets: list[Target]) -> dict[str, list[float]]:
    """Per server kind, each round's req/s of the second server without the middleware over the
    first's: how far two servers that differ in nothing but their processes stand apart."""
    out: dict[str, list[float]] = {}
    for t in targets:
        if t.config.label == BASELINE and t.instance == 2:
            first = next(u for u in targets if u.config == t.config and u.instance == 1)
            out[t.config.server] = [b / a for a, b in zip(first.rps, t.rps, strict=True)]
    return out


def read_results(directory: Path) -> tuple[int, dict[str, int]]:
    """The number of result lines, and the candidate errors they hold by type."""
    lines = 0
    errors: dict[str, int] = {}
    for path in directory.glob("shadow-*.jsonl"):
        with open(path, "rb") as file:
            for line in file:
                lines += 1
                error = json.loads(line)["candidate"]["error"]
                if error is not None:
                    errors[error["type"]] = errors.get(error["type"], 0) + 1
    return lines, errors


def merged_stats(directory: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {"processes": 0, "dropped": {}, "not_flushed_first": 0}
    for path in directory.glob("stats-*.json"):
        record = json.loads(path.read_text())
        merged["processes"] += 1
        # At interpreter exit, the counters must be written after shadowdeco's exit flush.
        merged["not_flushed_first"] += (
            record["when"] == "exit" and not record["closed_before_this_handler"]
        )
        for key in (
            "sampled",
            "skipped",
            "emitted",
            "in_flight",
            "mismatched",
            "candidate_errors",
            "sink_errors",
        ):
            merged[key] = merged.get(key, 0) + record[key]
        for reason, n in record["dropped"].items():
            merged["dropped"][reason] = merged["dropped"].get(reason, 0) + n
    return merged


def check(target: Target) -> list[str]:
    """The accounting a graceful stop must leave: every request answered sampled or skipped,
    every sampled one emitted and one line per emitted result, nothing dropped, no mismatch and
    no candidate error (the candidate is a copy of the live app: either is a broken mirror)."""
    config, stats, lines = target.config, target.stats, target.lines
    at = where(target)
    if config.shadow == "off":
        return [f"{at}: {lines} result lines without the middleware"] if lines else []
    problems = []
    if stats["processes"] != target.workers:
        problems.append(f"{at}: {stats['processes']} stats files, expected {target.workers}")
        return problems
    dropped = sum(stats["dropped"].values())
    if stats["sampled"] != stats["emitted"] + dropped or stats["in_flight"]:
        problems.append(f"{at}: stats do not add up: {stats}")
    if stats["sampled"] + stats["skipped"] != target.served:
        problems.append(
            f"{at}: sampled {stats['sampled']:,} + skipped {stats['skipped']:,} != "
            f"{target.served:,} requests answered"
        )
    if dropped:
        problems.append(f"{at}: {dropped} mirrors dropped {stats['dropped']}")
    if lines != stats["emitted"]:
        problems.append(f"{at}: {lines} result lines, {stats['emitted']} results emitted")
    if stats["mismatched"]:
        problems.append(f"{at}: {stats['mismatched']} mismatches")
    if stats["candidate_errors"] or target.candidate_errors:
        problems.append(
            f"{at}: {stats['candidate_errors']} candidate errors counted, in the lines "
            f"{target.candidate_errors or 0}"
        )
    if stats["sink_errors"]:
        problems.append(f"{at}: {stats['sink_errors']} sink errors")
    if stats["not_flushed_first"]:
        problems.append(f"{at}: counters written before shadowdeco's exit flush")
    return problems


# --------------------------------------------------------------------------------------------
# Report


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cpu_ratio(target: Target, targets: list[Target]) -> float:
    """Baseline CPU per request over this configuration's: the throughput ratio a server whose
    cores were all busy with this app would see; steadier than req/s on a shared machine."""
    base = baseline_of(target, targets)
    if not target.cpu_ms_per_request:  # it served nothing: its errors are listed at the end
        return float("nan")
    return base.cpu_ms_per_request / target.cpu_ms_per_request


def cpu_cell(target: Target) -> str:
    cell = f"{target.cpu_ms_per_request:.2f}"
    if target.candidate_server is not None:
        cell += f" (+ {target.candidate_cpu_ms_per_request:.2f} URL candidate)"
    return cell


def client_cell(target: Target) -> str:
    """The client's CPU share of a core over the bursts (median, max), flagged above the bound."""
    if not target.client_share:
        return "—"
    cell = f"{median(target.client_share):.0%} ({max(target.client_share):.0%})"
    bound = sum(share > CLIENT_BOUND for share in target.client_share)
    if bound:
        cell += f" **client-bound** in {bound}/{len(target.client_share)}"
    return cell


def print_report(
    targets: list[Target],
    aa: dict[str, list[float]],
    *,
    rounds: int,
    per_burst: int,
    elapsed: float,
    cpus: tuple[set[int], ...],
) -> None:
    print(
        f"## Middleware benchmark: {rounds} rounds, in each a burst of {per_burst:,} requests "
        f"to each of the {INSTANCES} servers of every configuration, {THREADS} client threads"
    )
    print()
    print(machine(*cpus))
    print()
    print(
        "| server | configuration | req/s | ratio to no middleware (IQR) | p50 ms | p99 ms "
        "| live server CPU ms/req | CPU-based ratio | drain after burst s "
        "| client CPU, share of a core (max) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in targets:
        ratio = "—"
        if len(t.ratios) >= 2:
            q1, _, q3 = statistics.quantiles(t.ratios, n=4)
            ratio = f"{median(t.ratios):.2f}{TIMES} ({q1:.2f}-{q3:.2f})"
        print(
            f"| {t.config.server} | {t.config.label} | {median(t.rps):,.0f} | {ratio} "
            f"| {percentile(t.latencies, 0.50) * 1e3:.2f} "
            f"| {percentile(t.latencies, 0.99) * 1e3:.2f} "
            f"| {cpu_cell(t)} | {cpu_ratio(t, targets):.2f}{TIMES} "
            f"| {median(t.drain_s):.2f} | {client_cell(t)} |"
        )
    print()
    print_a_a(aa)
    bound_rows = sum(any(share > CLIENT_BOUND for share in t.client_share) for t in targets)
    print(
        f"Client CPU: this process (the {THREADS} load threads) over each burst, as a share of one "
        f"core, median (max) over the bursts; it shares its CPU with the URL candidates' servers."
    )
    if bound_rows:
        print(
            f"{bound_rows} row(s) had a burst above {CLIENT_BOUND:.0%} of a core (client-bound): "
            "their req/s may be the client's limit as much as the server's."
        )
    print()
    print("Accounting after the graceful stop (SIGTERM to every server, then the files counted);")
    print("requests: every request the server answered (readiness probe and warm-up included).")
    print()
    print("The candidate is a copy of the live app: a drop, a mismatch or a candidate error is a")
    print("lost or broken mirror, and makes the run INVALID.")
    print()
    print(
        "| server | configuration | requests | sampled | skipped | emitted = JSONL lines "
        "| dropped | mismatched | candidate errors |"
    )
    print("|---|---|---:|---:|---:|---:|---|---:|---|")
    for t in targets:
        if t.config.shadow == "off":
            continue
        print(
            f"| {t.config.server} | {t.config.label} | {t.served:,} "
            f"| {t.stats.get('sampled', 0):,} | {t.stats.get('skipped', 0):,} | {t.lines:,} "
            f"| {t.stats.get('dropped') or 0} | {t.stats.get('mismatched', 0):,} "
            f"| {t.candidate_errors or 0} |"
        )
    print()
    print(f"Budget (DESIGN.md): middleware at 10 % under a real server ≥ {BUDGET}{TIMES}")
    print("the throughput of the same app without it.")
    print()
    print("Measured with the candidate served by its own processes (a URL candidate) on the")
    print("other CPUs, as a mirror is deployed: what the live server pays is the middleware's")
    print("work.")
    print()
    for t in targets:
        if t.config.label == BUDGET_ROW:
            ratio = median(t.ratios)
            verdict = "PASS" if ratio >= BUDGET else "FAIL"
            print(
                f"- {t.config.server}: {ratio:.2f}{TIMES} — **{verdict}** "
                f"(cross-check, CPU-based: {cpu_ratio(t, targets):.2f}{TIMES})"
            )
    print()
    print("For reading, not a verdict: with the candidate an in-process copy of the app, 10 %")
    print("sampling adds a tenth of the app's own work, so no middleware can pass")
    print(f"1/1.1 = 0.91{TIMES}:")
    print()
    for t in targets:
        if t.config.label == IN_PROCESS_ROW:
            print(
                f"- {t.config.server}: {median(t.ratios):.2f}{TIMES} "
                f"(CPU-based: {cpu_ratio(t, targets):.2f}{TIMES})"
            )
    print()
    print(f"Total time: {elapsed:.0f} s.")


def print_a_a(aa: dict[str, list[float]]) -> None:
    print(
        f"req/s: each round's bursts of a configuration's {INSTANCES} servers averaged, median "
        "over the rounds; ratios: per round, to the servers without the middleware (IQR over "
        "the rounds); latencies and CPU: every server of the configuration, pooled."
    )
    print()
    print(
        "A/A control, two servers without the middleware that differ in nothing but their "
        "processes, the second's req/s over the first's, per round:"
    )
    print()
    for server, ratios in aa.items():
        q1, _, q3 = statistics.quantiles(ratios, n=4)  # (3 rounds at least)
        print(f"- {server}: {median(ratios):.2f}{TIMES} ({q1:.2f}-{q3:.2f})")
    print()


def machine(live_cpus: set[int], other_cpus: set[int]) -> str:
    versions = []
    for package in ("gunicorn", "uvicorn", "flask", "fastapi"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{package} {importlib.metadata.version(package)}")
    if live_cpus:
        placed = (
            f"live servers and their mirrors on CPU {_cpus(live_cpus)}; load generator and URL "
            f"candidates' servers on CPU {_cpus(other_cpus)}"
        )
    else:
        placed = "shared by the servers, their mirrors and the load generator"
    return (
        f"Machine: {os.cpu_count()} CPUs ({_machine.cpu_model()}), {placed}. "
        f"CPython {platform.python_version()}, {', '.join(versions)}."
    )


def _cpus(cpus: set[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


# --------------------------------------------------------------------------------------------


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM to this script (a ``kill``, a cancelled job): leave through the ``finally`` that
    stops every server, as Ctrl-C does.  The servers run in sessions of their own, so neither
    signal reaches them, and the default action would end the script and leave them running."""
    raise SystemExit(128 + signum)


def kill_leftovers(servers: list[Server]) -> None:
    """The last resort, whatever happened before: no server's process group outlives the run."""
    for server in servers:
        if server.proc.poll() is None or server._group_alive():
            server.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 100 requests (smoke run)")
    options = parser.parse_args(argv)
    rounds, per_burst, warmup = (3, 100, 40) if options.quick else (10, 150, 100)
    cap_s = 30.0  # per burst: a hung server fails the run instead of stalling it
    for module in ("flask", "fastapi", "gunicorn", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            print(f"benchmarks/middleware.py needs {module}: pip install {module}")
            return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="shadowdeco-bench-mw-") as tmp:
        live_cpus, other_cpus = placement()
        if other_cpus:
            os.sched_setaffinity(0, other_cpus)  # the load generator: off the live servers' CPUs
        targets: list[Target] = []
        started_servers: list[Server] = []
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            start_targets(Path(tmp), live_cpus, other_cpus, targets, started_servers)
            everyone = [s for t in targets for s in t.servers]
            for t in targets:
                warm = run_load(t.server.port, warmup, cap_s)
                t.served += t.server.probes + len(warm.latencies)
                t.errors += warm.errors
            wait_quiet(everyone)
            for round_no in range(rounds):
                shift = round_no % len(targets)
                for t in targets[shift:] + targets[:shift]:
                    t.rps.append(burst(t, everyone, per_burst, cap_s))
                print(
                    f"round {round_no + 1}/{rounds} done, {time.monotonic() - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            try:
                problems = stop_targets(targets, started_servers)
            finally:
                kill_leftovers(started_servers)
                signal.signal(signal.SIGTERM, previous)
    print_report(
        merged(targets),
        a_a(targets),
        rounds=rounds,
        per_burst=per_burst,
        elapsed=time.monotonic() - started,
        cpus=(live_cpus, other_cpus),
    )
    if problems:
        print("\nINVALID: the accounting or the requests above did not hold; problems:\n")
        for problem in problems:
            print(f"- {problem}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
