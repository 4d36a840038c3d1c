from celery import shared_task
from celery.signals import worker_ready

from .replays import replay_resume_all, replay_run
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


@shared_task(name="operations.run_replay")
def run_replay(run_id: int) -> str:
    return replay_run(run_id=run_id)


@shared_task(name="operations.resume_replays")
def resume_replays() -> list[int]:
    return replay_resume_all()


@worker_ready.connect(dispatch_uid="operations-resume-replays")
def _resume_replays_on_start(sender=None, **kwargs) -> None:
    """A restarted worker goes on with the replays its predecessor left, after their last written batch."""
    resume_replays.delay()
