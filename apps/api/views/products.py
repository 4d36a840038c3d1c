"""The catalogue: prices and what is left to sell."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.inventory.selectors import product_get, product_list

from ..pagination import CataloguePagination
from ..schema import READ_ERRORS, RETRY_AFTER, error_responses
from ..serializers import ProductSerializer

PRODUCT_EXAMPLE = {
    "sku": "KB-001",
    "name": "Mechanical keyboard",
    "price": "89.90",
    "currency": "EUR",
    "available": 120,
}


class ProductListApi(GenericAPIView):
    pagination_class = CataloguePagination
    serializer_class = ProductSerializer

    def get_queryset(self):
        return product_list()

    @extend_schema(
        operation_id="products_list",
        summary="The catalogue, by SKU",
        parameters=[RETRY_AFTER],
        responses={200: ProductSerializer(many=True), **error_responses(404, *READ_ERRORS)},
        examples=[OpenApiExample("a product", value=PRODUCT_EXAMPLE, response_only=True, status_codes=[200])],
    )
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ProductSerializer(page, many=True).data)


class ProductDetailApi(APIView):
    @extend_schema(
        operation_id="products_retrieve",
        summary="One product: its price and available stock",
        parameters=[OpenApiParameter("sku", OpenApiTypes.STR, OpenApiParameter.PATH), RETRY_AFTER],
        responses={200: ProductSerializer, **error_responses(404, *READ_ERRORS)},
        examples=[OpenApiExample("a product", value=PRODUCT_EXAMPLE, response_only=True, status_codes=[200])],
    )
    def get(self, request, sku: str):
        product = product_get(sku=sku)
        if product is None:
            raise NotFound()
        return Response(ProductSerializer(product).data)
