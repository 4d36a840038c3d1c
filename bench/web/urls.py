"""The project's URLs, plus ``POST /bench/plain-orders/`` (the saga benchmark's intake baseline)."""

from django.urls import path

from orders_platform.urls import urlpatterns as project_urlpatterns

from .views import PlainOrderCreateApi

urlpatterns = [
    path("bench/plain-orders/", PlainOrderCreateApi.as_view(), name="bench-plain-orders"),
    *project_urlpatterns,
]
