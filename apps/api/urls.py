"""Everything under /api/. Every endpoint needs authentication except the token endpoint and
the schema and docs (public: they describe the API and hold no data)."""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from .views.auth import EndpointNotFoundApi, TokenCreateApi
from .views.consumers import ConsumerListApi, ConsumerPauseApi, ConsumerResumeApi
from .views.dead_letter_groups import (
    DeadLetterGroupDetailApi,
    DeadLetterGroupDiscardApi,
    DeadLetterGroupListApi,
    DeadLetterGroupReprocessApi,
)
from .views.dead_letters import DeadLetterDetailApi, DeadLetterDiscardApi, DeadLetterListApi, DeadLetterReprocessApi
from .views.orders import OrderCancelApi, OrderDetailApi, OrderListCreateApi
from .views.products import ProductDetailApi, ProductListApi

app_name = "api"

urlpatterns = [
    path("auth/token/", TokenCreateApi.as_view(), name="token"),
    # Customers.
    path("orders/", OrderListCreateApi.as_view(), name="orders"),
    path("orders/<str:order_id>/", OrderDetailApi.as_view(), name="order"),
    path("orders/<str:order_id>/cancel/", OrderCancelApi.as_view(), name="order-cancel"),
    path("products/", ProductListApi.as_view(), name="products"),
    path("products/<str:sku>/", ProductDetailApi.as_view(), name="product"),
    # Operators: dead letters.
    path("dead-letters/", DeadLetterListApi.as_view(), name="dead-letters"),
    path("dead-letters/<str:dead_letter_id>/", DeadLetterDetailApi.as_view(), name="dead-letter"),
    path(
        "dead-letters/<str:dead_letter_id>/reprocess/", DeadLetterReprocessApi.as_view(), name="dead-letter-reprocess"
    ),
    path("dead-letters/<str:dead_letter_id>/discard/", DeadLetterDiscardApi.as_view(), name="dead-letter-discard"),
    # Operators: dead letters grouped by the fingerprint of their failure.
    path("dead-letter-groups/", DeadLetterGroupListApi.as_view(), name="dead-letter-groups"),
    path("dead-letter-groups/<str:fingerprint>/", DeadLetterGroupDetailApi.as_view(), name="dead-letter-group"),
    path(
        "dead-letter-groups/<str:fingerprint>/reprocess/",
        DeadLetterGroupReprocessApi.as_view(),
        name="dead-letter-group-reprocess",
    ),
    path(
        "dead-letter-groups/<str:fingerprint>/discard/",
        DeadLetterGroupDiscardApi.as_view(),
        name="dead-letter-group-discard",
    ),
    # Operators: consumers and streams.
    path("consumers/", ConsumerListApi.as_view(), name="consumers"),
    path("consumers/<str:name>/pause/", ConsumerPauseApi.as_view(), name="consumer-pause"),
    path("consumers/<str:name>/resume/", ConsumerResumeApi.as_view(), name="consumer-resume"),
    # The schema and its Swagger UI (static files from drf-spectacular-sidecar, no CDN).
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    # (/api/session/login/ and logout/ for the browsable API are in the project's urls: the
    # browsable API reverses them in DRF's own namespace.)
    re_path(r"^.*$", EndpointNotFoundApi.as_view(), name="not-found"),
]
