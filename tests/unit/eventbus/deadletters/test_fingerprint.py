"""apps/eventbus/deadletters/fingerprint.py: failures that differ only in their ids, numbers and
quoted values share a fingerprint; a different place, type, consumer or subject does not; and
nothing a message can carry breaks it or makes it slow."""

from __future__ import annotations

import time
import traceback as tb

import hypothesis
from hypothesis import given
from hypothesis import strategies as st

from apps.eventbus.deadletters.fingerprint import (
    MAX_FRAME,
    MAX_SIGNATURE,
    error_signature,
    fingerprint_of,
    is_fingerprint,
    raising_frame,
)

examples = hypothesis.settings(max_examples=200, deadline=None, derandomize=True, database=None)
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)  # lone surrogates included


def python_traceback(path: str, function: str, line: int, error: str = "PermanentError: refused") -> str:
    return (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/apps/eventbus/consuming/processing.py", line 210, in _handle\n'
        "    handler(event)\n"
        f'  File "{path}", line {line}, in {function}\n'
        "    raise PermanentError(...)\n"
        f"{error}"
    )


def fingerprint(error: str = "refused", traceback: str = "", **changes) -> str:
    fields = {"consumer": "payments", "subject": "orders.created.v1", "error_type": "PermanentError", **changes}
    return fingerprint_of(error=error, traceback=traceback, **fields).value


# -- the signature: variable parts as placeholders ------------------------------------------------


def test_ids_numbers_quoted_values_times_urls_and_emails_become_placeholders():
    cases = {
        "unknown SKU 'KB-001' in order 6f1c2b8e-3d4a-4e5f-9a0b-1c2d3e4f5a6b": "unknown SKU <str> in order <uuid>",
        'customer "Ann O\'Neil" refused': "customer <str> refused",
        "dead letter 7 is resolved; ORDERS:1042 #12": "dead letter <n> is resolved; ORDERS:<n> #<n>",
        "amount 12.50 exceeds -3, took 2.5s and 200ms": "amount <n> exceeds -<n>, took <n>s and <n>ms",
        "at 2026-11-20T10:15:00.123Z, or 2026-11-20 10:15:00+01:00": "at <time>, or <time>",
        "POST https://psp.example.com/charges/ch_123?x=1 failed": "POST <url> failed",
        "mail ops+alerts@example.co.uk bounced": "mail <email> bounced",
        "object at 0x7f3a2b1c, digest 9f86d081884c7d65": "object at <hex>, digest <hex>",
    }
    for error, expected in cases.items():
        assert error_signature(error) == expected, error


def test_names_stay_as_they_are():
    for text in ["orders.created.v1 via redeliver.ORDERS.payments", "utf-8 payments-2", "can't parse: don't know"]:
        assert error_signature(text) == text


def test_one_line_of_printable_text_at_most_its_column():
    assert error_signature("line one\nline\ttwo\r\n  three\x00\x1b[31m") == "line one line two three [<n>m"
    assert error_signature("a\udc80b\u200bc") == "a b c", "lone surrogates and format characters are spaces"
    huge = error_signature("refused because " + "x" * 5_000_000)
    assert len(huge) == MAX_SIGNATURE and huge.endswith("…")


# -- the raising frame ------------------------------------------------------------------------------


def test_the_innermost_python_frame_without_its_line_number_and_wherever_the_checkout_lives():
    here = python_traceback("/srv/app/apps/payments/handlers.py", "charge_orders", 88)
    elsewhere = python_traceback("/home/ci/work/apps/payments/handlers.py", "charge_orders", 91)
    assert raising_frame(here) == raising_frame(elsewhere) == "apps/payments/handlers.py:charge_orders"
    installed = python_traceback("/venv/lib/python3.11/site-packages/httpx/_client.py", "send", 1)
    assert raising_frame(installed) == "httpx/_client.py:send"


def test_a_chained_exception_is_placed_where_the_last_one_was_raised():
    def inner():
        raise ValueError("bad input")

    def outer():
        try:
            inner()
        except ValueError as exc:
            raise KeyError("sku") from exc

    try:
        outer()
    except KeyError as exc:
        text = "".join(tb.format_exception(exc))
    assert raising_frame(text).endswith("test_fingerprint.py:outer")


def test_frames_of_other_languages_and_none_at_all():
    java = (
        "java.lang.IllegalStateException: boom\n\tat com.shop.Pay.charge(Pay.java:42)\n"
        "\tat com.shop.Main.main(Main.java:7)"
    )
    node = "Error: boom\n    at charge (/app/src/pay.js:10:5)\n    at main (/app/src/index.js:3:1)"
    go = "panic: boom\n\ngoroutine 1 [running]:\nmain.charge(0x1)\n\t/app/main.go:12 +0x1d\n"
    assert raising_frame(java) == "com.shop.Pay.charge(Pay.java)"
    assert raising_frame(node) == "charge (/app/src/pay.js)"
    assert raising_frame(go) == "main.charge"
    for nothing in ["", "just some text", "\x00\udc80"]:
        assert raising_frame(nothing) == ""


# -- the fingerprint --------------------------------------------------------------------------------


def test_the_same_failure_with_other_values_shares_a_fingerprint_and_any_other_part_splits_it():
    where = python_traceback("/srv/app/apps/payments/handlers.py", "charge_orders", 88)
    same = fingerprint("order 42 refused: 'A-1'", where)
    assert is_fingerprint(same)
    assert fingerprint("order 97 refused: 'B-77'", where.replace("line 88", "line 90")) == same
    assert fingerprint("order 42 refused: 'A-1'", "") != same, "no frame"
    assert fingerprint("order 42 declined: 'A-1'", where) != same
    assert fingerprint("order 42 refused: 'A-1'", where.replace("charge_orders", "refund")) != same
    for change in ({"consumer": "inventory"}, {"subject": "orders.created.v2"}, {"error_type": "ContractError"}):
        assert fingerprint("order 42 refused: 'A-1'", where, **change) != same, change


def test_values_are_kept_apart_when_hashed():
    assert fingerprint(consumer="a", subject="b,c") != fingerprint(consumer="a,b", subject="c")
    assert fingerprint(consumer='a"', subject="b") != fingerprint(consumer="a", subject='"b')


def test_is_fingerprint_is_strict():
    good = fingerprint()
    assert is_fingerprint(good)
    for bad in [good.upper(), good[:-1], good + "0", " " + good, "g" * 64, None, 42, good[:-1] + "\n"]:
        assert not is_fingerprint(bad), bad


@examples
@given(consumer=ANY_TEXT, subject=ANY_TEXT, error_type=ANY_TEXT, error=ANY_TEXT, traceback=ANY_TEXT)
def test_anything_a_message_carries_gives_a_fingerprint_and_storable_text(
    consumer, subject, error_type, error, traceback
):
    found = fingerprint_of(consumer=consumer, subject=subject, error_type=error_type, error=error, traceback=traceback)
    assert is_fingerprint(found.value)
    for text, limit in ((found.signature, MAX_SIGNATURE), (found.frame, MAX_FRAME)):
        assert len(text) <= limit and text.isprintable()
        text.encode("utf-8")  # no lone surrogate left: PostgreSQL takes it
    again = fingerprint_of(consumer=consumer, subject=subject, error_type=error_type, error=error, traceback=traceback)
    assert again == found


def test_hostile_input_stays_fast():
    hostile = [
        "'\\" * 200_000,
        "'" + "\\'" * 200_000,
        '"' * 100_000,
        "a." * 200_000,
        "9" * 1_000_000,
        "x@" * 200_000,
        ("f" * 7 + "1 ") * 100_000,
        "https://" * 100_000,
        '  File "' * 100_000,
        "\tat " * 200_000,
        "goroutine 1 [" * 100_000,
    ]
    started = time.perf_counter()
    for text in hostile:
        fingerprint_of(consumer=text, subject=text, error_type=text, error=text, traceback=text)
    assert time.perf_counter() - started < 5, "every pattern is linear and runs on a bounded text"
