from django.contrib import admin
from django.urls import include, path

from . import health, webmetrics

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/session/", include("rest_framework.urls")),  # the browsable API's sign-in and sign-out
    path("api/", include("apps.api.urls")),
    # django-prometheus's page, plus figures read from the database when scraped (webmetrics.py)
    path("metrics", webmetrics.metrics, name="prometheus-django-metrics"),
]
