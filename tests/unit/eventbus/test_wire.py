"""apps/eventbus/wire.py: sizes as the server counts them, and what NATS and JetStream refuse."""

from __future__ import annotations

import asyncio
import re

import pytest
from nats.aio.client import Client

from apps.eventbus.wire import MAX_HEADER_BLOCK, header_problem, header_size, unpublishable, wire_size

EMPTY_BLOCK = len(b"NATS/1.0\r\n") + len(b"\r\n")  # the status line and the blank line that ends the block


def nats_py_sizes(headers: dict[str, str], body: bytes) -> tuple[int, int]:
    """(header bytes, header + body bytes) of the HPUB nats-py writes for this message, no server needed."""
    client = Client()
    sent: list[bytes] = []

    async def capture(command, priority=False):
        sent.append(bytes(command))

    client._send_command = capture
    asyncio.run(client._send_publish("orders.created.v1", "", body, len(body), headers))
    header_bytes, total = re.match(rb"HPUB \S+ +(\d+) (\d+)\r\n", sent[0]).groups()
    return int(header_bytes), int(total)


# -- header_size and wire_size -------------------------------------------------------------------


def test_no_headers_is_no_header_block():
    assert header_size(None) == 0
    assert wire_size(None, b"abc") == 3


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"A": "b"}, EMPTY_BLOCK + len("A: b\r\n")),
        ({"A": "  b\t"}, EMPTY_BLOCK + len("A: b\r\n")),  # values are written stripped
        ({"A": ""}, EMPTY_BLOCK + len("A: \r\n")),
        ({"A": "é"}, EMPTY_BLOCK + len("A: \r\n") + 2),  # bytes, not characters
        ({"": "skipped", "A": "b"}, EMPTY_BLOCK + len("A: b\r\n")),  # an empty name is not written
        ({" A ": "b"}, EMPTY_BLOCK + len("A: b\r\n")),  # nor are the spaces around a name
        (
            {"Nats-Msg-Id": "m-1", "Content-Type": "application/json"},
            EMPTY_BLOCK + len("Nats-Msg-Id: m-1\r\n") + len("Content-Type: application/json\r\n"),
        ),
    ],
)
def test_header_size(headers, expected):
    assert header_size(headers) == expected
    assert wire_size(headers, b"12345") == expected + 5


@pytest.mark.parametrize(
    "headers",
    [
        {"A": "b"},
        {"Nats-Msg-Id": "0b9f1c7e-5d7e-4b8e-9a55-0d6a3c1f2e11", "Content-Type": "application/json"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": ""},
        {"X-Unicode": "çå✓ 🙂", "X-Pad": "   padded   ", " Spaced-Name ": "v"},
        {"": "skipped", "K": "v"},
        {f"H{i}": "v" * i for i in range(40)},
    ],
)
@pytest.mark.parametrize("body", [b"", b"{}", b"x" * 1000])
def test_header_size_is_what_nats_py_writes(headers, body):
    assert (header_size(headers), wire_size(headers, body)) == nats_py_sizes(headers, body)


def test_an_empty_header_dict_is_still_a_header_block():
    assert header_size({}) == nats_py_sizes({}, b"")[0]


# -- header_problem -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Content-Type": "application/json"},
        {"!#$%&'*+-.^_`|~09AZaz": "every token character"},
        {"X": ""},
        {"X": "tab\tis fine"},
        {"X": "çå✓ 🙂"},
        {"X": "\x80\x9f"},  # C1 characters do not end a line
        {"X": "  padded  "},
        {"X": "v" * 100_000},  # size is unpublishable's business, not this one's
    ],
)
def test_headers_that_can_go_on_the_wire(headers):
    assert header_problem(headers) is None


@pytest.mark.parametrize(
    "name",
    ["", " ", "with space", "colon:", "semi;colon", "quote\"", "(paren)", "a/b", "é", "line\r\nbreak", "nul\x00",
     "tab\t", "[x]", "{x}", "a@b", "a,b", "a=b", "a?b", "a\\b"],
)  # fmt: skip
def test_a_header_name_that_is_not_a_token(name):
    problem = header_problem({"Good": "v", name: "v"})
    assert problem == f"header name {name!r} is not a valid token"


def test_a_header_name_that_is_not_text():
    assert header_problem({1: "v"}) == "header name '1' is not a valid token"


def test_a_long_bad_name_is_quoted_cut_to_80_characters():
    problem = header_problem({"x" * 200 + " ": "v"})
    assert problem == f"header name {'x' * 80!r} is not a valid token"


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "\x00", "\x01", "\x08", "\x0b", "\x1f", "\x7f", "end\n"])
def test_a_header_value_with_a_control_character(value):
    assert header_problem({"X-Bad": value}) == "header 'X-Bad' holds a control character or is not text"


@pytest.mark.parametrize("value", [1, None, b"bytes", ["a"]])
def test_a_header_value_that_is_not_text(value):
    assert header_problem({"X-Bad": value}) == "header 'X-Bad' holds a control character or is not text"


def test_the_first_problem_is_the_one_reported():
    assert header_problem({"a b": "\n", "X": "\x00"}).startswith("header name 'a b'")
    assert header_problem({"X": "\x00", "a b": "v"}).startswith("header 'X' holds")


# -- unpublishable at the limits ------------------------------------------------------------------------


def test_max_payload_counts_headers_and_body():
    headers = {"Nats-Msg-Id": "m-1"}
    size = header_size(headers)
    body = b"x" * 100
    assert unpublishable(headers, body, max_payload=size + 100) is None
    problem = unpublishable(headers, body, max_payload=size + 99)
    assert (
        problem == f"{size + 100} bytes with headers, more than the {size + 99} bytes the server accepts (max_payload)"
    )
    assert unpublishable(headers, b"", max_payload=size) is None
    assert unpublishable(headers, b"", max_payload=size - 1) is not None


def _block_of(size: int) -> dict[str, str]:
    value_length = size - EMPTY_BLOCK - len("X: \r\n")
    headers = {"X": "v" * value_length}
    assert header_size(headers) == size
    return headers


def test_the_header_block_limit_is_65535_bytes():
    assert MAX_HEADER_BLOCK == 65_535
    big = 10 * 1024 * 1024
    assert unpublishable(_block_of(65_535), b"body", max_payload=big) is None
    assert unpublishable(_block_of(65_536), b"body", max_payload=big) == (
        "65,536 bytes of headers, over JetStream's limit of 65,535"
    )


def test_the_header_block_limit_is_checked_before_max_payload():
    assert "over JetStream's limit" in unpublishable(_block_of(65_536), b"", max_payload=1024)


def test_a_bad_header_is_reported_before_any_size():
    problem = unpublishable({"bad name": "v" * 70_000}, b"x" * 10_000, max_payload=10)
    assert problem == "header name 'bad name' is not a valid token"


def test_a_message_without_headers_and_one_with_an_empty_header_block():
    assert wire_size(None, b"x" * 1024) == 1024
    assert unpublishable({}, b"x" * 1012, max_payload=1024) is None, "an empty dict is still a 12-byte block"
    assert "1025 bytes with headers" in unpublishable({}, b"x" * 1013, max_payload=1024)


def test_a_header_value_that_is_not_valid_utf8_is_refused_before_it_reaches_nats_py():
    assert "not valid UTF-8" in header_problem({"X-Note": "lone \ud800 surrogate"})
    assert "not valid UTF-8" in unpublishable({"X-Note": "\udcff"}, b"", max_payload=1_000_000)
