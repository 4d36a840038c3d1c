"""The dead-letter groups page of the admin: what an operator sees, the group actions (reprocess as
a bulk run, discard with a reason) behind their confirmation pages, and who may do what."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from apps.eventbus.models import DeadLetter, OutboxEvent
from apps.operations.models import BulkReprocess
from tests.api.support import resolve
from tests.factories import make_dead_letter

pytestmark = pytest.mark.django_db

GROUPS = reverse("admin:eventbus_deadletter_groups")
CHANGELIST = reverse("admin:eventbus_deadletter_changelist")


def reprocess_url(fingerprint: str) -> str:
    return reverse("admin:eventbus_deadletter_group_reprocess", args=[fingerprint])


def discard_url(fingerprint: str) -> str:
    return reverse("admin:eventbus_deadletter_group_discard", args=[fingerprint])


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


@pytest.fixture
def incident(db) -> list[DeadLetter]:
    """Three dead letters of one cause (their ids and amounts differ), one of another."""
    rows = [make_dead_letter(error=f"order {n} refused: amount {n}.50 over limit 'L-{n}'") for n in range(3)]
    make_dead_letter(error="gateway timed out")
    return rows


def test_the_groups_page_shows_each_group_with_its_figures_and_links(client, operator, incident):
    resolve(incident[0])
    client.force_login(operator)
    fingerprint = incident[1].fingerprint

    response = client.get(GROUPS)

    assert response.status_code == 200
    page = response.content.decode()
    assert "PermanentError: order &lt;n&gt; refused: amount &lt;n&gt; over limit &lt;str&gt;" in page
    assert "PermanentError: gateway timed out" in page
    assert response.context["page"].total == 2
    [row] = [row for row in response.context["rows"] if row["group"].fingerprint == fingerprint]
    assert (row["group"].count, row["group"].total) == (2, 3)
    assert f"?fingerprint={fingerprint}" in row["list_url"] and row["list_url"] in page
    assert reverse("admin:eventbus_deadletter_change", args=[incident[2].pk]) in page, "the sample: the latest open"
    assert "2 Pending" in page and "1 Resolved" in page
    assert reprocess_url(fingerprint) in page and discard_url(fingerprint) in page

    assert GROUPS in client.get(CHANGELIST).content.decode(), "the dead letters' list links to the groups"
    listed = client.get(row["list_url"]).context["cl"].result_list
    assert {dead_letter.pk for dead_letter in listed} == {dead_letter.pk for dead_letter in incident}
    detail = client.get(reverse("admin:eventbus_deadletter_change", args=[incident[1].pk])).content.decode()
    assert "3 dead letter(s) failed the same way" in detail
    assert client.get(CHANGELIST + "?fingerprint=nope").url.endswith("?e=1"), "not a fingerprint: the admin's refusal"


def test_the_groups_page_filters_by_status_and_consumer(client, operator, incident):
    for row in incident:
        resolve(row)
    make_dead_letter(consumer="testing-other", error="other consumer")
    client.force_login(operator)

    def signatures(query: str) -> list[str]:
        response = client.get(GROUPS + query)
        assert response.status_code == 200, query
        return sorted(row["group"].signature for row in response.context["rows"])

    assert signatures("") == ["gateway timed out", "other consumer"], "open ones by default"
    assert signatures("?status=resolved") == ["order <n> refused: amount <n> over limit <str>"]
    assert len(signatures("?status=all")) == 3
    assert signatures("?consumer=testing-other") == ["other consumer"]
    assert signatures("?status=bogus&p=x") == signatures(""), "an unknown value is the default"


def test_an_operator_reprocesses_a_group_after_a_confirmation_and_follows_its_run(client, operator, incident):
    resolve(incident[0])
    client.force_login(operator)
    fingerprint = incident[0].fingerprint

    confirm = client.get(reprocess_url(fingerprint))
    assert confirm.status_code == 200 and not BulkReprocess.objects.exists(), "GET only asks"
    assert "Yes, reprocess 2 dead letter(s)" in confirm.content.decode()

    response = client.post(reprocess_url(fingerprint), {"rate": "4"})

    run = BulkReprocess.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("admin:operations_bulkreprocess_change", args=[run.pk]), "to follow the run"
    assert (run.consumer, run.total, run.rate, run.created_by) == ("testing", 2, 4, operator)
    assert set(run.items.values_list("dead_letter_id", flat=True)) == {incident[1].pk, incident[2].pk}
    assert fingerprint in run.description
    followed = client.get(response.url)
    assert any(f"Bulk reprocess #{run.pk} queued: 2 dead letter(s)" in m for m in messages_of(followed))

    again = client.post(reprocess_url(fingerprint), {"rate": "4"}, follow=True)
    assert any("already queued or running for testing" in m for m in messages_of(again))
    assert BulkReprocess.objects.count() == 1
    assert client.post(reprocess_url(fingerprint), {"rate": "0"}).status_code == 200, "a bad rate: the form again"
    assert client.get(reprocess_url("0" * 64)).status_code == 404


def test_discarding_a_group_needs_a_reason(client, operator, incident):
    client.force_login(operator)
    fingerprint = incident[0].fingerprint

    refused = client.post(discard_url(fingerprint), {"reason": ""})
    assert refused.status_code == 200 and refused.context["form"].errors["reason"]
    assert not DeadLetter.objects.filter(status=DeadLetter.Status.DISCARDED).exists()

    done = client.post(discard_url(fingerprint), {"reason": "test orders"}, follow=True)

    assert "3 dead letter(s) discarded." in messages_of(done)
    assert set(DeadLetter.objects.filter(fingerprint=fingerprint).values_list("status", flat=True)) == {"discarded"}
    reasons = {json.loads(e.body)["reason"] for e in OutboxEvent.objects.filter(subject__endswith="discarded.v1")}
    assert reasons == {f"test orders (dead-letter group {fingerprint})"}
    page = client.get(GROUPS).content.decode()
    assert discard_url(fingerprint) not in page, "a closed group has no actions (and is not listed as open)"


def test_an_auditor_sees_the_groups_but_no_action_and_is_refused_any(client, auditor, incident):
    client.force_login(auditor)
    fingerprint = incident[0].fingerprint

    page = client.get(GROUPS)
    assert page.status_code == 200 and page.context["page"].total == 2
    html = page.content.decode()
    assert "Reprocess group" not in html and "Discard group" not in html
    for url in (reprocess_url(fingerprint), discard_url(fingerprint)):
        assert client.get(url).status_code == 403
        assert client.post(url, {"rate": "4", "reason": "x"}).status_code == 403
    assert not BulkReprocess.objects.exists()
    assert not DeadLetter.objects.filter(status=DeadLetter.Status.DISCARDED).exists()


def test_a_group_action_without_the_csrf_token_is_refused(operator, incident):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)

    assert browser.post(reprocess_url(incident[0].fingerprint), {"rate": "4"}).status_code == 403
    assert browser.post(discard_url(incident[0].fingerprint), {"reason": "x"}).status_code == 403
    assert not BulkReprocess.objects.exists()
    assert not DeadLetter.objects.filter(status=DeadLetter.Status.DISCARDED).exists()
