"""The dead-letter message format: what the runner publishes to ``dlq.<consumer>``.

Body: the original message body, untouched. Headers: the original ones (JSON, in
``Eventbus-Original-Headers``) and where and why it failed. NATS headers cannot hold a
line break, so multi-line texts are JSON-encoded.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from .delivery import H_MSG_ID, Delivery, Outcome
from .registry import DLQ_PREFIX

H_CONSUMER = "Eventbus-Consumer"
H_STREAM = "Eventbus-Stream"
H_SUBJECT = "Eventbus-Subject"
H_SEQUENCE = "Eventbus-Sequence"
H_ATTEMPTS = "Eventbus-Attempts"
H_ERROR_TYPE = "Eventbus-Error-Type"
H_ERROR = "Eventbus-Error"
H_TRACEBACK = "Eventbus-Traceback"
H_FAILED_AT = "Eventbus-Failed-At"
H_ORIGINAL_MESSAGE_ID = "Eventbus-Original-Message-Id"
H_ORIGINAL_HEADERS = "Eventbus-Original-Headers"
# A reprocessed message that failed again (not Eventbus-Dead-Letter-Id: that one asks the
# runner to resolve the row, which the dead-letters consumer must not do).
H_REPROCESSED_DEAD_LETTER_ID = "Eventbus-Reprocessed-Dead-Letter-Id"

MAX_ERROR = 2000
MAX_TRACEBACK = 16000


def dlq_subject(consumer: str) -> str:
    return f"{DLQ_PREFIX}.{consumer}"


def dlq_msg_id(consumer: str, stream: str, sequence: int) -> str:
    """One dead letter per consumer and stream message, even if two paths report it."""
    return f"dlq:{consumer}:{stream}:{sequence}"


def dead_letter_headers(consumer: str, delivery: Delivery, outcome: Outcome) -> dict[str, str]:
    error = outcome.error
    error_type = type(error).__name__ if error is not None else "Unknown"
    text = " ".join(str(error).split()) if error is not None else ""
    headers = {
        H_MSG_ID: dlq_msg_id(consumer, delivery.stream, delivery.stream_sequence),
        H_CONSUMER: consumer,
        H_STREAM: delivery.stream,
        H_SUBJECT: delivery.subject,
        H_SEQUENCE: str(delivery.stream_sequence),
        H_ATTEMPTS: str(delivery.num_delivered),
        H_ERROR_TYPE: error_type,
        H_ERROR: text[:MAX_ERROR] or error_type,
        H_FAILED_AT: datetime.now(UTC).isoformat(),
        H_ORIGINAL_MESSAGE_ID: delivery.message_id,
        H_ORIGINAL_HEADERS: json.dumps(delivery.headers),
        "Content-Type": delivery.headers.get("Content-Type", "application/octet-stream"),
    }
    if outcome.traceback:
        headers[H_TRACEBACK] = json.dumps(outcome.traceback[-MAX_TRACEBACK:])
    if delivery.dead_letter_id:
        headers[H_REPROCESSED_DEAD_LETTER_ID] = str(delivery.dead_letter_id)
    return headers
