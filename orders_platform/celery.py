import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orders_platform.settings.development")

app = Celery("orders_platform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
