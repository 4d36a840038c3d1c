"""Publishing a dead letter: the runner's last word on a message it gives up on."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

from apps.eventbus import metrics
from apps.eventbus.consuming.delivery import Delivery
from apps.eventbus.deadletters.codec import DeadLetterHeaders, dlq_subject, fit_dead_letter
from apps.eventbus.deadletters.services import dead_letter_park_body
from apps.eventbus.registry import DLQ_STREAM


class DeadLetterSender:
    """Publishes ``consumer``'s dead letters to ``dlq.<consumer>``; ``executor`` is the thread
    whose Django connection keeps a body that cannot travel (see :meth:`send`)."""

    def __init__(self, consumer: str, client, js, executor: Executor) -> None:
        self.consumer, self.client, self.js, self.executor = consumer, client, js, executor
        self.sent = metrics.DEAD_LETTERS.labels(consumer)

    async def send(self, delivery: Delivery, error: BaseException | None, traceback: str = "") -> None:
        """Publish the dead letter of ``delivery`` and wait for the DLQ stream to store it.

        Never more than the connected server's max_payload (headers count too, and the server
        closes the connection on a larger message): the headers are shrunk first, and a body
        that still cannot travel is kept whole in the database (DeadLetterBody) before the
        dead letter goes without it (see ``fit_dead_letter``).
        """
        written = DeadLetterHeaders.of(self.consumer, delivery, error, traceback).encode()
        fitted = fit_dead_letter(written, delivery.data, self.client.max_payload)
        if fitted.parked:
            await asyncio.get_running_loop().run_in_executor(
                self.executor,
                lambda: dead_letter_park_body(
                    consumer=self.consumer,
                    stream=delivery.stream,
                    stream_sequence=delivery.stream_sequence,
                    body=delivery.data,
                ),
            )
        await self.js.publish(dlq_subject(self.consumer), fitted.body, headers=fitted.headers, stream=DLQ_STREAM)
        self.sent.inc()
