"""Every header the eventbus writes or reads, in one place.

Three ids travel with a message, each named for what it is:

- the **broker's id**, ``Nats-Msg-Id``: JetStream drops a second publish with the same id
  inside the stream's duplicate window (the relay sets it to the event's id; a dead letter's
  is ``dlq:<consumer>:<stream>:<sequence>``, so two reports of one failure are one message);
- the **event's own id**, ``message_id`` in the body (the envelope, see ``contracts.Event``);
- the **ledger key**, what the idempotency ledger (``ProcessedMessage``) and a dead letter
  are keyed on: the event's id, or, for a message that is not a valid event, the broker's id
  or the stream position (see ``consuming.delivery.Delivery.ledger_key``). A redelivery and
  a dead letter carry the ledger key of the message they stand for.

Wire names are kept as they were first published (messages already in streams carry them):
that is why the ledger-key headers say ``Message-Id``.
"""

# -- set by the broker's protocol, read or written by the eventbus ---------------------------
NATS_MSG_ID = "Nats-Msg-Id"  # the broker's id: de-duplication inside the duplicate window
NATS_EXPECTED_STREAM = "Nats-Expected-Stream"  # JetStream refuses a publish another stream would capture

# -- every event the outbox publishes ----------------------------------------------------------
CONTENT_TYPE = "Content-Type"
EVENT_TYPE = "Event-Type"  # the subject without its version: orders.created
# W3C trace context (written and read by OpenTelemetry's propagator, see tracing.py):
# ``traceparent``, ``tracestate``.

# -- an outbox event republished by the reconciliation (producing/reconciliation.py) --------
RECONCILED_ID = "Eventbus-Reconciled-Id"  # the event's broker id, on a copy republished without Nats-Msg-Id

# -- a redelivery: one dead letter delivered again to the one consumer that failed it --------
ORIGINAL_SUBJECT = "Eventbus-Original-Subject"  # the contract subject (it travels on redeliver.<STREAM>.<consumer>)
LEDGER_KEY = "Eventbus-Message-Id"  # the ledger key of the message that failed
DEAD_LETTER_ID = "Eventbus-Dead-Letter-Id"  # the row the runner marks resolved once it is handled

# -- a dead letter (dlq.<consumer>): where and why a message failed; the body is the original --
DL_CONSUMER = "Eventbus-Consumer"
DL_STREAM = "Eventbus-Stream"
DL_SUBJECT = "Eventbus-Subject"
DL_SEQUENCE = "Eventbus-Sequence"
DL_ATTEMPTS = "Eventbus-Attempts"
DL_ERROR_TYPE = "Eventbus-Error-Type"
DL_ERROR = "Eventbus-Error"
DL_TRACEBACK = "Eventbus-Traceback"  # JSON-encoded: a header holds no line break
DL_FAILED_AT = "Eventbus-Failed-At"
DL_LEDGER_KEY = "Eventbus-Original-Message-Id"  # the failed message's ledger key
DL_ORIGINAL_HEADERS = "Eventbus-Original-Headers"  # JSON object
# A reprocessed message that failed again (not DEAD_LETTER_ID: that one asks the runner to
# resolve the row, which the dead-letters consumer must not do).
DL_REPROCESSED_DEAD_LETTER_ID = "Eventbus-Reprocessed-Dead-Letter-Id"
# The body (this many bytes) could not travel again with the headers: the runner kept it in the
# database (DeadLetterBody) and the dead letter travels with an empty body.
DL_BODY_PARKED = "Eventbus-Body-Parked"
# Set inside the original headers when some were left out to fit.
TRUNCATED = "Eventbus-Truncated"

# Prefixes of headers that make JetStream act (Nats-Expected-*, Nats-Rollup, Nats-TTL,
# Nats-Schedule*, Nats-Msg-Id...) or that the eventbus sets itself: never copied from a
# stored message onto a re-published one.
CONTROL_PREFIXES = ("nats-", "eventbus-")
