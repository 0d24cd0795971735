"""The self-service flows end to end in headless Chromium, with their refusals.

One site and one daemon for the module, ``[hosting] registration = invite``
and ``signup-throttle = 4``: ``alice`` and ``bob`` have passwords, ``alice/private``
is private.  Each test opens fresh browser contexts (their own cookies).  Each
page is saved at 1280 and 390 px (``browserkit.screenshots``).
"""

from __future__ import annotations

import datetime

import browserkit
import pytest
from browserkit import login, screenshots, skip_unless_browser, submit
from clibatch import cli_batch
from conftest import Daemon, site_handle
from test_auth import PASSWORDS, db_query
from test_selfservice import KEY, TOKEN

skip_unless_browser()
#: The module's fixtures: one Chromium after ``web``, fresh contexts per test (browserkit's docstring).
browser, tabs = browserkit.browser, browserkit.tabs

#: The label field of the new-token form (each token's row has a hidden one).
LABEL = "form:has(input[value=create]) input[name=label]"


class Web:
    def __init__(self, site, daemon):
        self.site, self.daemon, self.url = site, daemon, daemon.url


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    site = site_handle(tmp_path_factory.mktemp("selfservice-browser"))
    cli_batch(site, [(["init"], None),
                     *[(["user", "add", name, "--password-stdin"], PASSWORDS[name] + "\n")
                       for name in ("alice", "bob")],
                     (["repo", "create", "alice/private", "--private"], None)])
    with open(site.root / "hgrc", "a") as hgrc:
        hgrc.write("\n[hosting]\nregistration = invite\nsignup-throttle = 4\n")
    daemon = Daemon(site)
    yield Web(site, daemon)
    daemon.stop()
    log = daemon.log()
    assert "Traceback" not in log, log[-3000:]
    assert not TOKEN.search(log), "a token reached the log"



def test_anonymous_settings_go_to_login_and_back(tabs, web):
    page = tabs.page()
    page.goto("/-/settings/keys")
    assert page.url == web.url + "/-/login?next=%2F-%2Fsettings%2Fkeys"
    page.fill("input[name=user]", "alice")
    page.fill("input[name=password]", PASSWORDS["alice"])
    submit(page, "main form")
    assert page.url == web.url + "/-/settings/keys"
    assert page.locator(".settings-menu a[aria-current=page]").inner_text() == "SSH keys"


def test_profile_email_and_password(tabs, web):
    page = login(tabs.page(), "bob", PASSWORDS["bob"], "/-/settings")
    other = login(tabs.page(), "bob", PASSWORDS["bob"], "/-/settings")
    assert page.locator("header.topbar").get_by_text("Settings").is_visible()
    screenshots(page, "settings-profile")

    # past the browser's own checks, as a script or an old browser would post it
    page.locator("input[name=email]").evaluate("e => { e.type = 'text'; e.removeAttribute('maxlength'); }")
    page.fill("input[name=email]", "b" * 300)
    response = submit(page, "form:has(input[value=email])")
    assert response.status == 400
    assert page.locator("p.error").inner_text() == "invalid email address"
    assert page.input_value("input[name=email]") == "b" * 300
    assert db_query(web.site, "SELECT email FROM owner WHERE name = 'bob'") == [("",)]

    page.fill("input[name=email]", "bob@example.org")
    assert submit(page, "form:has(input[value=email])").status == 200
    assert page.locator("p.message").inner_text() == "Your email address was saved."
    assert page.input_value("input[name=email]") == "bob@example.org"

    page.fill("input[name=current]", "not-bobs")
    page.fill("input[name=password]", "bob-new-pw")
    page.fill("input[name=confirm]", "bob-new-pw")
    assert submit(page, "form:has(input[value=password])").status == 400
    assert page.locator("p.error").inner_text() == "the current password is wrong"
    assert page.input_value("input[name=current]") == "" and page.input_value("input[name=password]") == ""
    screenshots(page, "settings-profile-error")

    page.fill("input[name=current]", PASSWORDS["bob"])
    page.fill("input[name=password]", "bob-new-pw")
    page.fill("input[name=confirm]", "bob-new-pw")
    assert submit(page, "form:has(input[value=password])").status == 200
    assert "every other session of yours has ended" in page.locator("p.message").inner_text()
    other.goto("/-/settings")
    assert "/-/login" in other.url  # the other session ended
    page.goto("/-/settings")
    assert page.url.endswith("/-/settings")  # this one stays


def test_ssh_keys_add_refuse_and_remove(tabs, web):
    page = login(tabs.page(), "alice", PASSWORDS["alice"], "/-/settings/keys")
    page.fill("textarea[name=key]", "ssh-rsa AAAA not-a-key")
    assert submit(page, "form:has(input[value=add])").status == 400
    assert page.locator("p.error").is_visible()
    assert page.input_value("textarea[name=key]") == "ssh-rsa AAAA not-a-key"
    screenshots(page, "settings-keys-error")
    assert db_query(web.site, "SELECT count(*) FROM ssh_key") == [(0,)]

    page.fill("textarea[name=key]", KEY)
    assert submit(page, "form:has(input[value=add])").status == 200
    ((fingerprint,),) = db_query(web.site, "SELECT fingerprint FROM ssh_key")
    assert page.locator("table.keys code.fingerprint").inner_text() == fingerprint
    assert page.input_value("textarea[name=key]") == ""
    screenshots(page, "settings-keys")
    assert submit(page, "table.keys form").status == 200
    assert "No SSH keys yet." in page.locator("table.keys").inner_text()
    assert db_query(web.site, "SELECT count(*) FROM ssh_key") == [(0,)]


def test_tokens_create_once_refuse_a_duplicate_expire_and_revoke(tabs, web, tmp_path):
    page = login(tabs.page(), "alice", PASSWORDS["alice"], "/-/settings/tokens")
    tomorrow = (datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=1)).isoformat()
    page.fill(LABEL, "laptop")
    page.fill("input[name=expires]", tomorrow)
    assert submit(page, "form:has(input[value=create])").status == 200
    token = page.locator("#new-token").inner_text()
    assert TOKEN.fullmatch(token)
    assert token not in page.url
    row = page.locator("table.tokens tr", has_text="laptop")
    assert tomorrow in row.inner_text() and "never" in row.inner_text()
    screenshots(page, "settings-tokens-new")

    page.fill(LABEL, "laptop")
    assert submit(page, "form:has(input[value=create])").status == 400
    assert page.locator("p.error").inner_text() == "alice already has a token labelled 'laptop'"
    assert page.input_value(LABEL) == "laptop"
    assert page.locator("#new-token").count() == 0
    assert db_query(web.site, "SELECT count(*) FROM api_token") == [(1,)]

    url = f"http://alice:{token}@127.0.0.1:{web.daemon.port}/alice/private"
    web.site.hg("clone", "-q", url, str(tmp_path / "ok"))
    page.goto("/-/settings/tokens")
    assert token not in page.content()
    assert "never" not in page.locator("table.tokens tr", has_text="laptop").locator("td").nth(2).inner_text()
    screenshots(page, "settings-tokens")

    db_query(web.site, "UPDATE api_token SET expires = '2001-01-01 00:00:00'")
    proc = web.site.hg("clone", "-q", url, str(tmp_path / "expired"), check=False)
    assert proc.returncode != 0 and "authorization failed" in proc.stderr
    page.reload()
    assert "expired" in page.locator("table.tokens tr", has_text="laptop").inner_text()
    assert submit(page, "table.tokens form").status == 200
    assert page.locator("p.message").inner_text() == "Revoked the token laptop."
    assert db_query(web.site, "SELECT count(*) FROM api_token") == [(0,)]


def test_sessions_list_and_end_others(tabs, web):
    page = login(tabs.page(), "alice", PASSWORDS["alice"], "/-/settings/sessions")
    others = [login(tabs.page(), "alice", PASSWORDS["alice"]) for _ in range(2)]
    page.reload()
    rows = page.locator("table.sessions tbody tr")
    assert rows.count() >= 3
    assert page.locator("table.sessions .badge.current").count() == 1
    assert "127.0.0.1" in rows.first.inner_text()
    screenshots(page, "settings-sessions")
    assert submit(page, "table.sessions form").status == 200
    assert page.locator("p.message").inner_text() == "The session was ended."
    assert submit(page, "form:has(input[value=end-others])").status == 200
    assert page.locator("table.sessions tbody tr").count() == 1
    for other in others:
        other.goto("/-/settings")
        assert "/-/login" in other.url
    page.goto("/-/settings/sessions")
    assert page.url.endswith("/-/settings/sessions")


def test_join_with_an_invitation_once(tabs, web):
    path = web.site.cli("invite", "create", "--email", "dora@example.org").stdout.strip()
    page = tabs.page()
    page.goto(path)
    assert page.input_value("input[name=email]") == "dora@example.org"
    screenshots(page, "join")
    page.fill("input[name=name]", "dora")
    page.fill("input[name=password]", "dora-pw-1")
    page.fill("input[name=confirm]", "dora-pw-2")
    assert submit(page, "main form").status == 400
    assert page.locator("p.error").inner_text() == "the password and its confirmation differ"
    assert page.input_value("input[name=name]") == "dora" and page.input_value("input[name=password]") == ""
    screenshots(page, "join-error")
    page.fill("input[name=name]", "alice")  # taken
    page.fill("input[name=password]", "dora-pw-1")
    page.fill("input[name=confirm]", "dora-pw-1")
    assert submit(page, "main form").status == 400
    assert "already taken" in page.locator("p.error").inner_text()
    page.fill("input[name=name]", "dora")
    page.fill("input[name=password]", "dora-pw-1")
    page.fill("input[name=confirm]", "dora-pw-1")
    assert submit(page, "main form").status == 200
    assert page.url == web.url + "/"
    assert "dora" in page.locator("header.topbar").inner_text()
    assert db_query(web.site, "SELECT email FROM owner WHERE name = 'dora'") == [("dora@example.org",)]

    again = tabs.page()
    response = again.goto(path)
    assert response.status == 404  # spent
    assert again.goto("/-/register").status == 404  # invitations only


def test_sign_up_is_throttled(tabs, web):
    """The module allows 4 sign-up attempts per address a window (other tests may have used some):
    refused attempts count too, and the fifth at the latest is 429."""
    path = web.site.cli("invite", "create").stdout.strip()
    page = tabs.page()
    page.goto(path)
    statuses = []
    while len(statuses) < 5 and 429 not in statuses:
        page.fill("input[name=name]", "eve")
        page.fill("input[name=email]", "eve@example.org")
        page.fill("input[name=password]", "x")
        page.fill("input[name=confirm]", "y")
        statuses.append(submit(page, "main form").status)
    assert statuses[-1] == 429 and set(statuses[:-1]) <= {400}, statuses
    assert "too many sign-ups" in page.locator("p.error").inner_text()
    assert page.input_value("input[name=name]") == "eve"
    assert db_query(web.site, "SELECT count(*) FROM owner WHERE name = 'eve'") == [(0,)]
    screenshots(page, "join-throttled")
