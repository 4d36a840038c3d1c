"""The event backbone's knobs: stream sizing, consumer delivery policy, outbox and ledger retention."""

from .env import env_bool, env_int

EVENTBUS = {
    # Streams: R1 in development, R3 on a production cluster.
    "STREAM_REPLICAS": env_int("EVENTBUS_STREAM_REPLICAS", 1, minimum=1, maximum=5),
    "STREAM_MAX_AGE_DAYS": env_int("EVENTBUS_STREAM_MAX_AGE_DAYS", 30, minimum=1),
    "STREAM_MAX_BYTES": env_int("EVENTBUS_STREAM_MAX_BYTES", -1, minimum=-1),
    # Must exceed the longest time a relay can take to retry a publish after a crash.
    "DUPLICATE_WINDOW_SECONDS": env_int("EVENTBUS_DUPLICATE_WINDOW_SECONDS", 600, minimum=10),
    # The relay and each runner create/update their streams and durables at start. Off where
    # NATS is secured (docker/nats/auth.conf): only the admin user may, through the init job's
    # `nats_setup`; a runner then only checks that its durables exist.
    "PROVISION_AT_START": env_bool("EVENTBUS_PROVISION_AT_START", True),
    "DLQ_MAX_AGE_DAYS": env_int("EVENTBUS_DLQ_MAX_AGE_DAYS", 365, minimum=1),
    # The servers' max_payload (headers and body): operator actions that would publish more are refused.
    "MAX_PAYLOAD": env_int("EVENTBUS_MAX_PAYLOAD", 1024 * 1024, minimum=1024),
    # Consumers (each declaration may override).
    "ACK_WAIT": env_int("EVENTBUS_ACK_WAIT_SECONDS", 30, minimum=1),
    "MAX_DELIVER": env_int("EVENTBUS_MAX_DELIVER", 5, minimum=1),
    "MAX_ACK_PENDING": env_int("EVENTBUS_MAX_ACK_PENDING", 1000, minimum=1),
    "BATCH_SIZE": env_int("EVENTBUS_BATCH_SIZE", 100, minimum=1, maximum=10_000),
    # Outbox relay and housekeeping.
    "RELAY_BATCH_SIZE": env_int("EVENTBUS_RELAY_BATCH_SIZE", 1000, minimum=1, maximum=10_000),
    "RELAY_POLL_SECONDS": env_int("EVENTBUS_RELAY_POLL_MS", 1000, minimum=10) / 1000,
    "OUTBOX_RETENTION_DAYS": env_int("EVENTBUS_OUTBOX_RETENTION_DAYS", 7, minimum=0),
    "LEDGER_RETENTION_DAYS": env_int("EVENTBUS_LEDGER_RETENTION_DAYS", 30, minimum=1),
    # /healthz of runrelay and runconsumer (--metrics-port): 503 once the work loop has completed
    # no fetch/round, or NATS has answered nothing, for this long (alive but deaf). At least
    # twice the 5 s polls that hear NATS while there is nothing to fetch or publish.
    "HEALTH_STALE_SECONDS": env_int("EVENTBUS_HEALTH_STALE_SECONDS", 60, minimum=10),
}
