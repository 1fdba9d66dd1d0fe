"""Mirror live HTTP traffic to a candidate: WSGI and ASGI middleware.

>>> from shadowdeco.middleware import ShadowASGIMiddleware, ShadowWSGIMiddleware, compare_http

See ``docs/middleware.md``.  The candidate is another app in the same process or a base URL
served elsewhere; the live response is never delayed by the mirror.
"""

from ._http import VOLATILE_HEADERS, HttpResponse, Request, compare_http
from .asgi import ShadowASGIMiddleware
from .wsgi import ShadowWSGIMiddleware

__all__ = [
    "VOLATILE_HEADERS",
    "HttpResponse",
    "Request",
    "ShadowASGIMiddleware",
    "ShadowWSGIMiddleware",
    "compare_http",
]
