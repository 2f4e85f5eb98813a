"""Settings of the pgq Django example: one PostgreSQL database, pgq as the Tasks backend.

The database comes from ``DATABASE_URL`` (default: the local server's ``pgq_django_demo``).
"""

import os
from urllib.parse import unquote, urlsplit

_url = urlsplit(
    os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/pgq_django_demo")
)

SECRET_KEY = "pgq-example-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "demo_site.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "pgq.contrib.django",  # app label "pgq": `migrate` installs pgq's schema, `pgq_worker`
    "demo",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(_url.path.lstrip("/")),
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "",
        "PORT": _url.port or "",
    }
}

TASKS = {
    "default": {
        "BACKEND": "pgq.contrib.django.PgqBackend",
        "QUEUES": ["default", "emails"],
        # Django's usual meaning of a task that raises: FAILED at once. Leave it out for
        # pgq's default (10 attempts, retried with backoff).
        "OPTIONS": {"MAX_ATTEMPTS": 1},
    }
}
