from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "apps.audit"
    verbose_name = "Audit log"

    def ready(self):
        from . import consumers  # noqa: F401 - declares the audit consumer
