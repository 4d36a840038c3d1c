"""Log lines that say where they come from: the current trace and what is being worked on.

Every process logs through the ``console`` handler of ``settings.LOGGING``
(``orders_platform/settings/observability.py``); its :class:`ContextFilter` adds to each record

- ``trace_id`` and ``span_id`` (W3C hex, as in ``traceparent`` and the span files) when a span
  is current (tracing on: ``OTEL_TRACES_EXPORTER``), or of the request a ``django.request``
  line is about;
- the fields bound for the whole process (:func:`bind_process`: ``consumer`` in a
  ``runconsumer`` process) and for the work in hand (:func:`bound`: the runner binds
  ``message_id``, ``order_id`` and ``subject`` of the message being prepared or handled);
- ``task_id`` and ``task`` inside a Celery task.

A field the call site passed itself (``extra=``) wins. With ``LOG_FORMAT=json`` (production's
default) these are keys of the line's JSON object; the plain format shows the message only.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar

from opentelemetry import trace

_bound: ContextVar[dict[str, str] | None] = ContextVar("log_fields", default=None)
_process: dict[str, str] = {}


def bind_process(**fields: str) -> None:
    """Fields every line of this process carries from now on."""
    _process.update({name: value for name, value in fields.items() if value})


@contextlib.contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Fields the lines logged in this block carry (this thread or task, and what it hands its
    context to); empty values are left out."""
    current = _bound.get()
    added = {name: value for name, value in fields.items() if value}
    token = _bound.set({**current, **added} if current else added)
    try:
        yield
    finally:
        _bound.reset(token)


def fields() -> dict[str, str]:
    """What a line logged here would carry (besides the trace)."""
    return {**_process, **(_bound.get() or {})}


class ContextFilter(logging.Filter):
    """Adds the trace, the bound fields and the Celery task to every record (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid and (request := getattr(record, "request", None)) is not None:
            context = _request_span_context(request)
        if context.is_valid:
            _set(record, "trace_id", format(context.trace_id, "032x"))
            _set(record, "span_id", format(context.span_id, "016x"))
        for name, value in _process.items():
            _set(record, name, value)
        for name, value in (_bound.get() or {}).items():
            _set(record, name, value)
        if (state := sys.modules.get("celery._state")) is not None and (task := state.get_current_task()) is not None:
            request = getattr(task, "request", None)
            if task_id := getattr(request, "id", None):
                _set(record, "task_id", task_id)
                _set(record, "task", task.name)
        return True


# Django logs a request's 4xx/5xx ("Not Found: /x") after its middleware returned, so after the
# request's span ended: the web's tracer keeps the span's context on the request under this name.
REQUEST_SPAN_CONTEXT = "trace_span_context"


def _request_span_context(request) -> trace.SpanContext:
    context = getattr(request, REQUEST_SPAN_CONTEXT, None)
    return context if isinstance(context, trace.SpanContext) else trace.INVALID_SPAN_CONTEXT


def json_formatter(**options) -> logging.Formatter:
    """The JSON lines of ``LOG_FORMAT=json``: ``time``, ``level``, ``logger``, ``message``, then
    every field the record carries (the filter's, ``extra=``'s, ``exc_info`` as text)."""
    from pythonjsonlogger.json import JsonFormatter

    options.setdefault("fmt", "%(asctime)s %(levelname)s %(name)s %(message)s")
    options.setdefault("rename_fields", {"asctime": "time", "levelname": "level", "name": "logger"})
    return JsonFormatter(**options)


def _set(record: logging.LogRecord, name: str, value: str) -> None:
    if not hasattr(record, name):
        setattr(record, name, value)
