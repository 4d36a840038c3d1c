from celery import shared_task
from celery.signals import worker_ready

from .services import bulk_reprocess_resume_all, bulk_reprocess_run


@shared_task(name="operations.run_bulk_reprocess")
def run_bulk_reprocess(run_id: int) -> str:
    return bulk_reprocess_run(run_id=run_id)


@shared_task(name="operations.resume_bulk_reprocess")
def resume_bulk_reprocess() -> list[int]:
    return bulk_reprocess_resume_all()


@worker_ready.connect(dispatch_uid="operations-resume-bulk-reprocess")
def _resume_on_start(sender=None, **kwargs) -> None:
    """A restarted worker picks up the runs its predecessor left (their task messages went with it)."""
    resume_bulk_reprocess.delay()
