"""Dead letters grouped by the fingerprint of their failure, for operators: review
(``eventbus.view_deadletter``), reprocess a group as a bulk run (``eventbus.reprocess_deadletter``),
discard a group (``eventbus.discard_deadletter``)."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param
from rest_framework.views import APIView

from apps.eventbus.deadletters.fingerprint import FINGERPRINT, is_fingerprint
from apps.eventbus.deadletters.selectors import dead_letter_get, dead_letter_group_get, dead_letter_groups
from apps.operations.dead_letter_groups import (
    DeadLetterGroupClosed,
    DeadLetterGroupNotFound,
    dead_letter_group_discard,
    dead_letter_group_reprocess,
)
from apps.operations.services import MAX_BULK_DISCARD, BulkReprocessConflict, BulkReprocessError

from ..errors import BulkReprocessActive, InvalidFingerprint, NothingOpenInGroup
from ..idempotency import idempotent
from ..permissions import has_perm
from ..schema import EXAMPLES, IDEMPOTENCY_KEY, READ_ERRORS, RETRY_AFTER, WRITE_ERRORS, error_responses
from ..serializers import (
    BulkReprocessRunSerializer,
    DeadLetterDiscardSerializer,
    DeadLetterGroupDetailSerializer,
    DeadLetterGroupDiscardedSerializer,
    DeadLetterGroupFilterSerializer,
    DeadLetterGroupPageSerializer,
    DeadLetterGroupReprocessedSerializer,
    DeadLetterGroupReprocessSerializer,
    DeadLetterGroupSerializer,
)
from .dead_letters import DEAD_LETTER_EXAMPLE

FINGERPRINT_PARAMETER = OpenApiParameter(
    "fingerprint",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    pattern=f"^{FINGERPRINT.pattern}$",
    description="The group's fingerprint: 64 lowercase hexadecimal digits.",
)
SAMPLE_FINGERPRINT = "3f7a9c0e5b2d4f6a8c1e3b5d7f9a0c2e4b6d8f0a1c3e5b7d9f1a2c4e6b8d0f1a"
GROUP_EXAMPLE = {
    "fingerprint": SAMPLE_FINGERPRINT,
    "consumer": "payments",
    "subject": "orders.created.v1",
    "error_type": "PermanentError",
    "signature": "unknown SKU <str> in order <uuid>",
    "frame": "apps/payments/handlers.py:charge_orders",
    "count": 412,
    "open": 412,
    "total": 415,
    "by_status": {"pending": 400, "reprocessing": 0, "resolved": 3, "failed_again": 12, "discarded": 0},
    "first_seen": "2026-11-20T10:15:00Z",
    "last_seen": "2026-11-20T10:42:13Z",
    "sample_id": 9071,
}
RUN_EXAMPLE = {
    "id": 31,
    "consumer": "payments",
    "status": "queued",
    "rate": 20.0,
    "total": 412,
    "reprocessed": 0,
    "skipped": 0,
    "description": f"dead-letter group {SAMPLE_FINGERPRINT}: PermanentError: unknown SKU <str> in order <uuid>",
    "created_by": "olivia",
    "created_at": "2026-11-20T11:02:00Z",
}
INVALID_FINGERPRINT = ("invalid_fingerprint", str(InvalidFingerprint.default_detail), {})
BAD_FINGERPRINT = {400: [INVALID_FINGERPRINT]}
BAD_REQUEST = {400: [*EXAMPLES[400], INVALID_FINGERPRINT]}
CLOSED = (NothingOpenInGroup.default_code, str(NothingOpenInGroup.default_detail), {})
ACTIVE = (BulkReprocessActive.default_code, "a bulk reprocess is already queued or running for payments", {})


def _fingerprint(value: str) -> str:
    if not is_fingerprint(value):
        raise InvalidFingerprint()
    return value


def _group(fingerprint: str):
    group = dead_letter_group_get(fingerprint=_fingerprint(fingerprint))
    if group is None:
        raise NotFound("No dead letter has this fingerprint.")
    return group


class DeadLetterGroupListApi(APIView):
    permission_classes = [has_perm("eventbus.view_deadletter")]

    @extend_schema(
        operation_id="dead_letter_groups_list",
        summary="Dead letters grouped by the fingerprint of their failure, most recently seen first",
        description="A group is the dead letters of one consumer and subject that failed with the same exception "
        "type, the same error once its ids, numbers and quoted values are set aside, raised in the same place. "
        "Each group's figures cover every status; `status` picks the groups listed and what `count` counts. A page "
        "past the last: 404.",
        parameters=[DeadLetterGroupFilterSerializer, RETRY_AFTER],
        responses={200: DeadLetterGroupPageSerializer, **error_responses(400, 403, 404, *READ_ERRORS)},
        examples=[
            OpenApiExample(
                "a page of groups",
                value={"count": 1, "next": None, "previous": None, "results": [GROUP_EXAMPLE]},
                response_only=True,
                status_codes=[200],
            )
        ],
    )
    def get(self, request):
        filters = DeadLetterGroupFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        asked = filters.validated_data
        page = dead_letter_groups(
            status=asked["status"],
            consumer=asked.get("consumer"),
            page=asked["page"],
            page_size=asked.get("page_size") or settings.API["PAGE_SIZE"],
        )
        if page.page > page.pages:
            raise NotFound("Invalid page.")
        url = request.build_absolute_uri()
        previous = None
        if page.page > 1:  # the first page's link has no page number, as DRF's page links
            previous = replace_query_param(url, "page", page.page - 1)
            previous = remove_query_param(url, "page") if page.page == 2 else previous
        return Response(
            {
                "count": page.total,
                "next": replace_query_param(url, "page", page.page + 1) if page.page < page.pages else None,
                "previous": previous,
                "results": DeadLetterGroupSerializer(page.groups, many=True).data,
            }
        )


class DeadLetterGroupDetailApi(APIView):
    permission_classes = [has_perm("eventbus.view_deadletter")]

    @extend_schema(
        operation_id="dead_letter_groups_retrieve",
        summary="One group of dead letters, with a sample",
        description="`count` is its open dead letters; the sample is its latest open one, else its latest. "
        "List its dead letters with `GET /api/dead-letters/?fingerprint=...`.",
        parameters=[FINGERPRINT_PARAMETER, RETRY_AFTER],
        responses={
            200: DeadLetterGroupDetailSerializer,
            **error_responses(400, 403, 404, *READ_ERRORS, examples=BAD_FINGERPRINT),
        },
        examples=[
            OpenApiExample(
                "a group",
                value={**GROUP_EXAMPLE, "sample": {**DEAD_LETTER_EXAMPLE, "id": 9071}},
                response_only=True,
                status_codes=[200],
            )
        ],
    )
    def get(self, request, fingerprint: str):
        group = _group(fingerprint)
        sample = dead_letter_get(dead_letter_id=str(group.sample_id))
        return Response(DeadLetterGroupDetailSerializer(group, context={"sample": sample}).data)


class DeadLetterGroupReprocessApi(APIView):
    permission_classes = [has_perm("eventbus.reprocess_deadletter")]

    @extend_schema(
        operation_id="dead_letter_groups_reprocess",
        summary="Reprocess a group's open dead letters as a rate-limited bulk run",
        description="Accepted: one bulk run (a group is one consumer's) delivers its pending, reprocessing and "
        "failed-again dead letters again at `rate` per second; follow it in the admin's bulk runs. Its description "
        "names the group's fingerprint. A run already active for the consumer: 409 `bulk_reprocess_active`; no open "
        "dead letter in the group: 409 `dead_letter_group_closed`.",
        request=DeadLetterGroupReprocessSerializer,
        parameters=[FINGERPRINT_PARAMETER, IDEMPOTENCY_KEY, RETRY_AFTER],
        responses={
            202: DeadLetterGroupReprocessedSerializer,
            **error_responses(403, 404, 409, *WRITE_ERRORS, examples={**BAD_REQUEST, 409: [ACTIVE, CLOSED]}),
        },
        examples=[
            OpenApiExample("a rate", value={"rate": 5}, request_only=True),
            OpenApiExample("queued", value={"runs": [RUN_EXAMPLE]}, response_only=True, status_codes=[202]),
        ],
    )
    @idempotent
    def post(self, request, fingerprint: str):
        fingerprint = _fingerprint(fingerprint)
        payload = DeadLetterGroupReprocessSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            runs = dead_letter_group_reprocess(
                fingerprint=fingerprint, actor=request.user, rate=payload.validated_data.get("rate")
            )
        except DeadLetterGroupNotFound:
            raise NotFound("No dead letter has this fingerprint.") from None
        except BulkReprocessConflict as exc:
            raise BulkReprocessActive(str(exc)) from None
        except (DeadLetterGroupClosed, BulkReprocessError) as exc:
            raise NothingOpenInGroup(str(exc)) from None
        return Response({"runs": BulkReprocessRunSerializer(runs, many=True).data}, status=status.HTTP_202_ACCEPTED)


class DeadLetterGroupDiscardApi(APIView):
    permission_classes = [has_perm("eventbus.discard_deadletter")]

    @extend_schema(
        operation_id="dead_letter_groups_discard",
        summary="Discard a group's open dead letters, for a reason",
        description="Each open dead letter of the group is discarded with the reason (followed by the group's "
        f"fingerprint) in its history and the audit log, the oldest first, at most {MAX_BULK_DISCARD} in one request: "
        "`remaining` says how many are still open. No open dead letter in the group: 409 `dead_letter_group_closed`.",
        request=DeadLetterDiscardSerializer,
        parameters=[FINGERPRINT_PARAMETER, IDEMPOTENCY_KEY, RETRY_AFTER],
        responses={
            200: DeadLetterGroupDiscardedSerializer,
            **error_responses(403, 404, 409, *WRITE_ERRORS, examples={**BAD_REQUEST, 409: [CLOSED]}),
        },
        examples=[
            OpenApiExample("a reason", value={"reason": "test orders from the load generator"}, request_only=True),
            OpenApiExample(
                "discarded",
                value={
                    "discarded": 412,
                    "remaining": 0,
                    "group": {
                        **GROUP_EXAMPLE,
                        "count": 0,
                        "open": 0,
                        "by_status": {**GROUP_EXAMPLE["by_status"], "pending": 0, "failed_again": 0, "discarded": 412},
                    },
                },
                response_only=True,
                status_codes=[200],
            ),
        ],
    )
    @idempotent
    def post(self, request, fingerprint: str):
        fingerprint = _fingerprint(fingerprint)
        payload = DeadLetterDiscardSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            done = dead_letter_group_discard(
                fingerprint=fingerprint, actor=request.user, reason=payload.validated_data["reason"]
            )
        except DeadLetterGroupNotFound:
            raise NotFound("No dead letter has this fingerprint.") from None
        except DeadLetterGroupClosed as exc:
            raise NothingOpenInGroup(str(exc)) from None
        return Response(
            {
                "discarded": done.discarded,
                "remaining": done.remaining,
                "group": DeadLetterGroupSerializer(dead_letter_group_get(fingerprint=fingerprint)).data,
            }
        )
