"""Logs and traces, the same in every process (web, relay, consumers, Celery).

Logs: one handler on stderr. ``LOG_FORMAT=json`` (production's default) writes one JSON
object a line with ``time``, ``level``, ``logger``, ``message`` and, where known, ``trace_id``,
``span_id``, ``consumer``, ``message_id``, ``order_id``, ``subject``, ``task_id`` (see
``apps/common/logging.py``); ``plain`` (development's and the tests' default) is for people.
gunicorn's own lines follow it through ``orders_platform/gunicorn_config.py``; Celery's, because
the worker and beat are told not to take over the root logger (``orders_platform/celery.py``).

Traces: ``OTEL_TRACES_EXPORTER`` is ``none`` (the default: no tracer), ``console``, ``otlp``
(the standard ``OTEL_EXPORTER_OTLP_*`` variables; needs opentelemetry-exporter-otlp-proto-http)
or ``file``: one span a JSON line appended to ``OTEL_EXPORTER_FILE_PATH`` (several processes
may share the file). The SDK's other variables apply (``OTEL_BSP_SCHEDULE_DELAY``,
``OTEL_TRACES_SAMPLER``...). See ``apps/eventbus/tracing.py``.
"""

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from .env import env_str

LOG_LEVEL = env_str("LOG_LEVEL", "INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
LOG_FORMATS = ("plain", "json")
LOG_FORMAT = env_str("LOG_FORMAT", "plain", choices=LOG_FORMATS)


def logging_config(log_format: str, level: str) -> dict:
    """The ``LOGGING`` dict for a format (production calls it again with its own default)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "apps.common.logging.ContextFilter"}},
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"},
            "json": {"()": "apps.common.logging.json_formatter"},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": log_format, "filters": ["context"]},
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "INFO"},
            "nats": {"level": "WARNING"},
        },
    }


LOGGING = logging_config(LOG_FORMAT, LOG_LEVEL)

PROMETHEUS_METRIC_NAMESPACE = "orders_platform"

TRACES_EXPORTER = env_str("OTEL_TRACES_EXPORTER", "none", choices=("none", "console", "otlp", "file"))
TRACES_FILE = env_str("OTEL_EXPORTER_FILE_PATH", "")
if TRACES_EXPORTER == "file":
    if not TRACES_FILE:
        raise ImproperlyConfigured("OTEL_EXPORTER_FILE_PATH is required with OTEL_TRACES_EXPORTER=file")
    if not Path(TRACES_FILE).is_absolute() or not Path(TRACES_FILE).parent.is_dir():
        raise ImproperlyConfigured(
            f"OTEL_EXPORTER_FILE_PATH must be an absolute path in an existing folder; got {TRACES_FILE!r}"
        )
