"""Prometheus metrics of the relay and the consumer runner (served on their own port)."""

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
    "Messages waiting for a consumer plus those delivered and not yet acknowledged (the scaling signal)",
    ["consumer"],
)
OUTBOX_BACKLOG = Gauge("eventbus_outbox_backlog", "Outbox rows not yet published")
OUTBOX_REFUSED = Counter(
    "eventbus_outbox_refused", "Outbox rows JetStream can never accept as they are, set aside for an operator"
)
OUTBOX_OLDEST_AGE = Gauge("eventbus_outbox_oldest_unsent_age_seconds", "Age of the oldest unpublished outbox row")
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
    "When the consumer last completed a fetch (messages or none): its liveness signal",
    ["consumer"],
)
