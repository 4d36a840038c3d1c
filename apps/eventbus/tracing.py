"""One trace per order, across processes: W3C trace context through the outbox and NATS.

**Set-up.** :func:`configure` installs a tracer provider in each process, as
``OTEL_TRACES_EXPORTER`` says (``settings.TRACES_EXPORTER``: none, console, otlp, file), and
instruments httpx (the payment provider's client), Celery (task publish and run) and, in the
web process, Django (a SERVER span per request). Who calls it: the web's WSGI/ASGI module in each
worker (after gunicorn's fork), ``runconsumer``/``runrelay`` (``management/process.py``), the
Celery worker in each pool process (``orders_platform/celery.py``).

**How the context flows.**

1. A request's SERVER span is current in the view; ``outbox_write`` stores its ``traceparent``
   in the row's headers (:func:`headers_for`).
2. The relay publishes the row in a PRODUCER span ``publish <subject>``, a child of that
   context, whose own context replaces ``traceparent`` on the wire (:func:`publish_span`).
3. The consumer runner makes a CONSUMER span current while a handler's prepare step and the
   handler run (``consuming/processing.py``): for one message, a child of its producer; for a
   batch, one span linked to every producer, plus a span per message, the child of that
   message's producer. :func:`working_on` records which span stands for which message.
4. Work done for one message of a batch continues that message's trace: an event written
   through the outbox carries the span of the message it answers (its ``causation_id``, else
   its ``correlation_id``), and a provider call made under :func:`message_scope` (the payments
   service, per order) is a child span of it, in the thread pool too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

from django.core.exceptions import ImproperlyConfigured
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from apps.common import logging as logs

_provider = None  # the TracerProvider configure() installed
_lock = threading.Lock()
# Health checks and scrapes would be most of the web's spans.
DJANGO_EXCLUDED_URLS = r"/healthz$,/readyz$,/metrics$,/static/"


def configure(service_name: str, *, django: bool = False) -> bool:
    """Install this process's tracer provider once, as the settings ask; True when tracing is on.

    Call it in the process that will make the spans: after a fork, not before (the span
    processor's export thread and the exporter's file belong to the process that made them).
    ``django``: also trace each request (call before the WSGI/ASGI handler is built: the
    instrumentation adds its middleware to ``settings.MIDDLEWARE``).
    """
    global _provider
    from django.conf import settings

    with _lock:
        if _provider is not None:
            return True
        exporter = _exporter(settings.TRACES_EXPORTER, settings.TRACES_FILE)
        if exporter is None:
            return False
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _provider = provider
    _instrument(django=django)
    return True


def _exporter(name: str, path: str):
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    if name == "none":
        return None
    if name == "console":
        return ConsoleSpanExporter()
    if name == "file":
        return FileSpanExporter(path)
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ImproperlyConfigured(
                "OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http installed"
            ) from None
        return OTLPSpanExporter()
    raise ImproperlyConfigured(f"OTEL_TRACES_EXPORTER must be none, console, otlp or file; got {name!r}")


def _instrument(*, django: bool) -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor().instrument()
    CeleryInstrumentor().instrument()
    if django:
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        excluded = None if os.environ.get("OTEL_PYTHON_DJANGO_EXCLUDED_URLS") else DJANGO_EXCLUDED_URLS
        DjangoInstrumentor().instrument(excluded_urls=excluded, request_hook=_remember_request_span)


def _remember_request_span(span, request) -> None:
    """Keep the request's span context on it, for the lines Django logs about it after the span ended."""
    setattr(request, logs.REQUEST_SPAN_CONTEXT, span.get_span_context())


def shutdown() -> None:
    """Export what is buffered and close the exporter (a process that ends without running
    ``atexit`` handlers: gunicorn and Celery pool processes call it on their way out)."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    """Whether spans are recorded here (a provider from :func:`configure`, or one a test installed)."""
    return _provider is not None or not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
    )


class FileSpanExporter:
    """Appends each span as one JSON line (the SDK's JSON of a span, as the console exporter
    prints it) to a file that several processes may share: each batch is written by one
    ``write`` on an ``O_APPEND`` descriptor under an exclusive ``flock``, so lines never interleave."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ImproperlyConfigured(f"OTEL_EXPORTER_FILE_PATH {path!r} cannot be opened: {exc.strerror}") from None
        self._lock = threading.Lock()

    def export(self, spans: Sequence) -> object:
        from opentelemetry.sdk.trace.export import SpanExportResult

        data = "".join(f"{span.to_json(indent=None)}\n" for span in spans).encode()
        with self._lock:
            if self._fd is None:
                return SpanExportResult.FAILURE
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError:
                return SpanExportResult.FAILURE
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # nothing is buffered here: every export is written at once

    def shutdown(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def tracer() -> trace.Tracer:
    return trace.get_tracer("orders_platform.eventbus")


def current_context_headers() -> dict[str, str]:
    """``traceparent``/``tracestate`` of the active span (empty when nothing is traced)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_from(headers: Mapping[str, str] | None) -> Context:
    return propagate.extract(dict(headers or {}))


# -- the messages a consumer is working on ------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A message being prepared or handled: the ids work for it is known by (its message id,
    correlation id, order id), the log fields of that work, and the context of its span."""

    keys: tuple[str, ...]
    fields: dict[str, str]
    context: Context | None = None


@dataclass
class Scope:
    """The messages of one step (a prepare step or a handler call), found by any of their ids.
    Built on first use: most steps never look one up."""

    build: Callable[[], list[Message]]
    traced: bool = True  # whether its messages have spans (else only their log fields)
    _index: dict[str, Message] | None = field(default=None, repr=False)

    def find(self, key: str | None) -> Message | None:
        if not key:
            return None
        if self._index is None:
            self._index = {}
            for message in self.build():
                for message_key in message.keys:
                    if message_key:
                        self._index.setdefault(message_key, message)
        return self._index.get(key)


_scope: ContextVar[Scope | None] = ContextVar("eventbus_scope", default=None)


@contextlib.contextmanager
def working_on(scope: Scope) -> Iterator[None]:
    token = _scope.set(scope)
    try:
        yield
    finally:
        _scope.reset(token)


@contextlib.contextmanager
def message_scope(key: str | None) -> Iterator[None]:
    """Work for one message of the step in hand, named by any of its ids (an order id, for the
    payments service's provider calls): its span is current, its fields are on the log lines.
    Nothing changes when no message of the step has that id."""
    scope = _scope.get()
    message = scope.find(key) if scope is not None else None
    if message is None:
        yield
        return
    token = otel_context.attach(message.context) if message.context is not None else None
    try:
        with logs.bound(**message.fields):
            yield
    finally:
        if token is not None:
            otel_context.detach(token)


def headers_for(causation_id: str | None, correlation_id: str | None, current: dict[str, str]) -> dict[str, str]:
    """The trace headers of an event written now: those of the message of the step in hand it
    answers (by ``causation_id``, else ``correlation_id``), else ``current`` (the active span's)."""
    scope = _scope.get()
    if scope is None or not scope.traced:
        return current
    message = scope.find(causation_id) or scope.find(correlation_id)
    if message is None or message.context is None:
        return current
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=message.context)
    return carrier


# -- the relay --------------------------------------------------------------------------------


def publish_span(subject: str, message_id: str, headers: dict[str, str]):
    """The relay's PRODUCER span for publishing an outbox row whose headers carry a trace (None
    for a row that carries none, or one that does not parse: those headers go as they are); its
    context replaces the row's ``traceparent`` in ``headers``."""
    if "traceparent" not in headers:
        return None
    parent = context_from(headers)
    if not trace.get_current_span(parent).get_span_context().is_valid:
        return None
    span = tracer().start_span(
        f"publish {subject}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "send",
            "messaging.destination.name": subject,
            "messaging.message.id": message_id,
        },
    )
    propagate.inject(headers, context=trace.set_span_in_context(span))
    return span


def end_publish_spans(spans: Sequence, results: Sequence) -> None:
    """End each publish span with its outcome: the acknowledgement, or why there was none."""
    for span, result in zip(spans, results, strict=True):
        if span is None:
            continue
        if isinstance(result, BaseException):
            span.set_status(Status(StatusCode.ERROR, f"{type(result).__name__}: {result}"))
        else:
            span.set_attribute("messaging.nats.stream_sequence", result.seq)
        span.end()
