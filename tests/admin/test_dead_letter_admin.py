"""The dead-letter pages of the admin: what an operator sees, each action, and who may do what."""

from __future__ import annotations

import json

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from apps.eventbus.deadletters.services import dead_letter_mark_resolved
from apps.eventbus.models import DeadLetter, DeadLetterEvent, OutboxEvent
from apps.operations.models import BulkReprocess
from tests.factories import make_dead_letter
from tests.support import make_user

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:eventbus_deadletter_changelist")


def change_url(dead_letter) -> str:
    return reverse("admin:eventbus_deadletter_change", args=[dead_letter.pk])


def action_url(name: str, dead_letter) -> str:
    return reverse(f"admin:eventbus_deadletter_{name}", args=[dead_letter.pk])


def operator_events(subject_suffix: str) -> list[dict]:
    return [
        json.loads(row.body)
        for row in OutboxEvent.objects.filter(subject=f"operator.{subject_suffix}.v1").order_by("id")
    ]


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


@pytest.fixture
def dead_letter(db):
    return make_dead_letter()


# -- the list -------------------------------------------------------------------------------


def test_the_list_shows_what_failed_where_and_offers_one_click_reprocess_to_operators(client, operator, order):
    failing = make_dead_letter(correlation_id=str(order.pk), error="value refused by a business rule")
    make_dead_letter(consumer="testing-other", error_type="ContractError", error="x" * 200)
    client.force_login(operator)

    page = client.get(CHANGELIST).content.decode()

    assert "testing.happened.v1" in page and "PermanentError" in page and "ContractError" in page
    assert "value refused by a business rule" in page
    assert "x" * 79 + "…" in page and "x" * 81 not in page, "long errors are shortened in the list"
    assert reverse("admin:orders_order_change", args=[order.pk]) in page, "the order is linked"
    assert action_url("reprocess", failing) in page, "a one-click reprocess button on the row"
    assert 'value="reprocess_selected"' in page and 'value="discard_selected"' in page


def test_filters_and_search_by_order_id_and_message_id(client, operator, order):
    ours = make_dead_letter(correlation_id=str(order.pk))
    other = make_dead_letter(consumer="testing-other", error_type="ContractError")
    client.force_login(operator)

    def listed(query: str) -> set[int]:
        response = client.get(CHANGELIST + query)
        assert response.status_code == 200, query
        return {row.pk for row in response.context["cl"].result_list}

    assert listed("") == {ours.pk, other.pk}
    assert listed("?consumer__exact=testing-other") == {other.pk}
    assert listed("?error_type__exact=PermanentError") == {ours.pk}
    assert listed("?status__exact=pending") == {ours.pk, other.pk}
    assert listed("?status__exact=resolved") == set()
    assert listed(f"?q={order.pk}") == {ours.pk}
    assert listed(f"?q={other.message_id}") == {other.pk}


def test_an_auditor_reads_the_list_but_gets_no_buttons_and_no_actions(client, auditor, dead_letter):
    client.force_login(auditor)

    page = client.get(CHANGELIST).content.decode()

    assert dead_letter.subject in page
    assert action_url("reprocess", dead_letter) not in page
    assert "reprocess_selected" not in page and "discard_selected" not in page


def test_staff_without_a_role_cannot_see_dead_letters(client, dead_letter):
    client.force_login(make_user("sam", is_staff=True))
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(change_url(dead_letter)).status_code == 403


# -- the detail page ------------------------------------------------------------------------


def test_the_detail_page_explains_the_failure(client, operator, order):
    dead_letter = make_dead_letter(correlation_id=str(order.pk))
    client.force_login(operator)

    page = client.get(change_url(dead_letter)).content.decode()

    assert "&quot;value&quot;: 1" in page, "the payload is pretty-printed"
    assert "Traceback (most recent call last):" in page and "PermanentError: refused" in page
    assert "Content-Type" in page, "the original headers are shown"
    assert "TESTING" in page and str(dead_letter.stream_sequence) in page
    assert reverse("admin:orders_order_change", args=[order.pk]) in page
    assert reverse("admin:audit_auditentry_changelist") + f"?q={order.pk}" in page
    assert "failed" in page, "the history lists the failure"
    assert action_url("reprocess", dead_letter) in page
    assert action_url("edit", dead_letter) in page
    assert action_url("discard", dead_letter) in page


def test_the_detail_page_of_an_auditor_has_no_action_buttons(client, auditor, dead_letter):
    client.force_login(auditor)

    page = client.get(change_url(dead_letter)).content.decode()

    assert dead_letter.error in page
    assert action_url("reprocess", dead_letter) not in page and action_url("discard", dead_letter) not in page


# -- reprocess ------------------------------------------------------------------------------


def test_reprocess_redelivers_to_the_one_consumer_and_records_who_did_it(client, operator, dead_letter):
    client.force_login(operator)

    response = client.post(action_url("reprocess", dead_letter), follow=True)

    assert any("on its way back to testing" in m for m in messages_of(response))
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.REPROCESSING
    redelivery = OutboxEvent.objects.get(subject="redeliver.TESTING.testing")
    assert redelivery.body == dead_letter.data
    requested = dead_letter.history.get(kind=DeadLetterEvent.Kind.REPROCESS_REQUESTED)
    assert requested.actor == operator
    [audit] = operator_events("dead_letter_reprocess_requested")
    assert audit["actor"] == "olivia" and audit["dead_letter_id"] == dead_letter.pk and audit["attempt"] == 1
    assert audit["consumer"] == "testing" and audit["original_subject"] == "testing.happened.v1"


def test_an_auditor_cannot_reprocess(client, auditor, dead_letter):
    client.force_login(auditor)

    assert client.post(action_url("reprocess", dead_letter)).status_code == 403

    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.PENDING
    assert not OutboxEvent.objects.exists()


def test_reprocess_is_a_post_only(client, operator, dead_letter):
    client.force_login(operator)
    assert client.get(action_url("reprocess", dead_letter)).status_code == 405


def test_reprocess_of_a_resolved_dead_letter_is_refused(client, operator, dead_letter):
    dead_letter_mark_resolved(dead_letter_id=dead_letter.pk, note="handled")
    OutboxEvent.objects.all().delete()
    client.force_login(operator)

    response = client.post(action_url("reprocess", dead_letter), follow=True)

    assert any("Not reprocessed" in m and "resolved" in m for m in messages_of(response))
    assert not OutboxEvent.objects.exists(), "nothing redelivered, nothing recorded"
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.RESOLVED


def test_the_outcome_of_a_reprocess_shows_on_the_row_and_in_the_audit_log(client, operator, dead_letter):
    client.force_login(operator)
    client.post(action_url("reprocess", dead_letter))

    dead_letter_mark_resolved(dead_letter_id=dead_letter.pk, note="reprocessed")  # as the runner does

    page = client.get(change_url(dead_letter)).content.decode()
    assert "Resolved" in page
    [resolved] = operator_events("dead_letter_resolved")
    assert resolved["dead_letter_id"] == dead_letter.pk and resolved["note"] == "reprocessed"


# -- discard --------------------------------------------------------------------------------


def test_discard_asks_for_confirmation_and_a_reason(client, operator, dead_letter):
    client.force_login(operator)

    confirmation = client.get(action_url("discard", dead_letter))
    assert confirmation.status_code == 200 and "Are you sure you want to discard" in confirmation.content.decode()
    assert f"{dead_letter}</a>\n&rsaquo; Discard" in confirmation.content.decode()

    refused = client.post(action_url("discard", dead_letter), {"reason": "   "})
    assert refused.status_code == 200 and "This field is required" in refused.content.decode()
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.PENDING

    client.post(action_url("discard", dead_letter), {"reason": "test order from the load test"})
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.DISCARDED
    event = dead_letter.history.get(kind=DeadLetterEvent.Kind.DISCARDED)
    assert event.actor == operator and event.note == "test order from the load test"
    [audit] = operator_events("dead_letter_discarded")
    assert audit["reason"] == "test order from the load test" and audit["actor"] == "olivia"


def test_an_auditor_cannot_discard(client, auditor, dead_letter):
    client.force_login(auditor)
    assert client.get(action_url("discard", dead_letter)).status_code == 403
    assert client.post(action_url("discard", dead_letter), {"reason": "no"}).status_code == 403
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.PENDING


# -- edit and reprocess ---------------------------------------------------------------------


def test_edit_and_reprocess_validates_against_the_contract_and_keeps_both_versions(client, operator):
    poison = make_dead_letter(value="three", error_type="ContractError", error="value: Input should be an integer")
    client.force_login(operator)

    form = client.get(action_url("edit", poison))
    assert form.status_code == 200 and "&quot;three&quot;" in form.content.decode()

    still_bad = json.loads(poison.data) | {"value": "four"}
    refused = client.post(action_url("edit", poison), {"data": json.dumps(still_bad)})
    assert refused.status_code == 200
    assert "Does not satisfy testing.happened.v1" in refused.content.decode()
    refused = client.post(action_url("edit", poison), {"data": "{not json"})
    assert "Does not satisfy" in refused.content.decode()
    assert not OutboxEvent.objects.exists()

    fixed = json.loads(poison.data) | {"value": 3}
    client.post(action_url("edit", poison), {"data": json.dumps(fixed)})

    poison.refresh_from_db()
    assert json.loads(poison.data)["value"] == "three", "the original is kept"
    assert json.loads(poison.edited_data)["value"] == 3
    assert poison.status == DeadLetter.Status.REPROCESSING
    redelivery = OutboxEvent.objects.get(subject="redeliver.TESTING.testing")
    assert json.loads(redelivery.body)["value"] == 3, "the edit is what gets delivered"
    assert poison.history.filter(kind=DeadLetterEvent.Kind.EDITED, actor=operator).exists()
    [edited] = operator_events("dead_letter_edited")
    assert json.loads(edited["original_data"])["value"] == "three" and json.loads(edited["edited_data"])["value"] == 3
    [requested] = operator_events("dead_letter_reprocess_requested")
    assert requested["edited"] is True


def test_an_auditor_cannot_edit(client, auditor, dead_letter):
    client.force_login(auditor)
    assert client.get(action_url("edit", dead_letter)).status_code == 403


# -- bulk actions ---------------------------------------------------------------------------


def post_action(client, action: str, ids=(), query: str = "", select_across: bool = False, **extra):
    data = {"action": action, "index": 0, "select_across": "1" if select_across else "0", **extra}
    if ids:
        data[ACTION_CHECKBOX_NAME] = [str(pk) for pk in ids]
    return client.post(CHANGELIST + query, data, follow=True)


def test_bulk_reprocess_confirms_then_queues_one_run_per_consumer(client, operator):
    first, second = make_dead_letter(), make_dead_letter()
    other = make_dead_letter(consumer="testing-other")
    resolved = make_dead_letter()
    dead_letter_mark_resolved(dead_letter_id=resolved.pk, note="handled")
    client.force_login(operator)
    ids = [first.pk, second.pk, other.pk, resolved.pk]

    confirmation = post_action(client, "reprocess_selected", ids)
    page = confirmation.content.decode()
    assert "are you sure?" in page and "<strong>3</strong> can be reprocessed" in page
    assert "&rsaquo; Reprocess several" in page
    assert "testing: 2" in page and "testing-other: 1" in page
    assert not BulkReprocess.objects.exists(), "nothing happens before the confirmation"

    post_action(client, "reprocess_selected", ids, confirm="yes", rate="5")

    runs = {run.consumer: run for run in BulkReprocess.objects.all()}
    assert set(runs) == {"testing", "testing-other"}
    assert runs["testing"].total == 2 and runs["testing"].rate == 5 and runs["testing"].created_by == operator
    assert set(runs["testing"].items.values_list("dead_letter_id", flat=True)) == {first.pk, second.pk}
    assert runs["testing"].status == BulkReprocess.Status.QUEUED


def test_bulk_reprocess_of_all_matching_a_filter(client, operator):
    wanted = [make_dead_letter(consumer="testing-other") for _ in range(3)]
    make_dead_letter(consumer="testing")
    client.force_login(operator)

    post_action(
        client, "reprocess_selected", [wanted[0].pk], query="?consumer__exact=testing-other", select_across=True,
        confirm="yes", rate="20",
    )  # fmt: skip

    run = BulkReprocess.objects.get()
    assert run.consumer == "testing-other" and run.total == 3
    assert "consumer__exact=testing-other" in run.description


def test_one_bulk_run_per_consumer_at_a_time(client, operator):
    first = make_dead_letter()
    client.force_login(operator)
    post_action(client, "reprocess_selected", [first.pk], confirm="yes", rate="5")

    again = post_action(client, "reprocess_selected", [first.pk], confirm="yes", rate="5")

    assert any("already queued or running for testing" in m for m in messages_of(again))
    assert BulkReprocess.objects.count() == 1


def test_bulk_reprocess_refuses_a_rate_over_the_limit(client, operator, settings):
    settings.BULK_REPROCESS_MAX_RATE = 50
    dead_letter = make_dead_letter()
    client.force_login(operator)

    page = post_action(client, "reprocess_selected", [dead_letter.pk], confirm="yes", rate="500").content.decode()

    assert "less than or equal to 50" in page
    assert not BulkReprocess.objects.exists()


def test_bulk_discard_needs_a_reason(client, operator):
    rows = [make_dead_letter() for _ in range(3)]
    client.force_login(operator)
    ids = [row.pk for row in rows]

    refused = post_action(client, "discard_selected", ids, confirm="yes", reason="")
    assert "This field is required" in refused.content.decode()
    assert not DeadLetter.objects.filter(status=DeadLetter.Status.DISCARDED).exists()

    post_action(client, "discard_selected", ids, confirm="yes", reason="duplicates of a replayed batch")

    assert DeadLetter.objects.filter(status=DeadLetter.Status.DISCARDED).count() == 3
    assert len(operator_events("dead_letter_discarded")) == 3


def test_an_auditor_cannot_run_bulk_actions(client, auditor, dead_letter):
    client.force_login(auditor)

    response = post_action(client, "reprocess_selected", [dead_letter.pk], confirm="yes", rate="5")

    assert response.status_code == 403, "an auditor has no actions, so nothing to post to the list"
    assert not BulkReprocess.objects.exists()
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.PENDING
