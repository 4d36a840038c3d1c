"""The Celery app, and what its worker and beat processes share with the rest of the platform:

- **Logs**: Celery does not take over the root logger (``setup_logging`` has a receiver), so
  its lines and the tasks' go through ``settings.LOGGING`` like every other process's (JSON with
  ``LOG_FORMAT=json``, with ``task_id``/``task`` inside a task) at ``LOG_LEVEL`` (``--loglevel``
  no longer applies); with JSON logs the worker prints no banner and no plain shutdown line
  (beat: start it with ``--quiet``).
- **Traces**: each pool process (prefork children, or the worker itself with ``--pool solo``)
  sets up its tracer when it starts (``worker_process_init``: after the fork) and exports what
  it holds when it stops; tasks published with a span current continue its trace.
"""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orders_platform.settings.development")

app = Celery("orders_platform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.setup_logging.connect
def _platform_logging(**kwargs) -> None:
    import logging
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)
    logging.captureWarnings(True)  # as Django does: a warning is a log line


@signals.celeryd_init.connect
def _worker_starting(instance=None, **kwargs) -> None:
    """The worker's first moment: its start-up warnings (running as root...) are log lines already,
    and with JSON logs it prints no banner (plain text on stdout)."""
    from django.conf import settings

    _platform_logging()
    if instance is not None and settings.LOG_FORMAT == "json":
        instance.quiet = True


@signals.worker_ready.connect
def _no_plain_shutdown_line(sender=None, **kwargs) -> None:
    """Celery's SIGTERM handler prints "worker: Warm shutdown (MainProcess)" on stdout; with JSON
    logs it is installed again without that line (the handler's work is the same)."""
    from celery.apps.worker import install_worker_term_handler
    from django.conf import settings

    worker = getattr(sender, "controller", None)  # the sender is the worker's consumer
    if worker is not None and settings.LOG_FORMAT == "json":
        install_worker_term_handler(worker, verbose=False)


@signals.worker_process_init.connect
def _tracer(**kwargs) -> None:
    from apps.eventbus import tracing

    tracing.configure("orders-platform-worker")


@signals.worker_process_shutdown.connect
def _flush_spans(**kwargs) -> None:
    from apps.eventbus import tracing

    tracing.shutdown()
