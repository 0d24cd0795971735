"""Open registration with an address check, and forgotten passwords: real mail, read back.

A real SMTP server (aiosmtpd) runs in the test on a free loopback port; the
site's ``[hosting] smtp`` points at it, ``registration = open`` and
``[web] baseurl = https://hg.example.org`` (links in mails never follow the
request's ``Host``).  One daemon for the module; the flows run in Chromium.
"""

from __future__ import annotations

import email
import email.policy
import queue
import re
import socket

import browserkit
import pytest
from browserkit import screenshots, skip_unless_browser, submit
from conftest import Daemon, site_handle
from test_auth import PASSWORDS, add_users, db_query, form_login, request

skip_unless_browser()
#: The module's fixtures: one Chromium after ``web``, fresh contexts per test (browserkit's docstring).
browser, tabs = browserkit.browser, browserkit.tabs

BASE_URL = "https://hg.example.org"


class Mailbox:
    """An aiosmtpd server on loopback; :meth:`next` waits for the next message it received."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.received: queue.Queue = queue.Queue()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.put((envelope.rcpt_tos, message))
        return "250 OK"

    def next(self, timeout: float = 30) -> tuple[list[str], email.message.EmailMessage]:
        return self.received.get(timeout=timeout)

    def empty(self) -> bool:
        return self.received.empty()

    def stop(self) -> None:
        self.controller.stop()


class Web:
    def __init__(self, site, daemon, mailbox):
        self.site, self.daemon, self.mailbox, self.url = site, daemon, mailbox, daemon.url


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    mailbox = Mailbox()
    site = site_handle(tmp_path_factory.mktemp("selfservice-mail"))
    site.cli("init")
    with open(site.root / "hgrc", "a") as hgrc:
        hgrc.write(f"\n[hosting]\nregistration = open\nsmtp = 127.0.0.1:{mailbox.port}\n"
                   f"mail-from = hg-hosting <noreply@example.org>\n[web]\nbaseurl = {BASE_URL}/\n")
    add_users(site, {"alice": PASSWORDS["alice"]})
    site.cli("user", "add", "mailed", "--email", "mailed@example.org")
    daemon = Daemon(site)
    yield Web(site, daemon, mailbox)
    daemon.stop()
    mailbox.stop()
    log = daemon.log()
    assert "Traceback" not in log, log[-3000:]
    assert not re.search(r"/-/(verify|reset|join)/hgh_", log), "a link's token reached the log"



def link_in(message, kind: str) -> str:
    """The path of the ``/-/KIND/TOKEN`` link in a mail, checked to start with the base URL."""
    (url,) = re.findall(rf"{re.escape(BASE_URL)}(/-/{kind}/\S+)", message.get_content())
    return url


def test_open_registration_checks_the_address_first(tabs, web):
    page = tabs.page()
    page.goto("/-/register")
    screenshots(page, "register")
    page.fill("input[name=name]", "newbie")
    page.locator("input[name=email]").evaluate("e => e.type = 'text'")
    page.fill("input[name=email]", "not-an-address")
    page.fill("input[name=password]", "newbie-pw")
    page.fill("input[name=confirm]", "newbie-pw")
    assert submit(page, "main form").status == 400
    assert page.locator("p.error").inner_text() == "enter an email address (name@example.org)"
    assert page.input_value("input[name=name]") == "newbie"
    assert page.input_value("input[name=password]") == ""
    screenshots(page, "register-error")

    page.fill("input[name=email]", "newbie@example.org")
    page.fill("input[name=password]", "newbie-pw")
    page.fill("input[name=confirm]", "newbie-pw")
    assert submit(page, "main form").status == 200
    assert page.locator("h1").inner_text() == "Check your mail"
    screenshots(page, "register-sent")
    to, message = web.mailbox.next()
    assert to == ["newbie@example.org"] and message["Subject"] == "Confirm your address"
    assert message["From"] == "hg-hosting <noreply@example.org>"
    path = link_in(message, "verify")
    # Not an account until the address is confirmed.
    assert db_query(web.site, "SELECT count(*) FROM owner WHERE name = 'newbie'") == [(0,)]
    assert form_login(web.daemon, "newbie", "newbie-pw")[0] == 401

    page.goto(path)  # a GET (a mail scanner's) spends nothing
    screenshots(page, "verify")
    assert submit(page, "main form").status == 200
    assert page.url == web.url + "/"
    assert "newbie" in page.locator("header.topbar").inner_text()
    assert db_query(web.site, "SELECT email FROM owner WHERE name = 'newbie'") == [("newbie@example.org",)]
    again = tabs.page()
    again.goto(path)
    assert submit(again, "main form").status == 404


def test_the_forgot_page_answers_alike_and_mails_a_reset_link_to_an_account(tabs, web):
    page = tabs.page()
    page.goto("/-/login")
    screenshots(page, "login-with-links")
    with page.expect_navigation():
        page.get_by_text("Forgot your password?").click()
    assert page.url == web.url + "/-/forgot"
    screenshots(page, "forgot")
    page.fill("input[name=email]", "nobody@example.org")
    assert submit(page, "main form").status == 200
    unknown = page.locator("main").inner_text().replace("nobody@example.org", "ADDRESS")
    screenshots(page, "forgot-sent")
    page.goto("/-/forgot")
    page.fill("input[name=email]", "mailed@example.org")
    assert submit(page, "main form").status == 200
    assert page.locator("main").inner_text().replace("mailed@example.org", "ADDRESS") == unknown
    to, message = web.mailbox.next()
    assert to == ["mailed@example.org"] and message["Subject"] == "Set a new password"
    path = link_in(message, "reset")
    assert web.mailbox.empty()  # nothing for the unknown address
    page.goto(path)  # the reset page (/-/reset/TOKEN) sets the password, once
    page.fill("input[name=password]", "mailed-new-pw")
    page.fill("input[name=confirm]", "mailed-new-pw")
    assert submit(page, "main form").status in (200, 303)
    assert form_login(web.daemon, "mailed", "mailed-new-pw")[0] == 303
    assert request(web.daemon, "GET", path)[0] == 404  # spent


def test_forgot_refuses_a_bad_address_and_mails_nothing(tabs, web):
    page = tabs.page()
    page.goto("/-/forgot")
    page.locator("input[name=email]").evaluate("e => e.type = 'text'")
    page.fill("input[name=email]", "<b>nope</b>")
    assert submit(page, "main form").status == 400
    assert page.locator("p.error").inner_text() == "enter an email address (name@example.org)"
    assert page.input_value("input[name=email]") == "<b>nope</b>"
    assert web.mailbox.empty()
