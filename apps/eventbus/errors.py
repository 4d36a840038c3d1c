"""What a handler may raise, and what the backbone takes for a database outage. The settlement
table (``consuming/settlement.py``) maps each to what happens to the message; handlers never
touch NATS."""

import psycopg
from django.db import InterfaceError, OperationalError

# Django's wrappers, and psycopg's own for code that works on the raw cursor (a COPY).
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)


class PermanentError(Exception):
    """Retrying cannot help (a business rule refuses the event): dead-letter it at once."""


class RetryableError(Exception):
    """A dependency is unavailable; try again later. ``delay`` overrides the back-off schedule."""

    def __init__(self, message: str = "", *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class DependencyDown(RetryableError):
    """A dependency every message needs is down (a circuit breaker opened): the runner keeps
    the batch in hand (in progress on the server: no delivery is spent), pauses its JetStream
    consumer server-side for ``pause`` seconds so its other replicas stop too, and then
    handles the batch again: its first messages probe the dependency."""

    def __init__(self, message: str = "", *, pause: float) -> None:
        super().__init__(message, delay=pause)
        self.pause = pause
