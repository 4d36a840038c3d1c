"""Consumers and streams for operators: the live figures (``operations.view_consumer``) and
server-side pause and resume (``operations.pause_consumer``)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.eventbus.jetstream.control import consumer_pause, consumer_resume
from apps.eventbus.jetstream.monitoring import NatsUnreachable
from apps.eventbus.registry import registry
from apps.operations.selectors import Health, health

from ..idempotency import idempotent
from ..permissions import has_perm
from ..schema import IDEMPOTENCY_KEY, NATS_UNAVAILABLE, READ_ERRORS, RETRY_AFTER, WRITE_ERRORS, error_responses
from ..serializers import ConsumerPauseSerializer, ConsumerSerializer, HealthSerializer, NoBodySerializer

NAME = OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH, description="A consumer, e.g. `payments`.")
CONSUMER_EXAMPLE = {
    "name": "payments",
    "streams": ["ORDERS"],
    "missing_on": [],
    "pending": 120,
    "ack_pending": 20,
    "backlog": 140,
    "redelivered": 3,
    "waiting": 1,
    "paused": False,
    "paused_until": None,
    "last_active": "2026-11-25T16:55:48Z",
    "dead_letters_waiting": 2,
    "handled_per_second": 4.8,
}
STREAM_EXAMPLE = {
    "name": "ORDERS",
    "subjects": ["orders.>", "redeliver.ORDERS.>"],
    "messages": 5120,
    "bytes": 2411520,
    "first_seq": 1,
    "last_seq": 5120,
    "consumers": 3,
    "last_ts": "2026-11-25T16:55:48Z",
}


def _declared(name: str) -> str:
    if name not in registry.consumers:
        raise NotFound(f"No consumer named {name!r}.")
    return name


def _live() -> Health:
    """The live figures; ``NatsUnreachable`` (a 503) when NATS does not answer."""
    now = health()
    if now.nats_error:
        raise NatsUnreachable(now.nats_error)
    return now


def _consumer(name: str):
    return next(c for c in _live().consumers if c.name == name)


class ConsumerListApi(APIView):
    permission_classes = [has_perm("operations.view_consumer")]

    @extend_schema(
        operation_id="consumers_list",
        summary="Every consumer and stream, live from NATS",
        parameters=[RETRY_AFTER],
        responses={200: HealthSerializer, **error_responses(403, *READ_ERRORS, examples=NATS_UNAVAILABLE)},
        examples=[
            OpenApiExample(
                "figures",
                value={"consumers": [CONSUMER_EXAMPLE], "streams": [STREAM_EXAMPLE]},
                response_only=True,
                status_codes=[200],
            )
        ],
    )
    def get(self, request):
        now = _live()
        return Response(HealthSerializer({"consumers": now.consumers, "streams": now.streams}).data)


class ConsumerPauseApi(APIView):
    permission_classes = [has_perm("operations.pause_consumer")]

    @extend_schema(
        operation_id="consumers_pause",
        summary="Pause a consumer on the server (every stream it reads)",
        description="JetStream stops delivering to the consumer's durables until `until` (default: until "
        "resumed); its processes stay up and idle. Recorded in the audit log.",
        request=ConsumerPauseSerializer,
        parameters=[NAME, IDEMPOTENCY_KEY, RETRY_AFTER],
        responses={200: ConsumerSerializer, **error_responses(403, 404, *WRITE_ERRORS, examples=NATS_UNAVAILABLE)},
        examples=[
            OpenApiExample("for an hour", value={"until": "2026-11-25T18:00:00Z"}, request_only=True),
            OpenApiExample(
                "paused",
                value={**CONSUMER_EXAMPLE, "paused": True, "paused_until": "2036-11-23T16:55:48Z"},
                response_only=True,
                status_codes=[200],
            ),
        ],
    )
    @idempotent
    def post(self, request, name: str):
        payload = ConsumerPauseSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        consumer_pause(name=_declared(name), actor=request.user, until=payload.validated_data.get("until"))
        return Response(ConsumerSerializer(_consumer(name)).data)


class ConsumerResumeApi(APIView):
    permission_classes = [has_perm("operations.pause_consumer")]

    @extend_schema(
        operation_id="consumers_resume",
        summary="Resume a paused consumer now",
        description="Recorded in the audit log. Resuming a consumer that is not paused changes nothing.",
        request=None,
        parameters=[NAME, IDEMPOTENCY_KEY, RETRY_AFTER],
        responses={200: ConsumerSerializer, **error_responses(403, 404, *WRITE_ERRORS, examples=NATS_UNAVAILABLE)},
        examples=[OpenApiExample("running", value=CONSUMER_EXAMPLE, response_only=True, status_codes=[200])],
    )
    @idempotent
    def post(self, request, name: str):
        NoBodySerializer(data=request.data).is_valid(raise_exception=True)
        consumer_resume(name=_declared(name), actor=request.user)
        return Response(ConsumerSerializer(_consumer(name)).data)
