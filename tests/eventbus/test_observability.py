"""Trace context from the outbox to the handler, JSON logs, and housekeeping."""

import json
import subprocess
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from apps.eventbus.models import OutboxEvent, ProcessedMessage
from apps.eventbus.producing.outbox import outbox_write
from apps.eventbus.tasks import prune_ledger, prune_outbox
from tests.bus import wait_for
from tests.support import PYTHON, ROOT, clean_env
from tests.testapp.events import SomethingHappened
from tests.testapp.models import Effect


@pytest.fixture(scope="session")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def test_the_handler_span_continues_the_trace_of_the_request_that_wrote_the_event(bus, spans):
    spans.clear()
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("POST /api/orders") as request_span, transaction.atomic():
        row = outbox_write(SomethingHappened(value=1))
    assert row.headers["traceparent"].split("-")[1] == format(request_span.get_span_context().trace_id, "032x")
    with bus.relay(), bus.consumer("testing"):
        wait_for(lambda: Effect.objects.count() == 1)
        wait_for(lambda: any(s.name.startswith("testing process") for s in spans.get_finished_spans()))
    handler_span = next(s for s in spans.get_finished_spans() if s.name == "testing process testing.happened.v1")
    publish_span = next(s for s in spans.get_finished_spans() if s.name == "publish testing.happened.v1")
    assert handler_span.context.trace_id == request_span.get_span_context().trace_id
    # request -> the relay's publish (PRODUCER) -> the handler (CONSUMER)
    assert publish_span.parent.span_id == request_span.get_span_context().span_id
    assert publish_span.kind == trace.SpanKind.PRODUCER
    assert handler_span.parent.span_id == publish_span.context.span_id
    assert handler_span.kind == trace.SpanKind.CONSUMER
    assert handler_span.attributes["messaging.message.id"] == row.message_id


def test_log_lines_are_json_with_the_message_fields_when_asked():
    script = (
        "import logging; logging.getLogger('apps.eventbus.consuming.runner').warning('retrying', extra={"
        "'consumer': 'payments', 'subject': 'orders.created.v1', 'message_id': 'm-1', 'correlation_id': 'o-1'})"
    )
    env = clean_env(DJANGO_SETTINGS_MODULE="orders_platform.settings.test", LOG_FORMAT="json")
    result = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["level"] == "WARNING" and line["message"] == "retrying"
    assert (line["consumer"], line["subject"], line["message_id"], line["correlation_id"]) == (
        "payments",
        "orders.created.v1",
        "m-1",
        "o-1",
    )


@pytest.mark.django_db
def test_housekeeping_prunes_old_sent_outbox_rows_and_old_ledger_rows(settings):
    now = timezone.now()
    with transaction.atomic():
        old_sent, recent_sent, unsent = (outbox_write(SomethingHappened(value=i)) for i in range(3))
    OutboxEvent.objects.filter(pk=old_sent.pk).update(sent_at=now - timedelta(days=8))
    OutboxEvent.objects.filter(pk=recent_sent.pk).update(sent_at=now - timedelta(days=1))
    old = ProcessedMessage.objects.create(consumer="c", message_id="old", subject="s")
    ProcessedMessage.objects.filter(pk=old.pk).update(processed_at=now - timedelta(days=31))
    ProcessedMessage.objects.create(consumer="c", message_id="new", subject="s")

    assert prune_outbox() == 1
    assert prune_ledger() == 1
    assert set(OutboxEvent.objects.values_list("pk", flat=True)) == {recent_sent.pk, unsent.pk}
    assert list(ProcessedMessage.objects.values_list("message_id", flat=True)) == ["new"]
