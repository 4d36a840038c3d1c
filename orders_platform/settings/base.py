"""What every environment shares. Environment modules add secrets, hosts and service URLs."""

from .api import *  # noqa: F403
from .celery import *  # noqa: F403
from .drf import *  # noqa: F403
from .env import env_int, env_str, env_urls
from .eventbus import *  # noqa: F403
from .observability import *  # noqa: F403
from .paths import BASE_DIR, DATA_DIR  # noqa: F401

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "orders_platform",
    "apps.eventbus",
    "apps.orders",
    "apps.payments",
    "apps.inventory",
    "apps.audit",
    "apps.operations",
    "apps.api",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # /api/: a database outage met in the middleware below or a view is a 503 with Retry-After.
    "apps.api.middleware.DatabaseOutageMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "orders_platform.urls"
WSGI_APPLICATION = "orders_platform.wsgi.application"
ASGI_APPLICATION = "orders_platform.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The platform's own knobs.
PLATFORM_CURRENCY = env_str("PLATFORM_CURRENCY", "EUR")
READINESS_TIMEOUT = env_int("READINESS_TIMEOUT_MS", 2000, minimum=100) / 1000
# A PENDING order older than this counts as stuck (the `orders_stuck` gauge, alert OrdersStuck).
ORDERS_STUCK_AFTER_SECONDS = env_int("ORDERS_STUCK_AFTER_SECONDS", 300, minimum=1)
# What the stuck-orders job (orders.apply_stuck_policy, every minute) does: `report` logs and
# counts; `cancel` also cancels (with compensation, audited) each order PENDING longer than
# ORDERS_STUCK_CANCEL_AFTER_SECONDS, which cannot be shorter than the stuck bound.
ORDERS_STUCK_POLICY = env_str("ORDERS_STUCK_POLICY", "report", choices=("report", "cancel"))
ORDERS_STUCK_CANCEL_AFTER_SECONDS = env_int(
    "ORDERS_STUCK_CANCEL_AFTER_SECONDS", max(3600, ORDERS_STUCK_AFTER_SECONDS), minimum=ORDERS_STUCK_AFTER_SECONDS
)
# The payment provider; `make run` starts the simulator (`manage.py rungateway`) at this address.
PAYMENT_GATEWAY_BREAKER = {
    "THRESHOLD": env_int("PAYMENT_GATEWAY_BREAKER_THRESHOLD", 5, minimum=1),
    "PAUSE": env_int("PAYMENT_GATEWAY_BREAKER_PAUSE_SECONDS", 10, minimum=1),
    "MAX_PAUSE": env_int("PAYMENT_GATEWAY_BREAKER_MAX_PAUSE_SECONDS", 300, minimum=1),
}
# Charges and refunds in flight at once per payments process (the provider's latency divided
# by this is the floor of one process's time per order: 200 ms / 100 = 2 ms, 500 orders/s).
PAYMENT_GATEWAY_CONCURRENCY = env_int("PAYMENT_GATEWAY_CONCURRENCY", 100, minimum=1, maximum=1000)
PAYMENT_GATEWAY_URL = (env_urls("PAYMENT_GATEWAY_URL", schemes=("http", "https")) or ["http://127.0.0.1:8070"])[0]
# The operator's cockpit: the default (and highest) rate of a bulk reprocess, dead letters/s.
BULK_REPROCESS_RATE = env_int("BULK_REPROCESS_RATE", 20, minimum=1, maximum=1000)
BULK_REPROCESS_MAX_RATE = env_int("BULK_REPROCESS_MAX_RATE", 200, minimum=1, maximum=10_000)
# Outbox <-> stream reconciliation (apps/eventbus/producing/reconciliation.py; how often:
# EVENTBUS_RECONCILE_INTERVAL_SECONDS in celery.py). Rows written in the last WINDOW (never
# beyond the outbox retention) and sent at least SETTLE ago are looked up in their stream; a run
# checks at most MAX_ROWS rows within MAX_SECONDS (the next run goes on where it stopped), with
# CONCURRENCY lookups in flight. Runs are kept HISTORY_DAYS for the cockpit.
EVENTBUS_RECONCILE = {
    "WINDOW_MINUTES": env_int("EVENTBUS_RECONCILE_WINDOW_MINUTES", 360, minimum=1),
    "SETTLE_SECONDS": env_int("EVENTBUS_RECONCILE_SETTLE_SECONDS", 30, minimum=0),
    "MAX_ROWS": env_int("EVENTBUS_RECONCILE_MAX_ROWS", 50_000, minimum=1, maximum=1_000_000),
    "MAX_SECONDS": env_int("EVENTBUS_RECONCILE_MAX_SECONDS", 120, minimum=1),
    "CONCURRENCY": env_int("EVENTBUS_RECONCILE_CONCURRENCY", 64, minimum=1, maximum=1000),
    "HISTORY_DAYS": env_int("EVENTBUS_RECONCILE_HISTORY_DAYS", 30, minimum=1),
}
