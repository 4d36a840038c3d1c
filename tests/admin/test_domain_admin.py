"""The operator's cockpit, domain side: orders with everything the other apps did with them,
payments, stock (low stock highlighted), the audit log, the outbox (its backlog on top) and the
consumers' ledger. Everything is read-only, for a superuser as for an auditor; an auditor's
POST is refused everywhere."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.template.loader import select_template
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.audit.services import audit_append
from apps.common.admin import CappedCountPaginator
from apps.eventbus.consuming.delivery import Delivery
from apps.eventbus.models import OutboxEvent, ProcessedMessage
from apps.eventbus.registry import registry
from apps.inventory.models import Product, Reservation, StockDecision
from apps.inventory.services import product_ensure, stock_reserve
from apps.operations.admin.outbox import format_age
from apps.orders.models import Order
from apps.orders.services import order_place
from apps.payments.models import Payment
from apps.payments.services import payment_capture
from tests.gateway import Gateway

pytestmark = pytest.mark.django_db

HOSTILE_CUSTOMER = "<script>alert('c')</script>"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    gateway = Gateway(tmp_path_factory.mktemp("gateway") / "ledger.jsonl").start()
    yield gateway
    gateway.stop()


def audit(events: list[OutboxEvent]) -> list[AuditEntry]:
    """What the audit consumer records once the relay has published these rows."""
    sequences: dict[str, int] = {}
    deliveries = []
    for event in events:
        stream = registry.stream_for(event.subject).name
        sequences[stream] = sequences.get(stream, 0) + 1
        deliveries.append(
            Delivery(
                stream=stream, delivery_subject=event.subject, data=event.body.encode(), headers=dict(event.headers),
                stream_sequence=sequences[stream], num_delivered=1,
            )
        )  # fmt: skip
    with transaction.atomic():
        return audit_append(deliveries=deliveries)


def place_reserved_and_paid_order(customer_id: str, lines: list[tuple[str, int]]) -> Order:
    order = order_place(customer_id=customer_id, lines=lines)
    created = OutboxEvent.objects.get(aggregate_id=str(order.pk), subject="orders.created.v1")
    with transaction.atomic():
        stock_reserve(order_id=str(order.pk), lines=lines, causation_id=created.message_id)
        payment_capture(
            order_id=str(order.pk), amount=order.total_amount, currency=order.currency,
            causation_id=created.message_id,
        )  # fmt: skip
    return order


@pytest.fixture
def shop(gateway, settings):
    """A catalogue with stock in every state and one order reserved, paid and audited.

    The relay and the consumers are not running: the outbox rows of the order are unsent
    except its ``orders.created.v1`` (marked sent with the ORM, as no service marks one
    without publishing it), and the ledger rows are written with the ORM for the same reason.
    """
    settings.PAYMENT_GATEWAY_URL = gateway.url
    product_ensure(sku="KB", name="Keyboard", price=Decimal("89.90"), stock_on_hand=50)
    product_ensure(sku="LOW", name="Last few mats", price=Decimal("24.00"), stock_on_hand=3)
    product_ensure(sku="OUT", name="Sold-out webcam", price=Decimal("59.90"), stock_on_hand=0)
    order = place_reserved_and_paid_order(HOSTILE_CUSTOMER, [("KB", 2), ("LOW", 1)])
    events = list(OutboxEvent.objects.filter(aggregate_id=str(order.pk)).order_by("id"))
    entries = audit(events)
    created = events[0]
    OutboxEvent.objects.filter(pk=created.pk).update(sent_at=timezone.now(), stream_sequence=1)
    ledger = ProcessedMessage.objects.create(
        consumer="inventory", message_id=created.message_id, subject=created.subject
    )
    return SimpleNamespace(
        order=order,
        payment=Payment.objects.get(order_id=str(order.pk)),
        decision=StockDecision.objects.get(order_id=str(order.pk)),
        reservations=list(Reservation.objects.filter(order_id=str(order.pk)).order_by("product__sku")),
        events=events,
        entries=entries,
        ledger=ledger,
    )


@pytest.fixture
def superuser_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


@pytest.fixture
def auditor_client(client):
    user = get_user_model().objects.create_user("audrey", "audrey@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name="auditors"))
    client.force_login(user)
    return client


@pytest.fixture(params=["superuser", "auditor"])
def staff_client(request):
    return request.getfixturevalue(f"{request.param}_client")


def change_url(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[quote(obj.pk)])


def changelist_url(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()


def readonly_admins(shop):
    """Every model of these admins with one of its rows."""
    return [
        shop.order, shop.payment, Product.objects.get(sku="KB"), shop.decision, shop.reservations[0],
        shop.entries[0], shop.events[0], shop.ledger,
    ]  # fmt: skip


# Every page renders, with its content


def test_every_changelist_and_detail_page_renders_for_superusers_and_auditors(staff_client, shop):
    order_id = str(shop.order.pk)
    created, reserved = shop.events[0], shop.events[1]
    pages = {
        changelist_url(Order): [order_id, "PENDING"],
        f"{changelist_url(Order)}?q={order_id}": [order_id, "1 order"],
        f"{changelist_url(Order)}?status=PENDING&payment_state=unknown": [order_id],
        changelist_url(shop.payment): [order_id, "Captured", shop.payment.gateway_charge_id],
        f"{changelist_url(shop.payment)}?q={shop.payment.gateway_charge_id}": [order_id, "1 payment"],
        changelist_url(Product): ["KB", "LOW", "OUT", "Sold-out webcam"],
        f"{changelist_url(Product)}?stock=low": ["Last few mats"],
        changelist_url(shop.decision): [order_id, "reserved"],
        f"{changelist_url(shop.decision)}?outcome=reserved": [order_id],
        changelist_url(Reservation): [order_id, "KB", "LOW"],
        f"{changelist_url(Reservation)}?state=held&q=LOW": [order_id, "1 reservation"],
        changelist_url(AuditEntry): ["orders.created.v1", "inventory.reserved.v1", "payments.completed.v1"],
        f"{changelist_url(AuditEntry)}?stream=INVENTORY": ["inventory.reserved.v1"],
        f"{changelist_url(AuditEntry)}?q={order_id}": ["3 audit entries"],
        changelist_url(OutboxEvent): [created.message_id, reserved.message_id, "Backlog"],
        f"{changelist_url(OutboxEvent)}?sent=no&subject=inventory.reserved.v1": [reserved.message_id],
        f"{changelist_url(OutboxEvent)}?q={order_id}": ["3 outbox events"],
        f"{changelist_url(OutboxEvent)}?subject=redeliver": ["0 outbox events"],
        changelist_url(ProcessedMessage): [created.message_id, "inventory"],
        f"{changelist_url(ProcessedMessage)}?consumer=inventory&q={created.message_id}": ["1 processed message"],
        change_url(shop.order): [order_id, "KB", "Captured", "inventory.reserved.v1"],
        change_url(shop.payment): [shop.payment.gateway_charge_id, "Captured", change_url(shop.order)],
        change_url(Product.objects.get(sku="OUT")): ["Sold-out webcam", "stock-out"],
        change_url(shop.decision): ["Reserved", change_url(shop.reservations[0])],
        change_url(shop.reservations[0]): [order_id, change_url(Product.objects.get(sku="KB"))],
        change_url(shop.entries[0]): [shop.entries[0].hash, "Event-Type"],
        change_url(created): [created.message_id, "Event-Type"],
        change_url(shop.ledger): [created.message_id, "inventory"],
    }  # fmt: skip
    for url, expected in pages.items():
        content = page(staff_client, url)
        for text in expected:
            assert text in content, f"{url} lacks {text!r}"
        assert "Save" not in content and 'class="deletelink"' not in content, url


def test_a_read_only_page_offers_no_add_link_and_no_actions(staff_client, shop):
    for obj in readonly_admins(shop):
        response = staff_client.get(changelist_url(obj))
        assert response.status_code == 200
        content = response.content.decode()
        assert reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_add") not in content
        assert response.context["has_add_permission"] is False
        assert response.context["action_form"] is None
        assert "delete_selected" not in content and 'name="_selected_action"' not in content


# The order detail: everything that happened to the order


def test_the_order_detail_shows_lines_payment_stock_and_timeline(staff_client, shop):
    content = page(staff_client, change_url(shop.order))
    lines = section(content, 'id="lines-group"')
    assert "KB" in lines and "LOW" in lines and "89.90" in lines and "24.00" in lines

    payment = section(content, 'class="order-payment"')
    assert "Captured" in payment and "203.80 EUR" in payment
    assert shop.payment.gateway_charge_id and shop.payment.gateway_charge_id in payment
    assert f'href="{change_url(shop.payment)}"' in payment

    decision = section(content, 'class="order-stock-decision"')
    assert "Reserved" in decision and f'href="{change_url(shop.decision)}"' in decision
    reservations = section(content, 'class="order-reservations"')
    for reservation in shop.reservations:
        assert f'href="{change_url(reservation)}"' in reservations
        assert f'href="{change_url(reservation.product)}"' in reservations
    assert reservations.count("held") == 2

    timeline = section(content, 'class="order-timeline"')
    subjects = re.findall(r"<td>([a-z]+\.[a-z]+\.v1)</td>", timeline)
    assert subjects == ["orders.created.v1", "inventory.reserved.v1", "payments.completed.v1"]
    assert "Timeline (from the audit log)" in content


def test_the_order_detail_escapes_what_it_shows(superuser_client, shop):
    content = page(superuser_client, change_url(shop.order))
    assert HOSTILE_CUSTOMER not in content
    assert "&lt;script&gt;alert(&#x27;c&#x27;)&lt;/script&gt;" in content  # the field and the payload alike
    assert content.count("&lt;script&gt;") >= 2


def test_an_order_nobody_has_acted_on_yet_says_so(superuser_client, shop):
    order = order_place(customer_id="c-2", lines=[("KB", 1)])
    content = page(superuser_client, change_url(order))
    assert "no payment yet" in content and "no stock decision yet" in content and "no reservations" in content
    assert "no events recorded yet" in content


# Stock


def stock_cell(content: str, sku: str) -> str:
    row = next(row for row in re.findall(r"<tr>.*?</tr>", content, re.S) if f">{sku}</a>" in row)
    return re.search(r'<td class="field-stock">(.*?)</td>', row, re.S).group(1)


def test_out_of_stock_is_red_and_low_stock_amber(staff_client, shop):
    content = page(staff_client, changelist_url(Product))
    out, low, ok = stock_cell(content, "OUT"), stock_cell(content, "LOW"), stock_cell(content, "KB")
    assert 'class="stock-level stock-out"' in out and "background:#ba2121" in out and ">0</span>" in out
    assert 'class="stock-level stock-low"' in low and "background:#ffbf00" in low and ">2</span>" in low
    assert 'class="stock-level stock-ok"' in ok and "background" not in ok and ">48</span>" in ok
    assert content.index(">OUT</a>") < content.index(">LOW</a>") < content.index(">KB</a>"), "emptiest first"


def test_the_stock_level_filter_still_filters(staff_client, shop):
    out = page(staff_client, f"{changelist_url(Product)}?stock=out")
    assert ">OUT</a>" in out and ">LOW</a>" not in out and ">KB</a>" not in out
    ok = page(staff_client, f"{changelist_url(Product)}?stock=ok")
    assert ">KB</a>" in ok and ">OUT</a>" not in ok


# Payments, reservations and decisions link to their order


def test_payments_reservations_and_decisions_link_to_the_order(staff_client, shop):
    order_href = f'href="{change_url(shop.order)}"'
    for model in (shop.payment, Reservation, shop.decision, AuditEntry, OutboxEvent):
        assert order_href in page(staff_client, changelist_url(model)), model
    for obj in (shop.payment, shop.reservations[0], shop.decision, shop.entries[0], shop.events[0]):
        assert order_href in page(staff_client, change_url(obj)), obj


# The outbox and the audit log


def test_the_outbox_changelist_shows_the_backlog(staff_client, shop):
    unsent = OutboxEvent.objects.filter(sent_at__isnull=True).order_by("id")
    assert unsent.count() == 2  # inventory.reserved and payments.completed
    response = staff_client.get(changelist_url(OutboxEvent))
    content = response.content.decode()
    assert response.context["backlog"]["count"] == 2
    assert '<span class="backlog-count">2</span> unsent events' in content
    oldest_link = f'<a href="{change_url(unsent[0])}">#{unsent[0].pk}</a>'
    assert re.search(rf"the oldest, {re.escape(oldest_link)},\s+was written", content)
    assert re.search(r'<span class="backlog-age">\d+ s</span> ago', content)

    OutboxEvent.objects.filter(pk__in=[e.pk for e in unsent]).update(sent_at=timezone.now())
    content = page(staff_client, changelist_url(OutboxEvent))
    assert '<span class="backlog-count">0</span> unsent events' in content and "published everything" in content


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0 s"), (42, "42 s"), (125, "2 min 5 s"), (7_500, "2 h 5 min"), (90_061, "1 d 1 h")]
)
def test_the_backlog_age_reads_at_a_glance(seconds, shown):
    assert format_age(timedelta(seconds=seconds)) == shown


def test_the_unsent_filter_shows_only_the_backlog(staff_client, shop):
    unsent = page(staff_client, f"{changelist_url(OutboxEvent)}?sent=no")
    sent = page(staff_client, f"{changelist_url(OutboxEvent)}?sent=yes")
    created, reserved, completed = shop.events
    assert reserved.message_id in unsent and completed.message_id in unsent and created.message_id not in unsent
    assert created.message_id in sent and reserved.message_id not in sent


def test_bodies_and_headers_are_pretty_printed(staff_client, shop):
    for obj in (shop.events[1], shop.entries[1]):
        content = page(staff_client, change_url(obj))
        body = section(content, 'class="json"')
        assert f"\n  &quot;order_id&quot;: &quot;{shop.order.pk}&quot;" in body, "indented, escaped JSON"
        assert "\n  &quot;Event-Type&quot;: " in content, "the headers too"


# Nothing can be added, changed or deleted


@pytest.mark.parametrize("which", ["audit entry", "outbox event", "processed message"])
def test_even_a_superuser_cannot_add_change_or_delete_log_rows(superuser_client, shop, which):
    obj = {"audit entry": shop.entries[0], "outbox event": shop.events[0], "processed message": shop.ledger}[which]
    model = type(obj)
    info = (obj._meta.app_label, obj._meta.model_name)
    add, delete = reverse("admin:{}_{}_add".format(*info)), reverse("admin:{}_{}_delete".format(*info), args=[obj.pk])
    assert superuser_client.get(add).status_code == 403
    assert superuser_client.post(add, {}).status_code == 403
    assert superuser_client.post(change_url(obj), {"subject": "forged"}).status_code == 403
    assert superuser_client.get(delete).status_code == 403
    assert superuser_client.post(delete, {"post": "yes"}).status_code == 403
    bulk = {"action": "delete_selected", "_selected_action": [obj.pk], "index": 0}
    assert superuser_client.post(changelist_url(model), bulk).status_code == 403
    assert superuser_client.post(changelist_url(model), {**bulk, "post": "yes"}).status_code == 403
    assert model.objects.filter(pk=obj.pk, subject=obj.subject).exists()
    assert "delete_selected" not in page(superuser_client, changelist_url(model))


def test_an_auditor_gets_403_on_any_post(auditor_client, shop):
    before = snapshot()
    for obj in readonly_admins(shop):
        info = (obj._meta.app_label, obj._meta.model_name)
        urls = [
            changelist_url(obj), change_url(obj), reverse("admin:{}_{}_add".format(*info)),
            reverse("admin:{}_{}_delete".format(*info), args=[quote(obj.pk)]),
        ]  # fmt: skip
        for url in urls:
            response = auditor_client.post(
                url, {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"}
            )
            assert response.status_code == 403, url
        assert auditor_client.get(change_url(obj)).status_code == 200
    assert snapshot() == before


def snapshot() -> dict[str, int]:
    models = (Order, Product, Reservation, AuditEntry, OutboxEvent, ProcessedMessage)
    return {model.__name__: model.objects.count() for model in models} | {
        "stock": sum(Product.objects.values_list("stock_on_hand", flat=True))
    }


# Changelists stay fast


def test_changelist_queries_do_not_grow_with_the_rows_shown(superuser_client, shop):
    models = [Order, shop.payment, Product, shop.decision, Reservation, AuditEntry, OutboxEvent, ProcessedMessage]

    def queries() -> dict[str, int]:
        counts = {}
        for model in models:
            with CaptureQueriesContext(transaction.get_connection()) as captured:
                page(superuser_client, changelist_url(model))
            counts[changelist_url(model)] = len(captured)
        return counts

    one_order = queries()
    for n in range(5):
        order = place_reserved_and_paid_order(f"c-{n}", [("KB", 1), ("LOW", 1)] if n == 0 else [("KB", 1)])
        audit(list(OutboxEvent.objects.filter(aggregate_id=str(order.pk)).order_by("id")))
        ProcessedMessage.objects.create(consumer="payments", message_id=f"m-{n}", subject="orders.created.v1")
    assert queries() == one_order


def test_big_changelists_count_only_up_to_a_cap(superuser_client, shop, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "cap", 2)
    monkeypatch.setattr(admin.site._registry[OutboxEvent], "list_per_page", 1)
    with CaptureQueriesContext(transaction.get_connection()) as captured:
        first = page(superuser_client, changelist_url(OutboxEvent))
    counts = [q["sql"] for q in captured if "COUNT(*)" in q["sql"] and "eventbus_outboxevent" in q["sql"]]
    assert any("LIMIT 3" in sql for sql in counts) and all(" LIMIT " in sql for sql in counts), counts
    assert '<span class="count-capped">more than 2</span> outbox events' in first
    created, reserved, completed = shop.events
    assert completed.message_id in first and reserved.message_id not in first
    second = page(superuser_client, f"{changelist_url(OutboxEvent)}?p=2")
    assert reserved.message_id in second and created.message_id not in second
    assert superuser_client.get(f"{changelist_url(OutboxEvent)}?p=3").status_code == 302, "pages end at the cap"
    assert "count-capped" not in page(superuser_client, f"{changelist_url(OutboxEvent)}?sent=yes")


def test_every_capped_changelist_says_when_it_is_capped():
    for model, model_admin in admin.site._registry.items():
        if model_admin.paginator is CappedCountPaginator:
            app, name = model._meta.app_label, model._meta.model_name
            lookup = [f"admin/{app}/{name}/pagination.html", f"admin/{app}/pagination.html", "admin/pagination.html"]
            template = select_template(lookup)  # the admin's own lookup order
            assert "cl.paginator.capped" in template.template.source, model


def section(content: str, marker: str) -> str:
    """The element whose opening tag carries ``marker``, nested elements of its kind included."""
    start = content.rfind("<", 0, content.index(marker))
    name = re.match(r"<(\w+)", content[start:]).group(1)
    depth = 0
    for tag in re.finditer(rf"<(/?){name}\b[^>]*>", content[start:]):
        depth += -1 if tag.group(1) else 1
        if depth == 0:
            return content[start : start + tag.end()]
    raise AssertionError(f"<{name}> opened by {marker!r} is never closed")
