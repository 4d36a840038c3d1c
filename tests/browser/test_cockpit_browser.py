"""The operator cockpit in a real browser: a dead letter produced by a real consumer, reprocessed
with one click and followed to "Resolved"; a consumer paused and resumed from the consumers page,
which refreshes its figures in place. Screenshots land in test-artifacts/ for review."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from apps.eventbus.models import DeadLetter
from tests.bus import wait_for
from tests.testapp.events import SomethingHappened
from tests.testapp.models import Effect, Switch

from .conftest import server_side

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the first test may install Chromium

DEAD_LETTERS = "/admin/eventbus/deadletter/"
CONSUMERS = "/admin/operations/consumer/"


def reload_until(page, locator, text: str, timeout: float = 60) -> None:
    """Reload ``page`` until ``locator`` contains ``text``: the detail page does not refresh itself."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            expect(locator).to_contain_text(text, timeout=1_000)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        page.reload()


def test_an_operator_reprocesses_a_real_dead_letter_and_sees_it_resolved(cockpit, declared, operator):
    page = cockpit.page
    with server_side():
        Switch.objects.create(name="reject", on=True)
        event = SomethingHappened(value=5, mode="strict")
        declared.publish_event(event)
    with declared.relay(), declared.consumer("testing"), declared.consumer("dead-letters"):
        with server_side():
            pending = DeadLetter.objects.filter(message_id=event.message_id, status=DeadLetter.Status.PENDING)
            wait_for(pending.exists, message="the rejected message did not become a pending dead letter")
            dead_letter = DeadLetter.objects.get(message_id=event.message_id)
            assert dead_letter.consumer == "testing" and dead_letter.error_type == "PermanentError"
            assert not Effect.objects.filter(message_id=event.message_id).exists(), "its failed attempt rolled back"
            Switch.objects.filter(name="reject").update(on=False)  # the cause is fixed: the retry will succeed

        cockpit.log_in(operator.username)

        cockpit.open(DEAD_LETTERS)
        row = page.locator("#result_list tbody tr", has_text=event.subject)
        expect(row).to_have_count(1)
        expect(row).to_contain_text("PermanentError")
        expect(row).to_contain_text("rejected while the reject switch is on")
        expect(row.locator(".cockpit-badge")).to_have_text("Pending")
        expect(row.locator("button.cockpit-reprocess")).to_be_visible()
        cockpit.assert_styled()
        cockpit.screenshot("dead-letter-list.png")

        with page.expect_navigation():
            row.locator("th.field-id a").click()
        assert page.url.endswith(f"{DEAD_LETTERS}{dead_letter.pk}/change/"), page.url
        status = page.locator(".field-status_badge .cockpit-badge")
        history = page.locator("table.cockpit-history")
        expect(status).to_have_text("Pending")
        expect(page.locator(".field-error")).to_contain_text("rejected while the reject switch is on")
        expect(page.locator(".field-error")).not_to_contain_text("Traceback")
        expect(page.locator(".field-traceback_text")).to_contain_text("Traceback (most recent call last)")
        expect(page.locator(".field-traceback_text")).to_contain_text("PermanentError")
        expect(page.locator(".field-original_headers")).to_contain_text("Nats-Msg-Id")
        expect(page.locator(".field-payload")).to_contain_text('"value": 5')
        expect(history.locator("tr", has_text="failed")).to_contain_text("platform")
        cockpit.assert_styled()
        cockpit.screenshot("dead-letter-detail.png")

        with page.expect_navigation():
            page.click("#cockpit-reprocess")
        expect(page.locator(".messagelist .success")).to_contain_text(
            f"Dead letter {dead_letter.pk} is on its way back to testing"
        )
        reload_until(page, status, "Resolved", timeout=60)
        page.reload()  # a page rendered after the change, whole: "Resolved" is final
        expect(status).to_have_text("Resolved")

        expect(history.locator("tr", has_text="Reprocess requested")).to_contain_text(operator.username)
        expect(history.locator("tr", has_text="resolved")).to_contain_text("platform")
        expect(page.locator("#cockpit-reprocess")).to_have_count(0)  # nothing left to reprocess
        cockpit.assert_no_problems()

    with server_side():
        dead_letter.refresh_from_db()
        assert dead_letter.status == DeadLetter.Status.RESOLVED
        kinds = list(dead_letter.history.values_list("kind", "actor__username"))
        assert kinds == [("failed", None), ("reprocess_requested", "olivia"), ("resolved", None)]
        assert Effect.objects.filter(consumer="testing", message_id=event.message_id).count() == 1


def test_an_operator_pauses_and_resumes_a_consumer_on_a_page_that_refreshes_itself(cockpit, declared, operator):
    page = cockpit.page
    row = page.locator("#consumer-testing")
    state = row.locator("td.cockpit-state")
    pending = row.locator("td:nth-child(3)")  # consumer, streams, pending, ...

    cockpit.log_in(operator.username)
    cockpit.open(CONSUMERS)
    expect(row).to_contain_text("TESTING")
    expect(state).to_have_text("running")
    expect(pending).to_have_text("0")
    expect(page.locator("#stream-TESTING")).to_be_visible()
    cockpit.assert_styled()
    cockpit.screenshot("consumer-health.png")

    with page.expect_navigation():
        page.click("#pause-testing")
    expect(page.locator(".messagelist .success")).to_contain_text("Consumer testing paused")
    expect(state).to_contain_text("paused")
    expect(page.locator("#resume-testing")).to_be_visible()
    expect(page.locator("#pause-testing")).to_have_count(0)
    with server_side():
        assert declared.consumer_info("TESTING", "testing").paused is True

    # The page fetches its tables every 3 s: new messages show without a reload (a reload
    # would lose the marker set on this window).
    page.evaluate("window.cockpitNoReload = true")
    with server_side():
        for value in range(3):
            declared.publish_event(SomethingHappened(value=value))
    expect(pending).to_have_text("3", timeout=10_000)
    expect(page.locator("#cockpit-updated")).to_contain_text("Updated")
    assert page.evaluate("window.cockpitNoReload") is True, "the page was reloaded, not refreshed in place"
    expect(state).to_contain_text("paused")

    with page.expect_navigation():
        page.click("#resume-testing")  # a button of the refreshed fragment: its CSRF token must work
    expect(page.locator(".messagelist .success")).to_contain_text("Consumer testing resumed")
    expect(state).to_have_text("running")
    expect(page.locator("#pause-testing")).to_be_visible()
    with server_side():
        assert not declared.consumer_info("TESTING", "testing").paused  # the server leaves the field out
    cockpit.assert_no_problems()
