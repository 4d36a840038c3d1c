"""gunicorn's configuration for the web process, wherever it runs: ``make run``
(``webserver.py``) and the image (``docker/``) start it as
``gunicorn orders_platform.wsgi:application --config python:orders_platform.gunicorn_config``.

- The application is loaded by each worker after the fork, never preloaded in the master:
  ``wsgi.py`` sets up the tracer there, so each worker has its own span export thread and its
  own descriptor of the span file.
- A worker that stops exports the spans it still holds (``worker_exit``).
- gunicorn's own lines (``Booting worker``, errors, the access log when asked for) follow
  ``LOG_FORMAT``: with ``json`` they are JSON lines like every other process's.
"""

from __future__ import annotations

import os

from gunicorn.glogging import Logger

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orders_platform.settings.production")

preload_app = False


class PlatformLogger(Logger):
    """gunicorn's logger, writing JSON lines (with the trace of the request in hand) when the
    settings' ``LOG_FORMAT`` is ``json``; gunicorn's own format otherwise."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        from django.conf import settings

        if settings.LOG_FORMAT != "json":
            return
        from apps.common.logging import ContextFilter, json_formatter

        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(json_formatter())
                if not any(isinstance(f, ContextFilter) for f in handler.filters):
                    handler.addFilter(ContextFilter())


logger_class = PlatformLogger


def worker_exit(server, worker) -> None:
    from apps.eventbus import tracing

    tracing.shutdown()


# prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR): the master removes an earlier
# run's metrics files at start, a worker that exits hands back its live gauges (webmetrics.py).
from orders_platform.webmetrics import child_exit, on_starting  # noqa: E402, F401
