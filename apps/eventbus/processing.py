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
    """A handler raised on the fast path: redo the batch with one savepoint per message."""


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
        """One outcome per delivery, in order. Effects of handled messages are committed."""
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
        if ready:
            try:
                try:
                    outcomes.update(self._transaction(deliveries, ready, isolate=False))
                except _HandlerFailed:
                    outcomes.update(self._transaction(deliveries, ready, isolate=True))
            except DATABASE_UNAVAILABLE as exc:
                logger.warning("database unavailable, %d message(s) will be retried: %s", len(ready), exc)
                _reset_connection()
                for index in ready:
                    outcomes[index] = Outcome("retry", exc, delay=DATABASE_RETRY_DELAY)
        return [outcomes[index] for index in range(len(deliveries))]

    def _transaction(self, deliveries: list[Delivery], ready: list[int], *, isolate: bool) -> dict[int, Outcome]:
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
                entry = ProcessedMessage(consumer=consumer, message_id=delivery.message_id, subject=delivery.subject)
                if isolate:
                    outcome = self._isolated(delivery, entry)
                else:
                    self._run(delivery)
                    ledger.append(entry)
                    outcome = Outcome.handled()
                results[index] = outcome
            if ledger:
                try:
                    with transaction.atomic():
                        ProcessedMessage.objects.bulk_create(ledger)
                except IntegrityError as exc:  # another replica committed one of them meanwhile
                    raise _HandlerFailed from exc
        return results

    def _isolated(self, delivery: Delivery, entry: ProcessedMessage) -> Outcome:
        try:
            with transaction.atomic():
                entry.save(force_insert=True)  # a concurrent duplicate fails here, before any effect
                self._run(delivery)
        except _HandlerFailed as failed:
            return classify(failed.__cause__)
        except IntegrityError as exc:
            if "ledger_once_per_consumer" in str(exc):
                return Outcome.duplicate()
            return classify(exc)
        return Outcome.handled()

    def _run(self, delivery: Delivery) -> None:
        """Call the handler; a handler's failure surfaces as _HandlerFailed, a database outage as itself."""
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
                metrics.PROCESSING_ERRORS.labels(self.spec.name, type(exc).__name__).inc()
                raise _HandlerFailed from exc
            finally:
                metrics.PROCESSING_DURATION.labels(self.spec.name).observe(time.perf_counter() - started)


def _reset_connection() -> None:
    from django.db import connection

    try:
        connection.close()
    except DATABASE_UNAVAILABLE:
        connection.connection = None
