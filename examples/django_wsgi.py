"""A Django project's ``wsgi.py``, with its traffic mirrored to the candidate deployment.

A Django process holds one settings module, so the candidate is usually the new version
deployed beside the old one, reached by URL.  Replace your project's ``wsgi.py`` with::

    import os

    from django.core.wsgi import get_wsgi_application

    from shadowdeco import sampling, sinks
    from shadowdeco.middleware import ShadowWSGIMiddleware

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

    application = ShadowWSGIMiddleware(
        get_wsgi_application(),
        candidate=os.environ["SHADOW_CANDIDATE_URL"],   # e.g. http://10.0.0.7:8000
        name="mysite-v2",
        sample=sampling.path("/api/") & sampling.rate(0.1),
        sinks=[sinks.JsonLines("/var/log/mysite/shadow.jsonl")],
        timeout=2.0,
    )

``shadowed_application()`` below is that code; ``gunicorn mysite.wsgi`` serves it as usual.
The mirror runs after the live response, on shadowdeco's worker threads; GET, HEAD and POST
are mirrored (``methods=`` for more), each with the header ``X-Shadow-Request: 1`` so the
candidate can skip side effects, and ``Authorization`` / ``Cookie`` are not forwarded unless
``forward_credentials=True``.

Self-check, 127.0.0.1 only: ``python examples/django_wsgi.py --selftest`` configures a
one-view project in code, starts a stand-in candidate deployment on 127.0.0.1 and sends one
request through the WSGI application, as a server would.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from shadowdeco import sampling, sinks
from shadowdeco.middleware import ShadowWSGIMiddleware


def shadowed_application(candidate_url: str, jsonl: str | os.PathLike[str]) -> Any:
    """What wsgi.py does: Django's WSGI application, mirrored to ``candidate_url``."""
    from django.core.wsgi import get_wsgi_application  # noqa: PLC0415 - after the settings

    return ShadowWSGIMiddleware(
        get_wsgi_application(),
        candidate=candidate_url,
        name="mysite-v2",
        sample=sampling.path("/api/") & sampling.rate(1.0),  # 0.1 in production
        sinks=[sinks.JsonLines(jsonl)],
        timeout=2.0,
    )


# --------------------------------------------------------------------------------------------
# The self-check: a project of one view, and a stand-in for the candidate deployment


def _configure_django() -> None:
    import django  # noqa: PLC0415
    from django.conf import settings  # noqa: PLC0415
    from django.http import JsonResponse  # noqa: PLC0415
    from django.urls import path  # noqa: PLC0415

    def price(request: Any, sku: str) -> JsonResponse:
        return JsonResponse({"sku": sku, "price": 10.0})

    urlconf = type(sys)("selftest_urls")
    urlconf.urlpatterns = [path("api/price/<str:sku>", price)]  # type: ignore[attr-defined]
    sys.modules["selftest_urls"] = urlconf
    settings.configure(
        DEBUG=False,
        SECRET_KEY="selftest-only",  # noqa: S106 - not a deployment
        ALLOWED_HOSTS=["127.0.0.1"],
        ROOT_URLCONF="selftest_urls",
        MIDDLEWARE=[],
    )
    django.setup()


class _CandidateDeployment(BaseHTTPRequestHandler):
    """The new version: prices with a discount."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        sku = self.path.rsplit("/", 1)[-1]
        body = json.dumps({"sku": sku, "price": 9.5}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        print(
            "candidate got:", self.command, self.path, "shadow:", self.headers["X-Shadow-Request"]
        )


def selftest() -> None:
    _configure_django()
    candidate = ThreadingHTTPServer(("127.0.0.1", 0), _CandidateDeployment)
    threading.Thread(target=candidate.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            jsonl = Path(tmp) / "shadow.jsonl"
            url = f"http://127.0.0.1:{candidate.server_address[1]}"
            application = shadowed_application(url, jsonl)
            environ = {
                "REQUEST_METHOD": "GET",
                "PATH_INFO": "/api/price/A-17",
                "QUERY_STRING": "",
                "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": "8000",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "HTTP_HOST": "127.0.0.1",
                "wsgi.version": (1, 0),
                "wsgi.url_scheme": "http",
                "wsgi.input": io.BytesIO(b""),
                "wsgi.errors": sys.stderr,
                "wsgi.multithread": True,
                "wsgi.multiprocess": False,
                "wsgi.run_once": False,
            }
            status: list[str] = []
            body_iter = application(environ, lambda s, h, *exc: status.append(s))
            try:
                body = b"".join(body_iter)
            finally:
                body_iter.close()  # a server always does: it ends the request for the mirror
            print("live answered:", status[0], body.decode())
            assert application.shadow.flush(5), "the mirror did not finish"
            (result,) = (json.loads(line) for line in jsonl.read_text().splitlines())
            print(
                "shadow result:",
                f"match={result['match']}",
                f"candidate={result['candidate']['status']}",
                f"status={result['candidate']['value']['status']}",
            )
            print(application.shadow.stats())
            assert result["candidate"]["status"] == "ok"
            assert result["match"] is False  # the candidate's prices differ
            application.shadow.close()
    finally:
        candidate.shutdown()
        candidate.server_close()
    print("selftest ok")


if __name__ == "__main__":
    if "--selftest" in sys.argv[1:]:
        selftest()
    else:
        print(__doc__)
