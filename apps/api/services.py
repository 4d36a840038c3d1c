"""The API's own writes: idempotency records and authentication tokens."""

from __future__ import annotations

import json

from django.db import IntegrityError, transaction
from rest_framework.authtoken.models import Token
from rest_framework.utils.encoders import JSONEncoder

from .models import IdempotencyKey


def idempotency_key_claim(*, user, key: str, fingerprint: str) -> tuple[IdempotencyKey, bool]:
    """Insert the key's row, or return the committed row of an earlier request with it.

    Call inside the transaction that does the request's work. A concurrent request holding
    the same key makes the insert wait until that request's transaction ends: its row is then
    committed (returned, with ``created`` False) or rolled back (this insert goes through).
    """
    try:
        with transaction.atomic():
            return IdempotencyKey.objects.create(user=user, key=key, fingerprint=fingerprint), True
    except IntegrityError:
        return IdempotencyKey.objects.get(user=user, key=key), False


def idempotency_key_complete(*, record: IdempotencyKey, status: int, body) -> None:
    """Remember the response to replay. Call in the transaction that claimed the key."""
    record.response_status, record.response_body = status, json.dumps(body, cls=JSONEncoder)
    record.save(update_fields=["response_status", "response_body"])


def auth_token_issue(*, user) -> Token:
    """The user's API token (created on first use)."""
    token, _ = Token.objects.get_or_create(user=user)
    return token
