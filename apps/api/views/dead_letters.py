"""Dead letters for operators: review (``eventbus.view_deadletter``), reprocess
(``eventbus.reprocess_deadletter``) and discard (``eventbus.discard_deadletter``)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.eventbus.deadletters.selectors import dead_letter_get, dead_letter_list
from apps.eventbus.deadletters.services import dead_letter_discard, dead_letter_reprocess

from ..idempotency import idempotent
from ..pagination import DeadLetterCursorPagination
from ..permissions import has_perm
from ..schema import IDEMPOTENCY_KEY, READ_ERRORS, RETRY_AFTER, WRITE_ERRORS, error_responses
from ..serializers import (
    DeadLetterDetailSerializer,
    DeadLetterDiscardSerializer,
    DeadLetterFilterSerializer,
    DeadLetterSerializer,
    NoBodySerializer,
)

DEAD_LETTER_ID = OpenApiParameter("dead_letter_id", OpenApiTypes.INT, OpenApiParameter.PATH)
DEAD_LETTER_EXAMPLE = {
    "id": 7,
    "consumer": "payments",
    "stream": "ORDERS",
    "subject": "orders.created.v1",
    "stream_sequence": 1042,
    "message_id": "0b6c7d8e-...",
    "correlation_id": "6f1c2b8e-3d4a-4e5f-9a0b-1c2d3e4f5a6b",
    "error_type": "ContractError",
    "error": "total_amount: field required",
    "attempts": 1,
    "failures": 1,
    "status": "pending",
    "first_failed_at": "2026-11-20T10:15:00Z",
    "last_failed_at": "2026-11-20T10:15:00Z",
    "status_changed_at": "2026-11-20T10:15:00Z",
}
DETAIL_EXAMPLE = {
    **DEAD_LETTER_EXAMPLE,
    "data": '{"order_id": "6f1c2b8e-3d4a-4e5f-9a0b-1c2d3e4f5a6b"}',
    "headers": {"Nats-Msg-Id": "dlq:payments:ORDERS:1042"},
    "history": [
        {"kind": "failed", "actor": None, "note": "total_amount: field required", "at": "2026-11-20T10:15:00Z"}
    ],
}
CONFLICT = {409: [("dead_letter_state_conflict", "dead letter 7 is resolved; nothing to reprocess", {})]}


def _dead_letter(dead_letter_id: str):
    dead_letter = dead_letter_get(dead_letter_id=dead_letter_id)
    if dead_letter is None:
        raise NotFound()
    return dead_letter


class DeadLetterListApi(GenericAPIView):
    permission_classes = [has_perm("eventbus.view_deadletter")]
    pagination_class = DeadLetterCursorPagination
    serializer_class = DeadLetterSerializer

    def get_queryset(self):
        filters = DeadLetterFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return dead_letter_list(**filters.validated_data)

    @extend_schema(
        operation_id="dead_letters_list",
        summary="Dead letters, most recent failure first",
        parameters=[DeadLetterFilterSerializer, RETRY_AFTER],
        responses={200: DeadLetterSerializer(many=True), **error_responses(400, 403, 404, *READ_ERRORS)},
        examples=[OpenApiExample("a dead letter", value=DEAD_LETTER_EXAMPLE, response_only=True, status_codes=[200])],
    )
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(DeadLetterSerializer(page, many=True).data)


class DeadLetterDetailApi(APIView):
    permission_classes = [has_perm("eventbus.view_deadletter")]

    @extend_schema(
        operation_id="dead_letters_retrieve",
        summary="One dead letter with its message and history",
        parameters=[DEAD_LETTER_ID, RETRY_AFTER],
        responses={200: DeadLetterDetailSerializer, **error_responses(403, 404, *READ_ERRORS)},
        examples=[OpenApiExample("a dead letter", value=DETAIL_EXAMPLE, response_only=True, status_codes=[200])],
    )
    def get(self, request, dead_letter_id: str):
        return Response(DeadLetterDetailSerializer(_dead_letter(dead_letter_id)).data)


class DeadLetterReprocessApi(APIView):
    permission_classes = [has_perm("eventbus.reprocess_deadletter")]

    @extend_schema(
        operation_id="dead_letters_reprocess",
        summary="Deliver the message again to the consumer that failed on it",
        description="Accepted: the row becomes `reprocessing`, then `resolved` when the consumer handles it or "
        "`failed_again`. A resolved or discarded dead letter: 409 `dead_letter_state_conflict`. The same 409, "
        "with nothing written, when the redelivery could never be published: no stream captures its subject or no "
        "consumer reads it there, it would exceed the server's max payload (`EVENTBUS['MAX_PAYLOAD']`, headers "
        "included), or its body is not UTF-8 text (edit it in the admin, or discard it).",
        request=None,
        parameters=[DEAD_LETTER_ID, IDEMPOTENCY_KEY, RETRY_AFTER],
        responses={
            202: DeadLetterDetailSerializer,
            **error_responses(403, 404, 409, *WRITE_ERRORS, examples=CONFLICT),
        },
        examples=[
            OpenApiExample(
                "reprocessing",
                value={**DETAIL_EXAMPLE, "status": "reprocessing"},
                response_only=True,
                status_codes=[202],
            )
        ],
    )
    @idempotent
    def post(self, request, dead_letter_id: str):
        NoBodySerializer(data=request.data).is_valid(raise_exception=True)
        dead_letter = dead_letter_reprocess(dead_letter=_dead_letter(dead_letter_id), actor=request.user)
        return Response(DeadLetterDetailSerializer(_dead_letter(dead_letter.pk)).data, status=status.HTTP_202_ACCEPTED)


class DeadLetterDiscardApi(APIView):
    permission_classes = [has_perm("eventbus.discard_deadletter")]

    @extend_schema(
        operation_id="dead_letters_discard",
        summary="Close a dead letter without reprocessing it",
        description="A reason is required and kept in the history. A resolved dead letter: 409 "
        "`dead_letter_state_conflict`.",
        request=DeadLetterDiscardSerializer,
        parameters=[DEAD_LETTER_ID, IDEMPOTENCY_KEY, RETRY_AFTER],
        responses={200: DeadLetterDetailSerializer, **error_responses(403, 404, 409, *WRITE_ERRORS, examples=CONFLICT)},
        examples=[
            OpenApiExample("a reason", value={"reason": "test message from the load generator"}, request_only=True),
            OpenApiExample(
                "discarded", value={**DETAIL_EXAMPLE, "status": "discarded"}, response_only=True, status_codes=[200]
            ),
        ],
    )
    @idempotent
    def post(self, request, dead_letter_id: str):
        dead_letter = _dead_letter(dead_letter_id)
        payload = DeadLetterDiscardSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        dead_letter_discard(dead_letter=dead_letter, actor=request.user, reason=payload.validated_data["reason"])
        return Response(DeadLetterDetailSerializer(_dead_letter(dead_letter.pk)).data)
