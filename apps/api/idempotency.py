"""``Idempotency-Key`` on POSTs: the same key and body replay the first response; the same key
with another body is refused (422). The database enforces it (``IdempotencyKey``, unique per
user and key, inserted in the transaction that does the work), so concurrent requests with
one key do the work once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re

from django.db import transaction
from rest_framework.response import Response

from .errors import IdempotencyKeyReused, InvalidIdempotencyKey
from .services import idempotency_key_claim, idempotency_key_complete

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def idempotent(method):
    """Decorate a view's ``post``: with an ``Idempotency-Key`` header, the work and the key's
    record commit together, and a repeat replays the stored response. Errors are raised, so
    they roll the record back with the work, and a retry with the same key runs again."""

    @functools.wraps(method)
    def wrapper(view, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return method(view, request, *args, **kwargs)
        if not _VALID_KEY.match(key):
            raise InvalidIdempotencyKey()
        fingerprint = _fingerprint(request)
        with transaction.atomic():
            record, created = idempotency_key_claim(user=request.user, key=key, fingerprint=fingerprint)
            if not created:
                if record.fingerprint != fingerprint:
                    raise IdempotencyKeyReused()
                body = json.loads(record.response_body) if record.response_body else None
                return Response(body, status=record.response_status, headers={REPLAYED_HEADER: "true"})
            response = method(view, request, *args, **kwargs)
            idempotency_key_complete(record=record, status=response.status_code, body=response.data)
        return response

    return wrapper


def _fingerprint(request) -> str:
    """The request's identity: method, path and its parsed body (key order and spacing aside)."""
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()
