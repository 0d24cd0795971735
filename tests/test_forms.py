"""The page handlers, from outside: fork, settings, new repository, log out, and the read-only pages.

Every form handler of ``daemon/pages.py`` has its success and each of its
refusals here, through a real daemon and real sessions (the login form), each
refusal with its exact status and message and with the database and the
``repos/`` directory as they were.

One site and one daemon for the module (``forms``):

- ``alice`` owns the public ``alice/demo`` (one changeset, pushed by alice) and
  the private ``alice/secret``; she is a member of team ``devs``;
- ``bob`` may read ``alice/secret`` (and, like everyone, the public ``alice/demo``);
- ``carol`` has no grant at all.

Tests that change the site work on repositories of their own names, so that
their order does not matter.

Pages answer a refusal of the daemon's edge (401, 403, 404, 405) with the
reason as the one-line plain-text body; a refusal of the operation itself with
the form again with the message in ``<p class="error">``.  The status
is the refusal's (``daemon.web.page_status``): 404 for what does not exist,
403 for what the user may not do, 400 for an invalid or clashing value.
"""

from __future__ import annotations

import base64
import html
import re
import sqlite3
import urllib.parse
from dataclasses import dataclass

import pytest
from conftest import Daemon, SiteHandle, commit, site_handle
from hookreceiver import wait_until
from pushhelpers import cli_all
from test_auth import add_users, cookies, form_login, request

PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "carol": "carol-pw-3"}
#: Tables a request may write without changing anything the forms own.
VOLATILE = {"session", "login_throttle", "meta"}


@dataclass
class Forms:
    site: SiteHandle
    daemon: Daemon
    cookies: dict[str, str]  # user -> "hgh_session=..."
    demo_node: str


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> Forms:
    root = tmp_path_factory.mktemp("forms")
    site = site_handle(root)
    site.cli("init")
    add_users(site, PASSWORDS)
    site.cli("team", "add", "devs")
    cli_all(site, ["team", "member-add", "devs", "alice"], ["repo", "create", "alice/demo"],
            ["repo", "create", "alice/secret", "--private"])
    site.cli("grant", "alice/secret", "bob", "read")
    wc = root / "wc"
    site.hg("init", str(wc))
    node = commit(site.hg, wc, "a.txt", "a\n")
    site.hg("push", "-q", str(site.repo_path("alice/demo")), cwd=wc, user="alice")
    daemon = Daemon(site)
    try:
        jar = {}
        for user, password in PASSWORDS.items():
            status, headers, _ = form_login(daemon, user, password)
            assert status == 303, status
            jar[user] = "hgh_session=" + cookies(headers)["hgh_session"]
        yield Forms(site, daemon, jar, node)
    finally:
        daemon.stop()
    log = daemon.log()
    assert "Traceback" not in log, log[-4000:]


# -- helpers ------------------------------------------------------------------------------


def get(forms: Forms, path: str, user: str | None = None) -> tuple[int, list[tuple[str, str]], str]:
    headers = {"Cookie": forms.cookies[user]} if user else {}
    status, headers, body = request(forms.daemon, "GET", path, headers)
    return status, headers, body.decode()


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page[:2000]
    return match.group(1)


def post(forms: Forms, path: str, user: str | None, fields: dict[str, str],
         csrf: str | None = "from-the-form") -> tuple[int, list[tuple[str, str]], str]:
    """POST ``fields`` as ``user``'s session; ``csrf``: taken from the form (GET first), a given value, or None (absent)."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if user is not None:
        headers["Cookie"] = forms.cookies[user]
    if csrf == "from-the-form":
        status, _, page = get(forms, path, user)
        assert status == 200, (path, status, page[:300])
        csrf = csrf_of(page)
    if csrf is not None:
        fields = {"csrf": csrf, **fields}
    status, headers, body = request(forms.daemon, "POST", path, headers, urllib.parse.urlencode(fields).encode())
    return status, headers, body.decode()


def form_error(page: str, strict: bool = True) -> str | None:
    """The form's error line (``<p class="error">``), unescaped; None (``strict``: fail) if none."""
    match = re.search(r'<p class="error"[^>]*>(.*?)</p>', page, re.S)
    assert match or not strict, page[:3000]
    return html.unescape(match.group(1)) if match else None


def form_message(page: str) -> str:
    match = re.search(r'<p class="message"[^>]*>(.*?)</p>', page, re.S)
    assert match, page[:3000]
    return html.unescape(match.group(1))


def state(forms: Forms) -> tuple[dict, list[str]]:
    """Every row the forms could change, and every repository directory: equal means unchanged.

    Taken once the daemon's outbox is idle: its delivery service fans out (and,
    with nobody to tell, deletes) the events of earlier changes on its own time,
    which is not a change a form made.  A form's own change still shows, in the
    audit log its service operation writes.
    """
    wait_until(lambda: not query(forms, "SELECT 1 FROM event WHERE fanned = 0"), timeout=20)
    conn = sqlite3.connect(f"file:{forms.site.root / 'hosting.db'}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        rows = {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
                for t in tables if t not in VOLATILE}
    finally:
        conn.close()
    repos = forms.site.root / "repos"
    dirs = sorted(str(p.relative_to(repos)) for p in repos.glob("*/*"))
    return rows, dirs


def query(forms: Forms, sql: str, *params) -> list[tuple]:
    conn = sqlite3.connect(f"file:{forms.site.root / 'hosting.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def repo_row(forms: Forms, full: str) -> dict:
    """The repository as ``repo list --json`` shows it."""
    (row,) = [r for r in forms.site.cli_json("repo", "list") if r["name"] == full]
    return row


def grants(forms: Forms, full: str) -> list[tuple[str, str]]:
    owner, name = full.split("/")
    return sorted(query(forms, 'SELECT s.name, g.level FROM "grant" g JOIN repository r ON g.repository_id = r.id'
                               " JOIN owner o ON r.owner_id = o.id JOIN owner s ON g.subject_id = s.id"
                               " WHERE o.name = ? AND r.name = ?", owner, name))


def protected(forms: Forms, full: str) -> dict[str, list[str]]:
    owner, name = full.split("/")
    rows = query(forms, "SELECT p.name, s.name FROM protected_ref p JOIN protected_ref_allow a ON a.ref_id = p.id"
                        " JOIN owner s ON a.subject_id = s.id JOIN repository r ON p.repository_id = r.id"
                        " JOIN owner o ON r.owner_id = o.id WHERE o.name = ? AND r.name = ?", owner, name)
    out: dict[str, list[str]] = {}
    for ref, subject in sorted(rows):
        out.setdefault(ref, []).append(subject)
    return out


def refused_at_the_edge(forms: Forms, answer, status: int, reason: str, before) -> None:
    """Refused before the form: ``status`` with ``reason`` as the one-line body; nothing changed."""
    got_status, _, body = answer
    assert (got_status, body) == (status, reason + "\n"), (got_status, body[:500])
    assert state(forms) == before, "the refused form changed the site"


def refused_on_the_form(forms: Forms, answer, message: str, before, status: int = 400) -> None:
    """The form again with ``status`` and ``message`` on it; nothing changed."""
    got_status, _, body = answer
    assert got_status == status, (got_status, body[:500])
    assert form_error(body) == message
    assert state(forms) == before, "the refused form changed the site"


# -- the fork page: /OWNER/NAME/fork ------------------------------------------------------------


def test_fork_form(forms):
    """A logged-in reader gets the form: her own name and her teams as owners, the source's name
    as the default; anonymous is asked to log in (401); carol, who may not read alice/secret,
    finds nothing there (404, as for a missing repository)."""
    status, _, page = get(forms, "/alice/demo/fork", "alice")
    assert status == 200, page[:500]
    assert re.findall(r"<option[^>]*>([^<]*)</option>", page) == ["alice", "devs"]
    assert 'name="name" value="demo"' in page
    status, _, page = get(forms, "/alice/secret/fork", "bob")
    assert status == 200 and re.findall(r"<option[^>]*>([^<]*)</option>", page) == ["bob"]
    assert get(forms, "/alice/demo/fork")[::2] == (401, "log in first\n")
    assert get(forms, "/alice/secret/fork", "carol")[::2] == get(forms, "/alice/nosuch/fork", "carol")[::2] \
        == (404, "not found\n")


def test_fork_form_forks(forms):
    """Bob forks alice/demo as bob/demo-fork (303 to it): a public copy whose push log holds one
    push by bob of alice's changeset; alice forks it into her team devs, recorded as hers; bob
    forks the private alice/secret he may read: the fork is private."""
    status, headers, _ = post(forms, "/alice/demo/fork", "bob", {"owner": "bob", "name": "demo-fork"})
    assert (status, dict(headers)["Location"]) == (303, "/bob/demo-fork")
    row = repo_row(forms, "bob/demo-fork")
    assert (row["owner"], row["private"]) == ("bob", False)
    (push,) = forms.site.cli_json("pushlog", "bob/demo-fork")
    assert (push["id"], push["user"], push["changesets"]) == (1, "bob", [forms.demo_node])

    status, headers, _ = post(forms, "/alice/demo/fork", "alice", {"owner": "devs", "name": "team-fork"})
    assert (status, dict(headers)["Location"]) == (303, "/devs/team-fork")
    assert [(p["user"], p["changesets"]) for p in forms.site.cli_json("pushlog", "devs/team-fork")] == [
        ("alice", [forms.demo_node])]

    status, headers, _ = post(forms, "/alice/secret/fork", "bob", {"owner": "bob", "name": "secret-copy"})
    assert (status, dict(headers)["Location"]) == (303, "/bob/secret-copy")
    assert repo_row(forms, "bob/secret-copy")["private"] is True


def test_fork_form_refusals(forms):
    """Each refused fork changes nothing: anonymous (401), a stale or missing CSRF token (403),
    Basic credentials without a session (403), carol on a repository she cannot see (404), a
    name already taken (400 on the form), an owner bob may not create for (400 on the form;
    403 once refusals are typed) and an invalid name (400 on the form)."""
    site = forms.site
    site.cli("repo", "create", "bob/taken")
    before = state(forms)
    fork = "/alice/demo/fork"
    bob = {"owner": "bob", "name": "refused"}
    refused_at_the_edge(forms, post(forms, fork, None, bob, csrf="x"), 401, "log in first", before)
    refused_at_the_edge(forms, post(forms, fork, "bob", bob, csrf="stale"), 403,
                        "the form has expired (CSRF token mismatch); reload and try again", before)
    refused_at_the_edge(forms, post(forms, fork, "bob", bob, csrf=None), 403,
                        "the form has expired (CSRF token mismatch); reload and try again", before)
    basic = request(forms.daemon, "POST", fork, {
        "Authorization": "Basic " + base64.b64encode(b"bob:bob-pw-2").decode(),
        "Content-Type": "application/x-www-form-urlencoded"}, urllib.parse.urlencode(bob).encode())
    refused_at_the_edge(forms, (basic[0], basic[1], basic[2].decode()), 403,
                        "log in with the login form to change anything", before)
    refused_at_the_edge(forms, post(forms, "/alice/secret/fork", "carol", {"owner": "carol", "name": "x"},
                                    csrf="x"), 404, "not found", before)
    refused_on_the_form(forms, post(forms, fork, "bob", {"owner": "bob", "name": "TAKEN"}),
                        "repository bob/taken already exists", before)  # a conflict: 400 on a form
    refused_on_the_form(forms, post(forms, fork, "bob", {"owner": "alice", "name": "mine-now"}),
                        "bob may not create repositories for alice", before, status=403)
    refused_on_the_form(forms, post(forms, fork, "bob", {"owner": "devs", "name": "x"}),
                        "bob may not create repositories for devs", before, status=403)
    refused_on_the_form(forms, post(forms, fork, "bob", {"owner": "bob", "name": "bad name"}),
                        "invalid repository name 'bad name': use 1-64 letters, digits, '.', '_' or '-',"
                        " starting with a letter or digit", before)


# -- the settings page: /OWNER/NAME/settings ----------------------------------------------------


def settings_post(forms: Forms, full: str, fields: dict[str, str], user: str = "alice", **kw):
    return post(forms, f"/{full}/settings", user, fields, **kw)


def test_settings_visitors(forms):
    """Only an admin of the repository gets the settings: alice (the owner) 200; bob, who may
    read alice/secret, and bob on the public alice/demo 403 naming him; carol, who cannot see
    alice/secret, 404 as for a missing one; anonymous 401.  Their POSTs are refused alike."""
    status, _, page = get(forms, "/alice/secret/settings", "alice")
    assert status == 200, page[:500]
    assert re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td>", page) == [("bob", "read")]
    before = state(forms)
    for full in ("alice/secret", "alice/demo"):
        assert get(forms, f"/{full}/settings", "bob")[::2] == (403, f"bob is not an admin of {full}\n")
        refused_at_the_edge(forms, settings_post(forms, full, {"action": "settings", "private": "on"}, "bob",
                                                 csrf="x"), 403, f"bob is not an admin of {full}", before)
    assert get(forms, "/alice/secret/settings", "carol")[::2] == (404, "not found\n")
    refused_at_the_edge(forms, settings_post(forms, "alice/secret", {"action": "revoke", "subject": "bob"},
                                             "carol", csrf="x"), 404, "not found", before)
    assert get(forms, "/alice/secret/settings")[::2] == (401, "authorization required\n")
    refused_at_the_edge(forms, post(forms, "/alice/demo/settings", None, {"action": "settings"}, csrf="x"),
                        401, "log in first", before)


def test_settings_grant_and_revoke(forms):
    """Alice grants bob write on alice/conf-grant (the subject's blanks stripped), then revokes it:
    each answers 200 with its message and the grant rows follow."""
    forms.site.cli("repo", "create", "alice/conf-grant")
    full = "alice/conf-grant"
    status, _, page = settings_post(forms, full, {"action": "grant", "subject": " bob ", "level": "write"})
    assert (status, form_message(page)) == (200, "granted write to bob")
    assert grants(forms, full) == [("bob", "write")]
    status, _, page = settings_post(forms, full, {"action": "grant", "subject": "@devs", "level": "admin"})
    assert (status, form_message(page)) == (200, "granted admin to @devs")
    assert grants(forms, full) == [("bob", "write"), ("devs", "admin")]
    status, _, page = settings_post(forms, full, {"action": "revoke", "subject": "bob"})
    assert (status, form_message(page)) == (200, "revoked the grant of bob")
    assert grants(forms, full) == [("devs", "admin")]


def test_settings_protect_and_unprotect(forms):
    """Alice protects branch stable for alice and @devs (comma or blank separated), then
    unprotects it: 200 with the message each time, and the protected refs follow."""
    forms.site.cli("repo", "create", "alice/conf-protect")
    full = "alice/conf-protect"
    status, _, page = settings_post(forms, full, {"action": "protect", "ref": " stable ", "allow": "alice, @devs"})
    assert (status, form_message(page)) == (200, "protected stable")
    assert protected(forms, full) == {"stable": ["alice", "devs"]}
    status, _, page = settings_post(forms, full, {"action": "unprotect", "ref": "stable"})
    assert (status, form_message(page)) == (200, "unprotected stable")
    assert protected(forms, full) == {}


def test_settings_private_toggle_and_description(forms):
    """The repository form makes alice/conf-private private (checkbox on) with a description,
    then public again (checkbox absent): "saved", and anonymous sees it accordingly (401, then 200)."""
    forms.site.cli("repo", "create", "alice/conf-private")
    full = "alice/conf-private"
    status, _, page = settings_post(forms, full, {"action": "settings", "private": "on", "description": "hush"})
    assert (status, form_message(page)) == (200, "saved")
    row = repo_row(forms, full)
    assert (row["private"], row["description"]) == (True, "hush")
    assert get(forms, f"/{full}")[0] == 401
    status, _, page = settings_post(forms, full, {"action": "settings", "description": "open"})
    assert (status, form_message(page)) == (200, "saved")
    row = repo_row(forms, full)
    assert (row["private"], row["description"]) == (False, "open")
    assert get(forms, f"/{full}")[0] == 200


def test_settings_refusals(forms):
    """Each refused setting answers the form again with 400 and the message, and changes
    nothing: a grant to an unknown user or at an unknown level, revoking a subject without a
    grant or unknown, protecting with an unknown allowed subject or a bad ref name, unprotecting
    a ref that is not protected, an unknown action; a stale CSRF token is 403."""
    site = forms.site
    full = "alice/conf-refusals"
    site.cli("repo", "create", full)
    cli_all(site, ["grant", full, "bob", "read"], ["protect", full, "default", "--allow", "alice"])
    before = state(forms)
    cases = [
        ({"action": "grant", "subject": "nobody", "level": "read"}, 400, "no user named 'nobody'"),
        ({"action": "grant", "subject": "@nosuch", "level": "read"}, 400, "no team named 'nosuch'"),
        ({"action": "grant", "subject": "bob", "level": "owner"}, 400,
         "unknown level 'owner': use read, write, publish or admin"),
        ({"action": "revoke", "subject": "carol"}, 404, f"carol has no grant on {full}"),
        ({"action": "revoke", "subject": "nobody"}, 400, "no user named 'nobody'"),
        ({"action": "protect", "ref": "stable", "allow": "nobody"}, 400, "no user named 'nobody'"),
        ({"action": "protect", "ref": "bad:ref", "allow": "alice"}, 400, "invalid branch or bookmark name 'bad:ref'"),
        ({"action": "protect", "ref": "stable", "allow": " "}, 400, "protect needs at least one allowed user or @team"),
        ({"action": "unprotect", "ref": "stable"}, 404, f"'stable' is not protected in {full}"),
        ({"action": "frobnicate"}, 400, "unknown action"),
    ]
    # what the service refuses: missing -> 404, invalid or clashing -> 400, on the form
    answers = [settings_post(forms, full, fields) for fields, _, _ in cases]
    assert [(status, form_error(page, strict=False)) for status, _, page in answers] == [
        (status, m) for _, status, m in cases]
    assert state(forms) == before, "a refused setting changed the site"
    refused_at_the_edge(forms, settings_post(forms, full, {"action": "revoke", "subject": "bob"}, csrf="stale"),
                        403, "the form has expired (CSRF token mismatch); reload and try again", before)
    assert grants(forms, full) == [("bob", "read")]


# -- the new repository page: /-/new -------------------------------------------------------------


def test_new_repository_form(forms):
    """Alice gets the form (owners: alice, devs) and creates alice/made-here (private, described)
    and devs/team-made (303 to each); anonymous is asked to log in."""
    status, _, page = get(forms, "/-/new", "alice")
    assert status == 200 and re.findall(r"<option[^>]*>([^<]*)</option>", page) == ["alice", "devs"]
    status, headers, _ = post(forms, "/-/new", "alice", {"owner": "alice", "name": "made-here", "private": "on",
                                                         "description": "from the page"})
    assert (status, dict(headers)["Location"]) == (303, "/alice/made-here")
    row = repo_row(forms, "alice/made-here")
    assert (row["private"], row["description"]) == (True, "from the page")
    status, headers, _ = post(forms, "/-/new", "alice", {"owner": "devs", "name": "team-made"})
    assert (status, dict(headers)["Location"]) == (303, "/devs/team-made")
    assert repo_row(forms, "devs/team-made")["private"] is False
    assert get(forms, "/-/new")[::2] == (401, "log in first\n")


def test_new_repository_refusals(forms):
    """Each refused creation changes nothing: anonymous (401), a stale CSRF token (403), a name
    taken in any case, an owner carol may not create for, an invalid name (400 on the form)."""
    forms.site.cli("repo", "create", "carol/existing")
    before = state(forms)
    carol = {"owner": "carol", "name": "refused"}
    refused_at_the_edge(forms, post(forms, "/-/new", None, carol, csrf="x"), 401, "log in first", before)
    refused_at_the_edge(forms, post(forms, "/-/new", "carol", carol, csrf="stale"), 403,
                        "the form has expired (CSRF token mismatch); reload and try again", before)
    refused_on_the_form(forms, post(forms, "/-/new", "carol", {"owner": "carol", "name": "EXISTING"}),
                        "repository carol/existing already exists", before)  # a conflict: 400 on a form
    refused_on_the_form(forms, post(forms, "/-/new", "carol", {"owner": "alice", "name": "x"}),
                        "carol may not create repositories for alice", before, status=403)
    refused_on_the_form(forms, post(forms, "/-/new", "carol", {"owner": "carol", "name": ".hg"}),
                        "invalid repository name '.hg': use 1-64 letters, digits, '.', '_' or '-',"
                        " starting with a letter or digit", before)


# -- logging out: /-/logout ----------------------------------------------------------------------


def test_logout(forms):
    """Logging out needs the session's CSRF token (POST without it: 403, GET: 405, the session
    still works); with it: 303 to /, the cookie cleared and the session over (401 after).
    Anonymous logging out is sent home."""
    status, headers, _ = form_login(forms.daemon, "bob", PASSWORDS["bob"])
    assert status == 303
    cookie = "hgh_session=" + cookies(headers)["hgh_session"]
    status, _, page = request(forms.daemon, "GET", "/-/new", {"Cookie": cookie})
    assert status == 200
    token = csrf_of(page.decode())
    form = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
    status, _, body = request(forms.daemon, "POST", "/-/logout", form, b"csrf=stale")
    assert (status, body) == (403, b"the form has expired (CSRF token mismatch); reload and try again\n")
    assert request(forms.daemon, "GET", "/-/logout", {"Cookie": cookie})[::2] == (405, b"use the form\n")
    assert request(forms.daemon, "GET", "/-/new", {"Cookie": cookie})[0] == 200

    status, headers, _ = request(forms.daemon, "POST", "/-/logout", form, f"csrf={token}".encode())
    assert (status, dict(headers)["Location"]) == (303, "/")
    assert cookies(headers)["hgh_session"] == ""
    assert request(forms.daemon, "GET", "/-/new", {"Cookie": cookie})[::2] == (401, b"log in first\n")
    status, headers, _ = request(forms.daemon, "POST", "/-/logout")
    assert (status, dict(headers)["Location"]) == (303, "/")


# -- the read-only pages: index, owner, overview, push log ----------------------------------------


def test_read_pages_and_their_refusals(forms):
    """The index and alice's owner page list what the visitor may read (alice/secret for bob, not
    for anonymous); the overview and the push log of alice/demo answer 200 with alice's push; a
    missing owner is 404; alice/secret is 401 for anonymous and 404 for carol, exactly as a
    missing repository."""
    for path in ("/", "/alice"):
        status, _, page = get(forms, path)
        assert status == 200 and 'href="/alice/demo"' in page and 'href="/alice/secret"' not in page, path
        status, _, page = get(forms, path, "bob")
        assert status == 200 and 'href="/alice/secret"' in page, path
    status, _, page = get(forms, "/devs")
    assert status == 200 and "alice" in page
    assert get(forms, "/nobody")[::2] == get(forms, "/bad%20name")[::2] == (404, "not found\n")

    status, _, page = get(forms, "/alice/demo")
    assert status == 200 and "<h1>" in page
    status, _, page = get(forms, "/alice/demo/pushlog")
    assert status == 200 and forms.demo_node[:12] in page and "alice" in page
    for suffix in ("", "/pushlog", "/settings", "/fork"):
        assert get(forms, f"/alice/secret{suffix}")[::2] == get(forms, f"/alice/nosuch{suffix}")[::2] \
            == (401, "authorization required\n"), suffix
        assert get(forms, f"/alice/secret{suffix}", "carol")[::2] == get(forms, f"/alice/nosuch{suffix}", "carol")[::2] \
            == (404, "not found\n"), suffix
    assert get(forms, "/alice/secret/pushlog", "bob")[0] == 200
