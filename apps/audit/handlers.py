from apps.eventbus.consuming.delivery import Delivery
from apps.eventbus.registry import batch_handler

from .services import audit_record


@batch_handler
def on_any_event(deliveries: list[Delivery]) -> None:
    audit_record(deliveries=deliveries)
