"""The cockpit's dead-letter groups in a real browser: an incident dead-letters several messages
from one cause (the testapp's reject switch) and one from another, all through a real consumer;
the operator sees two groups with their counts, fixes the cause, reprocesses the larger group
(a bulk run worked through by a real Celery worker), follows the run to completion and its dead
letters to Resolved. Screenshots land in test-artifacts/ for review."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from apps.eventbus.models import DeadLetter, DeadLetterEvent
from apps.operations.models import BulkReprocess
from tests.bus import wait_for
from tests.testapp.events import SomethingHappened
from tests.testapp.models import Effect, Switch

from .conftest import server_side
from .test_cockpit_browser import reload_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the first browser test may install Chromium

GROUPS = "/admin/eventbus/deadletter/groups/"
REJECTED = "rejected while the reject switch is on"
REFUSED = "value refused by a business rule"


def test_an_operator_reprocesses_a_group_of_real_dead_letters_and_follows_it_to_resolved(
    celery_worker, declared, operator, cockpit
):
    page = cockpit.page
    with server_side():
        Switch.objects.create(name="reject", on=True)
        rejected = [SomethingHappened(value=value, mode="strict") for value in (11, 12, 13)]
        refused = SomethingHappened(value=99, mode="permanent")
        for event in [*rejected, refused]:
            declared.publish_event(event)

    with declared.relay(), declared.consumer("testing"), declared.consumer("dead-letters"):
        with server_side():
            pending = DeadLetter.objects.filter(status=DeadLetter.Status.PENDING)
            wait_for(lambda: pending.count() == 4, message="the four failed messages did not become dead letters")
            fingerprints = dict(pending.values_list("message_id", "fingerprint"))
            incident = {fingerprints[event.message_id] for event in rejected}
            assert len(incident) == 1 and fingerprints[refused.message_id] not in incident, "two causes, two groups"
            Switch.objects.filter(name="reject").update(on=False)  # the cause is fixed: the retries will succeed

        cockpit.log_in(operator.username)
        cockpit.open("/admin/eventbus/deadletter/")
        with page.expect_navigation():
            page.click("#cockpit-groups")  # the dead letters' list links to its groups
        assert page.url.endswith(GROUPS), page.url

        groups = page.locator("tr.cockpit-group")
        larger = groups.filter(has_text=REJECTED)
        other = groups.filter(has_text=REFUSED)
        expect(groups).to_have_count(2)
        expect(larger.locator("td.cockpit-count")).to_have_text("3")
        expect(larger.locator("td.cockpit-statuses")).to_have_text("3 Pending")
        expect(larger).to_contain_text("testapp/handlers.py:on_happened")
        expect(other.locator("td.cockpit-count")).to_have_text("1")
        expect(page.locator("#cockpit-group-count")).to_have_text("2")
        cockpit.assert_styled()
        cockpit.screenshot("dead-letter-groups.png")

        with page.expect_navigation():
            larger.locator("a.cockpit-group-reprocess").click()
        expect(page.locator("#cockpit-group-open")).to_have_text("3")
        expect(page.locator("#id_rate")).to_have_value("20")
        page.fill("#id_rate", "5")
        cockpit.screenshot("dead-letter-group-reprocess-confirm.png")
        with page.expect_navigation():
            page.click("#cockpit-confirm-group")

        with server_side():
            run = BulkReprocess.objects.get()
        assert page.url.endswith(f"/admin/operations/bulkreprocess/{run.pk}/change/"), page.url
        expect(page.locator(".messagelist .success")).to_contain_text(f"Bulk reprocess #{run.pk} queued: 3 dead letter")
        # The run's page refreshes itself while the run is active; the Celery worker runs it.
        expect(page.locator(".field-status .readonly")).to_have_text("Completed", timeout=60_000)
        expect(page.locator(".field-progress_bar")).to_contain_text("3 of 3 (100%)")
        expect(page.locator(".field-description")).to_contain_text(next(iter(incident)))
        cockpit.screenshot("dead-letter-group-bulk-run.png")

        cockpit.open(GROUPS)
        with page.expect_navigation():
            page.click("#cockpit-status-all")
        reload_until(page, larger.locator("td.cockpit-statuses"), "3 Resolved", timeout=60)
        expect(larger.locator("td.cockpit-statuses")).to_have_text("3 Resolved")
        expect(larger.locator("a.cockpit-group-reprocess")).to_have_count(0)  # nothing open is left to reprocess
        expect(other.locator("td.cockpit-statuses")).to_have_text("1 Pending")
        expect(other.locator("a.cockpit-group-reprocess")).to_have_count(1)
        cockpit.screenshot("dead-letter-groups-after-reprocess.png")

        with page.expect_navigation():
            larger.locator("a.cockpit-group-list").click()
        expect(page.locator("#result_list tbody tr")).to_have_count(3)
        for badge in page.locator("#result_list tbody tr .cockpit-badge").all():
            expect(badge).to_have_text("Resolved")
        cockpit.assert_no_problems()

    with server_side():
        run.refresh_from_db()
        assert (run.status, run.reprocessed, run.skipped, run.rate, run.created_by) == ("completed", 3, 0, 5, operator)
        for event in rejected:
            dead_letter = DeadLetter.objects.get(message_id=event.message_id)
            assert dead_letter.status == DeadLetter.Status.RESOLVED
            kinds = list(dead_letter.history.values_list("kind", "actor__username"))
            assert kinds == [("failed", None), ("reprocess_requested", "olivia"), ("resolved", None)]
            assert f"bulk run {run.pk}" in dead_letter.history.get(kind=DeadLetterEvent.Kind.REPROCESS_REQUESTED).note
            assert Effect.objects.filter(consumer="testing", message_id=event.message_id).count() == 1
        assert DeadLetter.objects.get(message_id=refused.message_id).status == DeadLetter.Status.PENDING
