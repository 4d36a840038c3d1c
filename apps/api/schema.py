"""OpenAPI pieces shared by every endpoint: the error shape, error responses with examples,
the ``Idempotency-Key`` header."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from .errors import IdempotencyKeyReused, InvalidIdempotencyKey
from .exceptions import UNAVAILABLE_MESSAGE, error_body


class ErrorDetailSerializer(serializers.Serializer):
    def get_fields(self):  # a declared field named "fields" would hide Serializer.fields
        return {
            "code": serializers.CharField(help_text="Stable, machine-readable: branch on this."),
            "message": serializers.CharField(help_text="For people; may change."),
            "fields": serializers.DictField(
                child=serializers.ListField(child=serializers.CharField()),
                help_text="Dotted path into the request (`lines.0.quantity`) -> what was wrong there; "
                "empty when no field is to blame.",
            ),
        }


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


DESCRIPTIONS = {
    400: "The request is invalid: see `error.fields`.",
    401: "No valid credentials (`Authorization: Token <key>` or a session).",
    403: "Authenticated, but not allowed to do this.",
    404: "No such resource, or not yours.",
    409: "The resource's state does not allow this action.",
    413: "The request body is larger than the limit.",
    415: "The body must be JSON (`Content-Type: application/json`).",
    422: "The Idempotency-Key was already used with a different request.",
    429: "Too many requests: retry after `Retry-After` seconds.",
    503: "Unavailable for a moment (the database, or NATS for the consumers, does not answer): "
    "retry after `Retry-After` seconds.",
}
EXAMPLES: dict[int, list[tuple[str, str, dict]]] = {
    400: [
        (
            "validation_error",
            "Invalid request: lines.0.quantity: Ensure this value is greater than or equal to 1.",
            {"lines.0.quantity": ["Ensure this value is greater than or equal to 1."]},
        ),
        (InvalidIdempotencyKey.default_code, str(InvalidIdempotencyKey.default_detail), {}),
    ],
    401: [("not_authenticated", "Authentication credentials were not provided.", {})],
    403: [("permission_denied", "You do not have permission to perform this action.", {})],
    404: [("not_found", "Not found.", {})],
    409: [("invalid_transition", "order 6f1c... is CANCELLED; it cannot become CANCELLED", {})],
    413: [("request_too_large", "The request body is larger than the limit of 1048576 bytes.", {})],
    415: [("unsupported_media_type", 'Unsupported media type "text/plain" in request.', {})],
    422: [(IdempotencyKeyReused.default_code, str(IdempotencyKeyReused.default_detail), {})],
    429: [("throttled", "Request was throttled. Expected available in 17 seconds.", {})],
    503: [("service_unavailable", UNAVAILABLE_MESSAGE, {})],
}
NATS_UNAVAILABLE = {503: [*EXAMPLES[503], ("nats_unavailable", "no answer from nats://nats-1:4222 within 4s", {})]}

READ_ERRORS = (401, 429, 503)
WRITE_ERRORS = (400, 401, 413, 415, 422, 429, 503)


def error_responses(*statuses: int, examples: dict[int, list[tuple[str, str, dict]]] | None = None) -> dict:
    """``{status: OpenApiResponse(ErrorSerializer)}`` with an example per error code."""
    examples = {**EXAMPLES, **(examples or {})}
    return {
        status: OpenApiResponse(
            ErrorSerializer,
            description=DESCRIPTIONS[status],
            examples=[
                OpenApiExample(
                    _example_name(code, fields, examples[status]),
                    value=error_body(code, message, fields),
                    status_codes=[status],
                    response_only=True,
                )
                for code, message, fields in examples[status]
            ],
        )
        for status in sorted(set(statuses))
    }


def _example_name(code: str, fields: dict, examples: list[tuple[str, str, dict]]) -> str:
    """The code, and the first field when the code has several examples (names must differ)."""
    if sum(other == code for other, _, _ in examples) > 1 and fields:
        return f"{code} {next(iter(fields))}"
    return code


IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description=(
        "Up to 255 printable ASCII characters, unique per request you mean (a UUID is good). "
        "Repeating it with the same body replays the first response (with `Idempotent-Replayed: true`) "
        "and does nothing again; with another body: 422. Kept at least 24 hours, per user."
    ),
    pattern=r"^[\x21-\x7e]{1,255}$",
)
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    response=[429, 503],
    description="Seconds to wait before the next request.",
)


def strict_request_bodies(result, generator, request, public):
    """Postprocessing hook: request bodies take no fields beyond those listed (the API refuses
    them), so say so with ``additionalProperties: false``."""
    for name, schema in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and schema.get("type") == "object":
            schema["additionalProperties"] = False
    return result
