"""The ASGI application (see ``wsgi.py``: the same tracer, set up in the process that serves)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orders_platform.settings.production")

import django
from django.core.handlers.asgi import ASGIHandler

django.setup(set_prefix=False)

from apps.eventbus import tracing  # noqa: E402

tracing.configure("orders-platform-web", django=True)

application = ASGIHandler()
