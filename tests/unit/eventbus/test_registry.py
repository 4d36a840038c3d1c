"""apps/eventbus/registry.py: subject matching, what a stream captures, a consumer's filter subjects."""

from __future__ import annotations

import json
import re

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.eventbus.registry import (
    REDELIVER_PREFIX,
    ConsumerSpec,
    Registry,
    StreamSpec,
    batch_handler,
    is_batch_handler,
    preparer_of,
    subject_matches,
)

# -- subject_matches ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        # exact
        ("orders.created.v1", "orders.created.v1", True),
        ("orders.created.v1", "orders.created.v2", False),
        ("orders", "orders", True),
        ("Orders.created", "orders.created", False),  # case matters
        ("order", "orders", False),  # a token is compared whole, not as a prefix
        ("orders", "order", False),
        # different lengths, no wildcard
        ("orders.created", "orders.created.v1", False),
        ("orders.created.v1", "orders.created", False),  # pattern longer than subject
        # * is exactly one token
        ("orders.*.v1", "orders.created.v1", True),
        ("orders.*.v1", "orders.created.extra.v1", False),
        ("orders.*", "orders.created", True),
        ("orders.*", "orders.created.v1", False),
        ("orders.*", "orders", False),
        ("*", "orders", True),
        ("*", "orders.created", False),
        ("*.*.*", "a.b.c", True),
        ("*.*.*", "a.b", False),
        ("orders.created.*", "orders.created", False),  # pattern longer than subject, ending in *
        # > is one token or more, never zero
        ("orders.>", "orders.created", True),
        ("orders.>", "orders.created.v1.extra", True),
        ("orders.>", "orders", False),
        (">", "orders", True),
        (">", "orders.created.v1", True),
        ("*.>", "orders", False),
        ("*.>", "orders.created", True),
        ("orders.*.>", "orders.created", False),
        ("orders.*.>", "orders.created.v1", True),
        ("orders.>", "payments.created", False),
        # a wildcard character inside a token is a literal
        ("orders.cre*", "orders.created", False),
        ("orders.cre*", "orders.cre*", True),
        ("orders.a>", "orders.a.b", False),
        # the platform's own subjects
        ("redeliver.ORDERS.>", "redeliver.ORDERS.payments", True),
        ("redeliver.ORDERS.>", "redeliver.ORDERSX.payments", False),
        ("redeliver.ORDERS.>", "redeliver.ORDERS", False),
        ("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>", "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.ORDERS.c", True),
    ],
)
def test_subject_matches(pattern, subject, expected):
    assert subject_matches(pattern, subject) is expected


def _reference_regex(pattern: str) -> re.Pattern:
    """NATS semantics written independently: ``*`` one token, ``>`` (last) one or more."""
    parts = []
    for token in pattern.split("."):
        if token == "*":
            parts.append(r"[^.]+")
        elif token == ">":
            parts.append(r"[^.]+(?:\.[^.]+)*")
        else:
            parts.append(re.escape(token))
    return re.compile(r"\.".join(parts))


_TOKEN = st.sampled_from(["a", "b", "orders", "v1"])
_PATTERN_TOKEN = st.sampled_from(["a", "b", "orders", "v1", "*"])


@st.composite
def _patterns(draw) -> str:
    tokens = draw(st.lists(_PATTERN_TOKEN, min_size=0, max_size=4))
    if draw(st.booleans()) or not tokens:
        tokens.append(">")
    return ".".join(tokens)


@hypothesis.settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(pattern=_patterns() | st.lists(_PATTERN_TOKEN, min_size=1, max_size=5).map(".".join),
       subject=st.lists(_TOKEN, min_size=1, max_size=6).map(".".join))  # fmt: skip
def test_subject_matches_agrees_with_a_reference_implementation(pattern, subject):
    assert subject_matches(pattern, subject) is bool(_reference_regex(pattern).fullmatch(subject))


# -- StreamSpec -----------------------------------------------------------------------------


def test_all_subjects_adds_the_redelivery_subjects_only_with_redelivery():
    with_redelivery = StreamSpec("ORDERS", ("orders.>", "carts.*.v1"))
    without = StreamSpec("DLQ", ("dlq.>",), redelivery=False)

    assert with_redelivery.all_subjects == ["orders.>", "carts.*.v1", f"{REDELIVER_PREFIX}.ORDERS.>"]
    assert without.all_subjects == ["dlq.>"]


@pytest.mark.parametrize(
    ("subject", "with_redelivery", "without_redelivery"),
    [
        ("orders.created.v1", True, True),
        ("orders", False, False),
        ("carts.updated.v1", True, True),
        ("carts.updated.v2", False, False),
        ("redeliver.ORDERS.payments", True, False),
        ("redeliver.ORDERS.payments.extra", True, False),
        ("redeliver.ORDERS", False, False),
        ("redeliver.PAYMENTS.payments", False, False),  # another stream's redelivery subject
        ("payments.completed.v1", False, False),
    ],
)
def test_stream_captures(subject, with_redelivery, without_redelivery):
    subjects = ("orders.>", "carts.*.v1")
    assert StreamSpec("ORDERS", subjects).captures(subject) is with_redelivery
    assert StreamSpec("ORDERS", subjects, redelivery=False).captures(subject) is without_redelivery


# -- Registry ---------------------------------------------------------------------------------


@pytest.fixture
def reg() -> Registry:
    reg = Registry()
    reg.register_stream(StreamSpec("ORDERS", ("orders.>",)))
    reg.register_stream(StreamSpec("PAYMENTS", ("payments.*.v1",)))
    reg.register_stream(StreamSpec("DLQ", ("dlq.>",), redelivery=False))
    return reg


def test_fresh_registries_are_independent(reg):
    assert Registry().streams == {}
    assert Registry().consumers == {}
    assert set(reg.streams) == {"ORDERS", "PAYMENTS", "DLQ"}


@pytest.mark.parametrize(
    ("subject", "stream"),
    [
        ("orders.created.v1", "ORDERS"),
        ("payments.completed.v1", "PAYMENTS"),
        ("dlq.payments", "DLQ"),
        ("redeliver.ORDERS.audit", "ORDERS"),
        ("redeliver.PAYMENTS.orders", "PAYMENTS"),
    ],
)
def test_stream_for_and_captures(reg, subject, stream):
    assert reg.stream_for(subject).name == stream
    assert reg.captures(subject) is True


@pytest.mark.parametrize(
    "subject",
    ["inventory.reserved.v1", "payments.completed.v2", "orders", "redeliver.DLQ.audit", "redeliver.NOPE.x", "dlq"],
)
def test_a_subject_no_stream_captures(reg, subject):
    assert reg.captures(subject) is False
    with pytest.raises(KeyError, match=re.escape(repr(subject))):
        reg.stream_for(subject)


def test_an_empty_registry_captures_nothing():
    assert Registry().captures("orders.created.v1") is False
    with pytest.raises(KeyError):
        Registry().stream_for("orders.created.v1")


def test_stream_for_takes_the_first_declared_of_overlapping_streams():
    reg = Registry()
    reg.register_stream(StreamSpec("WIDE", ("orders.>",)))
    reg.register_stream(StreamSpec("NARROW", ("orders.created.v1",)))
    assert reg.stream_for("orders.created.v1").name == "WIDE"


def test_registering_a_stream_again_replaces_it():
    reg = Registry()
    reg.register_stream(StreamSpec("ORDERS", ("orders.>",)))
    reg.register_stream(StreamSpec("ORDERS", ("carts.>",)))
    assert reg.captures("orders.created.v1") is False
    assert reg.stream_for("carts.added.v1").name == "ORDERS"


def test_streams_of_lists_each_streams_filters_then_the_redelivery_subject(reg):
    consumer = ConsumerSpec(
        "audit",
        handlers={
            "orders.created.v1": print,
            "payments.*.v1": print,
            "orders.cancelled.v1": print,
            "dlq.>": print,
        },
    )
    assert reg.streams_of(consumer) == {
        "ORDERS": ["orders.created.v1", "orders.cancelled.v1", "redeliver.ORDERS.audit"],
        "PAYMENTS": ["payments.*.v1", "redeliver.PAYMENTS.audit"],
        "DLQ": ["dlq.>"],  # no redelivery subject in a stream declared without redelivery
    }
    assert consumer.subjects == ["orders.created.v1", "payments.*.v1", "orders.cancelled.v1", "dlq.>"]


def test_streams_of_a_consumer_reading_an_undeclared_subject(reg):
    consumer = ConsumerSpec("stray", handlers={"orders.created.v1": print, "inventory.>": print})
    with pytest.raises(KeyError, match="inventory"):
        reg.streams_of(consumer)


def test_a_consumers_redelivery_subject_is_captured_and_filtered(reg):
    consumer = ConsumerSpec("payments", handlers={"orders.created.v1": print})
    subject = consumer.redeliver_subject("ORDERS")
    assert subject == "redeliver.ORDERS.payments"
    assert reg.stream_for(subject).name == "ORDERS"
    assert subject in reg.streams_of(consumer)["ORDERS"]


def test_consumer_lookup(reg):
    spec = reg.register_consumer(ConsumerSpec("payments", handlers={"orders.created.v1": print}))
    assert reg.consumer("payments") is spec
    with pytest.raises(KeyError, match=r"'nope'.*known: payments"):
        reg.consumer("nope")
    with pytest.raises(KeyError, match="known: none"):
        Registry().consumer("payments")


def test_override_restores_the_declarations(reg):
    before_streams, before_consumers = dict(reg.streams), dict(reg.consumers)
    with reg.override() as same:
        assert same is reg
        reg.register_stream(StreamSpec("EXTRA", ("extra.>",)))
        reg.register_consumer(ConsumerSpec("extra", handlers={"extra.>": print}))
        assert reg.captures("extra.thing")
    assert reg.streams == before_streams
    assert reg.consumers == before_consumers
    assert reg.captures("extra.thing") is False


def test_override_restores_after_an_exception(reg):
    with pytest.raises(RuntimeError), reg.override():
        reg.register_stream(StreamSpec("EXTRA", ("extra.>",)))
        raise RuntimeError
    assert "EXTRA" not in reg.streams


# -- ConsumerSpec ---------------------------------------------------------------------------------


def _created(event):
    return "created"


def _any_order(event):
    return "any order"


def _everything(event):
    return "everything"


def test_handler_for_takes_the_first_matching_pattern_in_declaration_order():
    spec = ConsumerSpec("c", handlers={"orders.*.v1": _any_order, "orders.created.v1": _created, ">": _everything})
    assert spec.handler_for("orders.created.v1") is _any_order  # declared first, though less specific
    assert spec.handler_for("orders.created.v2") is _everything
    specific_first = ConsumerSpec("c", handlers={"orders.created.v1": _created, "orders.*.v1": _any_order})
    assert specific_first.handler_for("orders.created.v1") is _created
    assert specific_first.handler_for("orders.cancelled.v1") is _any_order


@pytest.mark.parametrize("subject", ["orders.created", "orders.created.v1.x", "payments.completed.v1", "orders"])
def test_handler_for_is_none_when_no_pattern_matches(subject):
    spec = ConsumerSpec("c", handlers={"orders.*.v1": _any_order})
    assert spec.handler_for(subject) is None
    assert spec.handler_for(subject) is None  # the remembered miss answers the same


def test_handler_for_resolves_a_dotted_path():
    spec = ConsumerSpec("c", handlers={"orders.>": "json.dumps"})
    assert spec.handler_for("orders.created.v1") is json.dumps


def test_handler_for_remembers_per_spec_not_across_specs():
    first = ConsumerSpec("c", handlers={"orders.>": _created})
    second = ConsumerSpec("c", handlers={"orders.>": _any_order})
    assert first.handler_for("orders.created.v1") is _created
    assert second.handler_for("orders.created.v1") is _any_order


def test_setting_prefers_the_declaration_even_when_falsy(settings):
    settings.EVENTBUS = {**settings.EVENTBUS, "MAX_DELIVER": 7, "ACK_WAIT": 30}
    assert ConsumerSpec("c", handlers={}).setting("MAX_DELIVER") == 7
    assert ConsumerSpec("c", handlers={}, max_deliver=3).setting("MAX_DELIVER") == 3
    assert ConsumerSpec("c", handlers={}, ack_wait=0).setting("ACK_WAIT") == 0  # only None means "the default"


# -- batch handlers -------------------------------------------------------------------------------


def test_a_plain_handler_is_not_a_batch_handler():
    assert is_batch_handler(_created) is False
    assert preparer_of(_created) is None
    assert preparer_of(None) is None


def test_batch_handler_bare_decorator():
    def handle(events):
        return len(events)

    marked = batch_handler(handle)
    assert marked is handle  # the function itself, still callable as before
    assert marked([1, 2]) == 2
    assert is_batch_handler(handle) is True
    assert preparer_of(handle) is None


def test_batch_handler_with_prepare():
    def prepare(events):
        return {}

    @batch_handler(prepare=prepare)
    def handle(events, prepared):
        return prepared

    assert is_batch_handler(handle) is True
    assert preparer_of(handle) is prepare
    assert handle([], {"x": 1}) == {"x": 1}


def test_batch_handler_called_with_no_arguments_marks_without_prepare():
    @batch_handler()
    def handle(events):
        return None

    assert is_batch_handler(handle) is True
    assert preparer_of(handle) is None
