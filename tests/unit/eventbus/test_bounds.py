"""apps/eventbus/bounds.py: what every value from outside becomes before a column, a log line or
a header takes it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.eventbus.bounds import (
    MAX_COPIED_HEADERS,
    MAX_COPIED_NAME,
    MAX_COPIED_TOTAL,
    MAX_COPIED_VALUE,
    MAX_KEPT_HEADERS,
    MAX_KEPT_NAME,
    MAX_KEPT_VALUE,
    MAX_LOG_VALUE,
    body_text,
    clean_headers,
    clean_text,
    copyable_headers,
    log_value,
    truncate,
)
from apps.eventbus.headers import TRUNCATED
from apps.eventbus.wire import header_problem

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=60)  # lone surrogates included
STORED_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=60)  # what jsonb can hold
examples = hypothesis.settings(max_examples=200, deadline=None, derandomize=True, database=None)


def is_storable(text: str) -> bool:
    """PostgreSQL text and jsonb take it: valid UTF-8, no NUL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


# -- truncate -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("abcdef", None, "abcdef"),
        ("abcdef", 6, "abcdef"),  # at the limit: untouched
        ("abcdef", 7, "abcdef"),
        ("abcdef", 5, "abcd…"),  # over it: the marker is one of the characters
        ("abcdef", 1, "…"),
        ("", 0, ""),
        ("🙂🙂🙂", 2, "🙂…"),  # characters, not bytes
    ],
)
def test_truncate(text, limit, expected):
    result = truncate(text, limit)
    assert result == expected
    assert limit is None or len(result) <= limit


def test_truncate_to_nothing():
    assert len(truncate("abc", 0)) <= 0


# -- clean_text ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "single_line", "expected"),
    [
        ("plain text", False, "plain text"),
        ("a\x00b", False, "a\\x00b"),  # NUL, which PostgreSQL refuses
        ("a\x00b", True, "a\\x00b"),
        ("lone \ud800 surrogate", False, "lone \\ud800 surrogate"),
        ("\udcff", True, "\\udcff"),
        ("\ud83d\ude00", False, "\\ud83d\\ude00"),  # a pair written as two code points stays two escapes
        ("line\nbreak\r\n", False, "line\nbreak\r\n"),  # kept for a text column
        ("line\nbreak\r\n", True, "line\\x0abreak\\x0d\\x0a"),  # not in a header or a log line
        ("tab\there", True, "tab\\x09here"),
        ("\x1b[31mred\x7f", True, "\\x1b[31mred\\x7f"),
        ("\x1b[31mred", False, "\x1b[31mred"),  # only NUL is escaped without single_line
        ("çå✓ 🙂\x85\u2028", True, "çå✓ 🙂\x85\u2028"),  # printable or not, only C0 and DEL are control characters
        (42, False, "42"),
        (None, False, "None"),
        (b"a\x00", True, "b'a\\x00'"),  # not text: its repr
    ],
)
def test_clean_text(value, single_line, expected):
    assert clean_text(value, single_line=single_line) == expected


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        ("abc", 3, "abc"),
        ("abcd", 3, "ab…"),
        ("\x00\x00", 4, "\\x0…"),  # the limit applies to the escaped text
        ("\x00\x00", 8, "\\x00\\x00"),
        ("\x00", 4, "\\x00"),
        ("a\nb", 3, "a\nb"),
    ],
)
def test_clean_text_cuts_after_escaping(value, limit, expected):
    assert clean_text(value, limit) == expected


@examples
@given(value=ANY_TEXT, limit=st.none() | st.integers(min_value=1, max_value=80), single_line=st.booleans())
def test_clean_text_is_always_storable_and_bounded(value, limit, single_line):
    cleaned = clean_text(value, limit, single_line=single_line)
    assert is_storable(cleaned)
    assert limit is None or len(cleaned) <= limit
    if single_line:
        assert not CONTROL.search(cleaned)
        assert header_problem({"X": cleaned}) is None
    if is_storable(value) and (limit is None or len(value) <= limit) and not (single_line and CONTROL.search(value)):
        assert cleaned == value  # what needs no bounding is left alone


# -- body_text ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", ("", True)),
        (b'{"a": 1}', ('{"a": 1}', True)),
        ("çå✓ 🙂".encode(), ("çå✓ 🙂", True)),
        (b"\\x00 is four characters", ("\\x00 is four characters", True)),
        (b"a\x00b", ("a\\x00b", False)),
        (b"\xff\xfe", ("\\xff\\xfe", False)),
        (b"\xff\x00", ("\\xff\\x00", False)),
        (b"\xed\xa0\x80", ("\\xed\\xa0\\x80", False)),  # an encoded surrogate is not UTF-8
        (b"ok \xc3", ("ok \\xc3", False)),  # a character cut in the middle
    ],
)
def test_body_text(body, expected):
    assert body_text(body) == expected


@examples
@given(body=st.binary(max_size=40) | ANY_TEXT.map(lambda text: text.encode("utf-8", "surrogatepass")))
def test_body_text_is_storable_and_exact_only_when_it_is_the_body(body):
    text, exact = body_text(body)
    assert is_storable(text)
    assert exact is (text.encode("utf-8") == body)


# -- clean_headers (kept on a DeadLetter row for people to read) --------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, {}),
        ("", {}),
        ({}, {}),
        ("a string", {TRUNCATED: "the original headers were not a JSON object"}),
        (["a", "b"], {TRUNCATED: "the original headers were not a JSON object"}),
        (0, {TRUNCATED: "the original headers were not a JSON object"}),
    ],
)
def test_clean_headers_of_something_else(value, expected):
    assert clean_headers(value) == expected


def test_clean_headers_makes_every_value_text():
    when = datetime(2024, 1, 2, tzinfo=UTC)
    assert clean_headers({"s": "v", "n": 5, "none": None, "b": True, "o": {"a": [1]}, "t": when}) == {
        "s": "v",
        "n": "5",
        "none": "null",
        "b": "true",
        "o": '{"a": [1]}',
        "t": json.dumps(str(when)),
    }


def test_clean_headers_escapes_names_to_one_line_and_keeps_values_readable():
    cleaned = clean_headers({"bad\nname\x00": "two\nlines\x00"})
    assert cleaned == {"bad\\x0aname\\x00": "two\nlines\\x00"}


def test_clean_headers_cuts_names_and_values():
    cleaned = clean_headers({"n" * (MAX_KEPT_NAME + 1): "v" * (MAX_KEPT_VALUE + 1), "short": "v" * MAX_KEPT_VALUE})
    assert cleaned == {
        "n" * (MAX_KEPT_NAME - 1) + "…": "v" * (MAX_KEPT_VALUE - 1) + "…",
        "short": "v" * MAX_KEPT_VALUE,
    }


@pytest.mark.parametrize("count", [MAX_KEPT_HEADERS - 1, MAX_KEPT_HEADERS])
def test_clean_headers_keeps_up_to_the_count_without_a_marker(count):
    headers = {f"H{index}": str(index) for index in range(count)}
    assert clean_headers(headers) == headers


def test_clean_headers_over_the_count_keeps_the_first_ones_and_says_so():
    headers = {f"H{index}": str(index) for index in range(MAX_KEPT_HEADERS + 10)}
    cleaned = clean_headers(headers)
    assert list(cleaned)[:MAX_KEPT_HEADERS] == [f"H{index}" for index in range(MAX_KEPT_HEADERS)]
    assert cleaned[TRUNCATED] == f"kept {MAX_KEPT_HEADERS} of {MAX_KEPT_HEADERS + 10} headers"
    assert len(cleaned) == MAX_KEPT_HEADERS + 1


@examples
@given(headers=st.dictionaries(ANY_TEXT, ANY_TEXT | st.integers() | st.none(), max_size=8))
def test_clean_headers_is_always_storable(headers):
    cleaned = clean_headers(headers)
    assert all(is_storable(name) and is_storable(value) for name, value in cleaned.items())
    assert all(not CONTROL.search(name) for name in cleaned)
    json.dumps(cleaned).encode("utf-8")  # jsonb takes it


# -- copyable_headers (copied onto a re-published message) ---------------------------------------------


def test_safe_headers_are_copied_as_they_are():
    headers = {
        "Content-Type": "application/json",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "X-Empty": "",
        "X-Unicode": "çå✓ 🙂",
        "Natsy": "not a Nats- header",
        "Eventbusy": "nor an Eventbus- one",
    }
    assert copyable_headers(headers) == (headers, [])


@pytest.mark.parametrize(
    "name",
    [
        "Nats-Msg-Id",
        "Nats-Expected-Stream",
        "Nats-Expected-Last-Sequence",
        "Nats-Rollup",
        "Nats-TTL",
        "Nats-Schedule",
        "NATS-MSG-ID",
        "nats-msg-id",
        "Eventbus-Message-Id",
        "Eventbus-Dead-Letter-Id",
        "Eventbus-Original-Subject",
        "EVENTBUS-anything",
        "eventbus-",
    ],
)
def test_control_headers_are_dropped(name):
    assert copyable_headers({name: "v", "Keep": "k"}) == ({"Keep": "k"}, [name])


@pytest.mark.parametrize("name", ["", "with space", "colon:", "é", "a/b", "(x)", "line\nbreak"])
def test_names_that_are_not_tokens_are_dropped(name):
    kept, dropped = copyable_headers({name: "v"})
    assert kept == {}
    assert dropped == [clean_text(name, MAX_COPIED_NAME, single_line=True)]


@pytest.mark.parametrize(
    "value", ["a\nb", "a\rb", "\x00", "tab\tvalue", "\x1b", "\x7f", " padded", "padded ", "a\x85", 5, None, ["v"]]
)
def test_values_that_would_not_travel_as_they_are_are_dropped(value):
    assert copyable_headers({"X": value}) == ({}, ["X"])


def test_name_and_value_lengths_at_and_over_the_bounds():
    at = {"n" * MAX_COPIED_NAME: "v", "X": "v" * MAX_COPIED_VALUE}
    assert copyable_headers(at) == (at, [])
    long_name = "n" * (MAX_COPIED_NAME + 1)
    kept, dropped = copyable_headers({long_name: "v", "Y": "v" * (MAX_COPIED_VALUE + 1)})
    assert kept == {}
    assert dropped == ["n" * (MAX_COPIED_NAME - 1) + "…", "Y"]  # a dropped name is reported bounded too


def test_at_most_so_many_headers_are_copied():
    headers = {f"H{index}": "v" for index in range(MAX_COPIED_HEADERS + 3)}
    kept, dropped = copyable_headers(headers)
    assert list(kept) == [f"H{index}" for index in range(MAX_COPIED_HEADERS)]
    assert dropped == [f"H{index}" for index in range(MAX_COPIED_HEADERS, MAX_COPIED_HEADERS + 3)]


def test_the_total_size_is_bounded_and_counts_bytes():
    # each header costs name + ": " + value + CRLF; seven of 1,024 bytes, one of 1,019, then 5 bytes are left
    headers = {f"{index:02d}": "v" * (MAX_COPIED_VALUE - 6) for index in range(7)}
    headers["07"] = "v" * (MAX_COPIED_VALUE - 11)
    headers["Z"] = ""  # 1 + 0 + 4 bytes: exactly at the total
    assert sum(len(name) + len(value) + 4 for name, value in headers.items()) == MAX_COPIED_TOTAL
    assert copyable_headers(headers) == (headers, [])
    assert copyable_headers({**headers, "W": ""}) == (headers, ["W"])  # nothing more fits
    multibyte = {"X": "é" * (MAX_COPIED_VALUE // 2), "Y": "é" * (MAX_COPIED_VALUE // 2)}  # 1,024 bytes each
    assert copyable_headers(multibyte)[0] == multibyte
    big = {f"{index:02d}": "é" * 1000 for index in range(8)}  # under the value bound, 2,006 bytes each
    kept, dropped = copyable_headers(big)
    assert list(kept) == ["00", "01", "02", "03"]
    assert dropped == ["04", "05", "06", "07"]


def test_a_later_header_that_fits_is_still_copied_after_one_that_does_not():
    headers = {"Bad": "x\ny", "Good": "v", "Nats-TTL": "1s", "Also": "w"}
    assert copyable_headers(headers) == ({"Good": "v", "Also": "w"}, ["Bad", "Nats-TTL"])


@pytest.mark.parametrize("value", [None, "text", ["a"], 5])
def test_copyable_headers_of_something_else(value):
    assert copyable_headers(value) == ({}, [])


@examples
@given(headers=st.dictionaries(STORED_TEXT, STORED_TEXT, max_size=8))
def test_copied_headers_always_go_on_the_wire_unchanged(headers):
    kept, dropped = copyable_headers(headers)
    assert len(kept) + len(dropped) == len(headers)
    assert header_problem(kept) is None
    assert all(value.strip() == value for value in kept.values())  # nats-py would strip it
    assert all(not name.lower().startswith(("nats-", "eventbus-")) for name in kept)
    assert all(is_storable(name) and not CONTROL.search(name) for name in dropped)


def test_a_value_with_a_lone_surrogate_is_not_copied():
    assert copyable_headers({"X": "\ud800"}) == ({}, ["X"])


# -- log_value ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("orders.created.v1", "orders.created.v1"),
        ("çå✓", "çå✓"),  # printable: as it is
        ("a\nb", "a\\nb"),
        ("a\x00", "a\\x00"),
        ("é\n", "\\xe9\\n"),  # once escaped, every non-ASCII character is
        ("\ud800", "\\ud800"),
        ("", ""),
    ],
)
def test_log_value(value, expected):
    assert log_value(value) == expected


def test_log_value_is_bounded():
    assert log_value("x" * (MAX_LOG_VALUE + 1)) == "x" * (MAX_LOG_VALUE - 1) + "…"
    assert log_value("\n" * MAX_LOG_VALUE) == "\\n" * (MAX_LOG_VALUE // 2 - 1) + "\\…"
    assert log_value("abcdef", limit=4) == "abc…"


@examples
@given(value=ANY_TEXT)
def test_log_value_is_one_printable_line(value):
    logged = log_value(value)
    assert logged.isprintable()
    assert is_storable(logged)
    assert len(logged) <= MAX_LOG_VALUE
