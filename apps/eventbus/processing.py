"""The synchronous half of the runner: a batch of deliveries through the handlers, in one
database transaction when it can be, with the idempotency ledger written alongside.

Runs in the runner's worker thread with ordinary Django code; never touches NATS.
"""

from __future__ import annotations

import logging
import time
import traceback

from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import metrics
from .contracts import ContractError
from .delivery import Delivery, Outcome
from .errors import PermanentError, RetryableError
from .models import ProcessedMessage
from .registry import ConsumerSpec
from .services import dead_letter_mark_resolved
from .tracing import context_from, tracer

logger = logging.getLogger(__name__)

DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
DATABASE_RETRY_DELAY = 5.0


class _HandlerFailed(Exception):
    """The handler of delivery ``index`` raised: the batch's transaction is rolled back."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


class _LedgerConflict(Exception):
    """Another replica recorded one of the batch's messages meanwhile: run the batch again."""


def classify(exc: BaseException) -> Outcome:
    text = "".join(traceback.format_exception(exc)).strip()
    if isinstance(exc, PermanentError | ContractError):
        return Outcome("dead_letter", exc, traceback=text)
    if isinstance(exc, RetryableError):
        return Outcome("retry", exc, delay=exc.delay, traceback=text)
    return Outcome("retry", exc, traceback=text)  # unknown: may heal; dead-lettered after max_deliver


class BatchProcessor:
    def __init__(self, spec: ConsumerSpec) -> None:
        self.spec = spec

    def process(self, deliveries: list[Delivery]) -> list[Outcome]:
        """One outcome per delivery, in order. Effects of handled messages are committed.

        The whole batch runs in one transaction. When a handler fails, the transaction is
        rolled back and the batch runs again without that message, which keeps its failure:
        the good messages commit, the bad one is retried or dead-lettered, and no failing
        handler runs twice for one delivery.
        """
        outcomes: dict[int, Outcome] = {}
        ready: list[int] = []
        for index, delivery in enumerate(deliveries):
            if delivery.error is not None:
                outcomes[index] = Outcome("dead_letter", delivery.error)
            elif self.spec.handler_for(delivery.subject) is None:
                error = ContractError(f"consumer {self.spec.name} has no handler for {delivery.subject}")
                outcomes[index] = Outcome("dead_letter", error)
            else:
                ready.append(index)
        conflicts = 0
        while ready:
            try:
                outcomes.update(self._transaction(deliveries, ready))
                break
            except _HandlerFailed as failed:
                cause = failed.__cause__
                metrics.PROCESSING_ERRORS.labels(self.spec.name, type(cause).__name__).inc()
                outcomes[failed.index] = classify(cause)
                ready.remove(failed.index)
            except _LedgerConflict:
                conflicts += 1
                if conflicts > 3:
                    raise
            except DATABASE_UNAVAILABLE as exc:
                logger.warning("database unavailable, %d message(s) will be retried: %s", len(ready), exc)
                _reset_connection()
                for index in ready:
                    outcomes[index] = Outcome("retry", exc, delay=DATABASE_RETRY_DELAY)
                break
        return [outcomes[index] for index in range(len(deliveries))]

    def _transaction(self, deliveries: list[Delivery], ready: list[int]) -> dict[int, Outcome]:
        results: dict[int, Outcome] = {}
        consumer = self.spec.name
        with transaction.atomic():
            ids = {deliveries[index].message_id for index in ready}
            seen = set(
                ProcessedMessage.objects.filter(consumer=consumer, message_id__in=ids).values_list(
                    "message_id", flat=True
                )
            )
            ledger: list[ProcessedMessage] = []
            for index in ready:
                delivery = deliveries[index]
                if delivery.message_id in seen:
                    if delivery.dead_letter_id:
                        dead_letter_mark_resolved(dead_letter_id=delivery.dead_letter_id, note="already handled")
                    results[index] = Outcome.duplicate()
                    continue
                seen.add(delivery.message_id)
                self._run(index, delivery)
                ledger.append(
                    ProcessedMessage(consumer=consumer, message_id=delivery.message_id, subject=delivery.subject)
                )
                results[index] = Outcome.handled()
            if ledger:
                try:
                    with transaction.atomic():
                        ProcessedMessage.objects.bulk_create(ledger)
                except IntegrityError as exc:
                    raise _LedgerConflict from exc
        return results

    def _run(self, index: int, delivery: Delivery) -> None:
        """Call the handler; its failure surfaces as _HandlerFailed, a database outage as itself."""
        handler = self.spec.handler_for(delivery.subject)
        started = time.perf_counter()
        span_name = f"{self.spec.name} process {delivery.subject}"
        with tracer().start_as_current_span(
            span_name, context=context_from(delivery.headers), kind=SpanKind.CONSUMER
        ) as span:
            span.set_attribute("messaging.system", "nats")
            span.set_attribute("messaging.destination.name", delivery.subject)
            span.set_attribute("messaging.message.id", delivery.message_id)
            try:
                handler(delivery if self.spec.raw else delivery.event)
                if delivery.dead_letter_id:
                    dead_letter_mark_resolved(dead_letter_id=delivery.dead_letter_id, note="reprocessed")
            except DATABASE_UNAVAILABLE:
                raise
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise _HandlerFailed(index) from exc
            finally:
                metrics.PROCESSING_DURATION.labels(self.spec.name).observe(time.perf_counter() - started)


def _reset_connection() -> None:
    from django.db import connection

    try:
        connection.close()
    except DATABASE_UNAVAILABLE:
        connection.connection = None
