"""The integrity promise on every path, and the bundle and request-body attack surface.

A push is in a site repository if and only if its record is in the database:
that holds only while every process that writes a repository runs the
extension.  These tests break that on purpose and check that the site fails
closed:

* ``init`` on a site whose ``hgrc`` an administrator wrote first adds the
  extension (or refuses, naming the file and the line, when it is disabled);
* with the extension missing from the site ``hgrc``, the daemon (HTTP and its
  SSH server) and ``ssh-serve`` refuse every write with one line, and
  ``check`` names the repositories;
* bundle2's ``remote-changegroup`` part (the server fetching a URL: SSRF) is
  neither advertised nor accepted, over HTTP and ``serve --stdio``;
* a bundle2 without a ``replycaps`` part that commits is answered as a success,
  not ``400 malformed request``;
* only an authenticated ``unbundle`` may send a body over a few MB: anything
  else is refused with 413 from its headers, before a byte of it is stored.

Real parts throughout: the ``hg-hosting`` CLI, the daemon, Mercurial's own peer
(``CRAFT``, a script run by the test interpreter) to send hand-made bundles,
and a listening socket the server must never connect to.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DATE, HG_HOSTING, Daemon, SiteHandle, commit, run, site_handle

#: Send a hand-made bundle2 to URL's ``unbundle`` with Mercurial's peer; print the reply's parts.
CRAFT = r'''
import sys

from mercurial import bundle2, error, hg, initialization, util
from mercurial import ui as uimod

initialization.init()
url, kind, arg = sys.argv[1:4]
ui = uimod.ui.load()
ui.setconfig(b"ui", b"interactive", b"false")
if len(sys.argv) > 4:
    ui.setconfig(b"ui", b"ssh", sys.argv[4].encode())
peer = hg.peer(ui, {}, url.encode())
if kind == "remote-changegroup":
    bundler = bundle2.bundle20(ui)
    bundler.newpart(b"replycaps", data=bundle2.encodecaps(
        {b"error": (b"abort", b"unsupportedcontent", b"pushraced", b"pushkey")}))
    part = bundler.newpart(b"remote-changegroup")
    part.addparam(b"url", arg.encode())
    part.addparam(b"size", b"1000")
    stream = util.chunkbuffer(bundler.getchunks())
else:
    stream = open(arg, "rb")
try:
    with peer.commandexecutor() as e:
        reply = e.callcommand(b"unbundle", {b"bundle": stream, b"heads": [b"force"],
                                             b"url": peer.url()}).result()
    for part in reply.iterparts():
        params = " ".join(f"{k.decode()}={v.decode(errors='replace')}" for k, v in sorted(part.params.items()))
        part.read()
        print(f"part {part.type.decode()} {params}".rstrip())
except error.Abort as e:
    print("abort: " + e.message.decode(errors="replace"))
except Exception as e:  # noqa: BLE001 - printed for the test to assert on
    print(f"error: {type(e).__name__}: {e}")
'''

#: A stand-in for ssh running the remote ``hg -R OWNER/NAME serve --stdio`` inside $FAKESSH_ROOT.
FAKESSH = """\
#!/bin/sh
while [ $# -gt 1 ]; do case "$1" in -*) shift;; *) shift; break;; esac; done
cd "$FAKESSH_ROOT" && exec sh -c "$*"
"""

#: A stand-in for ssh + sshd running the forced command ``hg-hosting ssh-serve USER``.
FORCED = """\
#!/bin/sh
while [ $# -gt 1 ]; do case "$1" in -*) shift;; *) shift; break;; esac; done
SSH_ORIGINAL_COMMAND="$*" SSH_CLIENT="127.0.0.1 50000 22"
export SSH_ORIGINAL_COMMAND SSH_CLIENT
exec {hg_hosting} --site {site} ssh-serve {user}
"""

PASSWORD = "alice-pw"


def script(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def push_rows(site: SiteHandle) -> int:
    """Push records of any state, read-only."""
    with contextlib.closing(sqlite3.connect(f"file:{site.root / 'hosting.db'}?mode=ro", uri=True)) as db:
        return db.execute("SELECT count(*) FROM push").fetchone()[0]


def revcount(site: SiteHandle, full: str) -> int:
    return len(site.hg("-R", str(site.repo_path(full)), "log", "-T", "x").stdout)


class Listener:
    """A listening loopback socket that counts the connections made to it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


@dataclass
class World:
    site: SiteHandle
    tmp: Path
    daemon: Daemon
    token: str
    fakessh: str

    def http(self, full: str = "alice/demo", secret: str = PASSWORD) -> str:
        return f"http://alice:{secret}@127.0.0.1:{self.daemon.port}/{full}"

    def craft(self, url: str, kind: str, arg: str, *extra: str) -> str:
        env = {**self.site.env, "FAKESSH_ROOT": str(self.site.root / "repos"), "HG_HOSTING_USER": "alice"}
        return run([sys.executable, "-c", CRAFT, url, kind, arg, *extra], env, timeout=120).stdout.strip()

    def wc(self, name: str, size: int = 0) -> Path:
        """A fresh client repository with one new changeset (``size`` random bytes when given)."""
        wc = self.tmp / name
        self.site.hg("init", str(wc))
        if size:
            (wc / "blob").write_bytes(os.urandom(size))
            self.site.hg("commit", "-q", "-A", "-d", DATE, "-m", name, cwd=wc)
        else:
            commit(self.site.hg, wc, f"{name}.txt", f"{name}\n")
        return wc


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("integrity")
    site = site_handle(tmp)
    site.cli("init")
    site.add_user("alice", PASSWORD)
    site.cli("repo", "create", "alice/demo")
    token = site.cli("token", "create", "alice").stdout.strip()
    daemon = Daemon(site)
    try:
        yield World(site, tmp, daemon, token, script(tmp, "fakessh", FAKESSH))
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]


# -- 1. the extension must be on ---------------------------------------------------------


def test_init_adds_the_extension_to_an_hgrc_written_first(tmp_path):
    """An administrator writes ``[hosting] database =`` first; ``init`` adds the extension, keeps the rest."""
    site = site_handle(tmp_path)
    site.root.mkdir()
    own = "# mine\n[hosting]\ndatabase =\nbusy-timeout = 7000\n"
    (site.root / "hgrc").write_text(own)
    out = site.cli("init").stdout
    text = (site.root / "hgrc").read_text()
    assert text.startswith(own) and "[extensions]\nhosting =\n" in text[len(own):]
    assert f"created [extensions] hosting = in {site.root / 'hgrc'}" in out
    assert site.cli("init").stdout.count("hosting =") == 0  # idempotent: nothing added twice
    assert (site.root / "hgrc").read_text() == text
    site.add_user("alice")
    site.cli("repo", "create", "alice/demo")
    wc = tmp_path / "wc"
    site.hg("init", str(wc))
    node = commit(site.hg, wc, "a.txt", "a\n")
    site.hg("push", "-q", str(site.repo_path("alice/demo")), cwd=wc, user="alice")
    assert site.cli_json("pushlog", "alice/demo")[0]["changesets"] == [node]
    assert site.cli("check").returncode == 0


def test_init_refuses_a_disabled_extension(tmp_path):
    """``hosting = !`` is an administrator's explicit choice: init refuses, naming the file and line."""
    site = site_handle(tmp_path)
    site.root.mkdir()
    (site.root / "hgrc").write_text("[extensions]\nhosting = !\n")
    line = site.refuse("init")
    assert str(site.root / "hgrc") in line and "hosting =" in line
    assert (site.root / "hgrc").read_text() == "[extensions]\nhosting = !\n"
    assert not (site.root / "hosting.db").exists()  # refused before anything was created
    (site.root / "hgrc").write_text("[extensions\nhosting =\n")
    line = site.refuse("init")
    assert f"config error at {site.root / 'hgrc'}:1" in line


def test_check_repair_adds_the_extension_to_the_site_hgrc(tmp_path):
    """An edit dropped the extension: ``check`` reports it, ``check --repair`` adds it back."""
    site = site_handle(tmp_path)
    site.cli("init")
    site.add_user("alice")
    site.cli("repo", "create", "alice/demo")
    hgrc = site.root / "hgrc"
    hgrc.write_text(hgrc.read_text().replace("\nhosting =\n", "\n"))
    proc = site.cli("check", check=False)
    assert proc.returncode == 1
    assert f"problem: {hgrc}: the site hgrc does not enable the hg-hosting extension" in proc.stdout
    assert "alice/demo: the hg-hosting extension is not enabled" in proc.stdout
    proc = site.cli("check", "--repair", check=False)
    assert proc.returncode == 0, proc.stdout
    assert f"repaired: added [extensions] hosting = in {hgrc}" in proc.stdout
    assert "alice/demo: the hg-hosting extension" not in proc.stdout  # checked after the repair
    assert site.cli("check").stdout.startswith("ok")


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """A site whose hgrc lost its ``[extensions] hosting =`` after init, and a daemon on it."""
    tmp = tmp_path_factory.mktemp("bare")
    site = site_handle(tmp)
    site.cli("init")
    site.add_user("alice", PASSWORD)
    site.cli("repo", "create", "alice/demo")
    site.cli("repo", "create", "alice/noinclude")
    seed = tmp / "seed"
    site.hg("init", str(seed))
    commit(site.hg, seed, "seed.txt", "seed\n")
    site.hg("push", "-q", str(site.repo_path("alice/demo")), cwd=seed, user="alice")
    hgrc = site.root / "hgrc"
    hgrc.write_text(hgrc.read_text().replace("\nhosting =\n", "\n"))
    (site.repo_path("alice/noinclude") / ".hg" / "hgrc").write_text("[extensions]\nhosting =\n")
    daemon = Daemon(site)
    try:
        yield site, daemon, tmp
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]


def test_daemon_refuses_http_writes_without_the_extension(bare):
    """Over HTTP a push is refused (403, one line), nothing lands; reads are still served."""
    site, daemon, tmp = bare
    wc = tmp / "http-wc"
    site.hg("clone", "-q", f"{daemon.url}/alice/demo", str(wc))
    commit(site.hg, wc, "b.txt", "b\n")
    before = push_rows(site)
    proc = site.hg("push", f"http://alice:{PASSWORD}@127.0.0.1:{daemon.port}/alice/demo", cwd=wc, check=False)
    assert proc.returncode != 0
    assert "HTTP Error 403: alice/demo does not run the hg-hosting extension" in proc.stderr, proc.stderr
    assert revcount(site, "alice/demo") == 1 and push_rows(site) == before
    # a bookmark-only push (bundle2 bookmarks part, or pushkey) is a write too
    site.hg("bookmark", "-r", "0", "feature", cwd=wc)
    proc = site.hg("push", "-B", "feature", f"http://alice:{PASSWORD}@127.0.0.1:{daemon.port}/alice/demo",
                   cwd=wc, check=False)
    assert proc.returncode != 0 and "HTTP Error 403" in proc.stderr, proc.stderr
    assert site.hg("-R", str(site.repo_path("alice/demo")), "bookmarks", "-T", "{bookmark}").stdout == ""


def test_daemon_refuses_http_writes_without_the_site_hgrc(bare):
    """A repository enabling the extension in its own hgrc but not including the site's: refused.

    Its hooks would run with none of the site's settings (another database,
    the administrators' hooks missing), so the daemon refuses it like a
    repository without the extension.
    """
    site, daemon, tmp = bare
    wc = tmp / "noinclude-wc"
    site.hg("init", str(wc))
    commit(site.hg, wc, "e.txt", "e\n")
    proc = site.hg("push", f"http://alice:{PASSWORD}@127.0.0.1:{daemon.port}/alice/noinclude", cwd=wc,
                   check=False)
    assert proc.returncode != 0
    assert "HTTP Error 403: alice/noinclude does not run the hg-hosting extension" in proc.stderr, proc.stderr
    assert revcount(site, "alice/noinclude") == 0


def test_ssh_serve_refuses_without_the_extension(bare):
    """The forced command refuses the session with one line before ``hg serve`` runs."""
    site, _, tmp = bare
    fake = script(tmp, "forced-alice", FORCED.format(hg_hosting=HG_HOSTING, site=site.root, user="alice"))
    wc = tmp / "ssh-wc"
    site.hg("clone", "-q", str(site.repo_path("alice/demo")), str(wc))
    commit(site.hg, wc, "c.txt", "c\n")
    proc = site.hg("push", "--ssh", fake, "ssh://x/alice/demo", cwd=wc, check=False)
    assert proc.returncode != 0
    assert "alice/demo does not run the hg-hosting extension" in proc.stderr, proc.stderr
    assert revcount(site, "alice/demo") == 1


def test_daemon_ssh_server_refuses_without_the_extension(bare):
    """The daemon's own SSH server refuses the session with one ``error:`` line."""
    from test_ssh import SSH, make_key, start_daemon

    if SSH is None:
        pytest.skip("the OpenSSH client is not installed")
    site, _, tmp = bare
    key = make_key(tmp, "alice-key")
    site.cli("ssh-key", "add", "alice", f"{key}.pub")
    server = start_daemon(site, tmp / "ssh.log")
    try:
        ssh = [SSH, "-i", str(key), "-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
               "-o", "LogLevel=ERROR", "-p", str(server.port)]
        wc = tmp / "conch-wc"
        site.hg("clone", "-q", str(site.repo_path("alice/demo")), str(wc))
        commit(site.hg, wc, "d.txt", "d\n")
        proc = site.hg("push", "--ssh", shlex.join(ssh), "ssh://hg@127.0.0.1/alice/demo", cwd=wc, check=False)
        assert proc.returncode != 0
        assert "alice/demo does not run the hg-hosting extension" in proc.stderr, proc.stderr
        assert revcount(site, "alice/demo") == 1
    finally:
        server.stop()


def test_check_reports_and_repairs_a_publishing_mismatch(tmp_path):
    """The database and ``.hg/hgrc`` disagree on publishing: ``check`` says so, ``--repair`` follows the database.

    The hooks decide who may publish from the database's ``publishing``; Mercurial
    decides whether a push turns drafts public from ``[phases] publish``.  When the
    two disagree (a hand edit, a restored hgrc) a writer's drafts would be published
    without the ``publish`` right, or a publishing repository would keep drafts.
    """
    site = site_handle(tmp_path)
    site.cli("init")
    site.add_user("alice")
    site.cli("repo", "create", "alice/pub")
    site.cli("repo", "create", "--non-publishing", "alice/np")
    site.cli("repo", "create", "--non-publishing", "alice/fine")
    pub_hgrc = site.repo_path("alice/pub") / ".hg" / "hgrc"
    pub_hgrc.write_text(pub_hgrc.read_text() + "\n[phases]\npublish = False\n")
    np_hgrc = site.repo_path("alice/np") / ".hg" / "hgrc"
    np_hgrc.write_text(np_hgrc.read_text().replace("publish = False", "publish = True"))
    proc = site.cli("check", check=False)
    assert proc.returncode == 1, proc.stdout
    assert ("problem: alice/pub: the database says publishing but its .hg/hgrc makes it"
            " non-publishing") in proc.stdout, proc.stdout
    assert ("problem: alice/np: the database says non-publishing but its .hg/hgrc makes it"
            " publishing") in proc.stdout, proc.stdout
    assert "alice/fine" not in proc.stdout
    proc = site.cli("check", "--repair", check=False)
    assert proc.returncode == 0, proc.stdout
    assert "repaired: alice/pub: rewrote .hg/hgrc as publishing" in proc.stdout, proc.stdout
    assert "repaired: alice/np: rewrote .hg/hgrc as non-publishing" in proc.stdout, proc.stdout
    assert site.cli("check").stdout.startswith("ok")
    for name, publish in (("alice/pub", "True"), ("alice/np", "False")):
        out = site.hg("config", "phases.publish", cwd=site.repo_path(name), check=False).stdout.strip()
        assert out.lower() in ({"true", ""} if publish == "True" else {"false"}), (name, out)


def test_check_reports_repositories_without_the_extension(bare):
    """``check`` names every repository whose hg would not run the extension, and why."""
    site, _, _ = bare
    proc = site.cli("check", check=False)
    assert proc.returncode == 1
    assert "alice/demo: the hg-hosting extension is not enabled" in proc.stdout, proc.stdout
    assert "alice/noinclude: .hg/hgrc does not include the site hgrc" in proc.stdout, proc.stdout
    assert "alice/demo: .hg/hgrc" not in proc.stdout


# -- 2. remote-changegroup: no server-side fetch of a URL --------------------------------


def test_remote_changegroup_not_advertised(world):
    """Neither HTTP nor ``serve --stdio`` offers remote-changegroup among its bundle2 capabilities."""
    for url, extra in ((world.http(), ()), ("ssh://x/alice/demo", ("--config", f"ui.ssh={world.fakessh}"))):
        out = world.site.hg("debugcapabilities", *extra, url,
                            env={"FAKESSH_ROOT": str(world.site.root / "repos")}).stdout
        assert "changegroup" in out and "remote-changegroup" not in out, out


@pytest.mark.parametrize("transport", ["http", "ssh"])
def test_remote_changegroup_part_refused(world, transport):
    """A pushed remote-changegroup part naming a listening socket: refused, never connected to."""
    listener = Listener()
    try:
        target = f"http://127.0.0.1:{listener.port}/x.hg"
        if transport == "http":
            out = world.craft(world.http(), "remote-changegroup", target)
        else:
            out = world.craft("ssh://x/alice/demo", "remote-changegroup", target, world.fakessh)
        time.sleep(0.5)  # a connection attempt made at the end would show by now
        assert listener.connections == 0
    finally:
        listener.close()
    assert "remote-changegroup parts are not accepted by this server" in out, out


# -- 3. a committed push is answered as committed ------------------------------------------


@pytest.mark.parametrize("transport", ["http", "ssh"])
def test_bundle_without_replycaps_answered_as_committed(world, transport):
    """A bundle2 without replycaps that commits gets a bundle2 answer, not ``400 malformed request``."""
    wc = world.wc(f"noreply-{transport}")
    bundle = world.tmp / f"noreply-{transport}.hg"
    world.site.hg("bundle", "-q", "-t", "none-v2", "-a", str(bundle), cwd=wc)
    node = world.site.hg("log", "-r", "tip", "-T", "{node}", cwd=wc).stdout
    if transport == "http":
        out = world.craft(world.http(), "file", str(bundle))
    else:
        out = world.craft("ssh://x/alice/demo", "file", str(bundle), world.fakessh)
    assert "error" not in out and "abort" not in out, out
    assert out.splitlines()[-1] == "part output", out
    assert world.site.cli_json("pushlog", "alice/demo")[0]["changesets"] == [node]


# -- 4. large bodies only from an authenticated push -----------------------------------------


def headers_only(port: int, head: bytes, timeout: float = 30) -> bytes:
    """Send a request's headers and no body; return the whole answer the server gives to them."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    received = b""
    try:
        sock.sendall(head)
        with contextlib.suppress(ConnectionResetError, socket.timeout):
            while chunk := sock.recv(65536):
                received += chunk
                top, sep, body = received.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in top.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if sep and length and len(body) >= length[0]:
                    break
    finally:
        sock.close()
    return received


def basic(user: str, secret: str) -> bytes:
    import base64

    return b"Authorization: Basic " + base64.b64encode(f"{user}:{secret}".encode()) + b"\r\n"


BIG = 300 * 1024 * 1024


@pytest.mark.parametrize("target,auth,status", [
    (b"/-/login", b"", 413),
    (b"/-/login", "token", 413),
    (b"/api/v1/repos", "token", 413),
    (b"/alice/demo?cmd=unbundle", b"", 401),
    (b"/alice/demo?cmd=unbundle", "wrong-token", 401),
    (b"/alice/demo?cmd=unbundle", "wrong-password", 401),
], ids=["login-anonymous", "login-token", "api-token", "unbundle-anonymous", "unbundle-wrong-token",
        "unbundle-wrong-password"])
def test_large_body_refused_from_its_headers(world, target, auth, status):
    """A 300 MB body is answered from its headers alone unless it is an authenticated push.

    413 for anything but a push; a push without valid credentials is challenged
    (401), its password verified off the reactor; none of it is stored.
    """
    if auth == "token":
        auth = basic("alice", world.token)
    elif auth == "wrong-token":
        auth = basic("alice", "hgh_" + "0" * 43)
    elif auth == "wrong-password":
        auth = basic("alice", "not-her-password")
    head = (b"POST " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n" % BIG
            + b"Content-Type: application/mercurial-0.1\r\n" + auth + b"\r\n")
    answer = headers_only(world.daemon.port, head)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:300]
    if status == 413:
        assert answer.endswith(b"request body too large: the limit is 4 MB"
                               b" (only an authenticated push may send more)\n"), answer
    else:
        assert b"WWW-Authenticate: Basic" in answer


def test_large_body_refused_with_expect_continue(world):
    """A client that waits for ``100 Continue`` gets the refusal alone, never an invitation to send."""
    for target in (b"/-/login", b"/alice/demo?cmd=unbundle"):
        head = (b"POST " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n" % BIG
                + b"Expect: 100-continue\r\n\r\n")
        answer = headers_only(world.daemon.port, head)
        assert answer.startswith((b"HTTP/1.1 413 ", b"HTTP/1.1 401 ")), answer[:300]
        assert b"100 Continue" not in answer, answer


def test_authenticated_push_may_send_a_large_body(world):
    """A push of a 6 MB bundle (over the 4 MB cap of other bodies) lands, by password and by token."""
    challenged = world.daemon.log().count("answered 401 to a push from its headers")
    for name, secret in (("big-pw", PASSWORD), ("big-token", world.token)):
        wc = world.wc(name, size=6 * 1024 * 1024)
        world.site.hg("push", "-q", "-f", world.http(secret=secret), cwd=wc)
        node = world.site.hg("log", "-r", "tip", "-T", "{node}", cwd=wc).stdout
        assert world.site.cli_json("pushlog", "alice/demo")[0]["changesets"] == [node]
    # hg sent its first unbundle without credentials (reading a public repository needs
    # none): challenged from the headers, it retried with them, verified off the reactor
    assert world.daemon.log().count("answered 401 to a push from its headers") == challenged + 2
