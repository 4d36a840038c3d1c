"""What a handler may raise. The runner maps each to an outcome; handlers never touch NATS."""


class PermanentError(Exception):
    """Retrying cannot help (a business rule refuses the event): dead-letter it at once."""


class RetryableError(Exception):
    """A dependency is unavailable; try again later. ``delay`` overrides the back-off schedule."""

    def __init__(self, message: str = "", *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay
