"""Dead letters grouped by the fingerprint of their failure: the recorder sets it with every
failure (a failure after a reprocess moves the row to its new group), the migration's backfill
computes the same for rows recorded before, and ``dead_letter_groups`` reads the groups in one
query."""

from __future__ import annotations

import importlib
import re
import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.db import connection
from django.utils import timezone

from apps.eventbus.deadletters.fingerprint import fingerprint_of
from apps.eventbus.deadletters.selectors import (
    dead_letter_group_get,
    dead_letter_group_members,
    dead_letter_groups,
    dead_letter_list,
)
from apps.eventbus.models import DeadLetter
from tests.api.support import resolve
from tests.factories import make_dead_letter

pytestmark = pytest.mark.django_db

NOW = timezone.now()
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/tests/testapp/handlers.py", line {line}, in on_happened\n'
    '    raise PermanentError("...")\n'
    "apps.eventbus.errors.PermanentError: refused"
)


def refused(minutes_ago: int, *, consumer: str = "testing", line: int = 30, **fields) -> DeadLetter:
    """A dead letter of the incident: one order's amount refused (its own ids and numbers)."""
    error = f"order {uuid.uuid4()} refused: amount {minutes_ago * 7}.50 over limit 'LIMIT-{minutes_ago}'"
    return make_dead_letter(
        consumer=consumer,
        error=error,
        traceback=TRACEBACK.format(line=line),
        failed_at=NOW - timedelta(minutes=minutes_ago),
        **fields,
    )


def other_cause(minutes_ago: int) -> DeadLetter:
    return make_dead_letter(error="gateway timed out after 30s", failed_at=NOW - timedelta(minutes=minutes_ago))


def stored_fingerprint(row: DeadLetter) -> str:
    return fingerprint_of(
        consumer=row.consumer, subject=row.subject, error_type=row.error_type, error=row.error, traceback=row.traceback
    ).value


# -- the recorder -------------------------------------------------------------------------------


def test_the_recorder_groups_failures_that_differ_only_in_their_values_and_line_numbers():
    first, second = refused(5, line=30), refused(3, line=31)
    elsewhere, late = other_cause(4), refused(1, consumer="testing-other")

    assert first.fingerprint == second.fingerprint == stored_fingerprint(first)
    assert first.error_signature == "order <uuid> refused: amount <n> over limit <str>"
    assert first.error_frame == "tests/testapp/handlers.py:on_happened"
    assert len({first.fingerprint, elsewhere.fingerprint, late.fingerprint}) == 3


def test_a_hostile_error_and_traceback_are_grouped_from_what_the_row_stores():
    error = "order \x00 'x\udc80' 12\n" + "y" * 50_000
    traceback = "\n".join(f'  File "/a/b/c{n}.py", line {n}, in f{n}' for n in range(5_000)) + "\x00\udcff"
    row = make_dead_letter(error=error, traceback=traceback, error_type="Boom\x00\udc80")

    row.refresh_from_db()
    assert row.fingerprint == stored_fingerprint(row)
    assert row.error_signature.startswith("order \\x00 <str> <n> yyy"), "NUL as the row stores it (escaped)"
    assert len(row.error_signature) == 500
    # The recorder keeps the first 16,000 characters of a traceback: its last whole frame there.
    module, function = re.findall(r'File "/a/b/(c\d+)\.py", line \d+, in (f\d+)$', row.traceback, re.MULTILINE)[-1]
    assert row.error_frame == f"a/b/{module}.py:{function}" != "a/b/c4999.py:f4999"


def test_a_failure_after_a_reprocess_moves_the_row_to_the_group_of_its_new_error():
    row = refused(5)
    again = make_dead_letter(
        sequence=row.stream_sequence, error="gateway timed out after 31s", reprocessed_dead_letter_id=row.pk
    )
    assert again.pk == row.pk and again.status == DeadLetter.Status.FAILED_AGAIN
    assert again.fingerprint == other_cause(1).fingerprint != row.fingerprint
    assert again.error_signature == "gateway timed out after <n>s"


def test_the_migrations_backfill_computes_what_the_recorder_does_in_chunks(monkeypatch):
    migration = importlib.import_module("apps.eventbus.migrations.0006_dead_letter_fingerprint")
    monkeypatch.setattr(migration, "BACKFILL_CHUNK", 2)
    rows = [refused(5), refused(4), other_cause(3), make_dead_letter(traceback=""), refused(1, consumer="x")]
    recorded = {row.pk: (row.fingerprint, row.error_signature, row.error_frame) for row in rows}
    DeadLetter.objects.update(fingerprint="", error_signature="", error_frame="")  # as before the migration

    migration.backfill_fingerprints(apps, SimpleNamespace(connection=connection))

    backfilled = DeadLetter.objects.values_list("pk", "fingerprint", "error_signature", "error_frame")
    assert {pk: tuple(values) for pk, *values in backfilled} == recorded


# -- the groups -----------------------------------------------------------------------------------


def test_groups_with_their_counts_statuses_first_and_last_seen_and_a_sample(django_assert_num_queries):
    incident = [refused(minutes) for minutes in (50, 40, 30, 20)]
    resolve(incident[0])
    timeout = other_cause(10)
    elsewhere = refused(60, consumer="testing-other")

    with django_assert_num_queries(1):
        page = dead_letter_groups()

    assert [group.fingerprint for group in page.groups] == [
        timeout.fingerprint, incident[0].fingerprint, elsewhere.fingerprint
    ], "the most recently seen first"  # fmt: skip
    assert (page.total, page.page, page.pages) == (3, 1, 1)
    group = page.groups[1]
    assert (group.consumer, group.subject, group.error_type) == ("testing", "testing.happened.v1", "PermanentError")
    assert group.signature == "order <uuid> refused: amount <n> over limit <str>"
    assert group.frame == "tests/testapp/handlers.py:on_happened"
    assert (group.count, group.open, group.total) == (3, 3, 4)
    assert group.by_status == {"pending": 3, "reprocessing": 0, "resolved": 1, "failed_again": 0, "discarded": 0}
    assert group.first_seen == incident[0].first_failed_at and group.last_seen == incident[3].last_failed_at
    assert group.sample_id == incident[3].pk, "the latest open one"


def test_groups_filtered_by_status_and_consumer_and_paged():
    incident = [refused(minutes) for minutes in (50, 40)]
    resolve(incident[0])
    other_cause(10)
    refused(60, consumer="testing-other")

    [resolved] = dead_letter_groups(status="resolved").groups
    assert (resolved.fingerprint, resolved.count, resolved.total, resolved.sample_id) == (
        incident[0].fingerprint, 1, 2, incident[0].pk
    )  # fmt: skip
    assert len(dead_letter_groups(status="all").groups) == 3
    assert dead_letter_groups(status="discarded").groups == []
    assert [g.consumer for g in dead_letter_groups(consumer="testing-other").groups] == ["testing-other"]

    first, second, past = (dead_letter_groups(page=n, page_size=2) for n in (1, 2, 3))
    assert (len(first.groups), len(second.groups), first.total, second.total, first.pages) == (2, 1, 3, 3, 2)
    assert past.groups == [] and past.total == 3
    assert dead_letter_groups(page_size=10_000).page_size == 200, "bounded"


def test_one_group_its_members_and_the_list_filtered_by_it():
    incident = [refused(minutes) for minutes in (50, 40)]
    resolve(incident[1])
    other_cause(10)

    group = dead_letter_group_get(fingerprint=incident[0].fingerprint)
    assert (group.count, group.open, group.total, group.sample_id) == (1, 1, 2, incident[0].pk)
    resolve(incident[0])
    closed = dead_letter_group_get(fingerprint=incident[0].fingerprint)
    assert (closed.count, closed.open, closed.sample_id) == (0, 0, incident[1].pk), "no open one: the latest"

    members = dead_letter_group_members(fingerprint=group.fingerprint)
    assert set(members) == set(dead_letter_list(fingerprint=group.fingerprint)) == set(incident)
    for unknown in ["0" * 64, "not-a-fingerprint", group.fingerprint.upper(), ""]:
        assert dead_letter_group_get(fingerprint=unknown) is None
    assert not dead_letter_group_members(fingerprint="x").exists()
