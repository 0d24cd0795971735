"""Site administration without a browser: disabled users on every path, reset links, the CLI.

One site and one daemon (HTTP and SSH) for the module: ``root`` (site admin),
``bob`` (password, a token, an SSH key; owns the private ``bob/own``, may write
to ``alice/demo``) and ``alice``.  ``bob`` is disabled and enabled again by the
tests that need it, each leaving him enabled.  The admin pages in a browser
are ``tests/test_siteadmin_browser.py``.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import re
import shlex
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from conftest import DATE, HG, Daemon, SiteHandle, run, site_handle
from test_auth import add_users, basic, cookies, db_query, form_login, request
from test_ssh import FAKE_SSHD, SSH, SSH_KEYGEN, make_key, parse_authorized_keys_line

from hgext_hosting.pushdb import SCHEMA_VERSION

PASSWORDS = {"root": "root-pw-admin", "alice": "alice-pw-sa", "bob": "bob-pw-sa"}


class World:
    def __init__(self, site: SiteHandle, daemon: Daemon, tmp: Path, token: str, key: Path):
        self.site, self.daemon, self.tmp, self.token, self.key = site, daemon, tmp, token, key
        match = re.search(r"serving SSH on ssh://[\d.]+:(\d+)/", daemon.log())
        self.ssh_port = int(match.group(1)) if match else None
        self._seq = itertools.count(1)

    def http_url(self, user: str, secret: str, full: str) -> str:
        return f"http://{user}:{urllib.parse.quote(secret, safe='')}@127.0.0.1:{self.daemon.port}/{full}"

    def ssh_command(self) -> str:
        return shlex.join([SSH, "-i", str(self.key), "-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                           "-o", "LogLevel=ERROR", "-p", str(self.ssh_port)])

    def forced_ssh(self) -> str:
        """A fake ssh that runs bob's ``authorized_keys`` forced command as sshd would."""
        path = self.tmp / "fake-sshd-bob"
        if not path.exists():
            line = self.site.cli("ssh-authorized-keys", "hg").stdout.splitlines()[0]
            options, _ = parse_authorized_keys_line(line)
            path.write_text(FAKE_SSHD.format(command=shlex.quote(options["command"])))
            path.chmod(0o755)
        return str(path)

    def clone(self, source: str, *extra: str) -> subprocess.CompletedProcess:
        """``hg clone`` into a fresh directory; never raises."""
        return run([HG, "clone", "-q", *extra, source, str(self.tmp / f"clone-{next(self._seq)}")], self.site.env,
                   check=False)

    def local_push(self, user: str) -> subprocess.CompletedProcess:
        """A push from a fresh clone of alice/demo straight to its directory, as ``user``."""
        seq = next(self._seq)
        wc = self.tmp / f"local-{seq}"
        repo = str(self.site.repo_path("alice/demo"))
        run([HG, "clone", "-q", repo, str(wc)], self.site.env)
        (wc / f"f{seq}").write_text("x\n")
        run([HG, "commit", "-q", "-A", "-d", DATE, "-m", f"local {seq}"], self.site.env, cwd=wc)
        return run([HG, "push", repo], {**self.site.env, "HG_HOSTING_USER": user}, cwd=wc, check=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("siteadmin")
    site = site_handle(tmp)
    site.cli("init")
    add_users(site, PASSWORDS)
    db_query(site, "UPDATE owner SET is_admin = 1 WHERE name = 'root'")
    site.cli("repo", "create", "bob/own", "--private")
    site.cli("repo", "create", "alice/demo")
    site.cli("grant", "alice/demo", "bob", "write")
    site.hg("-R", str(site.repo_path("bob/own")), "debugbuilddag", "+2", user="bob")
    token = site.cli("token", "create", "bob", "--label", "ci").stdout.strip()
    key = None
    if SSH is not None and SSH_KEYGEN is not None:
        key = make_key(tmp, "bob-key")
        site.cli("ssh-key", "add", "bob", f"{key}.pub")
    daemon = Daemon(site, "--ssh", "127.0.0.1:0")
    yield World(site, daemon, tmp, token, key)
    daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]


def owned_rows(world) -> list[tuple]:
    """What bob has: repositories, grants, tokens, keys (disabling deletes none of it)."""
    return db_query(world.site, "SELECT (SELECT COUNT(*) FROM repository r JOIN owner o ON o.id = r.owner_id"
                                " WHERE o.name = 'bob'), (SELECT COUNT(*) FROM \"grant\" g JOIN owner o ON"
                                " o.id = g.subject_id WHERE o.name = 'bob'), (SELECT COUNT(*) FROM api_token t"
                                " JOIN owner o ON o.id = t.user_id WHERE o.name = 'bob'), (SELECT COUNT(*) FROM"
                                " ssh_key k JOIN owner o ON o.id = k.user_id WHERE o.name = 'bob')")


def access(world) -> dict[str, bool]:
    """Which of bob's ways in work right now, each a real client on its real path (run side by side)."""
    cookie = world.bob_cookie
    checks = {
        "session": lambda: request(world.daemon, "GET", "/bob/own", {"Cookie": cookie})[0] == 200,
        "login form": lambda: form_login(world.daemon, "bob", PASSWORDS["bob"])[0] == 303,
        "basic password": lambda: request(world.daemon, "GET", "/bob/own?cmd=capabilities",
                                          basic("bob", PASSWORDS["bob"]))[0] == 200,
        "basic token": lambda: request(world.daemon, "GET", "/bob/own?cmd=capabilities",
                                       basic("bob", world.token))[0] == 200,
        "hg clone token": lambda: world.clone(world.http_url("bob", world.token, "bob/own")).returncode == 0,
        "local push": lambda: world.local_push("bob").returncode == 0,
    }
    if world.key is not None:
        checks["ssh daemon"] = lambda: world.clone(f"ssh://hg@127.0.0.1:{world.ssh_port}/bob/own",
                                                   "--ssh", world.ssh_command()).returncode == 0
        checks["ssh-serve"] = lambda: world.clone("ssh://hg@x/bob/own", "--ssh",
                                                  world.forced_ssh()).returncode == 0
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = {name: pool.submit(check) for name, check in checks.items()}
        return {name: future.result() for name, future in futures.items()}


def test_disabled_user_is_refused_everywhere_and_keeps_everything(world):
    """Every way in works for bob; disabled, none does, from the next request on, and nothing of his
    is gone; enabled again, each works again (his old browser session stays ended)."""
    world.bob_cookie = session_cookie_for(world, "bob")
    assert all(access(world).values()), access(world)
    kept = owned_rows(world)
    pushes = db_query(world.site, "SELECT COUNT(*) FROM push")

    out = world.site.cli("user", "disable", "bob").stdout
    assert out.strip() == "disabled user bob"
    refused = access(world)
    assert not any(refused.values()), refused
    assert owned_rows(world) == kept
    assert db_query(world.site, "SELECT COUNT(*) FROM push") == pushes
    assert db_query(world.site, "SELECT COUNT(*) FROM session s JOIN owner o ON o.id = s.user_id"
                                " WHERE o.name = 'bob'") == [(0,)]

    assert world.site.cli("user", "enable", "bob").stdout.strip() == "enabled user bob"
    world.bob_cookie_old = world.bob_cookie
    world.bob_cookie = session_cookie_for(world, "bob")
    assert all(access(world).values()), access(world)
    assert request(world.daemon, "GET", "/bob/own", {"Cookie": world.bob_cookie_old})[0] != 200


def session_cookie_for(world, user: str) -> str:
    status, headers, _ = form_login(world.daemon, user, PASSWORDS[user])
    assert status == 303
    value = next(v for k, v in headers if k.lower() == "set-cookie" and v.startswith("hgh_session="))
    return value.split(";")[0]


def test_disabled_refusals_say_so_only_to_the_right_credential(world):
    """Disabled: the right password or token gets 403 "this account is disabled"; a wrong one the
    usual 401, so the answer tells nothing to someone without bob's credentials.  Each transport's
    refusal names the reason."""
    world.site.cli("user", "disable", "bob")
    try:
        status, _, body = request(world.daemon, "GET", "/alice/demo?cmd=capabilities", basic("bob", PASSWORDS["bob"]))
        assert (status, body.strip()) == (403, b"this account is disabled")
        status, _, body = request(world.daemon, "GET", "/alice/demo?cmd=capabilities", basic("bob", world.token))
        assert (status, body.strip()) == (403, b"this account is disabled")
        status, _, body = request(world.daemon, "GET", "/alice/demo?cmd=capabilities", basic("bob", "wrong"))
        assert (status, body.strip()) == (401, b"wrong user name or password")
        status, _, page = form_login(world.daemon, "bob", PASSWORDS["bob"])
        assert status == 403 and b"this account is disabled" in page
        status, _, page = form_login(world.daemon, "bob", "wrong")
        assert status == 401 and b"this account is disabled" not in page
        push = world.local_push("bob")
        assert push.returncode != 0 and "the account 'bob' is disabled" in push.stdout + push.stderr
        if world.key is not None:
            forced = world.clone("ssh://hg@x/bob/own", "--ssh", world.forced_ssh())
            assert "error: the account 'bob' is disabled" in forced.stderr
            daemon = world.clone(f"ssh://hg@127.0.0.1:{world.ssh_port}/alice/demo", "--ssh", world.ssh_command())
            assert daemon.returncode != 0 and "Permission denied" in daemon.stderr
        # anonymous still reads the public repository: only bob is refused
        assert request(world.daemon, "GET", "/alice/demo?cmd=capabilities")[0] == 200
    finally:
        world.site.cli("user", "enable", "bob")


def test_user_list_shows_disabled_and_disable_enable_are_idempotent(world):
    world.site.cli("user", "disable", "alice")
    try:
        rows = {u["name"]: u for u in world.site.cli_json("user", "list")}
        assert rows["alice"]["disabled"] is True and rows["bob"]["disabled"] is False
        lines = world.site.cli("user", "list").stdout.splitlines()
        assert lines[0].split() == ["NAME", "EMAIL", "ADMIN", "DISABLED"]
        assert next(ln for ln in lines if ln.startswith("alice")).split()[-1] == "yes"
        assert world.site.cli("user", "disable", "alice").stdout.strip() == "alice was already disabled"
    finally:
        world.site.cli("user", "enable", "alice")
    assert world.site.cli("user", "enable", "alice").stdout.strip() == "alice was not disabled"
    assert world.site.refuse("user", "disable", "nobody") == "error: no user named 'nobody'"


def test_the_last_site_admin_cannot_be_disabled(world):
    before = db_query(world.site, "SELECT name, disabled, is_admin FROM owner ORDER BY name")
    line = world.site.refuse("user", "disable", "root")
    assert line == "error: root is the last site admin; make another user a site admin first"
    assert db_query(world.site, "SELECT name, disabled, is_admin FROM owner ORDER BY name") == before


def test_init_upgrades_a_version_4_site(tmp_path):
    """A site of schema 4 (no disabled users, no reset links) is upgraded by ``init``; users stay enabled."""
    site = site_handle(tmp_path)
    site.cli("init")
    add_users(site, {"olga": "olga-pw"})
    db_query(site, "DROP TABLE IF EXISTS password_reset")
    db_query(site, "ALTER TABLE owner DROP COLUMN disabled")
    db_query(site, "UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    assert "schema version 4" in site.refuse("user", "list")
    site.cli("init")
    assert db_query(site, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert [(u["name"], u["disabled"]) for u in site.cli_json("user", "list")] == [("olga", False)]


# -- reset links -----------------------------------------------------------------------------


def reset_page(world, token: str, cookie: str | None = None, **fields) -> tuple[int, str]:
    """GET the reset page (its form's cookie kept in ``world.reset_cookie``), or POST ``fields``."""
    if not fields:
        status, headers, body = request(world.daemon, "GET", f"/-/reset/{token}")
        world.reset_cookie = cookies(headers).get("hgh_reset_csrf", "")
        return status, body.decode()
    body = urllib.parse.urlencode(fields).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie is not None:
        headers["Cookie"] = f"hgh_reset_csrf={cookie}"
    status, _, answer = request(world.daemon, "POST", f"/-/reset/{token}", headers, body)
    return status, answer.decode()


def reset_token(world, user: str) -> str:
    proc = world.site.cli("user", "reset-link", user)
    path = proc.stdout.strip()
    assert re.fullmatch(r"/-/reset/[A-Za-z0-9_-]{43}", path), path
    assert "[web] baseurl is not set" in proc.stderr
    return path.rsplit("/", 1)[1]


def test_reset_link_sets_the_password_once_and_ends_sessions(world):
    """A reset link (stored hashed) sets alice's password once: her sessions end, the new password
    works, the old does not, and the link is then gone (404, like an unknown one)."""
    cookie = session_cookie_for(world, "alice")
    token = reset_token(world, "alice")
    digests = [d for (d,) in db_query(world.site, "SELECT digest FROM password_reset")]
    assert token not in digests and len(digests) == 1
    status, page = reset_page(world, token)
    assert status == 200 and "alice" in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    jar = world.reset_cookie
    assert jar == csrf
    # a bad password: refused on the page, the link still works
    status, page = reset_page(world, token, jar, csrf=csrf, password="", confirm="")
    assert status == 400 and "the password is empty" in page
    status, page = reset_page(world, token, jar, csrf=csrf, password="a", confirm="b")
    assert status == 400 and "do not match" in page
    status, _ = reset_page(world, token, jar, csrf=csrf, password="new-alice-pw", confirm="new-alice-pw")
    assert status == 303
    assert b'href="/-/login' in request(world.daemon, "GET", "/", {"Cookie": cookie})[2]  # logged out
    assert form_login(world.daemon, "alice", "new-alice-pw")[0] == 303
    assert form_login(world.daemon, "alice", PASSWORDS["alice"])[0] == 401
    used = reset_page(world, token)
    unknown = reset_page(world, "x" * 43)
    assert used == unknown and used[0] == 404
    assert reset_page(world, token, jar, csrf=csrf, password="again", confirm="again")[0] == 404
    world.site.cli("user", "passwd", "alice", "--password-stdin", input=PASSWORDS["alice"] + "\n")


def test_reset_link_expires_after_24_hours_and_a_new_one_replaces_the_old(world):
    first = reset_token(world, "alice")
    second = reset_token(world, "alice")
    assert reset_page(world, first)[0] == 404  # replaced
    db_query(world.site, "UPDATE password_reset SET expires = datetime(expires, '-24 hours', '-1 second')")
    expired = reset_page(world, second)
    assert expired[0] == 404 and expired == reset_page(world, "y" * 43)
    assert "unknown, used or expired" in expired[1]


def test_reset_link_uses_the_baseurl_and_refuses_unknown_users(world):
    hgrc = world.site.root / "hgrc"
    text = hgrc.read_text()
    try:
        hgrc.write_text(text + "\n[web]\nbaseurl = https://hg.example.org/\n")
        proc = world.site.cli("user", "reset-link", "bob")
        assert re.fullmatch(r"https://hg\.example\.org/-/reset/[A-Za-z0-9_-]{43}\n", proc.stdout), proc.stdout
        assert proc.stderr == ""
    finally:
        hgrc.write_text(text)
    assert world.site.refuse("user", "reset-link", "nobody") == "error: no user named 'nobody'"


def test_reset_form_without_its_csrf_token_changes_nothing(world):
    token = reset_token(world, "bob")
    before = db_query(world.site, "SELECT password_hash FROM owner WHERE name = 'bob'")
    reset_page(world, token)
    assert reset_page(world, token, None, csrf=world.reset_cookie, password="zzz", confirm="zzz")[0] == 403
    assert reset_page(world, token, "forged", csrf="forged2", password="zzz", confirm="zzz")[0] == 403
    assert db_query(world.site, "SELECT password_hash FROM owner WHERE name = 'bob'") == before
    assert reset_page(world, token)[0] == 200
