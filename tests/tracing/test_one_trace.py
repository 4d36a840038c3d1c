"""One trace per order across real processes: the web (gunicorn), the relay, the payments,
inventory and orders consumers and the gateway simulator, every process exporting its spans to
one file. Two orders are placed before the consumers start, so each consumer takes both in one
batch (the real batch handlers, payments' prepare step included): each order still keeps a
trace of its own, from the HTTP request to the provider call and on to ``orders.confirmed.v1``."""

from __future__ import annotations

import pytest

from apps.eventbus.models import OutboxEvent
from apps.orders.models import Order
from tests.bus import final, wait_for
from tests.tracing.platform import Platform, post_order, read_spans, seed_catalogue_and_token, trace_of

pytestmark = pytest.mark.slow


def test_one_trace_from_the_http_request_to_the_provider_call_and_on_to_the_confirmation(declared, tmp_path):
    token = seed_catalogue_and_token()
    with Platform(declared, tmp_path) as platform:
        gateway = platform.start_gateway()
        base = platform.start_web()
        platform.start_relay()
        order_ids = [post_order(base, token, f"trace-{n}") for n in (1, 2)]
        wait_for(
            lambda: OutboxEvent.objects.filter(subject="orders.created.v1", sent_at__isnull=False).count() == 2,
            message="the relay publishes both orders.created.v1",
        )
        for name in ("payments", "inventory", "orders"):  # both events wait for each: one batch
            platform.start_consumer(name)
        for order_id in order_ids:
            assert final(Order.objects.get(pk=order_id), timeout=60) == "CONFIRMED"

        def rows(order_id: str) -> dict[str, OutboxEvent]:
            return {row.subject: row for row in OutboxEvent.objects.filter(aggregate_id=order_id)}

        def exported() -> bool:  # the span that wrote each confirmation, and the relay's publish of it
            spans = read_spans(platform.spans_file)
            ids = {span.span_id for span in spans}
            published = {span.parent_id for span in spans if span.name == "publish orders.confirmed.v1"}
            confirmations = [trace_of(rows(order_id)["orders.confirmed.v1"].headers)[1] for order_id in order_ids]
            return all(span_id in ids and span_id in published for span_id in confirmations)

        wait_for(lambda: all(rows(o).get("orders.confirmed.v1") for o in order_ids), message="confirmations written")
        wait_for(exported, timeout=30, message="the spans of both sagas reach the file")
    spans = read_spans(platform.spans_file)
    by_id = {span.span_id: span for span in spans}

    traces = set()
    for order_id in order_ids:
        events = rows(order_id)
        trace_id, request_span_id = trace_of(events["orders.created.v1"].headers)
        traces.add(trace_id)
        in_trace = [span for span in spans if span.trace_id == trace_id]

        # The HTTP request: Django's SERVER span in the web process wrote orders.created.v1.
        request = by_id[request_span_id]
        assert (request.kind, request.service, request.trace_id) == ("SERVER", "orders-platform-web", trace_id)
        assert request.name == "POST api/orders/" and request.parent_id is None
        # The relay published it in a PRODUCER span, the child of the request's.
        (publish,) = [s for s in in_trace if s.name == "publish orders.created.v1"]
        assert (publish.kind, publish.service) == ("PRODUCER", "orders-platform-outbox")
        assert publish.parent_id == request.span_id

        # Payments took both orders in one batch: a batch span linked to each order's publish,
        # and a span per order, the child of its publish, for the prepare step and the handler.
        prepare = one(in_trace, "payments prepare orders.created.v1", order_id)
        handle = one(in_trace, "payments process orders.created.v1", order_id)
        for step in (prepare, handle):
            assert (step.kind, step.service) == ("CONSUMER", "orders-platform-payments")
            assert step.parent_id == publish.span_id
            (batch_link,) = step.links
            batch = by_id[batch_link[1]]
            assert batch.name == f"payments {step.name.split()[1]} batch"
            assert batch.attributes["messaging.batch.message_count"] == 2
            assert (trace_id, publish.span_id) in batch.links

        # The provider call: httpx's CLIENT span to the gateway, the child of this order's prepare span.
        (charge,) = [s for s in in_trace if s.kind == "CLIENT"]
        assert charge.parent_id == prepare.span_id and charge.service == "orders-platform-payments"
        assert charge.attributes.get("url.full", charge.attributes.get("http.url")) == f"{gateway.url}/v1/charges"

        # payments.completed.v1 was written in the handler's span for this order ...
        assert trace_of(events["payments.completed.v1"].headers) == (trace_id, handle.span_id)
        assert trace_of(events["inventory.reserved.v1"].headers)[0] == trace_id
        # ... and orders.confirmed.v1 in the orders consumer's span for this order's last outcome.
        confirmed_trace, confirmed_span = trace_of(events["orders.confirmed.v1"].headers)
        writer = by_id[confirmed_span]
        assert confirmed_trace == trace_id == writer.trace_id
        assert writer.service == "orders-platform-orders" and writer.kind == "CONSUMER"
        assert writer.name in ("orders process payments.completed.v1", "orders process inventory.reserved.v1")
        assert by_id[writer.parent_id].name.startswith("publish ")
        (published,) = [s for s in in_trace if s.name == "publish orders.confirmed.v1"]
        assert published.parent_id == writer.span_id

        print(f"\norder {order_id}: one trace {trace_id}")
        for span in sorted(in_trace, key=lambda s: order_of(s, by_id)):
            print(f"  {span.trace_id} {span.span_id} {span.kind:<8} {span.service:<26} {span.name}")
    assert len(traces) == 2, "each order has a trace of its own"


def one(spans, name: str, order_id: str):
    (span,) = [s for s in spans if s.name == name and s.attributes.get("order.id") == order_id]
    return span


def order_of(span, by_id) -> int:
    """Depth in the trace (for printing)."""
    depth = 0
    while span.parent_id in by_id:
        span, depth = by_id[span.parent_id], depth + 1
    return depth
