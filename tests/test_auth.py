"""Credentials, sessions and the login throttle, from outside: real daemon, real ``hg``.

One module-scoped site and daemon (``auth``) serve most tests.  Its site hgrc
sets ``[hosting] trusted-proxies = 127.0.0.5`` and a per-name limit of 20
failures (so that the per-name test needs 20 argon2 checks, not 50).  Every
test that trips the throttle uses user names and loopback source addresses
(``127.0.0.N``) of its own, so tests do not block each other:

=========  ==========================  ============================================
user       addresses                   test
=========  ==========================  ============================================
alice      127.0.0.1                   token last use
bob        127.0.0.1                   login redirects
carol,zed  127.0.0.1                   sessions end with the password / the user
(spray)    127.0.0.3                   wrong tokens throttled, table bounded
dave       127.0.0.1 / 127.0.0.4       a pair is blocked before a name or address
erin       proxy 127.0.0.5, 127.0.0.6  X-Forwarded-For only from trusted proxies
ivan6      proxy 127.0.0.5 (IPv6)      IPv6 clients count by /64
frank      127.0.0.7                   Basic and the login form share one count
gina       127.0.0.1 / .10 / .11 / .12 a name is blocked, except from its known address
hank       127.0.0.8                   ``--workers 2``, 60 concurrent wrong passwords
=========  ==========================  ============================================

The expiry test has a site of its own with a short window and a small table;
the PostgreSQL test a site on a throwaway cluster (test_postgresql's fixtures).
"""

from __future__ import annotations

import base64
import concurrent.futures
import http.client
import sqlite3
import subprocess
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import pytest
from conftest import HG_HOSTING, Daemon, SiteHandle, commit, site_handle

from daemon.pages import safe_next

PASSWORDS = {name: f"{name}-pw-{i}" for i, name in
             enumerate(["alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank", "zed"])}


# -- helpers ---------------------------------------------------------------------------


def add_users(site: SiteHandle, passwords: dict[str, str]) -> None:
    """``user add NAME --password-stdin`` for every user at once (hashing is slow)."""
    procs = [
        subprocess.Popen([HG_HOSTING, "--site", str(site.root), "user", "add", name, "--password-stdin"],
                         env=site.env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
        for name in passwords
    ]
    for proc, password in zip(procs, passwords.values(), strict=True):
        out, err = proc.communicate(password + "\n", timeout=120)
        assert proc.returncode == 0, out + err


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def request(daemon: Daemon, method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes | None = None, source: str = "127.0.0.1") -> tuple[int, list[tuple[str, str]], bytes]:
    """One request from the loopback address ``source``: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=120, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def status(daemon: Daemon, path: str, headers: dict[str, str] | None = None, source: str = "127.0.0.1") -> int:
    return request(daemon, "GET", path, headers, source=source)[0]


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name.lower()), None)


def cookies(headers: list[tuple[str, str]]) -> dict[str, str]:
    jar = {}
    for k, v in headers:
        if k.lower() == "set-cookie":
            name, _, rest = v.partition("=")
            jar[name] = rest.split(";")[0]
    return jar


def form_login(daemon: Daemon, user: str, password: str, next_: str = "/",
               source: str = "127.0.0.1") -> tuple[int, list[tuple[str, str]], bytes]:
    """GET the login form, POST it back with its CSRF token: the POST's answer."""
    _, headers, _ = request(daemon, "GET", "/-/login", source=source)
    token = cookies(headers)["hgh_login_csrf"]
    body = urllib.parse.urlencode({"csrf": token, "user": user, "password": password, "next": next_})
    return request(daemon, "POST", "/-/login", {
        "Cookie": f"hgh_login_csrf={token}",
        "Content-Type": "application/x-www-form-urlencoded",
    }, body.encode(), source=source)


def session_cookie(daemon: Daemon, user: str) -> str:
    status_, headers, _ = form_login(daemon, user, PASSWORDS[user])
    assert status_ == 303, status_
    return "hgh_session=" + cookies(headers)["hgh_session"]


def db_query(site: SiteHandle, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(site.root / "hosting.db", timeout=30)
    try:
        with conn:
            return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


CAPS = "/alice/demo?cmd=capabilities"


# -- the shared site ---------------------------------------------------------------------


class Auth:
    def __init__(self, site: SiteHandle, daemon: Daemon, root: Path, token: str):
        self.site, self.daemon, self.root, self.token = site, daemon, root, token


@pytest.fixture(scope="module")
def auth(tmp_path_factory) -> Auth:
    root = tmp_path_factory.mktemp("auth")
    site = site_handle(root)
    site.cli("init")
    with open(site.root / "hgrc", "a") as f:
        f.write("\n[hosting]\ntrusted-proxies = 127.0.0.5\nlogin-throttle-user = 20\n")
    add_users(site, PASSWORDS)
    site.cli("repo", "create", "alice/demo")
    seed = root / "seed"
    site.hg("init", str(seed))
    commit(site.hg, seed, "a.txt", "a\n")
    site.hg("-R", str(seed), "push", "-q", str(site.repo_path("alice/demo")), user="alice")
    token = site.cli("token", "create", "alice", "--label", "ci").stdout.strip()
    daemon = Daemon(site)
    yield Auth(site, daemon, root, token)
    daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()[-4000:]


# -- 1. API tokens record their last use ---------------------------------------------------


def test_token_last_use_recorded_once_a_minute(auth):
    """A clone and a push with a token set its ``last_used`` (``token list --json``); requests
    within a minute of that write nothing more; a cached token whose recorded use is over a
    minute old is recorded again."""
    site, daemon = auth.site, auth.daemon
    assert site.cli_json("token", "list", "alice")[0]["last_used"] is None
    url = f"http://alice:{auth.token}@127.0.0.1:{daemon.port}/alice/demo"
    wc = auth.root / "token-clone"
    site.hg("clone", "-q", url, str(wc))
    commit(site.hg, wc, "b.txt", "b\n")
    site.hg("-R", str(wc), "push", "-q", url)
    [row] = site.cli_json("token", "list", "alice")
    assert row["last_used"] is not None, row
    first = db_query(site, "SELECT last_used FROM api_token WHERE label = 'ci'")[0][0]
    for _ in range(3):
        assert status(daemon, CAPS, basic("alice", auth.token)) == 200
    assert db_query(site, "SELECT last_used FROM api_token WHERE label = 'ci'")[0][0] == first
    # The token is in the daemon's cache now; an old recorded use is refreshed by a cached hit.
    db_query(site, "UPDATE api_token SET last_used = '2001-01-01 00:00:00' WHERE label = 'ci'")
    assert status(daemon, CAPS, basic("alice", auth.token)) == 200
    after = db_query(site, "SELECT last_used FROM api_token WHERE label = 'ci'")[0][0]
    assert after > "2020", after
    [row] = site.cli_json("token", "list", "alice")
    assert row["last_used"].startswith(after[:10]), row


# -- 2. no open redirect after logging in --------------------------------------------------


@pytest.mark.parametrize("target", [
    "/\t/evil.example/", "/\n/evil.example/", "/\r\n/evil.example", "\t//evil.example", "/ /evil.example",
    "//evil.example", "/\\evil.example", "\\\\evil.example", "https://evil.example/", "javascript:alert(1)",
    "/\x00/evil.example", "/\x7f/evil.example", "/\u3000/evil.example", "/\u00a0/evil.example",
    "/\u2028/evil.example", "", "evil.example", None,
])
def test_safe_next_refuses_anything_but_a_plain_local_path(target):
    """Control characters, whitespace (any Unicode space), backslashes, schemes and
    protocol-relative targets all fall back to ``/``."""
    assert safe_next(target) == "/"


@pytest.mark.parametrize(("target", "expected"), [
    ("/alice/demo", "/alice/demo"),
    ("/alice/demo/log?rev=tip#top", "/alice/demo/log?rev=tip#top"),
    ("/-/new?x=%2F%2Fa", "/-/new?x=%2F%2Fa"),
    ("/\u3002/evil.com", "/%E3%80%82/evil.com"),
    ("/caf\u00e9", "/caf%C3%A9"),
])
def test_safe_next_keeps_local_paths_percent_encoded(target, expected):
    assert safe_next(target) == expected


def test_login_redirects_only_to_local_paths(auth):
    """The login form's ``next`` with a TAB before ``//`` lands on ``/``; with a non-Latin-1
    character it is answered (303 to the percent-encoded path), not dropped."""
    daemon = auth.daemon
    status_, headers, _ = form_login(daemon, "bob", PASSWORDS["bob"], "/\t/evil.example/")
    assert (status_, header(headers, "Location")) == (303, "/")
    status_, headers, _ = form_login(daemon, "bob", PASSWORDS["bob"], "/\u3002/evil.com")
    assert (status_, header(headers, "Location")) == (303, "/%E3%80%82/evil.com")
    status_, headers, body = request(daemon, "GET", "/-/login?next=" + urllib.parse.quote("/\t//evil.example"))
    assert status_ == 200 and b"evil" not in body


# -- 4. a password change or removal ends the user's sessions ------------------------------


def test_password_change_and_removal_end_sessions(auth):
    """A session made before ``user passwd carol`` no longer logs carol in; the new password
    makes a working session.  ``user remove zed`` ends zed's session."""
    site, daemon = auth.site, auth.daemon
    carol = session_cookie(daemon, "carol")
    zed = session_cookie(daemon, "zed")
    assert status(daemon, "/-/new", {"Cookie": carol}) == 200
    assert status(daemon, "/-/new", {"Cookie": zed}) == 200
    site.cli("user", "passwd", "carol", "--password-stdin", input="carol-new-pw\n")
    assert status(daemon, "/-/new", {"Cookie": carol}) == 401
    PASSWORDS["carol"] = "carol-new-pw"
    assert status(daemon, "/-/new", {"Cookie": session_cookie(daemon, "carol")}) == 200
    site.cli("user", "remove", "zed")
    assert status(daemon, "/-/new", {"Cookie": zed}) == 401


# -- 3. token guesses are throttled; the table stays bounded --------------------------------


def test_wrong_tokens_throttled_and_table_bounded(auth):
    """Guessed ``hgh_`` tokens count as failures: 300 guesses, each for a new name, from one
    address get 401 until the address's limit (100), then 429; the throttle table keeps a
    row per key it counted, not one per guess.  The right token still works meanwhile."""
    site, daemon = auth.site, auth.daemon
    answers = [status(daemon, CAPS, basic(f"spray{i}", f"hgh_guess{i}"), source="127.0.0.3")
               for i in range(300)]
    assert Counter(answers) == {401: 100, 429: 200}, Counter(answers)
    code, headers, _ = request(daemon, "GET", CAPS, basic("spray0", "hgh_guess0"), source="127.0.0.3")
    assert (code, header(headers, "Retry-After")) == (429, "300"), (code, headers)
    rows = db_query(site, "SELECT COUNT(*) FROM login_throttle")[0][0]
    assert rows < 400, rows
    assert status(daemon, CAPS, basic("alice", auth.token), source="127.0.0.3") == 200


# -- 6. no lockout of innocent users -----------------------------------------------------------


def test_attacker_address_blocked_not_the_user_nor_the_address(auth):
    """After 10 wrong passwords for dave from 127.0.0.4: dave's right password from there
    gets 429; from his usual 127.0.0.1 it works; other users from 127.0.0.4 are not blocked."""
    daemon = auth.daemon
    wrong = [status(daemon, CAPS, basic("dave", f"wrong-{i}"), source="127.0.0.4") for i in range(10)]
    assert wrong == [401] * 10
    assert status(daemon, CAPS, basic("dave", "wrong-again"), source="127.0.0.4") == 429
    assert status(daemon, CAPS, basic("dave", PASSWORDS["dave"]), source="127.0.0.4") == 429
    assert status(daemon, CAPS, basic("dave", PASSWORDS["dave"])) == 200
    assert status(daemon, CAPS, basic("bob", PASSWORDS["bob"]), source="127.0.0.4") == 200


def test_forwarded_for_only_from_trusted_proxies(auth):
    """Through the trusted proxy 127.0.0.5, the client named by X-Forwarded-For is what is
    counted: erin blocked from 10.0.0.1 is not blocked from 10.0.0.2, nor is frank from
    10.0.0.1.  An untrusted 127.0.0.6 cannot escape its count by sending X-Forwarded-For."""
    daemon = auth.daemon

    def via(xff: str, user: str, secret: str, source: str = "127.0.0.5") -> int:
        return status(daemon, CAPS, {**basic(user, secret), "X-Forwarded-For": xff}, source=source)

    assert [via("192.0.2.9, 10.0.0.1", "erin", f"w{i}") for i in range(10)] == [401] * 10
    assert via("10.0.0.1", "erin", PASSWORDS["erin"]) == 429
    assert via("10.0.0.2", "erin", PASSWORDS["erin"]) == 200
    assert via("10.0.0.1", "frank", PASSWORDS["frank"]) == 200
    # untrusted: X-Forwarded-For is ignored, the peer address is the key
    assert [via(f"10.1.0.{i}", "erin", f"x{i}", source="127.0.0.6") for i in range(10)] == [401] * 10
    assert via("10.1.0.99", "erin", PASSWORDS["erin"], source="127.0.0.6") == 429


def test_ipv6_clients_count_by_their_64(auth):
    """IPv6 clients (named by the trusted proxy) are counted by /64: ten wrong passwords from
    ten addresses of 2001:db8:0:1::/64 block an eleventh address of it, not another /64."""
    daemon = auth.daemon

    def via(xff: str, secret: str) -> int:
        return status(daemon, CAPS, {**basic("ivan6", secret), "X-Forwarded-For": xff}, source="127.0.0.5")

    assert [via(f"2001:db8:0:1::{i + 1:x}", f"w{i}") for i in range(10)] == [401] * 10
    assert via("2001:db8:0:1:ffff::1", "w-again") == 429
    assert via("2001:db8:0:2::1", "w-other") == 401


def test_basic_and_login_form_share_one_count(auth):
    """Five wrong passwords over Basic and five on the login form block frank's next try on
    the form (429) and over Basic alike."""
    daemon = auth.daemon
    source = "127.0.0.7"
    assert [status(daemon, CAPS, basic("frank", f"w{i}"), source=source) for i in range(5)] == [401] * 5
    assert [form_login(daemon, "frank", f"v{i}", source=source)[0] for i in range(5)] == [401] * 5
    code, headers, _ = form_login(daemon, "frank", PASSWORDS["frank"], source=source)
    assert (code, header(headers, "Retry-After")) == (429, "300")
    assert status(daemon, CAPS, basic("frank", PASSWORDS["frank"]), source=source) == 429


def test_name_blocked_everywhere_but_its_known_address(auth):
    """gina logs in from 127.0.0.1; then 20 wrong passwords from two other addresses reach
    the per-name limit: a third address gets 429 even with the right password, while gina's
    known address still logs her in."""
    daemon = auth.daemon
    assert status(daemon, CAPS, basic("gina", PASSWORDS["gina"])) == 200
    for source in ("127.0.0.10", "127.0.0.11"):
        assert [status(daemon, CAPS, basic("gina", f"w{i}"), source=source) for i in range(10)] == [401] * 10
    assert status(daemon, CAPS, basic("gina", PASSWORDS["gina"] + "x"), source="127.0.0.12") == 429
    assert status(daemon, "/", basic("gina", PASSWORDS["gina"]), source="127.0.0.12") == 429
    assert status(daemon, "/", basic("gina", PASSWORDS["gina"])) == 200


# -- 5. the throttle is counted before checking, and shared between workers -----------------


def test_concurrent_wrong_passwords_across_workers(auth):
    """60 concurrent wrong passwords for hank from one address, against ``serve --workers 2``
    (two processes): exactly 10 are checked (401), every other one is refused unchecked (429)."""
    daemon = Daemon(auth.site, "--workers", "2")
    try:
        def attempt(i: int) -> int:
            return status(daemon, CAPS, basic("hank", f"wrong-{i}"), source="127.0.0.8")

        with concurrent.futures.ThreadPoolExecutor(60) as pool:
            answers = list(pool.map(attempt, range(60)))
        log = daemon.log()
    finally:
        daemon.stop()
    assert Counter(answers) == {401: 10, 429: 50}, Counter(answers)
    assert "Traceback" not in log, log[-3000:]


# -- 3. expiry by time and a capped table ---------------------------------------------------------


def test_throttle_expires_and_table_is_capped(tmp_path):
    """With a 2-second window and a 30-row table: a blocked name is let in again once the
    window has passed, and 200 guesses from 20 addresses leave at most 30 rows."""
    site = site_handle(tmp_path)
    site.cli("init")
    with open(site.root / "hgrc", "a") as f:
        f.write("\n[hosting]\nlogin-throttle-window = 2\nlogin-throttle-rows = 30\n")
    add_users(site, {"ivy": "ivy-pw"})
    daemon = Daemon(site)
    try:
        assert [status(daemon, "/", basic("ivy", f"hgh_{i}")) for i in range(10)] == [401] * 10
        assert status(daemon, "/", basic("ivy", "ivy-pw")) == 429
        deadline = time.monotonic() + 60
        while status(daemon, "/", basic("ivy", "ivy-pw")) != 200:
            assert time.monotonic() < deadline, "the throttle never expired"
            time.sleep(0.5)
        for i in range(200):
            status(daemon, "/", basic(f"n{i}", "hgh_x"), source=f"127.0.1.{i % 20 + 1}")
        rows = db_query(site, "SELECT COUNT(*) FROM login_throttle")[0][0]
        assert rows <= 30, rows
        log = daemon.log()
    finally:
        daemon.stop()
    assert "Traceback" not in log, log[-3000:]


# -- the schema ------------------------------------------------------------------------------


def test_init_upgrades_a_version_1_site(tmp_path):
    """A site made by the previous release (schema 1: no throttle table, no session epochs) is
    upgraded by ``hg-hosting init``: its users keep working and the throttle table exists."""
    site = site_handle(tmp_path)
    site.cli("init")
    add_users(site, {"olga": "olga-pw"})
    db_query(site, "DROP TABLE login_throttle")
    db_query(site, "ALTER TABLE session DROP COLUMN epoch")
    db_query(site, "ALTER TABLE owner DROP COLUMN login_epoch")
    db_query(site, "UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    assert "schema version 1" in site.refuse("user", "list")
    site.cli("init")
    assert db_query(site, "SELECT value FROM meta WHERE key = 'schema_version'") == [("5",)]
    assert db_query(site, "SELECT login_epoch FROM owner WHERE name = 'olga'") == [(0,)]
    assert db_query(site, "SELECT COUNT(*) FROM login_throttle") == [(0,)]
    assert [u["name"] for u in site.cli_json("user", "list")] == ["olga"]


# -- the same on PostgreSQL ---------------------------------------------------------------------


def test_on_postgresql(pg_site, postgres_url, tmp_path):
    """On PostgreSQL: ``init`` upgrades a schema-1 database; 30 concurrent wrong passwords from
    one address are checked 10 times (401) and refused 20 times (429); a right token still works
    and records its use; a password change ends the session."""
    import psycopg2

    site = pg_site
    conn = psycopg2.connect(postgres_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP TABLE login_throttle")
        cur.execute('ALTER TABLE "session" DROP COLUMN epoch')
        cur.execute('ALTER TABLE "owner" DROP COLUMN login_epoch')
        cur.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    site.cli("init")
    add_users(site, {"pat": "pat-pw"})
    site.cli("repo", "create", "pat/demo")
    token = site.cli("token", "create", "pat").stdout.strip()
    daemon = Daemon(site)
    try:
        caps = "/pat/demo?cmd=capabilities"
        with concurrent.futures.ThreadPoolExecutor(30) as pool:
            answers = list(pool.map(lambda i: status(daemon, caps, basic("pat", f"w{i}"), source="127.0.0.2"),
                                    range(30)))
        assert Counter(answers) == {401: 10, 429: 20}, Counter(answers)
        assert status(daemon, caps, basic("pat", "pat-pw"), source="127.0.0.2") == 429
        assert status(daemon, caps, basic("pat", token), source="127.0.0.2") == 200
        assert site.cli_json("token", "list", "pat")[0]["last_used"] is not None
        status_, headers, _ = form_login(daemon, "pat", "pat-pw")
        assert status_ == 303
        cookie = "hgh_session=" + cookies(headers)["hgh_session"]
        assert status(daemon, "/-/new", {"Cookie": cookie}) == 200
        site.cli("user", "passwd", "pat", "--password-stdin", input="pat-new\n")
        assert status(daemon, "/-/new", {"Cookie": cookie}) == 401
        log = daemon.log()
    finally:
        daemon.stop()
        conn.close()
    assert "Traceback" not in log, log[-3000:]
