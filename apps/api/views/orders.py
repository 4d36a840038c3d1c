"""A customer's orders: place, list, read, cancel. Only the caller's own orders exist here:
another customer's order is a 404, never a 403."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.audit.selectors import order_timeline
from apps.inventory.selectors import stock_decision_for_order
from apps.orders.errors import UnknownSku
from apps.orders.selectors import order_get, order_list
from apps.orders.services import order_cancel, order_place
from apps.payments.selectors import payment_for_order

from ..idempotency import idempotent
from ..pagination import NewestFirstCursorPagination
from ..schema import EXAMPLES, IDEMPOTENCY_KEY, READ_ERRORS, RETRY_AFTER, WRITE_ERRORS, error_responses
from ..serializers import (
    OrderCancelSerializer,
    OrderCreateSerializer,
    OrderDetailSerializer,
    OrderFilterSerializer,
    OrderSerializer,
)

ORDER_ID = OpenApiParameter("order_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The order's id.")
ORDER_EXAMPLE = {
    "id": "6f1c2b8e-3d4a-4e5f-9a0b-1c2d3e4f5a6b",
    "status": "PENDING",
    "currency": "EUR",
    "total_amount": "179.80",
    "lines": [{"sku": "KB-001", "quantity": 2, "unit_price": "89.90"}],
    "cancel_reason": "",
    "created_at": "2026-11-20T10:15:00.123456Z",
    "updated_at": "2026-11-20T10:15:00.123456Z",
}
CREATE_400_EXAMPLES = [
    *EXAMPLES[400],
    ("unknown_sku", "unknown SKU(s): NOPE-1", {"lines.0.sku": ["unknown SKU"]}),
    (
        "validation_error",
        "Invalid request: total_amount: Set by the server; clients may not send it.",
        {"total_amount": ["Set by the server; clients may not send it."]},
    ),
]


def customer_id(request) -> str:
    """The customer an order belongs to: the authenticated user."""
    return str(request.user.pk)


class OrderListCreateApi(GenericAPIView):
    pagination_class = NewestFirstCursorPagination
    serializer_class = OrderCreateSerializer  # the browsable API's form

    def get_queryset(self):
        filters = OrderFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return order_list(customer_id=customer_id(self.request), **filters.validated_data)

    @extend_schema(
        operation_id="orders_list",
        summary="Your orders, newest first",
        parameters=[OrderFilterSerializer, RETRY_AFTER],
        responses={200: OrderSerializer(many=True), **error_responses(400, 404, *READ_ERRORS)},
        examples=[OpenApiExample("a page of orders", value=ORDER_EXAMPLE, response_only=True, status_codes=[200])],
    )
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(OrderSerializer(page, many=True).data)

    @extend_schema(
        operation_id="orders_create",
        summary="Place an order",
        description=(
            "The server prices every line from the catalogue and computes the total; the order starts "
            "`PENDING` and is confirmed or cancelled as payment and stock answer (see `GET /api/orders/{id}/`). "
            "`currency` may be left out: it can only be the platform's. Nothing is written when the request is refused."
        ),
        request=OrderCreateSerializer,
        parameters=[IDEMPOTENCY_KEY, RETRY_AFTER],
        responses={201: OrderSerializer, **error_responses(*WRITE_ERRORS, examples={400: CREATE_400_EXAMPLES})},
        examples=[
            OpenApiExample(
                "two keyboards",
                value={"lines": [{"sku": "KB-001", "quantity": 2}]},
                request_only=True,
            ),
            OpenApiExample("the order placed", value=ORDER_EXAMPLE, response_only=True, status_codes=[201]),
        ],
    )
    @idempotent
    def post(self, request):
        payload = OrderCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        lines = [(line["sku"], line["quantity"]) for line in payload.validated_data["lines"]]
        try:
            order = order_place(customer_id=customer_id(request), lines=lines)
        except UnknownSku as exc:  # name the request's fields, not the domain's SKUs
            paths = {f"lines.{i}.sku": "unknown SKU" for i, (sku, _) in enumerate(lines) if sku in exc.fields}
            raise UnknownSku(exc.message, fields=paths) from exc
        return Response(OrderSerializer(order).data, status=status.HTTP_201_CREATED)


class OrderDetailApi(APIView):
    @extend_schema(
        operation_id="orders_retrieve",
        summary="One of your orders, with payment, reservation and its events",
        parameters=[ORDER_ID, RETRY_AFTER],
        responses={200: OrderDetailSerializer, **error_responses(404, *READ_ERRORS)},
        examples=[
            OpenApiExample(
                "a confirmed order",
                value={
                    **ORDER_EXAMPLE,
                    "status": "CONFIRMED",
                    "payment_status": "CAPTURED",
                    "reservation_status": "RESERVED",
                    "timeline": [
                        {
                            "subject": "orders.created.v1",
                            "message_id": "0b6c...",
                            "stream": "ORDERS",
                            "stream_sequence": 42,
                            "occurred_at": "2026-11-20T10:15:00.123456Z",
                            "received_at": "2026-11-20T10:15:00.201000Z",
                            "payload": {"order_id": "6f1c2b8e-3d4a-4e5f-9a0b-1c2d3e4f5a6b", "total_amount": "179.80"},
                        }
                    ],
                },
                response_only=True,
                status_codes=[200],
            )
        ],
    )
    def get(self, request, order_id: str):
        order = order_get(customer_id=customer_id(request), order_id=order_id)
        if order is None:
            raise NotFound()
        context = {
            "payment": payment_for_order(str(order.id)),
            "stock_decision": stock_decision_for_order(str(order.id)),
            "timeline": order_timeline(str(order.id)),
        }
        return Response(OrderDetailSerializer(order, context=context).data)


class OrderCancelApi(APIView):
    @extend_schema(
        operation_id="orders_cancel",
        summary="Cancel one of your orders",
        description="A `PENDING` or `CONFIRMED` order becomes `CANCELLED`; its stock is released and a "
        "captured payment refunded. Cancelling a cancelled order: 409 `invalid_transition`.",
        request=OrderCancelSerializer,
        parameters=[ORDER_ID, IDEMPOTENCY_KEY, RETRY_AFTER],
        responses={200: OrderSerializer, **error_responses(404, 409, *WRITE_ERRORS)},
        examples=[
            OpenApiExample("with a reason", value={"reason": "ordered by mistake"}, request_only=True),
            OpenApiExample(
                "the cancelled order",
                value={**ORDER_EXAMPLE, "status": "CANCELLED", "cancel_reason": "ordered by mistake"},
                response_only=True,
                status_codes=[200],
            ),
        ],
    )
    @idempotent
    def post(self, request, order_id: str):
        order = order_get(customer_id=customer_id(request), order_id=order_id)
        if order is None:
            raise NotFound()
        payload = OrderCancelSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        order = order_cancel(
            order_id=str(order.id), reason=payload.validated_data["reason"] or "cancelled by the customer"
        )
        return Response(OrderSerializer(order).data)
