from __future__ import annotations

import json

from django.db import connection
from django.utils import timezone

from apps.eventbus.consuming.delivery import Delivery, unstorable_key

from .chain import GENESIS, canonical_json, entry_hash
from .models import AuditEntry

CHAIN_LOCK = 7_411_001  # pg_advisory_xact_lock key: one appender at a time keeps the chain linear

_TABLE = AuditEntry._meta.db_table
# Run after the lock, in a statement of its own (READ COMMITTED: it sees what the appender
# before us committed): the chain's last hash and which of the batch's events are already in.
# The ids travel as one JSON array (escaped once, in C); ``= ANY(ARRAY(...))`` keeps the probe
# on the unique index whatever the table's size.
_HEAD_AND_KNOWN = f"""
    SELECT (SELECT hash FROM {_TABLE} ORDER BY id DESC LIMIT 1),
           ARRAY(SELECT message_id FROM {_TABLE}
                 WHERE message_id = ANY(ARRAY(SELECT json_array_elements_text(%s::json))))
"""
# The new entries go in with one COPY: psycopg formats the rows in C, where a multi-row
# INSERT has psycopg quote every value (or every array element) in Python. Rows are stored
# in the order they are written, so their ids follow the chain.
_FIELDS = ("subject", "message_id", "correlation_id", "stream", "stream_sequence", "body", "headers",
           "previous_hash", "hash")  # fmt: skip
_COPY = f"COPY {_TABLE} ({', '.join(_FIELDS)}, received_at) FROM STDIN"
_json_array = json.JSONEncoder(separators=(",", ":")).encode


def audit_append(*, deliveries: list[Delivery]) -> list[AuditEntry]:
    """Append the messages not yet in the log, chained to the last entry. Call inside a transaction.

    Returns the new entries, as saved (with their ids), in chain order."""
    hashes = _append(deliveries)
    return list(AuditEntry.objects.filter(hash__in=hashes).order_by("id")) if hashes else []


def audit_record(*, deliveries: list[Delivery]) -> int:
    """:func:`audit_append` without reading the new entries back (the consumer's hot path);
    returns how many entries were appended."""
    return len(_append(deliveries))


def _append(deliveries: list[Delivery]) -> list[str]:
    """Insert the entries not yet in the log, chained; their hashes, in chain order."""
    if not deliveries:
        return []
    # A copy published under another Nats-Msg-Id is the same event: entries are keyed on the
    # event's own id (the Delivery parses an undecoded body once for both ids).
    candidates = [(delivery, *_ids(delivery)) for delivery in deliveries]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK])
        cursor.execute(_HEAD_AND_KNOWN, [_json_array([message_id for _, message_id, _ in candidates])])
        last, known = cursor.fetchone()
        previous = last or GENESIS
        known = set(known)
        received_at = timezone.now().isoformat()  # formatted once, not once per row by psycopg
        rows = []
        for delivery, message_id, correlation_id in candidates:
            if message_id in known:
                continue
            known.add(message_id)  # a second copy in the same batch is the same event
            subject, stream, sequence = delivery.subject, delivery.stream, delivery.stream_sequence
            body = _storable(delivery.data.decode(errors="replace"))
            headers = {_storable(str(name)): _storable(str(value)) for name, value in delivery.headers.items()}
            headers_json = canonical_json(headers)
            digest = entry_hash(
                previous_hash=previous, subject=subject, message_id=message_id, correlation_id=correlation_id,
                stream=stream, stream_sequence=sequence, body=body, headers=headers, headers_json=headers_json,
            )  # fmt: skip
            rows.append((subject, message_id, correlation_id, stream, sequence, body, headers_json, previous,
                         digest, received_at))  # fmt: skip
            previous = digest
        if rows:
            with cursor.cursor.copy(_COPY) as copy:  # the psycopg cursor under Django's wrapper
                for row in rows:
                    copy.write_row(row)
    return [row[-2] for row in rows]


def _ids(delivery: Delivery) -> tuple[str, str]:
    """The entry's key and correlation, as the columns can hold them: an event id the ledger could
    not hold gives way to the delivery's own (already checked), a correlation id to none."""
    message_id, correlation_id = delivery.event_id, delivery.correlation_id
    if unstorable_key(message_id, delivery.subject):
        message_id = delivery.ledger_key
    if unstorable_key(correlation_id, delivery.subject):
        correlation_id = ""
    return message_id, correlation_id


def _storable(text: str) -> str:
    """PostgreSQL text holds no NUL: it is stored (and hashed) as U+FFFD, as an undecodable byte is."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text
