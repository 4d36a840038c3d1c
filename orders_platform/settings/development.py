"""Local development: with ``DATABASE_URL``/``NATS_URL`` unset, the embedded servers are used."""

from orders_platform.embedded import dev

from .base import *  # noqa: F403
from .database import databases
from .env import env_bool, env_list, env_str
from .nats import nats
from .paths import DATA_DIR

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY", "django-insecure-development-only-never-use-this-key-in-production")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])

DATABASES = databases(fallback=lambda: dev.database_url(DATA_DIR))
NATS = nats(fallback=lambda: [dev.nats_url(DATA_DIR)])
