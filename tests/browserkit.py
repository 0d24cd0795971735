"""Headless Chromium for the browser tests: launching it, logging in, screenshots.

The same browser and flags as ``test_browser.py`` (Debian's ``/usr/bin/chromium``
driven by Playwright, ``HG_HOSTING_SKIP_BROWSER=1`` skips).  :func:`screenshots`
saves a page full-length at 1280 px and at 390 px (a phone) into
``/work/shots/selfservice`` (``HG_HOSTING_SHOTS`` overrides; the directory is made).

A test module that defines a module-scoped ``web`` fixture (with ``.url``, its
daemon's address) gets the browser and fresh contexts by binding the two
fixtures here under their names (imported, every test's argument would trip ruff's F811)::

    browser, tabs = browserkit.browser, browserkit.tabs

``browser`` is one Chromium for the module, launched after ``web`` (so it closes
its connections before the daemon stops); ``tabs`` is a :class:`Contexts` per
test that fails the test if a page raised a script error.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SHOTS = Path(os.environ.get("HG_HOSTING_SHOTS", "/work/shots/selfservice"))


def skip_unless_browser() -> None:
    if os.environ.get("HG_HOSTING_SKIP_BROWSER") == "1":
        pytest.skip("HG_HOSTING_SKIP_BROWSER=1: browser tests skipped on request", allow_module_level=True)


@contextlib.contextmanager
def chromium():
    """A launched headless Chromium; a missing Chromium or Playwright fails loudly."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.fail(f"Playwright is missing ({e}): pip install -e '.[test]'", pytrace=False)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium", pytrace=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def browser(web):
    """One headless Chromium for the module (after ``web``: it closes before the daemon stops)."""
    with chromium() as b:
        yield b


@pytest.fixture
def tabs(browser, web):
    """Fresh browser contexts for one test; a script error on any of their pages fails it."""
    handle = Contexts(browser, web.url)
    yield handle
    handle.close()
    assert handle.errors == []


class Contexts:
    """Browser contexts (each its own cookies) against one daemon, closed together."""

    def __init__(self, browser, url: str):
        self.browser, self.url = browser, url
        self.contexts = []
        self.errors: list[str] = []

    def page(self, viewport=None, storage_state=None):
        """A page in a new context; ``storage_state`` (a context's cookies) logs it in."""
        context = self.browser.new_context(base_url=self.url, viewport=viewport or DESKTOP,
                                           storage_state=storage_state)
        context.set_default_timeout(15_000)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))
        return page

    def close(self):
        for context in self.contexts:
            context.close()


def login(page, user: str, password: str, next_: str | None = None):
    page.goto("/-/login" + (f"?next={next_}" if next_ else ""))
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    return page


def submit(page, form_selector: str):
    """Click the submit button of the form matched by ``form_selector``; the navigation's response."""
    with page.expect_navigation() as nav:
        page.locator(form_selector).locator("button[type=submit]").first.click()
    return nav.value


def screenshots(page, name: str) -> None:
    """Full-page PNGs of the page as it is now, at desktop and phone widths."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    for label, viewport in (("1280", DESKTOP), ("390", PHONE)):
        page.set_viewport_size(viewport)
        page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(size)
