from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The client API under ``/api/``: thin DRF views over the domains' services and selectors,
    one error shape, idempotent POSTs, throttling and the OpenAPI schema."""

    name = "apps.api"
    label = "api"
    verbose_name = "API"
