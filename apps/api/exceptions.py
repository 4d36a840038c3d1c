"""One error shape for every error the API returns:

``{"error": {"code": "...", "message": "...", "fields": {"<path>": ["...", ...]}}}``

``code`` is stable (clients branch on it), ``message`` is for people, ``fields`` maps a
dotted path into the request body (``lines.0.quantity``) to what was wrong there; it is
empty when no field is to blame. Domain errors carry ``status_code`` and ``code``.

A database that does not answer (``OperationalError``, ``InterfaceError``: refused, dropped or
timed-out connections, a server shutting down) is a 503 ``service_unavailable`` with
``Retry-After``, not a 500: the client's request was fine and a retry will do. DRF views get it
from the handler below; ``apps.api.middleware`` gives the same answer to an outage met outside
them.
"""

from __future__ import annotations

import logging
import math

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import set_rollback

from apps.eventbus.deadletters.services import DeadLetterStateError
from apps.eventbus.jetstream.monitoring import NatsUnreachable
from apps.orders.errors import OrderError

logger = logging.getLogger(__name__)

# Domain errors that carry no status or code of their own: (status, code).
MAPPED_ERRORS: dict[type[Exception], tuple[int, str]] = {
    DeadLetterStateError: (409, "dead_letter_state_conflict"),
    NatsUnreachable: (503, "nats_unavailable"),
}
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
UNAVAILABLE_MESSAGE = "The service is unavailable for a moment; retry after the seconds in Retry-After."


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    described = describe(exc)
    if described is None:
        if settings.DEBUG:
            return None  # Django's debug page
        logger.error("unhandled error in %s", _view_name(context), exc_info=exc)
        described = (500, "internal_error", "An unexpected error occurred; it has been logged.", {}, {})
    status_code, code, message, fields, headers = described
    set_rollback()
    return Response(error_body(code, message, fields), status=status_code, headers=headers)


def error_body(code: str, message: str, fields: dict[str, list[str]] | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def describe(exc: Exception) -> tuple[int, str, str, dict, dict] | None:
    """(status, code, message, fields, headers) for a known error, None for anything else."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, DATABASE_UNAVAILABLE):
        logger.warning("the database is unavailable: %s", str(exc).strip() or type(exc).__name__)
        return 503, "service_unavailable", UNAVAILABLE_MESSAGE, {}, retry_after()
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return 413, "request_too_large", f"The request body is larger than the limit of {limit} bytes.", {}, {}
    for error_type, (status_code, code) in MAPPED_ERRORS.items():
        if isinstance(exc, error_type):
            return status_code, code, str(exc), {}, retry_after() if status_code == 503 else {}
    if isinstance(exc, OrderError):
        return exc.status_code, exc.code, exc.message, _domain_fields(exc.fields), {}
    if isinstance(exc, exceptions.ValidationError):
        fields = flatten(exc.detail)
        path, messages = next(iter(fields.items()), ("", ["invalid"]))
        where = "" if path == api_settings.NON_FIELD_ERRORS_KEY else f"{path}: "
        return exc.status_code, "validation_error", f"Invalid request: {where}{messages[0]}", fields, {}
    if isinstance(exc, exceptions.APIException):
        return exc.status_code, _code(exc), _message(exc.detail), {}, _headers(exc)
    return None


def retry_after() -> dict[str, str]:
    """The ``Retry-After`` header of every 503: ``settings.API["UNAVAILABLE_RETRY_AFTER_SECONDS"]`` seconds."""
    return {"Retry-After": str(settings.API["UNAVAILABLE_RETRY_AFTER_SECONDS"])}


def flatten(detail, path: str = "") -> dict[str, list[str]]:
    """DRF's nested validation errors as ``{"lines.0.quantity": ["..."]}``."""
    flat: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            key = str(key)
            child = path if key == api_settings.NON_FIELD_ERRORS_KEY and path else (f"{path}.{key}" if path else key)
            for name, messages in flatten(value, child).items():
                flat.setdefault(name, []).extend(messages)
    elif isinstance(detail, list) and any(isinstance(item, dict | list) for item in detail):
        for index, item in enumerate(detail):
            for name, messages in flatten(item, f"{path}.{index}" if path else str(index)).items():
                flat.setdefault(name, []).extend(messages)
    elif isinstance(detail, list):
        if detail:
            flat[path or api_settings.NON_FIELD_ERRORS_KEY] = [str(item) for item in detail]
    else:
        flat[path or api_settings.NON_FIELD_ERRORS_KEY] = [str(detail)]
    return flat


def _domain_fields(fields: dict) -> dict[str, list[str]]:
    return {
        str(name): [value] if isinstance(value, str) else [str(item) for item in value]
        for name, value in fields.items()
    }


def _code(exc: exceptions.APIException) -> str:
    detail = exc.detail
    return getattr(detail, "code", None) or exc.default_code


def _message(detail) -> str:
    if isinstance(detail, dict | list):
        flat = flatten(detail)
        return next(iter(flat.values()), ["error"])[0]
    return str(detail)


def _headers(exc: exceptions.APIException) -> dict[str, str]:
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if isinstance(exc, exceptions.Throttled):
        headers["Retry-After"] = str(max(1, math.ceil(exc.wait or 1)))
    return headers


def _view_name(context: dict) -> str:
    view = context.get("view")
    return type(view).__name__ if view is not None else "a view"
