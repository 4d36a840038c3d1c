"""Local development: with ``DATABASE_URL``/``NATS_URL`` unset, the embedded servers are used."""

from orders_platform.embedded import dev
from orders_platform.webserver import default_workers

from .base import *  # noqa: F403
from .database import databases
from .env import env_bool, env_int, env_list, env_str, is_set
from .nats import nats
from .paths import DATA_DIR

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY", "django-insecure-development-only-never-use-this-key-in-production")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])

DATABASES = databases(fallback=lambda: dev.database_url(DATA_DIR))
NATS = nats(fallback=lambda: [dev.nats_url(DATA_DIR)])

# `make run` serves the web process with gunicorn (orders_platform/webserver.py), which does not
# serve static files as runserver does: WhiteNoise serves the admin's and Swagger UI's straight
# from the apps' folders (no collectstatic), whatever DEBUG says.
MIDDLEWARE = [*MIDDLEWARE]  # noqa: F405
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1, "whitenoise.middleware.WhiteNoiseMiddleware"
)
WHITENOISE_USE_FINDERS = True

# Several web workers are several processes: without CACHE_URL, the API's throttles count in a
# cache they share (files under the data folder), not in each worker's memory.
if not is_set("CACHE_URL"):
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": DATA_DIR / "cache"}
    }

# `make run`'s web process (gunicorn).
WEB_CONCURRENCY = env_int("WEB_CONCURRENCY", default_workers(), minimum=1, maximum=64)
WEB_THREADS = env_int("WEB_THREADS", 1, minimum=1, maximum=64)
WEB_RELOAD = env_bool("WEB_RELOAD", False)
WEB_ACCESS_LOG = env_bool("WEB_ACCESS_LOG", False)
