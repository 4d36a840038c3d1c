"""The test suite: a real PostgreSQL (``TEST_DATABASE_URL``, or one started for the session)
and no NATS until a fixture points ``NATS["SERVERS"]`` at a nats-server it started."""

import os

from orders_platform.embedded import session

# Keep the Celery broker folders and any other state out of the developer's data folder.
os.environ.setdefault("PLATFORM_DATA_DIR", str(session.session_dir() / "data"))

from .base import *  # noqa: F403
from .database import databases
from .nats import nats

DEBUG = False
SECRET_KEY = "test-only-secret-key-not-for-any-deployment-0123456789abcdefghijkl"
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]

# Never a DATABASE_URL meant for something else; children of the tests inherit this one.
os.environ["DATABASE_URL"] = session.database_url()
DATABASES = databases(fallback=None)
NATS = nats(fallback=list)

# A domain of the tests' own, to exercise the eventbus without the real domains.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]  # noqa: F405

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
