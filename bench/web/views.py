"""The baseline of ``POST /api/orders/``: a plain DRF create of the same rows.

Same request body, same authentication (token), same throttles and renderer, the same rows
(an ``Order`` priced from the catalogue and its ``OrderLine`` rows, in one transaction) and
the same response body; but no event (no outbox row, no NOTIFY) and no ``Idempotency-Key``.
What ``POST /api/orders/`` costs beyond it is the price of its delivery guarantees.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import transaction
from rest_framework import generics, serializers

from apps.api.serializers import OrderSerializer
from apps.inventory.selectors import product_prices
from apps.orders.models import Order, OrderLine


class PlainOrderLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderLine
        fields = ["sku", "quantity"]


class PlainOrderSerializer(serializers.ModelSerializer):
    lines = PlainOrderLineSerializer(many=True, allow_empty=False)
    currency = serializers.ChoiceField(choices=[settings.PLATFORM_CURRENCY])

    class Meta:
        model = Order
        fields = ["id", "status", "currency", "total_amount", "lines", "cancel_reason", "created_at", "updated_at"]
        read_only_fields = ["id", "status", "total_amount", "cancel_reason", "created_at", "updated_at"]

    def validate_lines(self, lines: list[dict]) -> list[dict]:
        prices = product_prices([line["sku"] for line in lines])
        unknown = sorted({line["sku"] for line in lines} - prices.keys())
        if unknown:
            raise serializers.ValidationError(f"unknown SKU(s): {', '.join(unknown)}")
        for line in lines:
            line["unit_price"] = prices[line["sku"]]
        return lines

    @transaction.atomic
    def create(self, validated_data: dict) -> Order:
        lines = validated_data.pop("lines")
        total = sum((line["unit_price"] * line["quantity"] for line in lines), Decimal("0"))
        order = Order.objects.create(**validated_data, total_amount=total)
        OrderLine.objects.bulk_create(OrderLine(order=order, **line) for line in lines)
        return order

    def to_representation(self, instance: Order) -> dict:
        return OrderSerializer(instance).data  # the body POST /api/orders/ answers


class PlainOrderCreateApi(generics.CreateAPIView):
    serializer_class = PlainOrderSerializer

    def perform_create(self, serializer: PlainOrderSerializer) -> None:
        serializer.save(customer_id=str(self.request.user.pk))  # as apps.api.views.orders.customer_id
