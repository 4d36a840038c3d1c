"""JSON log lines from real processes, read from their output: the web (gunicorn's own lines and
Django's), the relay, the payments consumer and a Celery worker. Every line is one JSON object;
the lines logged while a message is worked on carry its trace, the consumer, the message and
the order; a task's lines carry the task."""

from __future__ import annotations

import json
import re

import pytest

from apps.eventbus.models import OutboxEvent
from apps.payments.models import Payment
from orders_platform.tasks import clear_expired_sessions
from tests.bus import wait_for
from tests.support import start_celery_worker, stop_celery_worker
from tests.tracing.platform import Platform, get_status, post_order, read_spans, seed_catalogue_and_token, trace_of

HEX32, HEX16 = re.compile(r"^[0-9a-f]{32}$"), re.compile(r"^[0-9a-f]{16}$")


def parsed(lines: list[str], process: str) -> list[dict]:
    """Every line as JSON: a line that is not one fails the test, naming the process."""
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"{process} wrote a line that is not JSON: {line!r}")
        assert isinstance(record, dict) and {"time", "level", "logger", "message"} <= set(record), line
        records.append(record)
    assert records, f"{process} logged nothing"
    return records


@pytest.mark.slow
def test_web_relay_and_consumer_log_json_lines_and_a_message_s_lines_carry_its_trace_and_ids(declared, tmp_path):
    token = seed_catalogue_and_token()
    with Platform(declared, tmp_path) as platform:
        platform.start_gateway()
        base = platform.start_web()
        platform.start_relay()
        order_ids = [post_order(base, token, f"logs-{n}") for n in (1, 2)]
        assert get_status(f"{base}/api/no-such-thing/") == 404
        wait_for(lambda: OutboxEvent.objects.filter(subject="orders.created.v1", sent_at__isnull=False).count() == 2)
        platform.start_consumer("payments")  # both orders in one batch: the provider calls run in its pool
        wait_for(lambda: Payment.objects.filter(order_id__in=order_ids, status="CAPTURED").count() == 2, timeout=60)
        platform.outputs["payments"].wait_for("HTTP Request: POST .*/v1/charges", count=2)
        platform.outputs["web"].wait_for("Not Found: /api/no-such-thing/")
    web, relay, payments = (parsed(platform.lines(name), name) for name in ("web", "relay", "payments"))

    # gunicorn's own lines (the master's, the worker's) are JSON too.
    assert any(r["logger"] == "gunicorn.error" and r["message"].startswith("Booting worker") for r in web)
    # Django's line about a request carries the request's span (the SERVER span in the file).
    (not_found,) = [r for r in web if r["message"] == "Not Found: /api/no-such-thing/"]
    assert HEX32.match(not_found["trace_id"]) and HEX16.match(not_found["span_id"])
    spans = {span.span_id: span for span in read_spans(platform.spans_file)}
    assert spans[not_found["span_id"]].kind == "SERVER"
    assert any(r["message"].startswith("outbox relay running") for r in relay)

    # Every line of the consumer process names it; the provider calls, made for two orders at
    # once in the gateway's thread pool, each carry the order's own trace, message and order id.
    assert all(r["consumer"] == "payments" for r in payments)
    calls = [r for r in payments if r["message"].startswith("HTTP Request: POST")]
    assert len(calls) == 2
    for order_id in order_ids:
        created = OutboxEvent.objects.get(subject="orders.created.v1", aggregate_id=order_id)
        (call,) = [r for r in calls if r.get("order_id") == order_id]
        assert call["trace_id"] == trace_of(created.headers)[0]
        assert HEX16.match(call["span_id"]) and spans[call["span_id"]].name == "payments prepare orders.created.v1"
        assert (call["message_id"], call["subject"]) == (created.message_id, "orders.created.v1")
    assert calls[0]["trace_id"] != calls[1]["trace_id"]
    print(f"\nweb: {json.dumps(not_found)}\npayments: {json.dumps(calls[0])}")


def test_a_celery_worker_logs_json_lines_with_the_task_and_traces_its_tasks(transactional_db, tmp_path):
    spans_file = tmp_path / "spans.jsonl"
    worker = start_celery_worker(
        LOG_FORMAT="json",
        OTEL_TRACES_EXPORTER="file",
        OTEL_EXPORTER_FILE_PATH=str(spans_file),
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    try:
        result = clear_expired_sessions.delay()
        result.get(timeout=30)
        wait_for(lambda: any(s.name.endswith(clear_expired_sessions.name) for s in read_spans(spans_file)))
    finally:
        stop_celery_worker(worker)
    records = parsed([line for line in worker.stdout.read().splitlines() if line.strip()], "celery worker")
    assert any(r["message"].endswith("ready.") for r in records), "Celery logs through the platform's handler"
    in_task = [r for r in records if r.get("task_id") == result.id]
    assert in_task and all(r["task"] == clear_expired_sessions.name for r in in_task)
    assert all(HEX32.match(r["trace_id"]) for r in in_task), "the task's span is current while it runs"
    (span,) = [s for s in read_spans(spans_file) if s.name.endswith(clear_expired_sessions.name)]
    assert span.service == "orders-platform-worker" and span.trace_id == in_task[0]["trace_id"]
