"""The safety net: a message whose last delivery died with its process is dead-lettered from the
server's MAX_DELIVERIES advisory.

The advisories are core NATS messages, kept in the ``ADVISORIES`` stream so none is lost while
no replica of the consumer concerned runs; each consumer reads its own through a durable its
replicas share. The dead letter it publishes has the identity (consumer, stream, sequence)
and broker id the runner would give it: one failure reported by both paths is one row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import BadRequestError, NotFoundError

from apps.eventbus.bounds import clean_text
from apps.eventbus.consuming.delivery import Delivery
from apps.eventbus.deadletters.sending import DeadLetterSender
from apps.eventbus.jetstream.connection import FETCH_TRANSIENT, FETCH_WAIT, exit_if_closed
from apps.eventbus.jetstream.provisioning import advisory_consumer_config, advisory_durable
from apps.eventbus.registry import ADVISORY_STREAM

logger = logging.getLogger(__name__)


class MaxDeliveriesExceeded(Exception):
    """The server gave up on a message (its last delivery was never acknowledged)."""


class MaxDeliveriesWatcher:
    """Dead-letters what the server gave up on for ``consumer`` in ``streams``."""

    def __init__(self, consumer: str, streams: set[str], max_deliver: int, client, js, sender: DeadLetterSender):
        self.consumer, self.streams, self.max_deliver = consumer, streams, max_deliver
        self.client, self.js, self.sender = client, js, sender

    async def watch(self, stop) -> None:
        """Dead-letter what the advisories name until ``stop`` is set (:meth:`subscribe` first)."""
        while not stop.is_set():
            try:
                advisories = await self.subscription.fetch(10, timeout=FETCH_WAIT)
            except (NatsTimeoutError, TimeoutError):
                continue
            except FETCH_TRANSIENT:
                exit_if_closed(self.client, f"consumer {self.consumer}")
                await asyncio.sleep(0.5)
                continue
            for advisory in advisories:
                with contextlib.suppress(Exception):
                    if await self.on_advisory(advisory):
                        await advisory.ack()
                    else:
                        await advisory.nak(delay=5)

    async def subscribe(self, *, provision: bool = True) -> None:
        """Bind a durable (shared by this consumer's replicas) on the advisories of this consumer
        only; created or updated first unless ``provision`` is off (``nats_setup`` made it)."""
        name = advisory_durable(self.consumer)
        if provision:
            await self.js.add_consumer(ADVISORY_STREAM, advisory_consumer_config(self.consumer))
        self.subscription = await self.js.pull_subscribe_bind(durable=name, stream=ADVISORY_STREAM)

    async def on_advisory(self, advisory) -> bool:
        """Dead-letter the message an advisory names. True when done with the advisory."""
        try:
            body = json.loads(advisory.data)
            stream, sequence = body["stream"], int(body["stream_seq"])
            deliveries = int(body.get("deliveries", self.max_deliver))
            if not isinstance(stream, str) or stream not in self.streams or sequence < 1:
                raise ValueError(f"not a message of this consumer's streams: {str(stream)[:100]!r} #{sequence}")
            stored = await self.js.get_msg(stream, sequence)
        except (ValueError, KeyError, TypeError, RecursionError, NotFoundError, BadRequestError) as exc:
            logger.error("consumer %s: unusable MAX_DELIVERIES advisory: %s", self.consumer, clean_text(exc, 500))
            return True  # nothing to retry: the message is gone or the advisory is malformed
        delivery = Delivery(
            stream=stream,
            delivery_subject=stored.subject,
            data=stored.data or b"",
            headers=dict(stored.headers or {}),
            stream_sequence=sequence,
            num_delivered=deliveries,
        )
        error = MaxDeliveriesExceeded(
            f"no acknowledgement after {delivery.num_delivered} deliveries (the process handling the last one "
            "may have died); reported by the server's MAX_DELIVERIES advisory"
        )
        try:
            await self.sender.send(delivery, error)
        except Exception as exc:  # noqa: BLE001 - retried: the advisory stays in its stream
            logger.error("consumer %s: could not dead-letter seq %s: %s", self.consumer, sequence, exc)
            return False
        delivery.log(logger, logging.ERROR, "dead-lettered", self.consumer, error)
        return True
