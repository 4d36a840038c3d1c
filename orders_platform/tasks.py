from celery import shared_task
from django.core.management import call_command


@shared_task(name="platform.clear_expired_sessions")
def clear_expired_sessions() -> None:
    """Delete expired login sessions (Django never does it on its own)."""
    call_command("clearsessions")
