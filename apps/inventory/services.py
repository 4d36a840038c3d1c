from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.eventbus.outbox import outbox_write

from .events import InventoryRejected, InventoryReleased, InventoryReserved, RejectedLine, ReservedLine
from .models import Product, Reservation, StockDecision


@transaction.atomic
def product_ensure(*, sku: str, name: str, price: Decimal, stock_on_hand: int) -> tuple[Product, bool]:
    """Create the product unless its SKU exists; an existing product is left as it is.

    Returns the product and whether it was created.
    """
    return Product.objects.get_or_create(
        sku=sku, defaults={"name": name, "price": price, "stock_on_hand": stock_on_hand}
    )


def stock_reserve(*, order_id: str, lines: list[tuple[str, int]], causation_id: str | None = None) -> StockDecision:
    """Reserve every line of the order or none, and publish the outcome.

    Call inside a transaction. Products are locked in SKU order, so two consumers reserving
    overlapping orders never deadlock; stock is decremented with conditional arithmetic and
    the database refuses a negative stock besides. An order already decided (or cancelled
    before it arrived) is left alone.
    """
    decision, created = StockDecision.objects.select_for_update().get_or_create(
        order_id=order_id, defaults={"outcome": StockDecision.Outcome.REJECTED}
    )
    if not created:
        return decision
    wanted: dict[str, int] = {}
    for sku, quantity in lines:
        wanted[sku] = wanted.get(sku, 0) + quantity
    products = {p.sku: p for p in Product.objects.select_for_update().filter(sku__in=wanted).order_by("sku")}
    rejected = [
        RejectedLine(
            sku=sku,
            requested=quantity,
            available=products[sku].stock_on_hand if sku in products else 0,
            reason="out_of_stock" if sku in products else "unknown_sku",
        )
        for sku, quantity in sorted(wanted.items())
        if sku not in products or products[sku].stock_on_hand < quantity
    ]
    envelope = {"correlation_id": order_id, "causation_id": causation_id}
    if rejected:
        outbox_write(InventoryRejected(order_id=order_id, lines=tuple(rejected), **envelope))
        return decision
    for sku, quantity in sorted(wanted.items()):
        product = products[sku]
        Product.objects.filter(pk=product.pk).update(stock_on_hand=F("stock_on_hand") - quantity)
        Reservation.objects.create(order_id=order_id, product=product, quantity=quantity)
    decision.outcome = StockDecision.Outcome.RESERVED
    decision.save(update_fields=["outcome", "updated_at"])
    reserved = tuple(ReservedLine(sku=sku, quantity=quantity) for sku, quantity in sorted(wanted.items()))
    outbox_write(InventoryReserved(order_id=order_id, lines=reserved, **envelope))
    return decision


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
