"""A minimal Django project for tests/test_servers.py, as its ``wsgi.py`` would look:
``gunicorn -c gunicorn_conf.py django_app:application``.

Settings are configured in code (no settings module); views live in django_urls.
"""

from __future__ import annotations

import django
import server_config
import stats_at_exit
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="tests-only-not-secret",  # noqa: S106 - a throwaway test server
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF="django_urls",
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
    USE_TZ=True,
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402 - after settings.configure()

from shadowdeco.middleware import ShadowWSGIMiddleware  # noqa: E402

application = get_wsgi_application()

if server_config.MODE != "off":
    live = application
    application = ShadowWSGIMiddleware(  # type: ignore[assignment]
        live, server_config.wsgi_candidate(live), **server_config.options("django-app")
    )
    stats_at_exit.watch(application.shadow)  # type: ignore[attr-defined]
