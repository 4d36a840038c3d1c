"""Reads of the audit log."""

from __future__ import annotations

import json
from datetime import datetime

from .models import AuditEntry


def order_timeline(order_id: str) -> list[dict]:
    """Every event recorded for an order (its correlation id), in the order they occurred
    (the envelope's ``occurred_at``; the log receives the streams' events interleaved)."""
    timeline = []
    for entry in AuditEntry.objects.filter(correlation_id=order_id).order_by("id"):
        try:
            payload = json.loads(entry.body)
        except ValueError:
            payload = None
        timeline.append(
            {
                "subject": entry.subject,
                "message_id": entry.message_id,
                "stream": entry.stream,
                "stream_sequence": entry.stream_sequence,
                "received_at": entry.received_at,
                "occurred_at": _occurred_at(payload) or entry.received_at,
                "payload": payload,
            }
        )
    return sorted(timeline, key=lambda event: event["occurred_at"])


def _occurred_at(payload) -> datetime | None:
    value = payload.get("occurred_at") if isinstance(payload, dict) else None
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None
