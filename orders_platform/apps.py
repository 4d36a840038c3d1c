from django.apps import AppConfig


class PlatformConfig(AppConfig):
    """The project package as an app: platform-wide commands (runplatform, embedded) live here."""

    name = "orders_platform"
    verbose_name = "Platform"
