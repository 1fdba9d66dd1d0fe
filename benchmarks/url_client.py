"""Client CPU of one kept-alive round trip to a URL candidate: the standard library's
``http.client`` response against the one shadowdeco uses (``middleware._client.Response``:
``http.client`` with a lighter header parser), and a raw socket as the floor.

    python benchmarks/url_client.py            # 8 rounds of 60 calls per client and gap, ~40 s
    python benchmarks/url_client.py --quick    # 2 rounds of 20 calls, ~6 s

The server is the middleware benchmark's Flask app (``benchmarks/apps``) under gunicorn
(``gthread``, keep-alive), started and stopped by that benchmark's ``Server`` on the second
half of the CPUs; this process runs on the first half (``placement()``, where the live servers
run there).  What is measured is ``time.thread_time_ns()`` of the calling thread around each
round trip (its CPU, not the wait for the answer): the CPU a mirror's lane thread spends in
the live server's process.  Each call sends the benchmark's ``POST /predict`` and reads the
whole answer.

Two gaps between calls: none (back to back), and 20 ms, as a gunicorn worker's mirrors
arrive at 10 % sampling: code that ran 20 ms ago is cold again on a shared VM, and a client
that runs less of it pays less.  The clients run round-robin, one batch each per round, the
first moving by one each round; the figures are medians over the rounds, and each ratio is
to ``http.client`` in the same run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _machine
from middleware import Server, new_token, placement

from shadowdeco.middleware._client import Response

BODY = json.dumps({"id": 1, "features": [0.25] * 16}).encode()
HEADERS = {"content-type": "application/json", "x-shadow-request": "1"}


def start_server(log_dir: str, cpus: set[int]) -> Server:
    """gunicorn on ``cpus`` (the middleware benchmark's ``Server``), ready to answer, its
    kept-alive connections allowed to idle while the other clients run."""
    env = dict(os.environ, BENCH_SHADOW="off", BENCH_TOKEN=new_token())
    server = Server(
        "gunicorn", env, Path(log_dir, "server.log"), 1, cpus, keep_alive=True, idle_s=300
    )
    try:
        server.wait_ready()
    except BaseException:
        server.kill()
        raise
    return server


def http_client(port: int, response_class: type[http.client.HTTPResponse]) -> Callable[[], int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.response_class = response_class

    def call() -> int:
        conn.putrequest("POST", "/predict", skip_accept_encoding=True)
        for name, value in HEADERS.items():
            conn.putheader(name, value)
        conn.putheader("content-length", str(len(BODY)))
        conn.endheaders(BODY)
        response = conn.getresponse()
        size = len(response.read())
        response.getheaders()
        return size

    return call


def raw_socket(port: int) -> Callable[[], int]:
    """The floor: the same request as bytes, the answer read by its Content-Length."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())
    request = f"POST /predict HTTP/1.1\r\nhost: x\r\n{head}content-length: {len(BODY)}\r\n\r\n"
    wire = request.encode() + BODY

    def call() -> int:
        sock.sendall(wire)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        header, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in header.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += sock.recv(65536)
        return len(body)

    return call


def measure(call: Callable[[], int], calls: int, gap: float) -> float:
    """Microseconds of this thread's CPU per round trip, over ``calls`` calls."""
    for _ in range(5):
        call()
    total = 0
    for _ in range(calls):
        start = time.thread_time_ns()
        call()
        total += time.thread_time_ns() - start
        if gap:
            time.sleep(gap)
    return total / calls / 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 20 calls")
    args = parser.parse_args()
    rounds, calls = (2, 20) if args.quick else (8, 60)
    mine, servers = placement()
    with tempfile.TemporaryDirectory(prefix="url-client-") as log_dir:
        server = start_server(log_dir, servers)
        try:
            if mine:
                os.sched_setaffinity(0, mine)
            port = server.port
            clients = {
                "http.client (email header parser)": http_client(port, http.client.HTTPResponse),
                "shadowdeco's Response (http.client, own header parser)": http_client(
                    port, Response
                ),
                "raw socket (the floor)": raw_socket(port),
            }
            names = list(clients)
            gaps = (0.0, 0.02)
            figures: dict[tuple[str, float], list[float]] = {
                (n, g): [] for n in names for g in gaps
            }
            for r in range(rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for gap in gaps:
                    for name in order:
                        figures[name, gap].append(measure(clients[name], calls, gap))
        finally:
            server.terminate()
            server.wait_stopped()
    print(f"## URL candidate client: CPU per kept-alive round trip ({rounds} rounds of {calls})")
    print()
    where = f"this process on CPUs {sorted(mine)}, gunicorn on {sorted(servers)}" if mine else ""
    print(f"Machine: {_machine.summary()}; {where or 'no CPU pinning (one CPU)'}.")
    print()
    print("| client | back to back, µs | ratio | 20 ms apart, µs | ratio |")
    print("|---|---:|---:|---:|---:|")
    base = {gap: statistics.median(figures[names[0], gap]) for gap in gaps}
    for name in names:
        cells = []
        for gap in gaps:
            median = statistics.median(figures[name, gap])
            cells += [f"{median:,.0f}", f"{median / base[gap]:.2f}x"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print("Ratios are to http.client in the same run; medians over the rounds.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
