from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.eventbus.producing.outbox import outbox_write, outbox_write_many

from .events import InventoryRejected, InventoryReleased, InventoryReserved, RejectedLine, ReservedLine
from .models import Product, Reservation, StockDecision

# New decisions start as "rejected" until the batch reserves them; an order already decided
# is not returned (a concurrent replica's uncommitted row makes this wait for its outcome).
_CLAIM_DECISIONS = f"""
    INSERT INTO {StockDecision._meta.db_table} (order_id, outcome, decided_at, updated_at)
    SELECT order_id, '{StockDecision.Outcome.REJECTED.value}', now(), now() FROM unnest(%s::text[]) AS o(order_id)
    ORDER BY order_id
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id
"""
_TAKE_STOCK = f"""
    UPDATE {Product._meta.db_table} AS p SET stock_on_hand = p.stock_on_hand - t.quantity, updated_at = now()
    FROM unnest(%s::bigint[], %s::integer[]) AS t(id, quantity)
    WHERE p.id = t.id
"""


@transaction.atomic
def product_ensure(*, sku: str, name: str, price: Decimal, stock_on_hand: int) -> tuple[Product, bool]:
    """Create the product unless its SKU exists; an existing product is left as it is.

    Returns the product and whether it was created.
    """
    return Product.objects.get_or_create(
        sku=sku, defaults={"name": name, "price": price, "stock_on_hand": stock_on_hand}
    )


@dataclass(frozen=True)
class ReserveRequest:
    order_id: str
    lines: tuple[tuple[str, int], ...]
    causation_id: str | None = None


def stock_reserve(*, order_id: str, lines: list[tuple[str, int]], causation_id: str | None = None) -> StockDecision:
    """Reserve every line of one order or none, and publish the outcome. Call inside a transaction."""
    stock_reserve_many(requests=[ReserveRequest(order_id, tuple(lines), causation_id)])
    return StockDecision.objects.get(order_id=order_id)


def stock_reserve_many(*, requests: Sequence[ReserveRequest]) -> dict[str, str]:
    """Reserve every line of each order or none, in the given order, and publish each outcome.

    Call inside a transaction. A fixed number of statements for the whole batch: the orders'
    decisions are claimed at once (an order already decided, or cancelled before it arrived,
    is left alone, as is a second request for one order), the products of every line are
    locked in SKU order (so two consumers reserving overlapping batches never deadlock), the
    orders are decided one after the other against the locked stock, then the stock moves by
    conditional arithmetic (the database refuses a negative stock besides), reservations and
    decisions are written in bulk, and the events in one outbox write. Returns the outcome of
    each order decided now.
    """
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_DECISIONS, [sorted({request.order_id for request in requests})])
        claimed = {order_id for (order_id,) in cursor.fetchall()}
    todo = []
    for request in requests:
        if request.order_id in claimed:
            claimed.discard(request.order_id)  # a second request for one order is a duplicate
            todo.append(request)
    if not todo:
        return {}
    skus = {sku for request in todo for sku, _ in request.lines}
    products = {p.sku: p for p in Product.objects.select_for_update().filter(sku__in=skus).order_by("sku")}
    available = {sku: product.stock_on_hand for sku, product in products.items()}
    outcomes: dict[str, str] = {}
    events, reservations = [], []
    for request in todo:
        wanted: dict[str, int] = {}
        for sku, quantity in request.lines:
            wanted[sku] = wanted.get(sku, 0) + quantity
        envelope = {"correlation_id": request.order_id, "causation_id": request.causation_id}
        rejected = [
            RejectedLine(
                sku=sku,
                requested=quantity,
                available=available.get(sku, 0),
                reason="out_of_stock" if sku in products else "unknown_sku",
            )
            for sku, quantity in sorted(wanted.items())
            if sku not in products or available[sku] < quantity
        ]
        if rejected:
            outcomes[request.order_id] = StockDecision.Outcome.REJECTED
            events.append(InventoryRejected(order_id=request.order_id, lines=tuple(rejected), **envelope))
            continue
        for sku, quantity in sorted(wanted.items()):
            available[sku] -= quantity
            reservations.append(Reservation(order_id=request.order_id, product=products[sku], quantity=quantity))
        outcomes[request.order_id] = StockDecision.Outcome.RESERVED
        reserved = tuple(ReservedLine(sku=sku, quantity=quantity) for sku, quantity in sorted(wanted.items()))
        events.append(InventoryReserved(order_id=request.order_id, lines=reserved, **envelope))
    moved = {
        sku: products[sku].stock_on_hand - left
        for sku, left in available.items()
        if left != products[sku].stock_on_hand
    }
    if moved:
        with connection.cursor() as cursor:
            cursor.execute(_TAKE_STOCK, [[products[sku].pk for sku in moved], list(moved.values())])
    Reservation.objects.bulk_create(reservations)
    reserved_orders = [order_id for order_id, outcome in outcomes.items() if outcome == StockDecision.Outcome.RESERVED]
    if reserved_orders:
        StockDecision.objects.filter(order_id__in=reserved_orders).update(
            outcome=StockDecision.Outcome.RESERVED, updated_at=timezone.now()
        )
    outbox_write_many(events)
    return outcomes


def stock_release(*, order_id: str, causation_id: str | None = None) -> StockDecision:
    """Give back what an order reserved, exactly once. Call inside a transaction.

    A cancellation that arrives before the order itself is remembered, so the order is then
    never reserved.
    """
    decision, created = StockDecision.objects.select_for_update().get_or_create(
        order_id=order_id, defaults={"outcome": StockDecision.Outcome.CANCELLED_FIRST}
    )
    if created or decision.outcome != StockDecision.Outcome.RESERVED:
        return decision
    reservations = list(
        Reservation.objects.select_for_update()
        .filter(order_id=order_id, released_at__isnull=True)
        .select_related("product")
        .order_by("product__sku")
    )
    for reservation in reservations:
        Product.objects.filter(pk=reservation.product_id).update(
            stock_on_hand=F("stock_on_hand") + reservation.quantity
        )
    Reservation.objects.filter(pk__in=[r.pk for r in reservations]).update(released_at=timezone.now())
    decision.outcome = StockDecision.Outcome.RELEASED
    decision.save(update_fields=["outcome", "updated_at"])
    released = tuple(ReservedLine(sku=r.product.sku, quantity=r.quantity) for r in reservations)
    outbox_write(
        InventoryReleased(order_id=order_id, lines=released, correlation_id=order_id, causation_id=causation_id)
    )
    return decision
