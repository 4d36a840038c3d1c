from django.apps import AppConfig
from django.db.models.signals import post_migrate


class OperationsConfig(AppConfig):
    """The operator's cockpit: dead-letter review and reprocessing, consumer and stream health,
    and the roles that may act on them. It knows the domains (it links a dead letter to its
    order); the event backbone it drives does not."""

    name = "apps.operations"
    verbose_name = "Operations"

    def ready(self):
        from .roles import ensure_roles

        post_migrate.connect(ensure_roles, dispatch_uid="operations-ensure-roles")
