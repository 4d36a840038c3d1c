"""Tokens for API clients, and the answer for paths the API does not have."""

from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from ..errors import EndpointNotFound, InvalidCredentials
from ..schema import RETRY_AFTER, error_responses
from ..serializers import TokenCreateSerializer, TokenSerializer
from ..services import auth_token_issue
from ..throttles import AnonThrottle, TokenThrottle


class TokenCreateApi(APIView):
    """No authentication: this is where a client gets its credentials."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [AnonThrottle, TokenThrottle]

    @extend_schema(
        operation_id="auth_token_create",
        summary="Exchange a username and password for an API token",
        description="Send the token as `Authorization: Token <token>`. The same user always gets the same token.",
        request=TokenCreateSerializer,
        parameters=[RETRY_AFTER],
        responses={
            200: TokenSerializer,
            **error_responses(
                400,
                413,
                415,
                429,
                503,
                examples={400: [("invalid_credentials", str(InvalidCredentials.default_detail), {})]},
            ),
        },
        examples=[
            OpenApiExample("credentials", value={"username": "alice", "password": "s3cret-pass"}, request_only=True),
            OpenApiExample(
                "a token",
                value={"token": "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"},
                response_only=True,
                status_codes=[200],
            ),
        ],
    )
    def post(self, request):
        payload = TokenCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        user = authenticate(request._request, **payload.validated_data)
        if user is None:
            raise InvalidCredentials()
        return Response(TokenSerializer({"token": auth_token_issue(user=user).key}).data)


class EndpointNotFoundApi(APIView):
    """Any other path under /api/: a 404 in the API's error shape, whatever the method."""

    permission_classes = [AllowAny]
    schema = None

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        raise EndpointNotFound()
