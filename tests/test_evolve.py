"""Evolve, topics and the ``publish`` level, with the real ``hg`` client and hg-evolve on both ends.

A non-publishing repository (``repo create --non-publishing``, ``repo set
OWNER/NAME publishing=false``) keeps pushed drafts draft and exchanges topics
and obsolescence markers; a writer may push drafts, amend and prune them, and
only ``publish`` (or admin, the owner) may make a changeset public.  Every
push goes through one of the transports: ``ssh`` (the daemon's SSH server,
the real OpenSSH client, each user's registered key), ``stdio`` (the same
``hg serve --stdio`` child through a fake ssh, cheaper), ``http`` (the
daemon, hgweb).

Users: alice owns the repository under test; bob holds ``write``, carol
``publish``, dave ``publish`` but is on no allow-list.

One site per transport for the module (``transport_site``: the users, their
SSH keys, the daemon), made once: each test gets a fresh non-publishing
repository of its own (``alice/demo-N``) on it, with alice's public root.  The rewrite
tests run over ``stdio`` and ``http``; ``ssh`` adds only how the user is known
(the key), so only the ``publish``-level test runs over it as well.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import sqlite3
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import COMMITTED, DATE, HG, HG_HOSTING, Daemon, SiteHandle, run, site_handle
from pushhelpers import cli_all, run_all, write_fakessh

#: The client side of every test: evolve and topic enabled.
EVOLVE = ("--config", "extensions.evolve=", "--config", "extensions.topic=")
PASSWORD = "correct horse battery staple"
USERS = {"bob": "write", "carol": "publish", "dave": "publish"}
SSH = shutil.which("ssh")
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


class World:
    """A site with ``full`` (``alice/demo``-something) non-publishing, four users, and clients over one transport.

    ``tmp`` holds the working copies, ``keys`` the users' SSH keys (transport ``ssh``).
    """

    def __init__(self, site: SiteHandle, tmp: Path, transport: str, daemon: Daemon | None = None,
                 full: str = "alice/demo", keys: Path | None = None):
        self.site, self.tmp, self.transport, self.daemon = site, tmp, transport, daemon
        self.full, self.keys = full, keys
        self.fakessh = write_fakessh(tmp)
        self.ssh_port = 0
        if transport == "ssh":
            assert daemon is not None
            for _ in range(600):
                found = re.search(r"serving SSH on ssh://[\d.]+:(\d+)", daemon.log())
                if found:
                    self.ssh_port = int(found.group(1))
                    break
                time.sleep(0.05)
            assert self.ssh_port, daemon.log()

    def ssh_command(self, user: str) -> str:
        """The client's ``ui.ssh``: the fake ssh, or OpenSSH with ``user``'s key."""
        if self.transport != "ssh":
            return str(self.fakessh)
        assert self.keys is not None
        return shlex.join([SSH, "-i", str(self.keys / user), "-F", "/dev/null",
                           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                           "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"])

    def url(self, user: str, full: str | None = None) -> str:
        full = full or self.full
        if self.transport == "http":
            assert self.daemon is not None
            secret = urllib.parse.quote(PASSWORD, safe="")
            return f"http://{user}:{secret}@127.0.0.1:{self.daemon.port}/{full}"
        if self.transport == "stdio":
            return f"ssh://x/{full}"
        if self.transport == "ssh":
            return f"ssh://hg@127.0.0.1:{self.ssh_port}/{full}"
        return str(self.site.repo_path(full))

    def hg(self, user: str, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """The client ``hg`` (evolve and topic on), as ``user`` on every transport."""
        env = {**self.site.env, "HG_HOSTING_USER": user, "FAKESSH_ROOT": str(self.site.root / "repos"),
               "HGUSER": f"{user} <{user}@example.org>"}
        argv = [HG, *EVOLVE, "--config", f"ui.ssh={self.ssh_command(user)}", *args]
        return run(argv, env, cwd=cwd, check=check)

    def clone(self, user: str, name: str, full: str | None = None) -> Path:
        full = full or self.full
        wc = self.tmp / name
        self.hg(user, "clone", "-q", self.url(user, full), str(wc))
        return wc

    def commit(self, user: str, wc: Path, filename: str, content: str, *extra: str) -> str:
        """One ``hg commit -A --debug`` (its last line names the node): one client start, not three."""
        (wc / filename).write_text(content)
        proc = self.hg(user, "commit", "-A", "--debug", "-d", DATE, "-m", f"{user}: {filename}", *extra, cwd=wc)
        nodes = COMMITTED.findall(f"{proc.stdout}\n{proc.stderr}")
        return nodes[-1] if nodes else self.node(user, wc, ".")

    def node(self, user: str, wc: Path, rev: str) -> str:
        return self.hg(user, "log", "-r", rev, "-T", "{node}", cwd=wc).stdout

    def push(self, user: str, wc: Path, *args: str, full: str | None = None) -> subprocess.CompletedProcess:
        full = full or self.full
        return self.hg(user, "push", *args, self.url(user, full), cwd=wc, check=False)

    # -- the server side, read directly ------------------------------------------------

    def server(self, *args: str, full: str | None = None) -> str:
        """``hg`` in the site repository itself, with the configuration its .hg/hgrc gives."""
        full = full or self.full
        return self.site.hg("-R", str(self.site.repo_path(full)), *args).stdout

    def server_log(self, revset: str = "not 0", hidden: bool = False, full: str | None = None) -> list[str]:
        """``NODE PHASE TOPIC`` lines of the site repository (all but alice's public root by default)."""
        full = full or self.full
        args = ["log", "-r", revset, "-T", "{node} {phase} {topic}\n"] + (["--hidden"] if hidden else [])
        return [line.strip() for line in self.server(*args, full=full).splitlines()]

    def pushes(self, full: str | None = None) -> list[dict]:
        """``hg-hosting pushlog --json``, oldest first."""
        full = full or self.full
        return list(reversed(self.site.cli_json("pushlog", full)))

    def rows(self) -> list[tuple]:
        """Every push row of the repository, pending ones included (a refusal must leave none)."""
        conn = sqlite3.connect(self.site.root / "hosting.db")
        try:
            return conn.execute(
                "SELECT p.push_id, p.user, p.state, p.details FROM push p"
                " JOIN repository r ON p.repository_id = r.id WHERE r.name_key = ? ORDER BY p.id",
                (self.full.split("/")[1],)).fetchall()
        finally:
            conn.close()

    def state(self) -> tuple:
        return self.server_log(hidden=True), self.server("debugobsolete"), self.rows()


@dataclass
class TransportSite:
    """A site shared by the module's tests over one transport: users, keys and daemon made once."""

    site: SiteHandle
    tmp: Path
    transport: str
    daemon: Daemon | None
    keys: Path | None


def make_site(tmp: Path, transport: str) -> TransportSite:
    """A new site with alice and ``USERS`` (passwords; SSH keys for ``ssh``) and its daemon (``http``, ``ssh``)."""
    site = site_handle(tmp)
    site.cli("init")
    adds = [subprocess.Popen([HG_HOSTING, "--site", str(site.root), "user", "add", user, "--email",
                              f"{user}@example.org", "--password-stdin"], env=site.env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for user in ("alice", *USERS)]  # at once: each hashes a password (argon2)
    for add in adds:
        out, err = add.communicate(PASSWORD + "\n", timeout=120)
        assert add.returncode == 0, out + err
    keys = None
    if transport == "ssh":
        keys = tmp / "keys"
        keys.mkdir()
        run_all([[SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(keys / user)] for user in ("alice", *USERS)],
                site.env)
        cli_all(site, *(["ssh-key", "add", user, str(keys / f"{user}.pub")] for user in ("alice", *USERS)))
    daemon = None
    if transport == "http":
        daemon = Daemon(site)
    elif transport == "ssh":
        daemon = Daemon(site, "--ssh", "127.0.0.1:0")
    return TransportSite(site, tmp, transport, daemon, keys)


_repo_numbers = itertools.count(1)


def make_world(shared: TransportSite, tmp: Path) -> World:
    """A new non-publishing ``alice/demo-N`` on the shared site, writers granted, alice's public root pushed."""
    full = f"alice/demo-{next(_repo_numbers)}"
    site = shared.site
    cli_all(site, ["repo", "create", full, "--non-publishing"],
            *(["grant", full, user, level] for user, level in USERS.items()))
    world = World(site, tmp, shared.transport, shared.daemon, full, shared.keys)
    root = world.clone("alice", "alice")
    world.commit("alice", root, "README", "the public root\n")
    assert world.push("alice", root, "--publish").returncode == 0
    return world


#: The real OpenSSH client through the daemon's SSH server: the user comes from the key.
SSH_TRANSPORT = pytest.param("ssh", marks=pytest.mark.skipif(not SSH, reason="needs the OpenSSH client"))


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """The module's sites, one per transport, each made when a test first needs it (users, keys,
    daemon: seconds of CPU each) and shared by every fixture below; daemons stopped at the end."""
    made: dict[str, TransportSite] = {}

    def get(transport: str) -> TransportSite:
        if transport not in made:
            made[transport] = make_site(tmp_path_factory.mktemp(f"evolve-{transport}"), transport)
        return made[transport]

    yield get
    for shared in made.values():
        if shared.daemon is not None:
            shared.daemon.stop()
            assert "Traceback" not in shared.daemon.log(), shared.daemon.log()[-3000:]


#: ``world`` runs each test over stdio and http.  ``ssh`` reaches the same ``hg serve
#: --stdio`` child as ``stdio`` (only the way the user is authenticated differs), so only
#: the test where the user decides the outcome (the ``publish`` level) runs over it too.
@pytest.fixture(scope="module", params=["stdio", "http"])
def transport_site(request, sites):
    return sites(request.param)


@pytest.fixture(scope="module")
def stdio_site(sites):
    return sites("stdio")


@pytest.fixture
def world(transport_site, tmp_path):
    return make_world(transport_site, tmp_path)


@pytest.fixture
def stdio_world(stdio_site, tmp_path):
    return make_world(stdio_site, tmp_path)


def assert_refused(proc: subprocess.CompletedProcess, before: tuple, world: World, *needles: str) -> None:
    """Refused with one line naming every needle; nothing changed on the server."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"the push was accepted:\n{out}"
    assert any(all(n in line for n in needles) for line in out.splitlines()), out
    assert "Traceback" not in out, out
    assert world.state() == before, "the refused push changed the repository or left a row"


# -- the CLI --------------------------------------------------------------------------


def test_cli_publishing_flag_and_publish_level(site):
    """``repo create --non-publishing``, ``repo set ... publishing=``, ``grant ... publish``; bad input is one line."""
    site.add_user("alice")
    site.add_user("bob")
    site.cli("repo", "create", "alice/pub")
    assert "non-publishing" in site.cli("repo", "create", "alice/draft", "--non-publishing").stdout
    listed = {r["name"]: r["publishing"] for r in site.cli_json("repo", "list")}
    assert listed == {"alice/pub": True, "alice/draft": False}
    hgrc = site.repo_path("alice/draft") / ".hg" / "hgrc"
    phase_setting = ["-R", str(site.repo_path("alice/draft")), "config", "phases.publish"]
    assert site.hg(*phase_setting).stdout.strip() == "False"
    assert "%include ../../../../hgrc" in hgrc.read_text()

    site.cli("repo", "set", "alice/draft", "publishing=true")
    assert site.hg(*phase_setting).stdout.strip() == "True"
    site.cli("repo", "set", "alice/pub", "publishing=false")
    assert {r["name"]: r["publishing"] for r in site.cli_json("repo", "list")} == {
        "alice/pub": False, "alice/draft": True}
    assert "publishing must be true or false" in site.refuse("repo", "set", "alice/pub", "publishing=maybe")
    assert "KEY=VALUE" in site.refuse("repo", "set", "alice/pub", "colour=blue")

    site.cli("grant", "alice/pub", "bob", "publish")
    assert "read, write, publish or admin" in site.refuse("grant", "alice/pub", "bob", "owner")


def test_migration_adds_publishing(site):
    """A version-2 database (before this schema) gets ``repository.publishing`` = true from ``init``."""
    site.add_user("alice")
    site.cli("repo", "create", "alice/old")
    conn = sqlite3.connect(site.root / "hosting.db")
    conn.execute("ALTER TABLE repository DROP COLUMN publishing")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    assert "schema version 2" in site.refuse("repo", "list")
    site.cli("init")
    assert site.cli_json("repo", "list")[0]["publishing"] is True


# -- pushes -----------------------------------------------------------------------------


def test_amend_and_prune_push_are_recorded_with_markers(world):
    """A writer pushes a draft, amends it, prunes it: drafts stay draft, markers land and are recorded."""
    wc = world.clone("bob", "bob")
    old = world.commit("bob", wc, "a.txt", "one\n")
    assert world.push("bob", wc).returncode == 0
    assert world.server_log() == [f"{old} draft"]

    (wc / "a.txt").write_text("one, amended\n")
    world.hg("bob", "amend", "-q", "-d", DATE, cwd=wc)
    new = world.node("bob", wc, ".")
    assert world.push("bob", wc).returncode == 0
    assert world.server_log() == [f"{new} draft"], "the obsolete predecessor is hidden"
    assert f"{old} draft" in world.server_log(hidden=True)
    amend = world.pushes()[-1]
    assert amend["user"] == "bob" and amend["changesets"] == [new]
    assert amend["markers"] == [[old, [new]]] and amend["obsoleted"] == [old]

    world.hg("bob", "prune", "-q", "-r", new, cwd=wc)
    proc = world.push("bob", wc)
    assert proc.returncode in (0, 1), proc.stderr  # nothing but markers: hg says "no changes found"
    assert world.server_log() == []
    prune = world.pushes()[-1]
    assert prune["changesets"] == [] and prune["markers"] == [[new, []]] and prune["obsoleted"] == [new]
    assert [p["id"] for p in world.pushes()] == [1, 2, 3, 4]


@pytest.mark.parametrize("transport_site", ["stdio", "http", SSH_TRANSPORT], indirect=True)
def test_publication_refused_then_allowed(world):
    """Only ``publish`` makes changesets public, new or existing; a refusal names who, where and which."""
    wc = world.clone("bob", "bob")
    node = world.commit("bob", wc, "a.txt", "one\n")
    before = world.state()
    proc = world.push("bob", wc, "--publish")
    assert_refused(proc, before, world, "bob may not publish", world.full, node[:12])

    world.hg("bob", "phase", "--public", "-r", ".", cwd=wc)  # arrives public
    assert_refused(world.push("bob", wc), before, world, "bob may not publish", world.full, node[:12])

    world.hg("bob", "phase", "--draft", "--force", "-r", ".", cwd=wc)
    assert world.push("bob", wc).returncode == 0
    assert world.server_log() == [f"{node} draft"]
    before = world.state()
    # bob turns the pushed draft public: a phase-only push, refused
    world.hg("bob", "phase", "--public", "-r", ".", cwd=wc)
    assert_refused(world.push("bob", wc), before, world, "bob may not publish", node[:12])

    carol = world.clone("carol", "carol")
    world.hg("carol", "phase", "--public", "-r", node, cwd=carol)
    proc = world.push("carol", carol)
    assert proc.returncode in (0, 1), proc.stderr
    assert world.server_log() == [f"{node} public"]
    phase_push = world.pushes()[-1]
    assert phase_push["user"] == "carol" and phase_push["changesets"] == []
    assert phase_push["phases"] == [[node, 1, 0]]


def test_topic_on_protected_branch(stdio_world):
    """A writer's topic draft on a protected branch lands; publishing it needs the allow-list and ``publish``."""
    w = stdio_world
    w.site.cli("protect", w.full, "default", "--allow", "carol")
    wc = w.clone("bob", "bob")
    w.hg("bob", "topic", "-q", "feature", cwd=wc)
    node = w.commit("bob", wc, "f.txt", "feature\n")
    assert w.push("bob", wc).returncode == 0, "a topic draft is not on the branch yet"
    assert w.server_log() == [f"{node} draft feature"]

    w.hg("bob", "topic", "-q", "--clear", cwd=wc)
    bare = w.commit("bob", wc, "g.txt", "no topic\n")
    before = w.state()
    assert_refused(w.push("bob", wc, "-r", bare), before, w, "bob may not push to protected branch 'default'",
                   bare[:12])

    dave = w.clone("dave", "dave")
    w.hg("dave", "phase", "--public", "-r", node, cwd=dave)
    assert_refused(w.push("dave", dave), before, w, "dave may not publish to protected branch 'default'",
                   w.full, node[:12])

    carol = w.clone("carol", "carol")
    w.hg("carol", "phase", "--public", "-r", node, cwd=carol)
    assert w.push("carol", carol).returncode in (0, 1)
    assert w.server_log() == [f"{node} public"], "published: the topic is gone"


def test_markers_reach_another_clone(world):
    """Markers pushed by one clone are pulled by another, which then hides the predecessor."""
    bob = world.clone("bob", "bob")
    old = world.commit("bob", bob, "a.txt", "one\n")
    assert world.push("bob", bob).returncode == 0
    carol = world.clone("carol", "carol")
    assert world.node("carol", carol, "tip") == old

    (bob / "a.txt").write_text("two\n")
    world.hg("bob", "amend", "-q", "-d", DATE, cwd=bob)
    new = world.node("bob", bob, ".")
    assert world.push("bob", bob).returncode == 0

    world.hg("carol", "pull", "-q", world.url("carol"), cwd=carol)
    world.hg("carol", "update", "-q", "tip", cwd=carol)  # off the obsolete parent: hg then hides it
    assert world.hg("carol", "log", "-r", "not 0", "-T", "{node}\n", cwd=carol).stdout.split() == [new]
    assert world.hg("carol", "log", "--hidden", "-r", "obsolete()", "-T", "{node}", cwd=carol).stdout == old
    markers = world.hg("carol", "debugobsolete", cwd=carol).stdout.splitlines()
    assert [line.split()[:2] for line in markers] == [[old, new]]


def test_concurrent_rewrites_diverge(world):
    """Two users amend the same draft differently: the server stores both, a third clone sees divergence."""
    bob = world.clone("bob", "bob")
    base = world.commit("bob", bob, "a.txt", "base\n")
    assert world.push("bob", bob).returncode == 0
    carol = world.clone("carol", "carol")

    (bob / "a.txt").write_text("bob's\n")
    world.hg("bob", "amend", "-q", "-d", DATE, cwd=bob)
    (carol / "a.txt").write_text("carol's\n")
    world.hg("carol", "amend", "-q", "-d", DATE, cwd=carol)
    assert world.push("bob", bob).returncode == 0
    proc = world.push("carol", carol, "--force")  # a second head: carol's successor
    assert proc.returncode == 0, proc.stderr

    divergent = world.server_log("contentdivergent()")
    assert len(divergent) == 2 and all(line.split()[1] == "draft" for line in divergent)
    assert world.pushes()[-1]["markers"][0][0] == base

    dave = world.clone("dave", "dave")
    seen = world.hg("dave", "log", "-r", "contentdivergent()", "-T", "{node}\n", cwd=dave).stdout.split()
    assert sorted(seen) == sorted(line.split()[0] for line in divergent)


def test_publishing_repository_is_unchanged(stdio_world):
    """In a publishing repository a writer's push still publishes, as before."""
    w = stdio_world
    w.site.cli("repo", "create", "alice/pub")
    w.site.cli("grant", "alice/pub", "bob", "write")
    wc = w.clone("bob", "pub", full="alice/pub")
    node = w.commit("bob", wc, "a.txt", "one\n")
    assert w.push("bob", wc, full="alice/pub").returncode == 0
    assert w.server("log", "-T", "{node} {phase}", full="alice/pub") == f"{node} public"
    assert json.loads(json.dumps(w.pushes("alice/pub")[-1]))["changesets"] == [node]


# -- pages and hgweb ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_site(sites):
    return sites("http")


@pytest.fixture
def http_world(http_site, tmp_path):
    return make_world(http_site, tmp_path)


def login(daemon: Daemon, user: str) -> str:
    """A session cookie from the login form."""
    import test_auth

    _, headers, _ = test_auth.request(daemon, "GET", "/-/login")
    token = test_auth.cookies(headers)["hgh_login_csrf"]
    body = urllib.parse.urlencode({"csrf": token, "user": user, "password": PASSWORD, "next": "/"})
    status, headers, _ = test_auth.request(daemon, "POST", "/-/login", {
        "Cookie": f"hgh_login_csrf={token}", "Content-Type": "application/x-www-form-urlencoded",
    }, body.encode())
    assert status == 303, status
    return "hgh_session=" + test_auth.cookies(headers)["hgh_session"]


def test_overview_lists_topics_and_hgweb_hides_obsolete(http_world):
    """The overview lists open topics (heads, authors); hgweb no longer serves an amended predecessor."""
    import test_auth

    w = http_world
    wc = w.clone("bob", "bob")
    w.hg("bob", "topic", "-q", "feature-x", cwd=wc)
    old = w.commit("bob", wc, "f.txt", "one\n")
    assert w.push("bob", wc).returncode == 0
    (wc / "f.txt").write_text("two\n")
    w.hg("bob", "amend", "-q", "-d", DATE, cwd=wc)
    new = w.node("bob", wc, ".")
    assert w.push("bob", wc).returncode == 0

    status, _, body = test_auth.request(w.daemon, "GET", f"/{w.full}")
    page = body.decode()
    assert status == 200 and "Open topics" in page and "feature-x" in page
    topics = page.split("Open topics")[1].split("Recent pushes")[0]  # the push log still names old
    assert new[:12] in topics and old[:12] not in topics and "bob &lt;bob@example.org&gt;" in topics
    pushes = page.split("Recent pushes")[1]
    assert "topic feature-x" in pushes and "1 obsolescence marker(s)" in pushes
    assert w.pushes()[-1]["topics"] == ["feature-x"]
    status, _, body = test_auth.request(w.daemon, "GET", f"/{w.full}/shortlog")
    assert status == 200 and new[:12] in body.decode() and old[:12] not in body.decode()
    assert test_auth.request(w.daemon, "GET", f"/{w.full}/rev/{old}")[0] == 404


def test_settings_page_switches_publishing(http_world):
    """The owner makes the repository publishing on the settings page; the next HTTP push publishes."""
    import test_auth

    w = http_world
    cookie = login(w.daemon, "alice")
    status, _, body = test_auth.request(w.daemon, "GET", f"/{w.full}/settings", {"Cookie": cookie})
    assert status == 200 and '<option value="false" selected>' in body.decode()
    csrf = body.decode().split('name="csrf" value="')[1].split('"')[0]

    wc = w.clone("bob", "bob")
    draft = w.commit("bob", wc, "a.txt", "one\n")
    assert w.push("bob", wc).returncode == 0  # the daemon's hgweb now caches the non-publishing config
    assert w.server_log() == [f"{draft} draft"]

    form = urllib.parse.urlencode({"csrf": csrf, "action": "settings", "description": "",
                                   "publishing": "true"}).encode()
    status, _, body = test_auth.request(w.daemon, "POST", f"/{w.full}/settings", {
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}, form)
    assert status == 200 and '<option value="true" selected>' in body.decode()
    assert {r["name"]: r["publishing"] for r in w.site.cli_json("repo", "list")}[w.full] is True

    public = w.commit("bob", wc, "b.txt", "two\n")
    assert w.push("bob", wc).returncode == 0
    assert w.server_log() == [f"{draft} public", f"{public} public"]


def test_on_postgresql(pg_site, postgres_url, tmp_path):
    """On PostgreSQL: ``init`` adds ``publishing`` to a version-2 database; a writer's draft stays draft
    and her publication is refused."""
    import psycopg2

    site = pg_site
    site.add_user("alice")
    site.cli("repo", "create", "alice/old")
    conn = psycopg2.connect(postgres_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute('ALTER TABLE "repository" DROP COLUMN publishing')
        cur.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.close()
    site.cli("init")
    assert site.cli_json("repo", "list")[0]["publishing"] is True

    w = World(site, tmp_path, "stdio")
    site.add_user("bob")
    site.cli("repo", "create", "alice/demo", "--non-publishing")
    site.cli("grant", "alice/demo", "bob", "write")
    wc = w.clone("bob", "bob")
    node = w.commit("bob", wc, "a.txt", "one\n")
    assert w.push("bob", wc).returncode == 0
    assert w.server_log("all()") == [f"{node} draft"]
    proc = w.push("bob", wc, "--publish")
    assert proc.returncode != 0 and "bob may not publish changesets in alice/demo" in proc.stderr
    assert w.server_log("all()") == [f"{node} draft"]


def test_both_repository_lookups_know_publishing(tmp_path, monkeypatch):
    """The push path's and the daemon's repository lookups (``pushdb.find_repository`` and
    ``find_repository_evenly``) read the same columns: a non-publishing repository is
    non-publishing for both (the daemon's copy of the query once lacked the column)."""
    from conftest import site_handle
    from insite import opened

    from hgext_hosting import models, pushdb

    site = site_handle(tmp_path)
    site.cli("init")
    site.add_user("alice")
    site.cli("repo", "create", "alice/np", "--non-publishing")
    site.cli("repo", "create", "alice/pub")
    with opened(site, monkeypatch):
        c = models.connection()
        out = [(pushdb.find_repository(c, "alice", name).publishing,
                pushdb.find_repository_evenly(c, "alice", name).publishing) for name in ("np", "pub")]
    assert out == [(False, False), (True, True)], out
