"""The WSGI application. Loaded in each web worker, after gunicorn's fork (the platform never
preloads it: see ``gunicorn_config.py``), so the tracer set up here, with its export thread
and file, belongs to the worker that serves the requests."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orders_platform.settings.production")

import django
from django.core.handlers.wsgi import WSGIHandler

django.setup(set_prefix=False)

from apps.eventbus import tracing  # noqa: E402

# Before the handler is built: the Django instrumentation adds its middleware to the settings.
tracing.configure("orders-platform-web", django=True)

application = WSGIHandler()
