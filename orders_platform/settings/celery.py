"""Celery: Redis (or any kombu broker) from ``CELERY_BROKER_URL``; with it unset, kombu's
filesystem transport under the data folder, so development needs no broker server."""

from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from .env import env_int, env_str
from .paths import DATA_DIR

BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp", "sentinel", "filesystem")


def _filesystem_broker(root) -> tuple[str, dict, str]:
    folders = {name: root / name for name in ("queue", "processed", "control", "results")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    options = {
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        "processed_folder": str(folders["processed"]),
        "control_folder": str(folders["control"]),
        "store_processed": False,
        "polling_interval": 0.1,
    }
    return "filesystem://", options, f"file://{folders['results']}"


_broker = env_str("CELERY_BROKER_URL", f"filesystem://{DATA_DIR / 'celery'}")
_scheme = urlsplit(_broker).scheme
if _scheme not in BROKER_SCHEMES:
    raise ImproperlyConfigured(
        f"CELERY_BROKER_URL must use one of {', '.join(BROKER_SCHEMES)}:// (e.g. redis://host:6379/0); got {_broker!r}"
    )
if _scheme == "filesystem":
    _path = urlsplit(_broker).path
    if not _path.startswith("/"):
        raise ImproperlyConfigured(f"CELERY_BROKER_URL filesystem:// needs an absolute folder; got {_broker!r}")
    CELERY_BROKER_URL, CELERY_BROKER_TRANSPORT_OPTIONS, _default_backend = _filesystem_broker(Path(_path))
else:
    CELERY_BROKER_URL, _default_backend = _broker, _broker if _scheme.startswith("redis") else None
    CELERY_BROKER_TRANSPORT_OPTIONS = {}

CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", _default_backend)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = True
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celery" / "beat-schedule")
CELERY_BEAT_SCHEDULE = {  # housekeeping; domain apps add their own jobs
    "clear-expired-sessions": {"task": "platform.clear_expired_sessions", "schedule": 6 * 3600},
    "prune-outbox": {"task": "eventbus.prune_outbox", "schedule": 3600},
    "prune-ledger": {"task": "eventbus.prune_ledger", "schedule": 6 * 3600},
    # Bulk reprocess runs whose worker died (and whose task message went with it) go on.
    "resume-bulk-reprocess": {"task": "operations.resume_bulk_reprocess", "schedule": 60},
    # Replays too, after their last written batch (apps/operations/replays.py).
    "resume-replays": {"task": "operations.resume_replays", "schedule": 60},
    "prune-idempotency-keys": {"task": "api.prune_idempotency_keys", "schedule": 3600},
    # Orders PENDING too long: reported, or cancelled by ORDERS_STUCK_POLICY (apps/orders/tasks.py).
    "apply-stuck-orders-policy": {"task": "orders.apply_stuck_policy", "schedule": 60},
    # Sent events the streams lost (power loss) republished (apps/eventbus/producing/reconciliation.py).
    "reconcile-outbox": {
        "task": "eventbus.reconcile_outbox",
        "schedule": env_int("EVENTBUS_RECONCILE_INTERVAL_SECONDS", 300, minimum=10),
    },
}
