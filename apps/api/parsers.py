"""Parsers that read the body through Django, so ``DATA_UPLOAD_MAX_MEMORY_SIZE`` holds.

DRF's own parsers read the request stream directly and never hit Django's check; reading
``HttpRequest.body`` raises ``RequestDataTooBig`` (answered 413) before the body is read.
"""

from __future__ import annotations

import io

from rest_framework import parsers


class _BodyLimit:
    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]._request
        return super().parse(io.BytesIO(request.body), media_type, parser_context)


class JSONParser(_BodyLimit, parsers.JSONParser):
    pass


class FormParser(_BodyLimit, parsers.FormParser):
    pass
