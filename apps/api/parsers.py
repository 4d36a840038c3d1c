"""The API's one parser: JSON, and nothing else (every request body the API takes is JSON).

It reads the body through Django, so ``DATA_UPLOAD_MAX_MEMORY_SIZE`` holds (DRF's own parsers
read the request stream directly and never hit Django's check; reading ``HttpRequest.body``
raises ``RequestDataTooBig``, answered 413, before the body is read).
"""

from __future__ import annotations

import io

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """Whatever a body holds, it becomes data or a ``ParseError`` (400 ``parse_error``): DRF's
    parser already turns invalid syntax, invalid text in the charset, NaN/Infinity, integers too
    long to convert and charsets that are not text encodings into one; nesting too deep for
    Python's recursion limit (a ``RecursionError`` from ``json``) becomes one here."""

    def parse(self, stream, media_type=None, parser_context=None):
        body = parser_context["request"]._request.body
        try:
            return super().parse(io.BytesIO(body), media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
