"""The signed-in user's own pages over plain HTTP, the CLI's part, and a closed sign-up.

One site and one daemon for the module, with ``[hosting] registration`` left
at its default (closed): ``alice``, ``bob`` and ``carol`` have passwords;
``alice/private`` is private.  Each test logs in with the form where it needs a
session (``World.login``).  The flows a browser adds something to are in
``test_selfservice_browser.py``; the mailed ones in ``test_selfservice_mail.py``.
"""

from __future__ import annotations

import datetime
import re
import urllib.parse

import pytest
from clibatch import cli_batch
from conftest import Daemon, site_handle
from test_auth import PASSWORDS, basic, cookies, db_query, form_login, header, request

from hgext_hosting.pushdb import SCHEMA_VERSION

#: An API token (credentials.new_token: the prefix and 43 URL-safe characters).
TOKEN = re.compile(r"hgh_[A-Za-z0-9_-]{43}")
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop")


class World:
    def __init__(self, site, daemon):
        self.site, self.daemon = site, daemon

    def login(self, user: str, password: str | None = None, source: str = "127.0.0.1") -> str:
        status, headers, _ = form_login(self.daemon, user, password or PASSWORDS[user], source=source)
        assert status == 303, status
        return "hgh_session=" + cookies(headers)["hgh_session"]

    def get(self, cookie: str | None, path: str, source: str = "127.0.0.1") -> tuple[int, list, str]:
        status, headers, body = request(self.daemon, "GET", path, {"Cookie": cookie} if cookie else {},
                                        source=source)
        return status, headers, body.decode()

    def post(self, cookie: str, path: str, csrf: str | None = None, **fields: str) -> tuple[int, list, str]:
        """POST a form with the CSRF token of the page at ``path`` (or ``csrf``)."""
        if csrf is None:
            status, _, page = self.get(cookie, path)
            assert status == 200, (path, status)
            csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        body = urllib.parse.urlencode({"csrf": csrf, **fields}).encode()
        status, headers, answer = request(self.daemon, "POST", path, {
            "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}, body)
        return status, headers, answer.decode()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    site = site_handle(tmp_path_factory.mktemp("selfservice"))
    cli_batch(site, [(["init"], None),
                     *[(["user", "add", name, "--password-stdin"], PASSWORDS[name] + "\n")
                       for name in ("alice", "bob", "carol", "zed")],
                     (["repo", "create", "alice/private", "--private"], None)])
    daemon = Daemon(site)
    yield World(site, daemon)
    daemon.stop()
    log = daemon.log()
    assert "Traceback" not in log, log[-3000:]
    assert not TOKEN.search(log), "a token reached the log"


def user_row(world, name: str) -> tuple:
    return db_query(world.site, "SELECT email, password_hash, login_epoch FROM owner WHERE name = ?", (name,))[0]


# -- every settings page needs a login ----------------------------------------------------------


@pytest.mark.parametrize("path", ["/-/settings", "/-/settings/keys", "/-/settings/tokens", "/-/settings/sessions"])
def test_settings_send_anonymous_visitors_to_the_login_page(world, path):
    status, headers, _ = world.get(None, path)
    assert status == 303
    assert header(headers, "Location") == "/-/login?" + urllib.parse.urlencode({"next": path})


def test_settings_unknown_tab_is_404_and_basic_auth_gets_the_login_page(world):
    cookie = world.login("carol")
    assert world.get(cookie, "/-/settings/nope")[0] == 404
    # Basic credentials make no session: the forms need one (CSRF), so the login page it is.
    status, _, _ = request(world.daemon, "GET", "/-/settings", basic("carol", PASSWORDS["carol"]))
    assert status == 303


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(world):
    cookie = world.login("carol")
    before = user_row(world, "carol")
    status, _, _ = world.post(cookie, "/-/settings", csrf="forged", action="email", email="evil@example.org")
    assert status == 403
    assert user_row(world, "carol") == before


# -- /-/settings: email and password ------------------------------------------------------------------


def test_email_is_saved_and_a_bad_one_refused_with_what_was_typed(world):
    cookie = world.login("carol")
    status, _, page = world.post(cookie, "/-/settings", action="email", email="carol@example.org")
    assert status == 200 and "Your email address was saved." in page
    assert user_row(world, "carol")[0] == "carol@example.org"
    bad = "x" * 250 + "@example.org"
    status, _, page = world.post(cookie, "/-/settings", action="email", email=bad)
    assert status == 400
    assert "invalid email address" in page and f'value="{bad}"' in page
    assert user_row(world, "carol")[0] == "carol@example.org"


def test_password_change_needs_the_current_one_and_ends_every_other_session(world):
    mine, other = world.login("bob"), world.login("bob", source="127.0.0.2")
    before = user_row(world, "bob")
    status, _, page = world.post(mine, "/-/settings", action="password", current="wrong",
                                 password="new-bob-pw", confirm="new-bob-pw")
    assert status == 400 and "the current password is wrong" in page
    assert "new-bob-pw" not in page and "wrong" not in re.findall(r'value="([^"]*)"', page)
    status, _, page = world.post(mine, "/-/settings", action="password", current=PASSWORDS["bob"],
                                 password="new-bob-pw", confirm="other")
    assert status == 400 and "confirmation differ" in page
    status, _, page = world.post(mine, "/-/settings", action="password", current=PASSWORDS["bob"],
                                 password="", confirm="")
    assert status == 400 and "the password is empty" in page
    assert user_row(world, "bob") == before

    status, _, page = world.post(mine, "/-/settings", action="password", current=PASSWORDS["bob"],
                                 password="new-bob-pw", confirm="new-bob-pw")
    assert status == 200 and "Your password was changed" in page
    assert world.get(mine, "/-/settings")[0] == 200  # this session stays
    assert world.get(other, "/-/settings")[0] == 303  # the other one ended
    assert form_login(world.daemon, "bob", PASSWORDS["bob"])[0] == 401
    assert request(world.daemon, "GET", "/alice/private?cmd=capabilities",
                   basic("bob", "new-bob-pw"))[0] == 404  # logged in (not 401), may not read


def test_guessing_the_current_password_is_throttled_like_logins(world):
    """Wrong current passwords count with the login throttle (10 per name and address)."""
    cookie = world.login("zed")
    statuses = [world.post(cookie, "/-/settings", action="password", current=f"guess-{i}",
                           password="x-new", confirm="x-new")[0] for i in range(11)]
    assert statuses[:10] == [400] * 10 and statuses[10] == 429
    assert form_login(world.daemon, "zed", PASSWORDS["zed"])[0] == 429  # the same count
    assert form_login(world.daemon, "zed", PASSWORDS["zed"], source="127.0.0.9")[0] == 303


# -- /-/settings/keys -------------------------------------------------------------------------------


def test_ssh_keys_added_listed_refused_and_removed(world):
    cookie = world.login("alice")
    status, _, page = world.post(cookie, "/-/settings/keys", action="add", key="ssh-ed25519 garbage")
    assert status == 400 and "garbage" in page and db_query(world.site, "SELECT * FROM ssh_key") == []
    status, _, page = world.post(cookie, "/-/settings/keys", action="add", key=KEY)
    assert status == 200 and "Added the key SHA256:" in page
    ((fingerprint,),) = db_query(world.site, "SELECT fingerprint FROM ssh_key")
    assert fingerprint in page and "alice@laptop" in page
    assert fingerprint in world.site.cli("ssh-key", "list", "alice").stdout  # the CLI's very key
    other = world.login("carol")
    status, _, page = world.post(other, "/-/settings/keys", action="add", key=KEY)
    assert status == 400 and "already registered" in page
    status, _, page = world.post(other, "/-/settings/keys", action="remove", fingerprint=fingerprint)
    assert status == 404 and len(db_query(world.site, "SELECT * FROM ssh_key")) == 1
    status, _, page = world.post(cookie, "/-/settings/keys", action="remove", fingerprint=fingerprint)
    assert status == 200 and db_query(world.site, "SELECT * FROM ssh_key") == []


# -- /-/settings/tokens -------------------------------------------------------------------------------


def test_a_token_is_shown_once_works_and_is_refused_once_expired(world, tmp_path):
    cookie = world.login("alice")
    tomorrow = (datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=1)).isoformat()
    status, headers, page = world.post(cookie, "/-/settings/tokens", action="create", label="ci", expires=tomorrow)
    assert status == 200 and header(headers, "Cache-Control") == "no-store"
    (token,) = TOKEN.findall(page)
    assert not TOKEN.search(world.get(cookie, "/-/settings/tokens")[2])  # never again
    assert tomorrow in world.get(cookie, "/-/settings/tokens")[2]
    url = f"http://alice:{token}@127.0.0.1:{world.daemon.port}/alice/private"
    world.site.hg("clone", "-q", url, str(tmp_path / "ok"))
    listed = world.site.cli("token", "list", "alice").stdout
    assert "EXPIRES" in listed and f"{tomorrow}T00:00:00" in listed

    db_query(world.site, "UPDATE api_token SET expires = ? WHERE label = 'ci'",
             ((datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S"),))
    proc = world.site.hg("clone", "-q", url, str(tmp_path / "refused"), check=False)
    assert proc.returncode != 0 and "authorization failed" in proc.stderr
    assert "expired" in world.get(cookie, "/-/settings/tokens")[2]


def test_token_refusals_keep_what_was_typed_and_change_nothing(world):
    cookie = world.login("alice")
    assert world.post(cookie, "/-/settings/tokens", action="create", label="dup")[0] == 200
    before = db_query(world.site, "SELECT label, expires FROM api_token ORDER BY id")
    for fields, message in [
        ({"label": "dup"}, "already has a token labelled &#39;dup&#39;"),
        ({"label": "no spaces"}, "token label"),
        ({"label": "fine", "expires": "2020-01-01"}, "the expiry date must be after today"),
        ({"label": "fine", "expires": "tomorrow"}, "is not a date (YYYY-MM-DD)"),
        ({"label": "fine", "expires": "9999-12-31"}, "days away"),
    ]:
        status, _, page = world.post(cookie, "/-/settings/tokens", action="create", **fields)
        assert status == 400, fields
        assert message in page, (fields, page)
        assert f'value="{fields["label"]}"' in page
        assert not TOKEN.search(page)
    assert world.post(cookie, "/-/settings/tokens", action="revoke", label="ghost")[0] == 404
    assert db_query(world.site, "SELECT label, expires FROM api_token ORDER BY id") == before
    status, _, page = world.post(cookie, "/-/settings/tokens", action="revoke", label="dup")
    assert status == 200 and "Revoked the token dup" in page


def test_cli_token_create_with_an_expiry(world):
    out = world.site.cli("token", "create", "carol", "--label", "cli", "--expires", "2030-01-31").stdout
    assert out.startswith("hgh_")
    rows = world.site.cli_json("token", "list", "carol")
    assert {"label": "cli", "expires": "2030-01-31T00:00:00Z"}.items() <= next(
        r for r in rows if r["label"] == "cli").items()
    assert world.site.refuse("token", "create", "carol", "--expires", "2001-01-01") == (
        "error: the expiry date must be after today")
    assert world.site.refuse("token", "create", "carol", "--expires", "31/01/2030") == (
        "error: the expiry date '31/01/2030' is not a date (YYYY-MM-DD)")


# -- /-/settings/sessions -------------------------------------------------------------------------------


def test_sessions_listed_with_address_and_ended_one_or_all(world):
    mine = world.login("carol")
    others = [world.login("carol", source=f"127.0.0.{i}") for i in (3, 4, 5)]
    status, _, page = world.get(mine, "/-/settings/sessions")
    assert status == 200
    for address in ("127.0.0.3", "127.0.0.4", "127.0.0.5"):
        assert address in page
    assert "this session" in page
    ids = db_query(world.site, "SELECT s.id, s.address FROM session s JOIN owner o ON o.id = s.user_id"
                               " WHERE o.name = 'carol' AND s.address = '127.0.0.3'")
    assert world.post(mine, "/-/settings/sessions", action="end", session=str(ids[0][0]))[0] == 200
    assert world.get(others[0], "/-/settings")[0] == 303
    assert world.get(others[1], "/-/settings")[0] == 200
    # someone else's session, or nonsense: 404, nothing ended
    world.login("alice")
    alices = db_query(world.site, "SELECT s.id FROM session s JOIN owner o ON o.id = s.user_id"
                                  " WHERE o.name = 'alice'")
    assert world.post(mine, "/-/settings/sessions", action="end", session=str(alices[0][0]))[0] == 404
    assert world.post(mine, "/-/settings/sessions", action="end", session="x")[0] == 404
    assert db_query(world.site, "SELECT s.id FROM session s JOIN owner o ON o.id = s.user_id"
                                " WHERE o.name = 'alice'") == alices
    ((count,),) = db_query(world.site, "SELECT count(*) FROM session s JOIN owner o ON o.id = s.user_id"
                                       " WHERE o.name = 'carol'")
    status, _, page = world.post(mine, "/-/settings/sessions", action="end-others")
    assert status == 200 and f"Ended {count - 1} other sessions." in page
    assert world.get(others[1], "/-/settings")[0] == 303 and world.get(others[2], "/-/settings")[0] == 303
    assert world.get(mine, "/-/settings")[0] == 200


# -- sign-up when registration is closed (the default) ----------------------------------------------


def test_closed_registration_has_no_sign_up_pages(world):
    proc = world.site.cli("invite", "create", "--email", "new@example.org")
    (path,) = proc.stdout.split()
    assert re.fullmatch(r"/-/join/hgh_[A-Za-z0-9_-]{43}", path)
    assert "registration is closed" in proc.stderr
    assert world.get(None, path)[0] == 404
    assert world.get(None, "/-/register")[0] == 404
    assert world.get(None, "/-/forgot")[0] == 404  # no mail configured
    assert world.site.refuse("invite", "create", "--email", "nope") == (
        "error: enter an email address (name@example.org)")


def test_a_version_6_database_gets_step_7(tmp_path):
    site = site_handle(tmp_path)
    site.cli("init")
    for sql in ('ALTER TABLE api_token DROP COLUMN expires', 'ALTER TABLE session DROP COLUMN last_seen',
                'ALTER TABLE session DROP COLUMN address', 'DROP TABLE signup_token',
                "UPDATE meta SET value = '6' WHERE key = 'schema_version'"):
        db_query(site, sql)
    assert "schema version 6" in site.refuse("user", "list")
    site.cli("init")
    assert db_query(site, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    columns = {(t, row[1]) for t in ("api_token", "session") for row in db_query(site, f"PRAGMA table_info({t})")}
    assert {("api_token", "expires"), ("session", "last_seen"), ("session", "address")} <= columns
    assert db_query(site, "SELECT count(*) FROM signup_token") == [(0,)]


HOSTILE = ["", " ", "\x00", "a\r\nSet-Cookie: x=y", "<script>alert(1)</script>", "x" * 70_000, "é" * 300,
           "../../etc/passwd", "%00"]


@pytest.mark.parametrize("path, fields", [
    ("/-/settings", {"action": "password", "current": None, "password": None, "confirm": None}),
    ("/-/settings/keys", {"action": "add", "key": None}),
    ("/-/settings/keys", {"action": "remove", "fingerprint": None}),
    ("/-/settings/tokens", {"action": "create", "label": None, "expires": None}),
    ("/-/settings/tokens", {"action": "revoke", "label": None}),
    ("/-/settings/sessions", {"action": "end", "session": None}),
    ("/-/settings", {"action": None}),
])
def test_hostile_values_on_every_form_are_refused_on_the_page(world, path, fields):
    """Each value is refused with a status below 500, escaped on the page, and nothing changes."""
    cookie = world.login("carol")
    tables = ("owner", "ssh_key", "api_token")
    before = [db_query(world.site, f"SELECT * FROM {t} ORDER BY id") for t in tables]
    for value in HOSTILE:
        if path.endswith("tokens") and fields["action"] == "create" and not value.strip():
            continue  # no label: token-N; no expiry: never (both valid)
        status, headers, page = world.post(cookie, path, **{k: (value if v is None else v) for k, v in fields.items()})
        assert 400 <= status < 500, (value[:20], status)
        assert "<script>alert" not in page
        assert header(headers, "x") is None
    assert [db_query(world.site, f"SELECT * FROM {t} ORDER BY id") for t in tables] == before


def test_an_email_is_checked_like_user_add_and_shown_escaped(world):
    """The settings form takes what ``user add --email`` takes (one rule), escaped on the page."""
    cookie = world.login("carol")
    status, _, page = world.post(cookie, "/-/settings", action="email", email="<script>alert(1)</script>")
    assert status == 200 and "<script>alert" not in page and "&lt;script&gt;" in page
    for bad in ("a\r\nBcc: x@example.org", "\x00", "x" * 255):
        assert world.post(cookie, "/-/settings", action="email", email=bad)[0] == 400
    assert user_row(world, "carol")[0] == "<script>alert(1)</script>"
    assert world.post(cookie, "/-/settings", action="email", email="carol@example.org")[0] == 200


def test_a_session_is_seen_at_most_once_a_minute_and_from_its_last_address(world):
    cookie = world.login("carol", source="127.0.0.6")
    ((sid, seen, address),) = db_query(world.site, "SELECT id, last_seen, address FROM session"
                                                   " WHERE address = '127.0.0.6'")
    assert world.get(cookie, "/", source="127.0.0.6")[0] == 200
    assert db_query(world.site, "SELECT last_seen, address FROM session WHERE id = ?", (sid,)) == [(seen, address)]
    world.get(cookie, "/", source="127.0.0.7")  # another address: written at once
    assert db_query(world.site, "SELECT address FROM session WHERE id = ?", (sid,)) == [("127.0.0.7",)]
    db_query(world.site, "UPDATE session SET last_seen = '2020-01-01 00:00:00' WHERE id = ?", (sid,))
    world.get(cookie, "/", source="127.0.0.7")
    ((later,),) = db_query(world.site, "SELECT last_seen FROM session WHERE id = ?", (sid,))
    assert later > seen
