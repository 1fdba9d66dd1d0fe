"""In front of the API: the caller shadows the new endpoint.

The client function calls the live endpoint and returns its answer; ``@shadow`` calls the
candidate endpoint with the same inputs in the background and records both answers.  The new
endpoint takes another payload, so ``adapt=`` turns the live call's arguments into the
candidate's.  Inside the candidate ``shadowdeco.in_shadow()`` is true: the shadow request
says so with the header ``X-Shadow-Request: 1``, and the new service can skip its side effects
(billing, writes).  In production the results go to a file, for ``shadowdeco report``::

    @shadow(candidate=score_v2, adapt=to_v2, sinks=[sinks.JsonLines("shadow.jsonl")], ...)
    def score(customer_id, features): ...

Endpoints: ``LIVE_URL`` and ``CANDIDATE_URL`` (environment variables); one call::

    LIVE_URL=http://… CANDIDATE_URL=http://… python examples/in_front_of_the_api.py c1 1.0 0.9

(customer id, tenure, usage drop).

Self-check, 127.0.0.1 only: ``python examples/in_front_of_the_api.py --selftest`` starts the
two endpoints as tiny ``http.server`` threads on 127.0.0.1 and makes a few calls.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import shadowdeco
from shadowdeco import compare, shadow, sinks

ENDPOINTS = {
    "live": os.environ.get("LIVE_URL", "http://127.0.0.1:8000"),
    "candidate": os.environ.get("CANDIDATE_URL", "http://127.0.0.1:8001"),
}

results = sinks.Memory()


def post_json(url: str, payload: Any, timeout: float = 5.0) -> Any:
    headers = {"Content-Type": "application/json"}
    if shadowdeco.in_shadow():
        headers["X-Shadow-Request"] = "1"  # the new service skips its side effects
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"endpoint URLs must be http(s), got {url!r}")
    data = json.dumps(payload).encode()
    request = urllib.request.Request(url, data, headers, method="POST")  # noqa: S310 - checked
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - checked
        return json.load(response)


def to_v2(customer_id: str, features: dict[str, float]) -> dict[str, Any]:
    """v1 takes ``{"id", "tenure", "usage_drop"}``; v2 a customer and a feature vector."""
    return {
        "customer": {"id": customer_id},
        "features": [features["tenure"], features["usage_drop"]],
    }


def score_v2(payload: dict[str, Any]) -> float:
    """The candidate: the new endpoint, called with the adapted payload."""
    return float(post_json(f"{ENDPOINTS['candidate']}/v2/score", payload)["score"])


@shadow(
    candidate=score_v2,
    adapt=to_v2,
    name="score-v2-endpoint",
    sinks=[results],
    compare=compare.close(abs=0.05),  # scores within 0.05 agree
    key=lambda customer_id, features: customer_id,  # to join ground truth on, later
    timeout=2.0,
)
def score(customer_id: str, features: dict[str, float]) -> float:
    """The client function: the live endpoint's answer is what the caller gets."""
    payload = {"id": customer_id, **features}
    return float(post_json(f"{ENDPOINTS['live']}/v1/score", payload)["score"])


# --------------------------------------------------------------------------------------------
# The self-check: both endpoints as tiny local servers


class _Endpoint(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    shadow_requests = 0

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/v1/score":
            value = 0.6 * payload["usage_drop"] + 0.4 * (1 - min(payload["tenure"], 10) / 10)
        elif self.path == "/v2/score":
            tenure, usage_drop = payload["features"]
            value = 0.7 * usage_drop + 0.3 * (1 - min(tenure, 10) / 10)
            if self.headers.get("X-Shadow-Request") == "1":
                type(self).shadow_requests += 1
        else:
            self.send_error(404)
            return
        body = json.dumps({"score": round(value, 4)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def selftest() -> None:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    ENDPOINTS["live"], ENDPOINTS["candidate"] = (
        f"http://127.0.0.1:{server.server_address[1]}" for server in servers
    )
    try:
        customers = {
            "c1": {"tenure": 1.0, "usage_drop": 0.9},
            "c2": {"tenure": 8.0, "usage_drop": 0.1},
            "c3": {"tenure": 5.0, "usage_drop": 0.5},
            "c4": {"tenure": 0.0, "usage_drop": 0.2},  # v2 scores this one 0.08 lower
        }
        for customer_id, features in customers.items():
            print(f"live score for {customer_id}:", score(customer_id, features))
        assert score.shadow.flush(5), "the shadow calls did not finish"
        for result in sorted(results.results, key=lambda r: str(r.key)):
            print(
                f"{result.key}: live={result.live.value} candidate={result.candidate.value}",
                f"match={result.match} ({result.candidate.status},",
                f"{result.candidate.duration * 1000:.1f} ms)",
            )
        print(score.shadow.stats())
        assert len(results) == len(customers)
        assert all(r.candidate.status == "ok" for r in results.results)
        assert _Endpoint.shadow_requests == len(customers)  # each marked as a shadow request
        score.shadow.close()
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    print("selftest ok")


if __name__ == "__main__":
    if "--selftest" in sys.argv[1:]:
        selftest()
    elif len(sys.argv) != 4:
        sys.exit(f"usage: {sys.argv[0]} --selftest | CUSTOMER_ID TENURE USAGE_DROP")
    else:
        print(score(sys.argv[1], {"tenure": float(sys.argv[2]), "usage_drop": float(sys.argv[3])}))
