"""The site administration pages (``/-/admin...``) in headless Chromium, and over plain HTTP.

One site and one daemon for the module: ``root`` (site admin), ``alice`` (a user
with a password), 55 users without one (``user00``...: the listing has two
pages), team ``devs`` (member alice, owns ``devs/tool``).  Each browser test
gets fresh contexts (test_browser's ``browser`` fixture: Debian's Chromium
through Playwright).  Full-page screenshots of every page at 1280 and 390 px
go to ``/work/shots/siteadmin/`` (``HG_HOSTING_SHOTS`` elsewhere) when that
directory can be made.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path

import pytest
from clibatch import cli_batch
from conftest import Daemon, site_handle
from test_auth import cookies, db_query, form_login, request
from test_browser import PHONE, browser  # noqa: F401 - browser is a fixture

PASSWORDS = {"root": "root-admin-pw", "alice": "alice-admin-pw"}
SHOTS = Path(os.environ.get("HG_HOSTING_SHOTS", "/work/shots/siteadmin"))
ADMIN_PATHS = ["/-/admin", "/-/admin/users", "/-/admin/teams", "/-/admin/site"]


class Web:
    def __init__(self, site, daemon):
        self.site, self.daemon, self.url = site, daemon, daemon.url
        self._cookies: dict[str, str] = {}

    def cookie(self, user: str) -> str:
        if user not in self._cookies:
            status, headers, _ = form_login(self.daemon, user, PASSWORDS[user])
            assert status == 303
            self._cookies[user] = "hgh_session=" + cookies(headers)["hgh_session"]
        return self._cookies[user]

    def get(self, user: str | None, path: str) -> tuple[int, str]:
        status, _, body = request(self.daemon, "GET", path, {"Cookie": self.cookie(user)} if user else {})
        return status, body.decode()

    def post(self, user: str | None, path: str, csrf_from: str | None = None, **fields) -> tuple[int, str]:
        """POST a form as ``user``, with the CSRF token of root's page ``csrf_from`` (None: no token)."""
        if csrf_from is not None:
            page = self.get(user or "root", csrf_from)[1]
            fields["csrf"] = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if user:
            headers["Cookie"] = self.cookie(user)
        status, _, body = request(self.daemon, "POST", path, headers, urllib.parse.urlencode(fields).encode())
        return status, body.decode()

    def owners(self) -> list[tuple]:
        return db_query(self.site, "SELECT name, kind, is_admin, disabled, email FROM owner ORDER BY name_key")

    def members(self) -> list[tuple]:
        return db_query(self.site, "SELECT t.name, u.name FROM membership m JOIN owner t ON t.id = m.team_id"
                                   " JOIN owner u ON u.id = m.user_id ORDER BY 1, 2")


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("siteadmin-browser")
    site = site_handle(tmp)
    cli_batch(site, [
        (["init"], None),
        (["user", "add", "root", "--admin", "--email", "root@example.org", "--password-stdin"],
         PASSWORDS["root"] + "\n"),
        (["user", "add", "alice", "--email", "alice@example.org", "--password-stdin"], PASSWORDS["alice"] + "\n"),
        *[(["user", "add", f"user{i:02}", "--email", f"user{i:02}@corp.example"], None) for i in range(55)],
        (["team", "add", "devs"], None),
        (["team", "member-add", "devs", "alice"], None),
        (["repo", "create", "devs/tool"], None),
        (["repo", "create", "alice/demo", "--description", "a public demo"], None),
    ])
    daemon = Daemon(site)
    yield Web(site, daemon)
    daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]


@pytest.fixture
def contexts(browser, web):  # noqa: F811 - the imported fixture
    opened = []

    def new(user: str | None = None, viewport: dict | None = None):
        context = browser.new_context(base_url=web.url, viewport=viewport or {"width": 1280, "height": 800})
        context.set_default_timeout(15_000)
        opened.append(context)
        if user is not None:
            name, value = web.cookie(user).split("=", 1)
            context.add_cookies([{"name": name, "value": value, "url": web.url, "httpOnly": True}])
        return context.new_page()

    yield new
    for context in opened:
        context.close()


def shot(page, name: str) -> None:
    """Full-page screenshots at desktop and phone widths, when the shots directory can be made."""
    try:
        SHOTS.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    for label, size in (("1280", {"width": 1280, "height": 800}), ("390", PHONE)):
        page.set_viewport_size(size)
        page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
        page.screenshot(path=str(SHOTS / f"{name}-{label}-top.png"))  # the first screenful, to look at
        # nothing wider than the screen: no sideways scrolling on a phone
        assert page.evaluate("document.documentElement.scrollWidth") <= size["width"], (name, label)
    page.set_viewport_size({"width": 1280, "height": 800})


def submit(page, form, button: str | None = None):
    """Click a form's submit button (by its text) and wait for the page it answers with."""
    with page.expect_navigation() as nav:
        (form.get_by_role("button", name=button) if button else form.locator("button[type=submit]")).first.click()
    return nav.value


# -- who may see the pages --------------------------------------------------------------------


def test_admin_pages_are_404_for_everyone_but_site_admins(web):
    """Anonymous and alice get 404 on every admin page, GET and POST, and nothing changes; root gets 200."""
    before = web.owners()
    for path in ADMIN_PATHS:
        assert web.get(None, path)[0] == 404, path
        assert web.get("alice", path)[0] == 404, path
        assert web.get("root", path)[0] == 200, path
    assert web.get("root", "/-/admin/nothing")[0] == 404
    # alice's POST with her own session's token: still 404, nothing created
    alice_csrf = re.search(r'name="csrf" value="([^"]+)"', web.get("alice", "/")[1]).group(1)
    assert web.post("alice", "/-/admin/users", csrf=alice_csrf, action="create", name="mallory")[0] == 404
    assert web.post(None, "/-/admin/teams", action="create", team="x")[0] == 404
    assert web.owners() == before


def test_admin_posts_need_the_sessions_csrf_token(web):
    before = web.owners()
    status, _ = web.post("root", "/-/admin/users", action="create", name="nocsrf")
    assert status == 403
    status, _ = web.post("root", "/-/admin/users", csrf="forged", action="disable", name="alice")
    assert status == 403
    assert web.owners() == before


def test_users_are_listed_searched_and_paged(web):
    status, page = web.get("root", "/-/admin/users")
    assert status == 200 and "user00" in page and "user54" not in page and "page 1 of 2" in page
    status, page = web.get("root", "/-/admin/users?page=2")
    assert status == 200 and "user54" in page and "user00" not in page
    status, page = web.get("root", "/-/admin/users?q=ALICE")
    assert "alice@example.org" in page and "user01" not in page
    status, page = web.get("root", "/-/admin/users?q=corp.example&page=2")
    assert "user54" in page and "q=corp.example" in page
    assert web.get("root", "/-/admin/users?page=0")[0] == 400


# -- users in the browser ---------------------------------------------------------------------


def test_create_a_user_and_set_the_password_with_the_shown_link(contexts, web):
    """root creates newbie: the page shows a one-time link; newbie opens it (no session), sets a
    password, and logs in with it."""
    page = contexts("root")
    page.goto("/-/admin")
    shot(page, "admin-users")
    form = page.locator("form:has(input[name=action][value=create])")
    form.locator("input[name=name]").fill("newbie")
    form.locator("input[name=email]").fill("newbie@example.org")
    assert submit(page, form, "Create user").status == 200
    assert "created user newbie" in page.locator("p.message").inner_text()
    link = page.locator("#reset-link").inner_text()
    assert re.fullmatch(re.escape(web.url) + r"/-/reset/[A-Za-z0-9_-]{43}", link), link
    assert ("newbie", "user", 0, 0, "newbie@example.org") in web.owners()
    shot(page, "admin-users-created")
    page.reload()  # the link is shown once
    assert page.locator("#reset-link").count() == 0

    stranger = contexts()
    stranger.goto(link)
    assert "newbie" in stranger.locator("main").inner_text()
    shot(stranger, "reset")
    stranger.fill("input[name=password]", "newbie-pw-1")
    stranger.fill("input[name=confirm]", "newbie-pw-2")
    assert submit(stranger, stranger.locator("main form")).status == 400
    assert "do not match" in stranger.locator("p.error").inner_text()
    shot(stranger, "reset-refused")
    stranger.fill("input[name=password]", "newbie-pw-1")
    stranger.fill("input[name=confirm]", "newbie-pw-1")
    submit(stranger, stranger.locator("main form"))
    assert stranger.url.endswith("/-/login")
    stranger.fill("input[name=user]", "newbie")
    stranger.fill("input[name=password]", "newbie-pw-1")
    submit(stranger, stranger.locator("main form"))
    assert "Log out" in stranger.locator("header.topbar").inner_text()
    stranger.goto(link)
    assert "unknown, used or expired" in stranger.locator("p.error").inner_text()
    shot(stranger, "reset-gone")


def test_creating_a_taken_or_bad_name_is_refused_keeping_what_was_typed(contexts, web):
    before = web.owners()
    page = contexts("root")
    page.goto("/-/admin/users")
    form = page.locator("form:has(input[name=action][value=create])")
    form.locator("input[name=name]").fill("ALICE")
    form.locator("input[name=email]").fill("other@example.org")
    form.locator("input[name=admin]").check()
    assert submit(page, form, "Create user").status == 400
    assert "the name 'ALICE' is already taken" in page.locator("p.error").inner_text()
    form = page.locator("form:has(input[name=action][value=create])")
    assert form.locator("input[name=name]").input_value() == "ALICE"
    assert form.locator("input[name=email]").input_value() == "other@example.org"
    assert form.locator("input[name=admin]").is_checked()
    shot(page, "admin-users-refused")
    # a hostile name through plain HTTP: one message, no 500
    status, body = web.post("root", "/-/admin/users", "/-/admin/users", action="create",
                            name="<script>x</script>", email="a@b")
    assert status == 400 and "<script>x</script>" not in body and "class=\"error\"" in body
    status, body = web.post("root", "/-/admin/users", "/-/admin/users", action="create", name="ok-name",
                            email="x" * 300)
    assert status == 400 and "invalid email address" in body and "x" * 300 in body  # kept
    assert web.owners() == before


def test_disable_and_enable_in_the_browser_ends_the_users_session(contexts, web):
    alice = contexts("alice")
    alice.goto("/")
    assert "Log out" in alice.locator("header.topbar").inner_text()
    page = contexts("root")
    page.goto("/-/admin/users?q=alice")
    row = page.locator("tr", has_text="alice@example.org")
    submit(page, row.locator("form"), "Disable")
    assert "disabled alice" in page.locator("p.message").inner_text()
    assert page.locator("tr", has_text="alice@example.org").locator(".badge.off").is_visible()
    assert ("alice", "user", 0, 1, "alice@example.org") in web.owners()
    shot(page, "admin-users-disabled")
    alice.reload()
    assert "Log in" in alice.locator("header.topbar").inner_text()  # her session ended
    # the login form says so, to whoever has her password
    assert form_login(web.daemon, "alice", PASSWORDS["alice"])[0] == 403
    row = page.locator("tr", has_text="alice@example.org")
    submit(page, row.locator("form"), "Enable")
    assert "enabled alice" in page.locator("p.message").inner_text()
    assert ("alice", "user", 0, 0, "alice@example.org") in web.owners()
    assert form_login(web.daemon, "alice", PASSWORDS["alice"])[0] == 303
    web._cookies.pop("alice", None)


def test_make_and_remove_admin_but_never_the_last(contexts, web):
    page = contexts("root")
    page.goto("/-/admin/users?q=root")
    before = web.owners()
    submit(page, page.locator("tr", has_text="root@example.org").locator("form"), "Remove admin")
    assert "root is the last site admin" in page.locator("p.error").inner_text()
    assert web.owners() == before
    shot(page, "admin-users-last-admin")
    page.goto("/-/admin/users?q=user07")
    submit(page, page.locator("tr", has_text="user07@").locator("form"), "Make admin")
    assert "user07 is now a site admin" in page.locator("p.message").inner_text()
    assert ("user07", "user", 1, 0, "user07@corp.example") in web.owners()
    page.goto("/-/admin/users?q=user07")
    submit(page, page.locator("tr", has_text="user07@").locator("form"), "Remove admin")
    assert ("user07", "user", 0, 0, "user07@corp.example") in web.owners()
    # disabling the last enabled admin is refused the same way
    assert "root is the last site admin" in web.post("root", "/-/admin/users", "/-/admin/users",
                                                     action="disable", name="root")[1]


def test_issue_a_reset_link(contexts, web):
    page = contexts("root")
    page.goto("/-/admin/users?q=user03")
    submit(page, page.locator("tr", has_text="user03@").locator("form"), "Reset link")
    link = page.locator("#reset-link").inner_text()
    assert "/-/reset/" in link
    assert request(web.daemon, "GET", urllib.parse.urlsplit(link).path)[0] == 200
    assert db_query(web.site, "SELECT COUNT(*) FROM password_reset r JOIN owner o ON o.id = r.user_id"
                              " WHERE o.name = 'user03'") == [(1,)]


# -- teams -------------------------------------------------------------------------------------


def test_teams_create_members_and_remove(contexts, web):
    page = contexts("root")
    page.goto("/-/admin/teams")
    shot(page, "admin-teams")
    new = page.locator("form:has(button[value=create])")
    new.locator("input[name=team]").fill("ops")
    submit(page, new, "Create team")
    assert "created team ops" in page.locator("p.message").inner_text()
    card = page.locator("section.team", has=page.locator("h2 a", has_text=re.compile(r"^ops$")))
    card.locator("form.row input[name=user]").fill("user05")
    submit(page, card.locator("form.row"), "Add member")
    assert ("ops", "user05") in web.members()
    # an unknown user: refused, typed name kept in that team's form
    card = page.locator("section.team", has=page.locator("h2 a", has_text=re.compile(r"^ops$")))
    card.locator("form.row input[name=user]").fill("nobody-here")
    assert submit(page, card.locator("form.row"), "Add member").status == 400
    assert "no user named 'nobody-here'" in page.locator("p.error").inner_text()
    card = page.locator("section.team", has=page.locator("h2 a", has_text=re.compile(r"^ops$")))
    assert card.locator("form.row input[name=user]").input_value() == "nobody-here"
    shot(page, "admin-teams-refused")
    card.get_by_role("button", name="remove user05 from ops").click()
    page.wait_for_load_state()
    assert ("ops", "user05") not in web.members()
    card = page.locator("section.team", has=page.locator("h2 a", has_text=re.compile(r"^ops$")))
    submit(page, card.locator(".team-head form"), "Remove team")
    assert "removed team ops" in page.locator("p.message").inner_text()
    assert "ops" not in [n for n, *_ in web.owners()]


def test_a_team_owning_repositories_or_a_taken_name_is_refused(contexts, web):
    before, members = web.owners(), web.members()
    page = contexts("root")
    page.goto("/-/admin/teams")
    card = page.locator("section.team", has=page.locator("h2 a", has_text=re.compile(r"^devs$")))
    assert submit(page, card.locator(".team-head form"), "Remove team").status == 400
    assert "devs owns repositories (devs/tool)" in page.locator("p.error").inner_text()
    new = page.locator("form:has(button[value=create])")
    new.locator("input[name=team]").fill("Alice")
    assert submit(page, new, "Create team").status == 400
    assert "already taken" in page.locator("p.error").inner_text()
    assert page.locator("form:has(button[value=create]) input[name=team]").input_value() == "Alice"
    assert (web.owners(), web.members()) == (before, members)


# -- the site ----------------------------------------------------------------------------------------


def test_site_page_shows_version_counts_disk_and_engine(contexts, web):
    page = contexts("root")
    page.goto("/-/admin/site")
    text = page.locator("main").inner_text()
    assert "hg-hosting 0.1.0" in text and "SQLite" in text
    counts = dict(zip(page.locator(".counts dt").all_inner_texts(), page.locator(".counts dd").all_inner_texts(),
                      strict=True))
    users = db_query(web.site, "SELECT COUNT(*) FROM owner WHERE kind = 'user'")[0][0]
    assert counts["Users"] == str(users) and counts["Repositories"] == "2" and counts["Pushes"] == "0"
    assert counts["Teams"] == str(db_query(web.site, "SELECT COUNT(*) FROM owner WHERE kind = 'team'")[0][0])
    assert re.search(r"Disk used by repositories\s+[\d.]+ (KB|MB)", text), text
    shot(page, "admin-site")
    # the admin link in the top bar: for site admins only
    assert page.locator("header.topbar a[href='/-/admin']").is_visible()
    assert 'href="/-/admin"' not in web.get("alice", "/")[1]
