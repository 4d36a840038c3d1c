"""Reads of the audit log."""

from __future__ import annotations

import json
from datetime import datetime

from apps.eventbus.bounds import truncate

from .models import AuditEntry

# An event's payload is a flat object (contracts nest lines one level down); a body nested deeper
# than this came from a hostile producer and is shown as text: parsing or rendering it would
# exhaust the stack of the request that shows it.
MAX_PAYLOAD_DEPTH = 32
MAX_BODY_SHOWN = 4000


def order_timeline(order_id: str) -> list[dict]:
    """Every event recorded for an order (its correlation id), in the order they occurred
    (the envelope's ``occurred_at``; the log receives the streams' events interleaved)."""
    timeline = []
    for entry in AuditEntry.objects.filter(correlation_id=order_id).order_by("id"):
        payload = _payload(entry.body)
        timeline.append(
            {
                "subject": entry.subject,
                "message_id": entry.message_id,
                "stream": entry.stream,
                "stream_sequence": entry.stream_sequence,
                "received_at": entry.received_at,
                "occurred_at": _occurred_at(payload) or entry.received_at,
                "payload": payload,  # None: not JSON, or nested too deep (see ``body``)
                "body": truncate(entry.body, MAX_BODY_SHOWN) if payload is None else None,
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


def _payload(body: str):
    """The body as JSON, or None: not JSON, or nested deeper than ``MAX_PAYLOAD_DEPTH`` (too deep
    for ``json`` itself: its ``RecursionError``, as everywhere a body from outside is parsed)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    level, depth = [payload], 0
    while level:  # breadth first, no recursion
        level = [child for node in level if isinstance(node, dict | list) for child in _children(node)]
        depth += 1
        if depth > MAX_PAYLOAD_DEPTH:
            return None
    return payload


def _children(node: dict | list):
    return node.values() if isinstance(node, dict) else node
