"""The hash chain: what an entry's hash covers, and checking a whole log."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

GENESIS = "0" * 64


def entry_hash(*, previous_hash: str, subject: str, message_id: str, correlation_id: str, stream: str,
               stream_sequence: int, body: str, headers: dict) -> str:  # fmt: skip
    content = json.dumps(
        {
            "previous": previous_hash,
            "subject": subject,
            "message_id": message_id,
            "correlation_id": correlation_id,
            "stream": stream,
            "stream_sequence": stream_sequence,
            "body": body,
            "headers": headers,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(content.encode()).hexdigest()


@dataclass(frozen=True)
class Break:
    entry_id: int
    reason: str


def verify(entries: Iterable) -> tuple[int, Break | None]:
    """Walk entries in id order; return how many were checked and the first break, if any."""
    previous, checked = GENESIS, 0
    for entry in entries:
        if entry.previous_hash != previous:
            return checked, Break(
                entry.id, f"links to {entry.previous_hash[:12]}…, the entry before is {previous[:12]}…"
            )
        expected = entry_hash(
            previous_hash=entry.previous_hash, subject=entry.subject, message_id=entry.message_id,
            correlation_id=entry.correlation_id, stream=entry.stream, stream_sequence=entry.stream_sequence,
            body=entry.body, headers=entry.headers,
        )  # fmt: skip
        if expected != entry.hash:
            return checked, Break(entry.id, "its content does not match its hash (edited)")
        previous, checked = entry.hash, checked + 1
    return checked, None
