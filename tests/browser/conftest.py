"""A real browser against the cockpit: Playwright's sync API driving Debian's Chromium
(``/usr/bin/chromium``, installed with apt when missing; never ``playwright install``), and
pytest-django's ``live_server`` (a thread serving the app and, as ``django.contrib.staticfiles``
is installed, the admin's CSS and JavaScript) on the test's committed database.

Playwright's sync API leaves its event loop marked as running in the test's thread between
two browser calls. Django refuses ORM calls there (``SynchronousOnlyOperation``) and
``asyncio.run`` (the ``bus`` helpers) refuses to start, so the test's own database and NATS
work goes in a ``with server_side():`` block, and the ``cockpit`` fixture is set up after
everything that touches the database or NATS (it depends on them) and torn down before them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.support import ROOT, debian_package, password_of

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
_failed = pytest.StashKey[bool]()


# -- Chromium ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """Debian's Chromium, installed with apt when it is missing (as on a clean CI machine).
    Fails, never skips, when it cannot be had: a browser test that does not run is a gap."""
    return debian_package("chromium", lambda: str(CHROMIUM) if CHROMIUM.exists() else None)


# -- the test thread between browser calls ----------------------------------------------------


@contextlib.contextmanager
def server_side() -> Iterator[None]:
    """Database and NATS work in the test's thread while a browser is open: Playwright's
    (suspended) event loop is unmarked as running for the block, and marked again after it,
    as the next browser call needs it to be."""
    loop = asyncio._get_running_loop()
    asyncio._set_running_loop(None)
    try:
        yield
    finally:
        asyncio._set_running_loop(loop)


# -- the app, its users and the browser -------------------------------------------------------
# ``declared`` (streams and consumers on the test's nats-server) and ``operator`` (Olivia, with a
# password to type into the login form) come from the root conftest.


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_failed] = True
    return report


@dataclass
class Cockpit:
    """A browser page on the live server."""

    page: Page
    base_url: str
    problems: list[str] = field(default_factory=list)  # JavaScript errors, failed requests, 4xx/5xx

    def open(self, path: str) -> None:
        response = self.page.goto(self.base_url + path)
        assert response is not None and response.ok, f"GET {path}: {response and response.status}"

    def log_in(self, username: str) -> None:
        self.open("/admin/login/")
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", password_of(username))
        with self.page.expect_navigation():
            self.page.click("#login-form [type=submit]")
        assert self.page.url == f"{self.base_url}/admin/", f"not logged in: {self.page.url}"

    def screenshot(self, name: str) -> Path:
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_styled(self) -> None:
        """The admin's stylesheet applies: its header has a background colour (no static files,
        no colour)."""
        background = self.page.evaluate("getComputedStyle(document.getElementById('header')).backgroundColor")
        assert background not in ("", "transparent", "rgba(0, 0, 0, 0)"), "the admin's CSS did not load"

    def assert_no_problems(self) -> None:
        assert not self.problems, "the browser saw problems:\n" + "\n".join(self.problems)


@pytest.fixture
def cockpit(request, live_server, declared, operator, chromium_executable) -> Iterator[Cockpit]:
    """A fresh headless Chromium with one page, once the app, NATS and the operator are ready.
    A failing test leaves ``test-artifacts/failed-<test>.png`` behind."""
    ARTIFACTS.mkdir(exist_ok=True)
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=chromium_executable, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1920, "height": 1080}, locale="en-GB")
        context.set_default_timeout(15_000)
        expect.set_options(timeout=10_000)
        page = context.new_page()
        cockpit = Cockpit(page=page, base_url=live_server.url)

        def on_response(response) -> None:
            if response.status >= 400 and not response.url.endswith("/favicon.ico"):
                cockpit.problems.append(f"{response.status} {response.request.method} {response.url}")

        page.on("pageerror", lambda error: cockpit.problems.append(f"JavaScript error: {error}"))

        def on_request_failed(req) -> None:
            if req.failure != "net::ERR_ABORTED":  # a refresh still in flight when the page navigates away
                cockpit.problems.append(f"failed: {req.method} {req.url} {req.failure}")

        page.on("requestfailed", on_request_failed)
        page.on("response", on_response)
        yield cockpit
        if request.node.stash.get(_failed, False):
            with contextlib.suppress(Exception):
                page.screenshot(path=str(ARTIFACTS / f"failed-{request.node.name}.png"), full_page=True)
        browser.close()
    finally:
        playwright.stop()
        asyncio._set_running_loop(None)  # the database's teardown runs in this thread next
