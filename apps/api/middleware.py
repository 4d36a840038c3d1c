"""A database outage met anywhere under /api/ is the API's 503 ``service_unavailable`` with
``Retry-After``, never Django's 500 page.

The API's views get that answer from DRF's exception handler (``apps.api.exceptions``). This
middleware gives it to the rest: Django's own views under /api/ (the browsable API's sign-in),
and the middleware around every view (sessions, authentication), whose errors Django turns into
a 500 before any other middleware sees them. Django sends ``got_request_exception`` while it
does so; ``remember_outage`` marks the request, and the middleware replaces that 500.

Put it after ``SecurityMiddleware`` (its headers still apply) and before the middleware that
touches the database (``SessionMiddleware``, ``AuthenticationMiddleware``).
"""

from __future__ import annotations

import sys

from django.core.signals import got_request_exception
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse

from .exceptions import DATABASE_UNAVAILABLE, describe, error_body

API_PREFIX = "/api/"
_OUTAGE = "_api_database_outage"


class DatabaseOutageMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        outage = getattr(request, _OUTAGE, None)
        if outage is not None and request.path_info.startswith(API_PREFIX):
            return unavailable(outage)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A view's (or its rendering's) database error, before Django makes it a 500."""
        if isinstance(exception, DATABASE_UNAVAILABLE) and request.path_info.startswith(API_PREFIX):
            return unavailable(exception)
        return None


@receiver(got_request_exception, dispatch_uid="apps.api.middleware.remember_outage")
def remember_outage(sender, request: HttpRequest | None = None, **kwargs) -> None:
    """Sent by Django inside its ``except`` block, so the exception is ``sys.exc_info()``'s."""
    exception = sys.exc_info()[1]
    if request is not None and isinstance(exception, DATABASE_UNAVAILABLE):
        setattr(request, _OUTAGE, exception)


def unavailable(exception: Exception) -> JsonResponse:
    status, code, message, fields, headers = describe(exception)
    return JsonResponse(error_body(code, message, fields), status=status, headers=headers)
