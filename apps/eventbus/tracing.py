"""W3C trace context across the outbox and NATS, with OpenTelemetry.

The exporter is off unless ``OTEL_TRACES_EXPORTER`` says ``console`` or ``otlp`` (the
OTLP exporter then reads the standard ``OTEL_EXPORTER_OTLP_*`` variables).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured
from opentelemetry import propagate, trace
from opentelemetry.context import Context

_configured = False


def configure(service_name: str) -> None:
    """Install a tracer provider for this process once, as the environment asks."""
    global _configured
    if _configured:
        return
    _configured = True
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if exporter_name in ("", "none"):
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ImproperlyConfigured(
                "OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http installed"
            ) from None
        exporter = OTLPSpanExporter()
    else:
        raise ImproperlyConfigured(f"OTEL_TRACES_EXPORTER must be none, console or otlp; got {exporter_name!r}")
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def tracer() -> trace.Tracer:
    return trace.get_tracer("orders_platform.eventbus")


def current_context_headers() -> dict[str, str]:
    """``traceparent``/``tracestate`` of the active span (empty when nothing is traced)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_from(headers: Mapping[str, str] | None) -> Context:
    return propagate.extract(dict(headers or {}))
