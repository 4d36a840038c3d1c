"""The hash chain: what an entry's hash covers, and checking a whole log."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

GENESIS = "0" * 64


def entry_hash(*, previous_hash: str, subject: str, message_id: str, correlation_id: str, stream: str,
               stream_sequence: int, body: str, headers: dict, headers_json: str | None = None) -> str:  # fmt: skip
    """SHA-256 of the entry's content and the previous entry's hash, as ``_reference_json`` writes it.

    ``headers_json`` is ``canonical_json(headers)`` when the caller has it already."""
    texts = (body, correlation_id, message_id, previous_hash, stream, subject)
    if type(stream_sequence) is int and all(type(text) is str for text in texts):
        # The reference's output, written directly: its keys in sorted order, each value as
        # its encoder writes it (a str escaped to ASCII, an int in decimal, the headers as
        # canonical JSON). Twice as fast as building and sorting a dict per entry.
        if headers_json is None:
            headers_json = canonical_json(headers)
        content = _CONTENT % (
            _string(body), _string(correlation_id), headers_json, _string(message_id), _string(previous_hash),
            _string(stream), stream_sequence, _string(subject),
        )  # fmt: skip
    else:
        content = _reference_json(
            {
                "previous": previous_hash,
                "subject": subject,
                "message_id": message_id,
                "correlation_id": correlation_id,
                "stream": stream,
                "stream_sequence": stream_sequence,
                "body": body,
                "headers": headers,
            }
        )
    return hashlib.sha256(content.encode()).hexdigest()


_CONTENT = (
    '{"body":%s,"correlation_id":%s,"headers":%s,"message_id":%s,"previous":%s,"stream":%s,"stream_sequence":%d,'
    '"subject":%s}'
)
_string = json.encoder.encode_basestring_ascii  # what json.dumps (ensure_ascii) writes for a str


def _reference_json(content: dict) -> str:
    """What an entry's hash covers, by definition (existing chains were hashed with exactly this)."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"))


def _make_canonical_json():
    """``_reference_json``, byte for byte, with the C encoder built once instead of once per call
    (``json.dumps`` builds a ``JSONEncoder`` and a C encoder for every call); the circularity
    check is off (entries hold JSON data, which has no cycles). Falls back to the reference
    without the C module."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:
        return _reference_json
    encode = c_make_encoder(
        None,  # markers: no circularity check
        json.JSONEncoder().default,
        json.encoder.encode_basestring_ascii,  # ensure_ascii=True, as json.dumps
        None,  # indent
        ":",  # key separator
        ",",  # item separator
        True,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan, as json.dumps
    )
    return lambda content: "".join(encode(content, 0))


canonical_json = _make_canonical_json()


@dataclass(frozen=True)
class Break:
    entry_id: int
    reason: str


def verify(entries: Iterable) -> tuple[int, Break | None]:
    """Walk entries in id order; return how many were checked and the first break, if any."""
    previous, checked = GENESIS, 0
    for entry in entries:
        if entry.previous_hash != previous:
            return checked, Break(
                entry.id, f"links to {entry.previous_hash[:12]}…, the entry before is {previous[:12]}…"
            )
        expected = entry_hash(
            previous_hash=entry.previous_hash, subject=entry.subject, message_id=entry.message_id,
            correlation_id=entry.correlation_id, stream=entry.stream, stream_sequence=entry.stream_sequence,
            body=entry.body, headers=entry.headers,
        )  # fmt: skip
        if expected != entry.hash:
            return checked, Break(entry.id, "its content does not match its hash (edited)")
        previous, checked = entry.hash, checked + 1
    return checked, None
