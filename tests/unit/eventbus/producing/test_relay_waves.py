"""apps/eventbus/producing/relay.py: publishing a claimed batch in waves, so that each aggregate's
events go in order, and what a refused or failed row does to the rest of its aggregate.

``Relay._publish`` runs here on an event loop of its own, with a fake client (``max_payload``)
and a fake acknowledger standing in for NATS; ``_without_blocked_aggregates`` with a fake cursor.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.js.api import PubAck
from nats.js.errors import APIError, BadRequestError, ServiceUnavailableError

from apps.eventbus.producing import relay as relay_module
from apps.eventbus.producing.relay import Relay, _parse_headers, _permanent, _Row, refusal
from apps.eventbus.registry import Registry, StreamSpec
from apps.eventbus.wire import wire_size

MSG_ID = "Nats-Msg-Id"
ACK, NEVER = "ack", "never"


def row(id: int, aggregate: str, *, subject="orders.created.v1", body="{}", headers=None) -> _Row:
    return _Row(
        id, f"m{id}", subject, aggregate, body, {"Content-Type": "application/json"} if headers is None else headers
    )


def rows_of(aggregates: str) -> list[_Row]:
    """``"ABA"``: rows 1 (A), 2 (B), 3 (A), in claim (id) order."""
    return [row(index, aggregate) for index, aggregate in enumerate(aggregates, start=1)]


class FakeAcks:
    """Stands in for ``_Acks``: every publish is acknowledged unless ``script`` says otherwise
    (an exception to fail it with, or ``NEVER``)."""

    def __init__(self) -> None:
        self.script: dict[str, object] = {}
        self.published: list[str] = []
        self.headers: dict[str, dict] = {}
        self.ids: dict[asyncio.Future, str] = {}

    async def publish(self, subject, body, headers):
        message_id = headers[MSG_ID]
        self.published.append(message_id)
        self.headers[message_id] = headers
        future = asyncio.get_running_loop().create_future()
        self.ids[future] = message_id
        outcome = self.script.get(message_id, ACK)
        if outcome == ACK:
            future.set_result(PubAck(stream="ORDERS", seq=len(self.published)))
        elif outcome != NEVER:
            future.set_exception(outcome)
        return future


class FakeClient:
    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload


class Harness:
    def __init__(self, relay: Relay, acks: FakeAcks) -> None:
        self.relay, self.acks = relay, acks
        self.waves: list[list[str]] = []  # per wave: the message ids published, "refused" for those not sent

    def publish(self, rows: list[_Row]) -> relay_module._Round:
        async def run():
            self.relay.loop = asyncio.get_running_loop()
            return await self.relay._publish(rows)

        return asyncio.run(run())

    def ids(self, rows) -> list[str]:
        return [item.message_id for item in rows]


@pytest.fixture
def harness(monkeypatch) -> Harness:
    reg = Registry()
    reg.register_stream(StreamSpec("ORDERS", ("orders.>",)))
    relay = Relay(batch_size=100, poll_interval=1.0, reg=reg)
    relay.nc = FakeClient(max_payload=4096)
    relay.acks = acks = FakeAcks()
    harness = Harness(relay, acks)
    gather = relay_module._gather_with_timeout

    async def recording_gather(futures, timeout):
        harness.waves.append([acks.ids.get(future, "refused") for future in futures])
        return await gather(futures, timeout)

    monkeypatch.setattr(relay_module, "_gather_with_timeout", recording_gather)
    monkeypatch.setattr(relay_module, "PUBLISH_TIMEOUT", 0.05)
    yield harness
    for executor in relay.executors:
        executor.shutdown(wait=False)


# -- the waves -------------------------------------------------------------------------------------


def test_the_nth_wave_holds_each_aggregates_nth_event(harness):
    rows = rows_of("ABACAB")  # A: 1 3 5, B: 2 6, C: 4
    outcome = harness.publish(rows)
    assert harness.waves == [["m1", "m2", "m4"], ["m3", "m6"], ["m5"]]
    assert harness.ids(item for item, _ in outcome.acked) == ["m1", "m2", "m4", "m3", "m6", "m5"]
    assert [seq for _, seq in outcome.acked] == [1, 2, 3, 4, 5, 6]
    assert (outcome.refused, outcome.failed, outcome.held) == ([], [], [])


def test_distinct_aggregates_go_in_one_wave(harness):
    harness.publish(rows_of("ABCDE"))
    assert harness.waves == [["m1", "m2", "m3", "m4", "m5"]]


def test_a_single_aggregate_goes_one_event_at_a_time(harness):
    harness.publish(rows_of("AAAA"))
    assert harness.waves == [["m1"], ["m2"], ["m3"], ["m4"]]


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(aggregates=st.lists(st.sampled_from("ABCD"), min_size=1, max_size=12).map("".join))
def test_waves_keep_each_aggregates_order(aggregates):
    reg = Registry()
    reg.register_stream(StreamSpec("ORDERS", ("orders.>",)))
    relay = Relay(batch_size=100, poll_interval=1.0, reg=reg)
    try:
        relay.nc, relay.acks = FakeClient(4096), FakeAcks()
        rows = rows_of(aggregates)
        outcome = Harness(relay, relay.acks).publish(rows)
    finally:
        for executor in relay.executors:
            executor.shutdown(wait=False)
    by_id = {item.message_id: item for item in rows}
    published_per_aggregate: dict[str, list[int]] = defaultdict(list)
    for message_id in relay.acks.published:
        published_per_aggregate[by_id[message_id].aggregate_id].append(by_id[message_id].id)
    claimed_per_aggregate: dict[str, list[int]] = defaultdict(list)
    for item in rows:
        claimed_per_aggregate[item.aggregate_id].append(item.id)
    assert published_per_aggregate == claimed_per_aggregate
    assert len(outcome.acked) == len(rows)
    assert sorted(relay.acks.published) == sorted(by_id)  # each once


# -- a transient failure stops its aggregate, and only it ----------------------------------------


@pytest.mark.parametrize(
    "error", [ConnectionError("disconnected"), ServiceUnavailableError(code=503), APIError(code=500), TimeoutError()]
)
def test_a_failed_publish_holds_the_aggregates_later_events(harness, error):
    harness.acks.script["m1"] = error
    outcome = harness.publish(rows_of("ABABAB"))  # A: 1 3 5, B: 2 4 6
    assert harness.waves == [["m1", "m2"], ["m4"], ["m6"]]
    assert harness.ids(item for item, _ in outcome.acked) == ["m2", "m4", "m6"]
    assert [(item.message_id, reason.split(" ")[0]) for item, reason in outcome.failed] == [
        ("m1", type(error).__name__)
    ]
    assert harness.ids(outcome.held) == ["m3", "m5"]  # in order, never tried
    assert "m3" not in harness.acks.published


def test_a_failure_in_a_later_wave_holds_only_what_follows(harness):
    harness.acks.script["m3"] = ConnectionError("gone")
    outcome = harness.publish(rows_of("AAAAB"))
    assert harness.ids(item for item, _ in outcome.acked) == ["m1", "m5", "m2"]
    assert harness.ids(item for item, _ in outcome.failed) == ["m3"]
    assert harness.ids(outcome.held) == ["m4"]


def test_no_acknowledgement_in_time_is_a_failure(harness):
    harness.acks.script["m1"] = NEVER
    outcome = harness.publish(rows_of("AAB"))
    assert [(item.message_id, reason) for item, reason in outcome.failed] == [("m1", "TimeoutError no acknowledgement")]
    assert harness.ids(outcome.held) == ["m2"]
    assert harness.ids(item for item, _ in outcome.acked) == ["m3"]


def test_every_aggregate_failing_publishes_nothing_more(harness):
    harness.acks.script.update({"m1": ConnectionError(), "m2": ConnectionError()})
    outcome = harness.publish(rows_of("ABAB"))
    assert harness.waves == [["m1", "m2"]]  # no empty wave is sent
    assert outcome.acked == []
    assert harness.ids(outcome.held) == ["m3", "m4"]


# -- a refusal releases the aggregate's later events ----------------------------------------------


def test_a_subject_no_stream_captures_is_refused_and_the_aggregate_goes_on(harness):
    rows = [row(1, "A", subject="nowhere.v1"), row(2, "A"), row(3, "B"), row(4, "A")]
    outcome = harness.publish(rows)
    assert harness.waves == [["refused", "m3"], ["m2"], ["m4"]]
    assert [(item.message_id, reason) for item, reason in outcome.refused] == [
        ("m1", "no stream captures the subject 'nowhere.v1'")
    ]
    assert harness.ids(item for item, _ in outcome.acked) == ["m3", "m2", "m4"]
    assert "m1" not in harness.acks.published  # never sent
    assert (outcome.failed, outcome.held) == ([], [])


def test_a_message_over_max_payload_is_refused(harness):
    harness.relay.nc = FakeClient(max_payload=1000)
    outcome = harness.publish([row(1, "A", body="x" * 1000), row(2, "A", body="x" * 10)])
    assert len(outcome.refused) == 1
    refused, reason = outcome.refused[0]
    assert refused.message_id == "m1"
    assert "more than the 1000 bytes the server accepts (max_payload)" in reason
    assert harness.ids(item for item, _ in outcome.acked) == ["m2"]


def test_max_payload_counts_the_headers_the_relay_adds(harness):
    fits = row(1, "A", body="x")
    sent = {"Content-Type": "application/json", MSG_ID: "m1"}
    size = wire_size(sent, b"x")
    harness.relay.nc = FakeClient(max_payload=size)
    assert harness.publish([fits]).refused == []
    harness.relay.nc = FakeClient(max_payload=size - 1)
    assert len(harness.publish([fits]).refused) == 1


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"bad name": "v"}, "header name 'bad name' is not a valid token"),
        ({"X": "line\nbreak"}, "header 'X' holds a control character or is not text"),
        ({"X": 5}, "header 'X' holds a control character or is not text"),
    ],
)
def test_a_header_the_wire_cannot_carry_is_refused(harness, headers, reason):
    outcome = harness.publish([row(1, "A", headers=headers), row(2, "A")])
    assert [(item.message_id, text) for item, text in outcome.refused] == [("m1", reason)]
    assert harness.ids(item for item, _ in outcome.acked) == ["m2"]


def test_a_refusal_by_jetstream_itself_releases_the_aggregate(harness):
    harness.acks.script["m1"] = BadRequestError(code=400, err_code=10054, description="message size exceeds maximum")
    outcome = harness.publish(rows_of("AA"))
    assert [(item.message_id, reason) for item, reason in outcome.refused] == [
        ("m1", "JetStream refused it: message size exceeds maximum")
    ]
    assert harness.ids(item for item, _ in outcome.acked) == ["m2"]
    assert outcome.held == []


def test_refusals_and_failures_in_one_batch(harness):
    harness.acks.script.update({"m2": ConnectionError("gone"), "m3": APIError(code=400, description="no")})
    rows = [row(1, "A", subject="nowhere"), row(2, "B"), row(3, "C"), row(4, "A"), row(5, "B"), row(6, "C")]
    outcome = harness.publish(rows)
    assert harness.ids(item for item, _ in outcome.refused) == ["m1", "m3"]
    assert harness.ids(item for item, _ in outcome.failed) == ["m2"]
    assert harness.ids(outcome.held) == ["m5"]
    assert harness.ids(item for item, _ in outcome.acked) == ["m4", "m6"]
    # every row is in exactly one list
    every = [*outcome.refused, *outcome.failed, *outcome.acked]
    assert sorted(harness.ids([item for item, _ in every] + list(outcome.held))) == sorted(harness.ids(rows))


# -- the headers that go with each row ---------------------------------------------------------------


def test_the_broker_id_is_the_rows_message_id(harness):
    harness.publish([row(1, "A", headers={MSG_ID: "spoofed", "Content-Type": "application/json"})])
    assert harness.acks.headers["m1"] == {"Content-Type": "application/json", MSG_ID: "m1"}


def test_headers_stored_as_json_text_are_parsed_and_the_shared_parse_is_not_changed(harness):
    text = json.dumps({"Content-Type": "application/json", "Event-Type": "orders.created"})
    harness.publish([row(1, "A", headers=text), row(2, "B", headers=text)])
    assert harness.acks.headers["m1"] == {"Content-Type": "application/json", "Event-Type": "orders.created",
                                          MSG_ID: "m1"}  # fmt: skip
    assert harness.acks.headers["m2"][MSG_ID] == "m2"
    assert MSG_ID not in _parse_headers(text)  # the cached parse is copied, never written to


# -- the pieces the waves use -----------------------------------------------------------------------


def test_refusal():
    assert refusal("x" * 300, b"", {}, max_payload=10, captured=False) == (
        f"no stream captures the subject {'x' * 200!r}"
    )
    assert refusal("orders.created.v1", b"{}", {MSG_ID: "m"}, max_payload=1024, captured=True) is None
    assert "max_payload" in refusal("orders.created.v1", b"x" * 1024, {MSG_ID: "m"}, max_payload=1024, captured=True)


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (BadRequestError(code=400, description="bad"), True),
        (APIError(code=400), True),
        (APIError(code=503), False),
        (ServiceUnavailableError(code=503), False),
        (APIError(code=None), False),
        (TimeoutError(), False),
        (ValueError("400"), False),
    ],
)
def test_permanent(error, permanent):
    assert _permanent(error) is permanent


def test_captured_asks_the_registry_and_stays_bounded(harness):
    relay = harness.relay
    assert relay.captured("orders.created.v1") is True
    assert relay.captured("payments.completed.v1") is False
    for index in range(10_001):
        relay.captured(f"orders.n{index}")
    assert len(relay._captured) <= 10_000
    assert relay.captured("payments.completed.v1") is False
    assert relay.captured("orders.created.v1") is True


# -- rows behind an earlier row of their aggregate that another relay holds -------------------------


class FakeCursor:
    def __init__(self, held_elsewhere: bool, earliest_elsewhere: dict[str, int]) -> None:
        self.held_elsewhere, self.earliest_elsewhere = held_elsewhere, earliest_elsewhere
        self.params: list[list] = []

    def execute(self, sql, params):
        self.params.append(params)

    def fetchone(self):
        return (self.held_elsewhere,)

    def fetchall(self):
        return list(self.earliest_elsewhere.items())


def test_nothing_held_elsewhere_keeps_every_row_with_one_query(harness):
    rows = [row(3, "A"), row(4, "B"), row(9, "A")]
    cursor = FakeCursor(held_elsewhere=False, earliest_elsewhere={"A": 1})
    assert harness.relay._without_blocked_aggregates(cursor, rows) == rows
    assert cursor.params == [[9, [3, 4, 9]]]


def test_rows_behind_an_earlier_row_held_elsewhere_wait(harness):
    rows = [row(3, "A"), row(4, "B"), row(7, "A"), row(8, "C"), row(9, "A"), row(10, "B")]
    cursor = FakeCursor(held_elsewhere=True, earliest_elsewhere={"A": 5, "B": 6})
    kept = harness.relay._without_blocked_aggregates(cursor, rows)
    assert [item.id for item in kept] == [3, 4, 8]  # A before 5, B before 6, C untouched
    aggregates, ids = cursor.params[1]
    assert sorted(aggregates) == ["A", "B", "C"]
    assert ids == [3, 4, 7, 8, 9, 10]


def test_held_elsewhere_but_not_these_aggregates(harness):
    rows = [row(3, "A"), row(4, "B")]
    assert harness.relay._without_blocked_aggregates(FakeCursor(True, {}), rows) == rows


def test_every_row_blocked(harness):
    rows = [row(3, "A"), row(4, "A")]
    assert harness.relay._without_blocked_aggregates(FakeCursor(True, {"A": 2}), rows) == []


def test_a_row_whose_headers_are_not_an_object_is_set_aside_and_its_aggregate_goes_on(harness):
    rows = [row(1, "A", headers='["not", "an", "object"]'), row(2, "A"), row(3, "B", headers="7")]
    outcome = harness.publish(rows)
    assert [(item.message_id, reason) for item, reason in outcome.refused] == [
        ("m1", "its headers are not a JSON object"),
        ("m3", "its headers are not a JSON object"),
    ]
    assert harness.ids(item for item, _ in outcome.acked) == ["m2"], "a refused row releases its aggregate"
