"""What a message must be for NATS and JetStream to carry it: its size as the server counts it
against ``max_payload``, a header block JetStream will store, and headers that cannot corrupt
the protocol stream. Checked before anything is sent: a protocol error makes the server close
the whole connection, and a refused dead letter would come back for ever."""

from __future__ import annotations

import re

NATS_HEADER_LINE = b"NATS/1.0\r\n"
# JetStream refuses to store a message whose header block is longer (err_code 10097, "64k").
MAX_HEADER_BLOCK = 65_535
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a token (RFC 9110); nats-py refuses others
_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # would break the line it is written on


def header_size(headers: dict[str, str] | None) -> int:
    """The header block as nats-py writes it (empty names skipped, values stripped), in bytes:
    an empty dict is still a block (the status line), only ``None`` is none."""
    if headers is None:
        return 0
    size = len(NATS_HEADER_LINE) + 2  # the status line and the blank line that ends the block
    for name, value in headers.items():
        key = name.strip()
        if key:
            size += len(key.encode()) + 2 + len(value.strip().encode()) + 2
    return size


def wire_size(headers: dict[str, str] | None, body: bytes) -> int:
    """What the server counts against ``max_payload``: the header block plus the body."""
    return header_size(headers) + len(body)


def header_problem(headers: dict[str, str]) -> str | None:
    """Why these headers cannot go on the wire, or None."""
    for name, value in headers.items():
        if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
            return f"header name {str(name)[:80]!r} is not a valid token"
        if not isinstance(value, str) or _VALUE_FORBIDDEN.search(value):
            return f"header {name[:80]!r} holds a control character or is not text"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"header {name[:80]!r} is not valid UTF-8 (a lone surrogate)"
    return None


def unpublishable(headers: dict[str, str], body: bytes, *, max_payload: int) -> str | None:
    """Why NATS or JetStream cannot carry this message, or None."""
    if problem := header_problem(headers):
        return problem
    if (size := header_size(headers)) > MAX_HEADER_BLOCK:
        return f"{size:,} bytes of headers, over JetStream's limit of {MAX_HEADER_BLOCK:,}"
    if (size := wire_size(headers, body)) > max_payload:
        return f"{size} bytes with headers, more than the {max_payload} bytes the server accepts (max_payload)"
    return None
