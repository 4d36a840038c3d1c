"""Prometheus metrics of the relay and the consumer runner, and the liveness behind ``/healthz``.

Every long-running process serves its metrics on a port of its own (``--metrics-port``:
``GET /metrics`` and ``GET /healthz``, see ``management/process.py``); the web process
serves django-prometheus's at ``/metrics``. What the platform exports, who sets it, and
what an operator does about it (the alert rules and the dashboard are in
``docker/observability/``; ``tests/observability`` checks every expression there against
this list):

=================================================  ==========================  ==================================
metric (labels)                                    set by                      act on it
=================================================  ==========================  ==================================
nats_messages_published_total {subject}            relay, per acked publish    throughput
eventbus_outbox_backlog                            relay, polled (5 s)         rows waiting to be published
eventbus_outbox_oldest_unsent_age_seconds          relay, polled (5 s)         alert OutboxTooOld: relay or NATS down
eventbus_outbox_refused_total                      relay                       rows set aside: see the cockpit
eventbus_relay_last_round_timestamp_seconds        relay, each round           alert RelayNotRelaying
nats_stream_messages {stream}                      relay, stream info (5 s)    stream depth (DLQ growing, retention)
nats_stream_bytes {stream}                         relay, stream info (5 s)    stream size against max_bytes
nats_messages_consumed_total {consumer,subject,    consumer runner, per        throughput; error rate
  outcome}                                           settled message
order_processing_duration_seconds {consumer}       consumer runner             per-consumer handling latency
order_processing_errors_total {consumer,           consumer runner             handler failures by exception type
  error_type}
dead_letters_total {consumer}                      consumer runner, advisory   alert DeadLettersGrowing
                                                     watcher
nats_consumer_pending_messages {consumer}          consumer runner, consumer   alert ConsumerPendingGrowing; the
                                                     info (5 s)                  scaling signal (HPA/KEDA)
nats_consumer_pauses_total {consumer}              consumer runner             a dependency was down
eventbus_consumer_waiting_for_dependency           consumer runner             1 while holding messages for the DB
  {consumer,dependency}
eventbus_consumer_last_fetch_timestamp_seconds     consumer runner, each       alert ConsumerNotFetching
  {consumer}                                         fetch (and at start)
order_saga_duration_seconds {outcome}              orders consumer             saga latency, placed -> decided
                                                     (apps/orders/services.py)
orders_ended_by_dead_letter_total {step}           saga-failures consumer      orders cancelled by a dead letter
orders_unknown_order_outcomes_total {subject}      orders consumer             outcomes for orders never created here
orders_stuck                                       orders consumer, polled     alert OrdersStuck
                                                     (apps/orders/monitoring.py)
orders_stuck_waiting {waiting_on}                  orders consumer, polled     which step the stuck orders wait on;
                                                                                 why: the Stuck orders admin page
orders_pending_oldest_age_seconds                  orders consumer, polled     age of the oldest PENDING order
payment_gateway_circuit_open                       payments consumer           alert PaymentGatewayCircuitOpen
                                                     (apps/payments/gateway.py)
payment_gateway_circuit_openings_total             payments consumer           how often the provider failed us
orders_platform_django_http_*                      web (django-prometheus)     per-view latency, 5xx rate
eventbus_reconcile_last_run_checked                web, read from the last     rows looked up (the cockpit's
                                                     ReconciliationRun when      Reconciliation runs page)
                                                     scraped
eventbus_reconcile_last_run_missing                web, the same               alert StreamLostAcknowledgedEvents
eventbus_reconcile_last_run_republished            web, the same               lost events published again
eventbus_reconcile_last_run_failed                 web, the same               rows it could not look up or republish
eventbus_reconcile_last_run_succeeded              web, the same               0: the last run failed (NATS)
eventbus_reconcile_last_run_timestamp_seconds      web, the same               when the last run ended
eventbus_reconcile_last_success_timestamp_seconds  web, the same               alert ReconciliationNotRunning
=================================================  ==========================  ==================================

Where a gauge describes something shared (a stream, a durable consumer, the outbox, the
orders table), every replica of the process that sets it reports the same value: aggregate
with ``max``, never ``sum``. The Celery worker and beat serve no metrics (see
``docker/observability/README.md``).
"""

from __future__ import annotations

import contextlib
import time

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_PUBLISHED = Counter("nats_messages_published", "Events published to JetStream by the relay", ["subject"])
MESSAGES_CONSUMED = Counter(
    "nats_messages_consumed",
    "Messages a consumer settled, by the settlement table's verdict (handled, duplicate, retried, held, "
    "dead_lettered; see consuming/settlement.py)",
    ["consumer", "subject", "outcome"],
)
PROCESSING_DURATION = Histogram(
    "order_processing_duration_seconds",
    "Time a handler took for one message, inside its batch transaction",
    ["consumer"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PROCESSING_ERRORS = Counter("order_processing_errors", "Handler failures", ["consumer", "error_type"])
DEAD_LETTERS = Counter("dead_letters", "Messages sent to the dead-letter stream", ["consumer"])
CONSUMER_PENDING = Gauge(
    "nats_consumer_pending_messages",
    "Messages waiting for a consumer plus those delivered and not yet acknowledged (the scaling signal); "
    "polled from the server's consumer info, left as it was while the server does not answer",
    ["consumer"],
)
OUTBOX_BACKLOG = Gauge("eventbus_outbox_backlog", "Outbox rows not yet published (polled by the relay)")
OUTBOX_REFUSED = Counter(
    "eventbus_outbox_refused", "Outbox rows JetStream can never accept as they are, set aside for an operator"
)
OUTBOX_OLDEST_AGE = Gauge(
    "eventbus_outbox_oldest_unsent_age_seconds", "Age of the oldest unpublished outbox row (polled by the relay)"
)
RELAY_LAST_ROUND = Gauge(
    "eventbus_relay_last_round_timestamp_seconds",
    "When the relay last completed a round (published, or found nothing to publish); its start until then",
)
STREAM_MESSAGES = Gauge(
    "nats_stream_messages",
    "Messages stored in a stream, from the server's stream info (polled by the relay)",
    ["stream"],
)
STREAM_BYTES = Gauge(
    "nats_stream_bytes", "Bytes stored in a stream, from the server's stream info (polled by the relay)", ["stream"]
)
CONSUMER_PAUSES = Counter(
    "nats_consumer_pauses", "Server-side pauses of a consumer because a dependency was down", ["consumer"]
)
CONSUMER_WAITING = Gauge(
    "eventbus_consumer_waiting_for_dependency",
    "1 while a consumer holds its messages until a dependency (the database) answers again",
    ["consumer", "dependency"],
)
CONSUMER_LAST_FETCH = Gauge(
    "eventbus_consumer_last_fetch_timestamp_seconds",
    "When the consumer last completed a fetch (messages or none); its start until the first",
    ["consumer"],
)


class Liveness:
    """Whether a long-running worker is alive and hearing its source, for ``/healthz``.

    Two clocks: **progress**, its work loop completed a fetch or a round (it is not stuck),
    and **answer**, the NATS server answered it (a fetch that brought messages, a publish
    acknowledged, a polled consumer or stream info). A process whose loop turns while the
    server stays silent (a frozen node, a half-open connection) is alive but deaf: a restart
    reconnects it, maybe to another node. While it deliberately waits for a dependency (a
    database outage, a circuit breaker's pause) it is healthy: a restart would not help.
    """

    def __init__(self, gauge: Gauge | None = None, *, clock=time.monotonic) -> None:
        self.gauge, self.clock = gauge, clock
        self.progress_at = self.answer_at = clock()  # starting counts as both: the bound is the grace
        self.waiting_for: str | None = None
        if gauge is not None:
            gauge.set_to_current_time()

    def progressed(self) -> None:
        """The work loop completed a fetch or a round."""
        self.progress_at = self.clock()
        if self.gauge is not None:
            self.gauge.set_to_current_time()

    def answered(self) -> None:
        """The server answered a request of this process."""
        self.answer_at = self.clock()

    def hold(self, dependency: str) -> None:
        """Waiting for ``dependency`` on purpose, until ``release()``."""
        self.waiting_for = dependency

    def release(self) -> None:
        self.waiting_for = None

    @contextlib.contextmanager
    def holding(self, dependency: str):
        self.hold(dependency)
        try:
            yield
        finally:
            self.release()

    def check(self, stale_after: float) -> tuple[bool, dict]:
        """``(healthy, body)``: unhealthy when either clock is older than ``stale_after`` seconds,
        unless the worker is waiting for a dependency."""
        now = self.clock()
        progress, answer = now - self.progress_at, now - self.answer_at
        body = {
            "last_progress_seconds_ago": round(progress, 3),
            "last_answer_seconds_ago": round(answer, 3),
            "stale_after_seconds": stale_after,
        }
        if (waiting := self.waiting_for) is not None:
            return True, {"status": "waiting", "waiting_for": waiting, **body}
        if progress > stale_after:
            return False, {"status": "stuck", **body}
        if answer > stale_after:
            return False, {"status": "deaf", **body}
        return True, {"status": "ok", **body}
