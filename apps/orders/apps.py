from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "apps.orders"

    def ready(self):
        from . import consumers  # noqa: F401 - declares the ORDERS stream
