from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "apps.payments"

    def ready(self):
        from . import consumers  # noqa: F401 - declares the PAYMENTS stream
