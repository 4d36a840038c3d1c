"""The client API's knobs (``apps/api``): validation limits, throttling, idempotency, pagination.

Read lazily through ``settings.API[...]``, so tests can override them.
"""

from .env import env_int, env_rate, env_urls

API = {
    # An order's shape. The order domain's own limits (50 lines, 1000 a line) still apply,
    # so these can only tighten them.
    "MAX_ORDER_LINES": env_int("API_MAX_ORDER_LINES", 50, minimum=1, maximum=50),
    "MAX_LINE_QUANTITY": env_int("API_MAX_LINE_QUANTITY", 1000, minimum=1, maximum=1000),
    # DRF throttles: anonymous clients by address, signed-in users by id, token requests by address.
    "THROTTLE_RATES": {
        "anon": env_rate("API_THROTTLE_ANON", "60/minute"),
        "user": env_rate("API_THROTTLE_USER", "1200/minute"),
        "token": env_rate("API_THROTTLE_TOKEN", "10/minute"),
    },
    # Idempotency-Key records are kept at least this long (Celery beat prunes older ones hourly).
    "IDEMPOTENCY_KEY_RETENTION_HOURS": env_int("API_IDEMPOTENCY_KEY_RETENTION_HOURS", 24, minimum=24),
    "PAGE_SIZE": env_int("API_PAGE_SIZE", 50, minimum=1, maximum=1000),
    "MAX_PAGE_SIZE": env_int("API_MAX_PAGE_SIZE", 200, minimum=1, maximum=1000),
    # While the database is unavailable the API answers 503 with this Retry-After (seconds).
    "UNAVAILABLE_RETRY_AFTER_SECONDS": env_int("API_UNAVAILABLE_RETRY_AFTER_SECONDS", 5, minimum=1, maximum=3600),
}

# Larger request bodies are refused (Django raises RequestDataTooBig, the API answers 413; its
# parsers read the body through Django, so the limit holds for JSON too). NATS's default
# message limit is 1 MiB too, so a dead letter's body still fits an admin form.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 1_048_576, minimum=1024)

# Throttle counters live in the cache: with CACHE_URL unset each process counts on its own
# (fine for one process; set a Redis URL when several web processes serve the API).
_cache_url = env_urls("CACHE_URL", schemes=("redis", "rediss"))
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_url[0]}
        if _cache_url
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}
