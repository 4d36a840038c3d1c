import os
import threading
import time

from apps.eventbus.consuming.delivery import Delivery
from apps.eventbus.errors import PermanentError, RetryableError
from apps.eventbus.registry import batch_handler

from .events import SomethingHappened, SomethingHappenedV2
from .models import Effect, Switch


def _record(consumer: str, event, value) -> None:
    Effect.objects.create(consumer=consumer, message_id=event.message_id, subject=event.subject, value=value)


def on_happened(event: SomethingHappened) -> None:
    if event.mode == "die":
        os._exit(137)  # the process dies mid-batch, before anything commits
    if event.mode == "slow":
        time.sleep(0.02)
    if event.mode == "long":
        time.sleep(5)  # longer than the consumer's ack_wait (3 s)
    _record("testing", event, event.value)  # effects first: a failure must roll them back
    if event.mode == "permanent":
        raise PermanentError("value refused by a business rule")
    if event.mode == "retry":
        raise RetryableError("dependency unavailable")
    if event.mode == "fail":
        raise RuntimeError("handler bug")
    if event.mode == "strict" and Switch.objects.filter(name="reject", on=True).exists():
        raise PermanentError("rejected while the reject switch is on")


def on_happened_v2(event: SomethingHappenedV2) -> None:
    _record("testing", event, event.amount)


def on_happened_other(event: SomethingHappened) -> None:
    _record("testing-other", event, event.value)


def on_any_raw(delivery: Delivery) -> None:
    Effect.objects.create(
        consumer="testing-raw", message_id=delivery.ledger_key, subject=delivery.subject, value=len(delivery.data)
    )


class PrepareProbe:
    """What the prepare step of ``on_happened_prepared`` saw: calls, and the most at once."""

    lock = threading.Lock()
    calls: list[list[int]] = []
    running = most = 0

    @classmethod
    def reset(cls) -> None:
        with cls.lock:
            cls.calls, cls.running, cls.most = [], 0, 0


def prepare_happened(events: list[SomethingHappened]) -> dict[str, int]:
    """Slow I/O before the transaction; refuses the batch holding a ``permanent`` event."""
    with PrepareProbe.lock:
        PrepareProbe.calls.append([event.value for event in events])
        PrepareProbe.running += 1
        PrepareProbe.most = max(PrepareProbe.most, PrepareProbe.running)
    try:
        time.sleep(0.3)
        if any(event.mode == "permanent" for event in events):
            raise PermanentError("prepare refused this event")
        return {event.message_id: event.value * 10 for event in events}
    finally:
        with PrepareProbe.lock:
            PrepareProbe.running -= 1


@batch_handler(prepare=prepare_happened)
def on_happened_prepared(events: list[SomethingHappened], prepared: dict[str, int]) -> None:
    for event in events:
        _record("testing-prepared", event, prepared[event.message_id])
