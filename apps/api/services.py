"""The API's own writes: idempotency records and authentication tokens."""

from __future__ import annotations

import json

from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.utils.encoders import JSONEncoder

from .models import IdempotencyKey


def idempotency_key_claim(*, user, key: str, fingerprint: str) -> tuple[IdempotencyKey, bool]:
    """Insert the key's row, or return the committed row of an earlier request with it.

    Call inside the transaction that does the request's work. A concurrent request holding
    the same key makes the insert wait until that request's transaction ends: its row is then
    committed (returned, with ``created`` False) or rolled back (this insert goes through).
    """
    with connection.cursor() as cursor:  # one statement: no savepoint to catch a unique violation
        cursor.execute(_CLAIM, [user.pk, key, fingerprint])
        row = cursor.fetchone()
    if row is None:
        return IdempotencyKey.objects.get(user=user, key=key), False
    (record_id, created_at) = row
    record = IdempotencyKey(id=record_id, user=user, key=key, fingerprint=fingerprint, created_at=created_at)
    record._state.adding, record._state.db = False, connection.alias
    return record, True


_CLAIM = f"""
    INSERT INTO {IdempotencyKey._meta.db_table} (user_id, key, fingerprint, response_body, created_at)
    VALUES (%s, %s, %s, '', now())
    ON CONFLICT (user_id, key) DO NOTHING
    RETURNING id, created_at
"""


def idempotency_key_complete(*, record: IdempotencyKey, status: int, body) -> None:
    """Remember the response to replay. Call in the transaction that claimed the key."""
    record.response_status, record.response_body = status, json.dumps(body, cls=JSONEncoder)
    record.save(update_fields=["response_status", "response_body"])


def auth_token_issue(*, user) -> Token:
    """The user's API token (created on first use)."""
    token, _ = Token.objects.get_or_create(user=user)
    return token
