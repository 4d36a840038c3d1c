"""The API's own errors. Each has an HTTP status and a stable ``code`` for the error shape;
domain errors (``apps.orders.errors``) carry the same two attributes."""

from rest_framework import status
from rest_framework.exceptions import APIException


class InvalidIdempotencyKey(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_idempotency_key"
    default_detail = "Idempotency-Key must be 1 to 255 printable ASCII characters."


class IdempotencyKeyReused(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key was used with a different request; use a new key for a new request."


class InvalidCredentials(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_credentials"
    default_detail = "Unable to sign in with the given username and password."


class EndpointNotFound(APIException):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "not_found"
    default_detail = "No such endpoint."


class InvalidFingerprint(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_fingerprint"
    default_detail = "A dead-letter group's fingerprint is 64 lowercase hexadecimal digits (SHA-256)."


class BulkReprocessActive(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "bulk_reprocess_active"
    default_detail = "A bulk reprocess is already queued or running for this consumer; wait for it or cancel it."


class NothingOpenInGroup(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "dead_letter_group_closed"
    default_detail = "The group has no open dead letter (all resolved or discarded)."
