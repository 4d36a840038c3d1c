"""Builders of test rows that several test folders use, each through the service that writes
such a row in production. The fixtures that hand them out (``order``, ``operator``, ...) are in
the root ``conftest.py``."""

from __future__ import annotations

import itertools
import json

from django.utils import timezone

from apps.eventbus.deadletters.services import dead_letter_record
from apps.eventbus.models import DeadLetter
from tests.testapp.events import SomethingHappened

TRACEBACK = 'Traceback (most recent call last):\n  File "handlers.py", line 1\nPermanentError: refused'

_sequence = itertools.count(1)


def make_dead_letter(
    sequence: int | None = None,
    *,
    consumer: str = "testing",
    value: int | str = 1,
    correlation_id: str | None = None,
    data: str | None = None,
    error_type: str = "PermanentError",
    error: str = "value refused by a business rule",
    traceback: str | None = TRACEBACK,
    **recorded,
) -> DeadLetter:
    """A dead letter as the dead-letters consumer records it (through its service).

    By default a ``testing.happened.v1`` event on TESTING (``value``, ``correlation_id``) that
    ``consumer``'s handler refused: its JSON body and headers, the error and its traceback, at
    the next stream sequence. ``sequence`` sets the stream sequence and ``data`` the body as it
    is; ``recorded`` sets any other column ``dead_letter_record`` takes (``stream``,
    ``subject``, ``message_id``, ``headers``, ``attempts``, ``failed_at``), for a message of
    another stream or subject."""
    event = SomethingHappened(value=1, correlation_id=correlation_id)
    fields = {
        "stream": "TESTING",
        "subject": "testing.happened.v1",
        "message_id": event.message_id,
        "headers": {"Content-Type": "application/json", "Nats-Msg-Id": event.message_id},
        "attempts": 1,
        "failed_at": timezone.now(),
        **recorded,
    }
    return dead_letter_record(
        consumer=consumer,
        stream_sequence=next(_sequence) if sequence is None else sequence,
        correlation_id=correlation_id or "",
        data=data if data is not None else json.dumps({**event.model_dump(mode="json"), "value": value}),
        error_type=error_type,
        error=error,
        traceback=traceback or "",
        **fields,
    )
