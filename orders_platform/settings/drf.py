"""Django REST framework and the OpenAPI schema (drf-spectacular). The API's own knobs are in ``api.py``."""

from .env import env_int

REST_FRAMEWORK = {
    # Token first: an unauthenticated request gets 401 with `WWW-Authenticate: Token`, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["apps.api.throttles.AnonThrottle", "apps.api.throttles.UserThrottle"],
    "DEFAULT_PARSER_CLASSES": ["apps.api.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "EXCEPTION_HANDLER": "apps.api.exceptions.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": None,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    # Proxies in front of the web process that append to X-Forwarded-For (0: the peer's address
    # identifies an anonymous client; the header alone is never trusted).
    "NUM_PROXIES": env_int("API_NUM_PROXIES", 0, minimum=0, maximum=10),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Orders platform API",
    "DESCRIPTION": (
        "Place and follow orders, browse the catalogue, and (operators) review dead letters.\n\n"
        "Authenticate with `Authorization: Token <key>` (get a key from `POST /api/auth/token/`) "
        "or a session (the browsable API). Every error has one shape: "
        '`{"error": {"code": "...", "message": "...", "fields": {"<path>": ["..."]}}}`; '
        "`code` is stable, `message` is for people, `fields` names what was wrong in the request.\n\n"
        "POSTs accept an `Idempotency-Key` header: the same key with the same body replays the "
        "first response; with a different body it is refused (422). Keys are per user and kept at "
        "least 24 hours."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/",
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the project's own static files (drf-spectacular-sidecar), never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.api.schema.strict_request_bodies",
    ],
    "ENUM_NAME_OVERRIDES": {
        "OrderStatusEnum": "apps.orders.models.Order.Status",
        "DeadLetterStatusEnum": "apps.eventbus.models.DeadLetter.Status",
    },
}
