from __future__ import annotations

from django.db import connection

from apps.eventbus.delivery import Delivery

from .chain import GENESIS, entry_hash
from .models import AuditEntry

CHAIN_LOCK = 7_411_001  # pg_advisory_xact_lock key: one appender at a time keeps the chain linear


def audit_append(*, deliveries: list[Delivery]) -> list[AuditEntry]:
    """Append the messages not yet in the log, chained to the last entry. Call inside a transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK])
    known = set(
        AuditEntry.objects.filter(message_id__in=[d.message_id for d in deliveries]).values_list(
            "message_id", flat=True
        )
    )
    last = AuditEntry.objects.order_by("-id").values_list("hash", flat=True).first()
    previous = last or GENESIS
    entries = []
    for delivery in deliveries:
        message_id = delivery.event_message_id  # a copy published under another Nats-Msg-Id is the same event
        if message_id in known:
            continue
        known.add(message_id)
        fields = {
            "subject": delivery.subject,
            "message_id": message_id,
            "correlation_id": delivery.correlation_id,
            "stream": delivery.stream,
            "stream_sequence": delivery.stream_sequence,
            "body": delivery.data.decode(errors="replace"),
            "headers": dict(delivery.headers),
        }
        digest = entry_hash(previous_hash=previous, **fields)
        entries.append(AuditEntry(previous_hash=previous, hash=digest, **fields))
        previous = digest
    return AuditEntry.objects.bulk_create(entries)
