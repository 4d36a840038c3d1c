"""Request and response bodies. Input serializers are strict: JSON types as declared, and a
field the API does not take is refused (400), naming those the server sets itself."""

from __future__ import annotations

from collections.abc import Mapping

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.settings import api_settings

from apps.eventbus.deadletters.fingerprint import FINGERPRINT
from apps.eventbus.deadletters.selectors import GROUP_STATUSES
from apps.eventbus.models import DeadLetter, DeadLetterEvent
from apps.inventory.models import Product
from apps.operations.models import BulkReprocess
from apps.operations.services import MAX_BULK_DISCARD
from apps.orders.models import Order, OrderLine

SERVER_SET_FIELDS = frozenset(
    {
        "id", "status", "customer", "customer_id", "user", "total", "total_amount", "price", "unit_price",
        "amount", "created_at", "updated_at", "payment_status", "reservation_status", "timeline",
    }
)  # fmt: skip
PAYMENT_STATUSES = ("PENDING", "CAPTURED", "FAILED", "REFUNDED", "NO_CHARGE")
RESERVATION_STATUSES = ("PENDING", "RESERVED", "REJECTED", "RELEASED", "CANCELLED_FIRST")


# Input -----------------------------------------------------------------------------------


class StrictCharField(serializers.CharField):
    """A JSON string, never a number or a boolean turned into one."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer, never a string, a float or a boolean."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    """A JSON number, never a string or a boolean."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not declare, together with any other error in the body."""

    def to_internal_value(self, data):
        unknown = {}
        if isinstance(data, Mapping):
            for name in data:
                if name not in self.fields:
                    why = (
                        "Set by the server; clients may not send it." if name in SERVER_SET_FIELDS else "Unknown field."
                    )
                    unknown[str(name)] = [why]
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not unknown:
                raise
            detail = exc.detail if isinstance(exc.detail, dict) else {api_settings.NON_FIELD_ERRORS_KEY: exc.detail}
            raise serializers.ValidationError({**detail, **unknown}) from None
        if unknown:
            raise serializers.ValidationError(unknown)
        return value


class NoBodySerializer(StrictSerializer):
    """An action that takes no fields."""


class NewOrderLineSerializer(StrictSerializer):
    """One line of a new order: a SKU and how many."""

    sku = StrictCharField(max_length=64, help_text="A SKU from `GET /api/products/`.")

    def get_fields(self):
        fields = super().get_fields()
        fields["quantity"] = StrictIntegerField(min_value=1, max_value=settings.API["MAX_LINE_QUANTITY"])
        return fields


class OrderCreateSerializer(StrictSerializer):
    """What a client may say about a new order: which SKUs, how many, and (optionally) the
    currency, which can only be the platform's. Prices, totals, status and the customer are the
    server's."""

    def get_fields(self):
        currency = settings.PLATFORM_CURRENCY
        return {
            "lines": NewOrderLineSerializer(
                many=True, allow_empty=False, max_length=settings.API["MAX_ORDER_LINES"], help_text="One line per SKU."
            ),
            "currency": serializers.ChoiceField(
                choices=[currency],
                default=currency,
                help_text="The platform's currency, which prices are in, and the default; no other is accepted.",
                error_messages={
                    "invalid_choice": f"Orders are in {currency}, the platform's currency; no other is accepted."
                },
            ),
        }

    def validate_lines(self, lines: list[dict]) -> list[dict]:
        seen, duplicates = set(), []
        for line in lines:
            if line["sku"] in seen:
                duplicates.append(line["sku"])
            seen.add(line["sku"])
        if duplicates:
            raise serializers.ValidationError(
                f"Each SKU may appear once; repeated: {', '.join(sorted(set(duplicates)))}."
            )
        return lines


class OrderCancelSerializer(StrictSerializer):
    """Why the customer cancels (optional)."""

    reason = StrictCharField(max_length=500, required=False, allow_blank=True, default="")


class DeadLetterDiscardSerializer(StrictSerializer):
    """Why the dead letter is closed without reprocessing."""

    reason = StrictCharField(max_length=2000, help_text="Why it is discarded; kept in its history.")


class DeadLetterGroupReprocessSerializer(StrictSerializer):
    """How fast the group's bulk run goes (optional)."""

    def get_fields(self):
        return {
            "rate": StrictFloatField(
                required=False,
                min_value=0.1,
                max_value=settings.BULK_REPROCESS_MAX_RATE,
                help_text="Dead letters per second, at most; default `BULK_REPROCESS_RATE`.",
            )
        }


class TokenCreateSerializer(StrictSerializer):
    """A user's credentials."""

    username = StrictCharField(max_length=150)
    password = StrictCharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})


class OrderFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Order.Status.choices, required=False)
    created_after = serializers.DateTimeField(required=False, help_text="Created at or after (ISO 8601).")
    created_before = serializers.DateTimeField(required=False, help_text="Created before (ISO 8601).")


class DeadLetterFilterSerializer(serializers.Serializer):
    consumer = serializers.CharField(required=False, max_length=100)
    subject = serializers.CharField(required=False, max_length=200)
    error_type = serializers.CharField(required=False, max_length=200)
    status = serializers.ChoiceField(choices=DeadLetter.Status.choices, required=False)
    failed_after = serializers.DateTimeField(required=False, help_text="Last failed at or after (ISO 8601).")
    failed_before = serializers.DateTimeField(required=False, help_text="Last failed before (ISO 8601).")
    search = serializers.CharField(
        required=False, max_length=100, help_text="An order id (the correlation id) or a message id, exactly."
    )
    fingerprint = serializers.RegexField(
        f"^{FINGERPRINT.pattern}$", required=False, help_text="A group's fingerprint: its dead letters only."
    )


class DeadLetterGroupFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=list(GROUP_STATUSES),
        default="open",
        help_text="Groups with a dead letter in this status: `open` (pending, reprocessing or failed again), `all`, "
        "or one status.",
    )
    consumer = serializers.CharField(required=False, max_length=100)
    page = serializers.IntegerField(required=False, default=1, min_value=1, max_value=1_000_000)

    def get_fields(self):
        fields = super().get_fields()
        fields["page_size"] = serializers.IntegerField(
            required=False, min_value=1, max_value=settings.API["MAX_PAGE_SIZE"], help_text="Groups per page."
        )
        return fields


# Output ----------------------------------------------------------------------------------


class OrderLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderLine
        fields = ["sku", "quantity", "unit_price"]


class OrderSerializer(serializers.ModelSerializer):
    lines = OrderLineSerializer(many=True, read_only=True)

    class Meta:
        model = Order
        fields = ["id", "status", "currency", "total_amount", "lines", "cancel_reason", "created_at", "updated_at"]


class TimelineEventSerializer(serializers.Serializer):
    subject = serializers.CharField()
    message_id = serializers.CharField()
    stream = serializers.CharField()
    stream_sequence = serializers.IntegerField()
    occurred_at = serializers.DateTimeField()
    received_at = serializers.DateTimeField()
    payload = serializers.JSONField(allow_null=True, help_text="The event as it was published.")


class OrderDetailSerializer(OrderSerializer):
    """The order with what payments and inventory decided and its events. Needs ``payment``,
    ``stock_decision`` (each None before that side saw the order) and ``timeline`` in the context."""

    payment_status = serializers.SerializerMethodField()
    reservation_status = serializers.SerializerMethodField()
    timeline = serializers.SerializerMethodField()

    class Meta(OrderSerializer.Meta):
        fields = [*OrderSerializer.Meta.fields, "payment_status", "reservation_status", "timeline"]

    @extend_schema_field(serializers.ChoiceField(choices=PAYMENT_STATUSES))
    def get_payment_status(self, order) -> str:
        payment = self.context["payment"]
        return payment.status if payment is not None else "PENDING"

    @extend_schema_field(serializers.ChoiceField(choices=RESERVATION_STATUSES))
    def get_reservation_status(self, order) -> str:
        decision = self.context["stock_decision"]
        return decision.outcome.upper() if decision is not None else "PENDING"

    @extend_schema_field(TimelineEventSerializer(many=True))
    def get_timeline(self, order) -> list[dict]:
        return TimelineEventSerializer(self.context["timeline"], many=True).data


class ProductSerializer(serializers.ModelSerializer):
    currency = serializers.SerializerMethodField()
    available = serializers.IntegerField(source="stock_on_hand", help_text="Units left to sell.")

    class Meta:
        model = Product
        fields = ["sku", "name", "price", "currency", "available"]

    def get_currency(self, product) -> str:
        return settings.PLATFORM_CURRENCY


class DeadLetterSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeadLetter
        fields = [
            "id", "consumer", "stream", "subject", "stream_sequence", "message_id", "correlation_id", "error_type",
            "error", "attempts", "failures", "status", "first_failed_at", "last_failed_at", "status_changed_at",
        ]  # fmt: skip


class DeadLetterEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", allow_null=True, default=None)

    class Meta:
        model = DeadLetterEvent
        fields = ["kind", "actor", "note", "at"]


class DeadLetterDetailSerializer(DeadLetterSerializer):
    history = DeadLetterEventSerializer(many=True, read_only=True)

    class Meta(DeadLetterSerializer.Meta):
        fields = [*DeadLetterSerializer.Meta.fields, "data", "headers", "history"]


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send it as `Authorization: Token <token>`.")


class ConsumerSerializer(serializers.Serializer):
    """One consumer: the sums over its durables (one per stream it reads), and what the
    database knows of it."""

    name = serializers.CharField(source="state.name")
    streams = serializers.ListField(child=serializers.CharField(), source="state.streams")
    missing_on = serializers.ListField(
        child=serializers.CharField(), source="state.missing", help_text="Streams where its durable does not exist."
    )
    pending = serializers.IntegerField(source="state.pending", help_text="Messages not yet delivered.")
    ack_pending = serializers.IntegerField(source="state.ack_pending", help_text="Delivered, not yet acknowledged.")
    backlog = serializers.IntegerField(source="state.backlog", help_text="pending + ack_pending: the scaling signal.")
    redelivered = serializers.IntegerField(source="state.redelivered")
    waiting = serializers.IntegerField(source="state.waiting", help_text="Pull requests waiting for messages.")
    paused = serializers.BooleanField(source="state.paused")
    paused_until = serializers.DateTimeField(source="state.paused_until", allow_null=True)
    last_active = serializers.DateTimeField(source="state.last_active", allow_null=True)
    dead_letters_waiting = serializers.IntegerField(help_text="Dead letters pending or failed again.")
    handled_per_second = serializers.FloatField(help_text="Messages handled per second over the last minute.")


class StreamSerializer(serializers.Serializer):
    name = serializers.CharField()
    subjects = serializers.ListField(child=serializers.CharField())
    messages = serializers.IntegerField()
    bytes = serializers.IntegerField()
    first_seq = serializers.IntegerField()
    last_seq = serializers.IntegerField()
    consumers = serializers.IntegerField()
    last_ts = serializers.DateTimeField(allow_null=True)


class HealthSerializer(serializers.Serializer):
    consumers = ConsumerSerializer(many=True)
    streams = StreamSerializer(many=True)


class ConsumerPauseSerializer(StrictSerializer):
    until = serializers.DateTimeField(
        required=False, help_text="When the server resumes delivery by itself; default: until resumed."
    )

    def validate_until(self, value):
        from django.utils import timezone

        if value <= timezone.now():
            raise serializers.ValidationError("Must be in the future.")
        return value


class DeadLetterGroupSerializer(serializers.Serializer):
    """The dead letters that failed the same way (``apps.eventbus.deadletters.selectors.DeadLetterGroup``)."""

    fingerprint = serializers.CharField(help_text="SHA-256 (hex) of consumer, subject, error type, signature, frame.")
    consumer = serializers.CharField()
    subject = serializers.CharField()
    error_type = serializers.CharField()
    signature = serializers.CharField(help_text="The error with its ids, numbers and quoted values as placeholders.")
    frame = serializers.CharField(help_text="Where it was raised (`file:function`); empty when unknown.")
    count = serializers.IntegerField(help_text="Dead letters in the statuses asked for (the group's open ones, alone).")
    open = serializers.IntegerField(help_text="Pending, reprocessing or failed again.")
    total = serializers.IntegerField(help_text="In every status.")
    by_status = serializers.DictField(child=serializers.IntegerField(), help_text="Every status, zeros included.")
    first_seen = serializers.DateTimeField()
    last_seen = serializers.DateTimeField()
    sample_id = serializers.IntegerField(help_text="The latest in the statuses asked for (any status if none).")


class DeadLetterGroupPageSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Groups matching, on every page.")
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = DeadLetterGroupSerializer(many=True)


class DeadLetterGroupDetailSerializer(DeadLetterGroupSerializer):
    """A group with its sample dead letter (the group's only in the context)."""

    sample = serializers.SerializerMethodField()

    @extend_schema_field(DeadLetterSerializer)
    def get_sample(self, group) -> dict:
        return DeadLetterSerializer(self.context["sample"]).data


class BulkReprocessRunSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)

    class Meta:
        model = BulkReprocess
        fields = ["id", "consumer", "status", "rate", "total", "reprocessed", "skipped", "description", "created_by",
                  "created_at"]  # fmt: skip


class DeadLetterGroupReprocessedSerializer(serializers.Serializer):
    runs = BulkReprocessRunSerializer(many=True, help_text="The bulk run started (one: a group is one consumer's).")


class DeadLetterGroupDiscardedSerializer(serializers.Serializer):
    discarded = serializers.IntegerField()
    remaining = serializers.IntegerField(
        help_text=f"Still open: past the most one request discards ({MAX_BULK_DISCARD}), or recorded meanwhile; "
        "discard again."
    )
    group = DeadLetterGroupSerializer()
