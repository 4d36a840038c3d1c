from django.apps import AppConfig


class InventoryConfig(AppConfig):
    name = "apps.inventory"

    def ready(self):
        from . import consumers  # noqa: F401 - declares the INVENTORY stream and the inventory consumer
