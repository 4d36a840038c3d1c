"""The bounds every value from outside gets before it reaches a column, a log line or a header.

A message, a header or a request is hostile until bounded: text is cut to a limit with a marker,
NUL (which PostgreSQL text refuses) and lone surrogates are escaped, a header value keeps to one
line, and only safe headers are copied from a stored message onto a re-published one.
"""

from __future__ import annotations

import json
import re

from apps.eventbus.headers import CONTROL_PREFIXES, TRUNCATED
from apps.eventbus.wire import header_problem

# Headers copied from a stored message to a re-published one (see copyable_headers).
MAX_COPIED_HEADERS = 32
MAX_COPIED_NAME = 64
MAX_COPIED_VALUE = 1024
MAX_COPIED_TOTAL = 8192
# Headers kept on a DeadLetter row for people to read (see clean_headers).
MAX_KEPT_HEADERS = 64
MAX_KEPT_NAME = 200
MAX_KEPT_VALUE = 4000
MAX_LOG_VALUE = 200

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def truncate(text: str, limit: int | None) -> str:
    """At most ``limit`` characters; a cut one ends with "…"."""
    if limit is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…" if limit > 0 else ""


def clean_text(value, limit: int | None = None, *, single_line: bool = False) -> str:
    """Text any PostgreSQL text column, log line or (``single_line``) header can hold.

    NUL (which PostgreSQL text and jsonb refuse) becomes ``\\x00``, a lone surrogate its
    ``\\udcxx`` escape; ``single_line`` escapes every control character (line breaks
    included). Then cut to ``limit`` characters with a marker.
    """
    text = value if isinstance(value, str) else str(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    text = _CONTROL.sub(_escape, text) if single_line else text.replace("\x00", "\\x00")
    return truncate(text, limit)


def _escape(match: re.Match) -> str:
    return f"\\x{ord(match.group()):02x}"


def body_text(body: bytes) -> tuple[str, bool]:
    """(the body as text for a text column, whether that text is the body exactly).

    Not UTF-8, or holding NUL: shown escaped (``\\xff``, ``\\x00``); the exact bytes then
    have to be kept elsewhere (``DeadLetter.raw_data``).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("utf-8", "backslashreplace").replace("\x00", "\\x00"), False
    if "\x00" in text:
        return text.replace("\x00", "\\x00"), False
    return text, True


def clean_headers(value) -> dict[str, str]:
    """Headers as a DeadLetter row keeps them: a flat ``{str: str}`` jsonb can hold, bounded in
    count and size (a marker under ``Eventbus-Truncated`` says what was left out)."""
    if not isinstance(value, dict):
        return {TRUNCATED: "the original headers were not a JSON object"} if value not in (None, "") else {}
    items = list(value.items())
    kept: dict[str, str] = {}
    for name, header_value in items[:MAX_KEPT_HEADERS]:
        text = header_value if isinstance(header_value, str) else json.dumps(header_value, default=str)
        kept[clean_text(name, MAX_KEPT_NAME, single_line=True)] = clean_text(text, MAX_KEPT_VALUE)
    if len(items) > MAX_KEPT_HEADERS:
        kept[TRUNCATED] = f"kept {MAX_KEPT_HEADERS} of {len(items)} headers"
    return kept


def copyable_headers(headers: dict) -> tuple[dict[str, str], list[str]]:
    """The headers of a stored message that may be copied onto a re-published one, and the
    names of those left out.

    Left out: every ``Nats-*`` header (they make JetStream act: expected sequence or stream,
    rollup, TTL, schedules, the de-duplication id), the eventbus's own ``Eventbus-*`` ones
    (it sets its own), names nats-py or the server would refuse, values with a line break,
    NUL or other control character, and whatever goes beyond the bounds (count, name and
    value length, total size): a dropped header is better than a corrupted one.
    """
    kept: dict[str, str] = {}
    dropped: list[str] = []
    total = 0
    for name, value in headers.items() if isinstance(headers, dict) else ():
        name_text = str(name)
        ok = (
            header_problem({name_text: value}) is None  # a token name, text nats-py can encode on one line
            and not name_text.lower().startswith(CONTROL_PREFIXES)
            and len(name_text) <= MAX_COPIED_NAME
            and len(value) <= MAX_COPIED_VALUE
            and not _CONTROL.search(value)  # stricter than the wire: no tab either
            and value.strip() == value
            and len(kept) < MAX_COPIED_HEADERS
            and total + len(name_text) + len(value.encode()) + 4 <= MAX_COPIED_TOTAL
        )
        if ok:
            kept[name_text] = value
            total += len(name_text) + len(value.encode()) + 4
        else:
            dropped.append(clean_text(name_text, MAX_COPIED_NAME, single_line=True))
    return kept, dropped


def log_value(value: str, limit: int = MAX_LOG_VALUE) -> str:
    """A value from a message as a log line may carry it: one line (every character that is not
    printable escaped), at most ``limit`` characters."""
    text = value.encode("unicode_escape", "backslashreplace").decode("ascii") if not value.isprintable() else value
    return truncate(text, limit)
