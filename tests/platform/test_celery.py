"""Celery with no broker server: a real worker process takes tasks from the filesystem broker."""

from datetime import timedelta

from django.contrib.sessions.models import Session
from django.utils import timezone

from orders_platform import celery_app
from orders_platform.tasks import clear_expired_sessions


def test_the_development_broker_needs_no_server():
    assert celery_app.conf.broker_url == "filesystem://"
    assert celery_app.conf.result_backend.startswith("file://")


def test_a_real_worker_runs_the_housekeeping_task_against_the_database(celery_worker):
    now = timezone.now()
    Session.objects.create(session_key="expired" * 4, session_data="x", expire_date=now - timedelta(days=1))
    Session.objects.create(session_key="current" * 4, session_data="x", expire_date=now + timedelta(days=1))

    clear_expired_sessions.delay().get(timeout=30)

    assert list(Session.objects.values_list("session_key", flat=True)) == ["current" * 4]


def test_beat_schedules_the_housekeeping_task():
    entry = celery_app.conf.beat_schedule["clear-expired-sessions"]
    assert entry["task"] == clear_expired_sessions.name
