"""SSH access with the stock OpenSSH client: the daemon's Conch server and the forced command.

Two front ends serve ``hg -R OWNER/NAME serve --stdio`` and nothing else:

* the daemon's SSH server (``daemon/ssh.py``), run here as an administrator
  runs it, ``hg-hosting serve --ssh 127.0.0.1:0`` (the console script in a
  subprocess; the bound port is read from its ``serving SSH on`` log line);
  the real ``ssh`` client connects with keys made by ``ssh-keygen`` and
  registered with ``hg-hosting ssh-key add``.  The session-limit test runs
  ``tests/ssh_server_runner.py`` instead, the one way to set a limit of 1;
* ``hg-hosting ssh-serve USER``, the OpenSSH forced command, run the way sshd
  would run it: a fake ``ssh`` given to ``hg --ssh`` runs the ``command="..."``
  of the user's ``hg-hosting ssh-authorized-keys`` line with ``sh -c`` and
  ``SSH_ORIGINAL_COMMAND`` set, the client on the other end of the pipe.

Refusals must exit non-zero with one ``error: ...`` line on stderr.  The tests
of the pure command filter (:mod:`hgext_hosting.sshcommand`) come first.  When
OpenSSH's own sshd is installed (``openssh-server``, with ``/run/sshd``), one
more test runs it on a pipe (``ProxyCommand="sshd -i"``: no port) with the
generated ``authorized_keys``; it is skipped otherwise.

One site and one SSH server are shared by the module (module-scoped fixtures):
users alice (owner of the public ``alice/demo`` and the private
``alice/secret``), bob (``write`` on ``alice/demo``) and carol (no grant).
"""

from __future__ import annotations

import base64
import contextlib
import doctest
import getpass
import hashlib
import os
import re
import selectors
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import DATE, HG, HG_HOSTING, SiteHandle, run, site_handle

from hgext_hosting import sshcommand
from hgext_hosting.errors import UserError

SSH = shutil.which("ssh")
SSH_KEYGEN = shutil.which("ssh-keygen")
RUNNER = Path(__file__).resolve().parent / "ssh_server_runner.py"
USERS = ("alice", "bob", "carol")

needs_ssh = pytest.mark.skipif(SSH is None or SSH_KEYGEN is None,
                               reason="the OpenSSH client (ssh, ssh-keygen) is not installed")


# -- the command filter, pure -------------------------------------------------------

ACCEPTED = {
    "hg -R alice/demo serve --stdio": ("alice", "demo"),
    "hg -R /alice/demo serve --stdio": ("alice", "demo"),  # ssh://host//alice/demo
    "hg -R alice/demo/ serve --stdio": ("alice", "demo"),  # ssh://host/alice/demo/
    "hg -R /alice/demo/ serve --stdio": ("alice", "demo"),
    "hg -R 'alice/demo' serve --stdio": ("alice", "demo"),  # the client's _serverquote
    "hg  -R  Alice/My.Repo_1-x  serve  --stdio": ("Alice", "My.Repo_1-x"),
    b"hg -R alice/demo serve --stdio": ("alice", "demo"),
    # a leading slash is relative to the site: this names the repository etc/passwd
    "hg -R /etc/passwd serve --stdio": ("etc", "passwd"),
}

REFUSED = {
    None: "interactive shells are not available",
    "": "interactive shells are not available",
    "   ": "interactive shells are not available",
    "ls": "unsupported command 'ls'",
    "sh -c 'hg -R alice/demo serve --stdio'": "unsupported command 'sh'",
    "/usr/bin/hg -R alice/demo serve --stdio": "unsupported command '/usr/bin/hg'",
    "hg": "unsupported hg command",
    "hg -R alice/demo serve --stdio --debugger": "unsupported hg command",
    "hg -R alice/demo serve --stdio --config ui.debugger=1": "unsupported hg command",
    "hg --config ui.x=y -R alice/demo serve --stdio": "unsupported hg command",
    "hg -R --debugger serve --stdio": "invalid repository path '--debugger'",
    "hg -R alice/demo serve": "unsupported hg command",
    "hg -R alice/demo log": "unsupported hg command",
    "hg -Ralice/demo serve --stdio": "unsupported hg command",
    "hg --repository alice/demo serve --stdio": "unsupported hg command",
    "hg -R alice/demo serve --stdio; rm -rf /": "unsupported hg command",
    "hg -R alice/demo serve --stdio --hidden": "access to hidden changesets (--hidden) is not supported",
    "hg init alice/new": "creating repositories over SSH is not supported",
    "hg -R ../alice/demo serve --stdio": "invalid repository path '../alice/demo'",
    "hg -R alice/../../etc serve --stdio": "invalid repository path",
    "hg -R ../../etc/passwd serve --stdio": "invalid repository path",
    "hg -R alice/.. serve --stdio": "invalid repository path",
    "hg -R /srv/site/repos/alice/demo serve --stdio": "invalid repository path",
    "hg -R //alice/demo serve --stdio": "invalid repository path",
    "hg -R alice//demo serve --stdio": "invalid repository path",
    "hg -R alice serve --stdio": "invalid repository path 'alice'",
    "hg -R alice/demo.hg serve --stdio": "invalid repository path",
    "hg -R alice/.hg serve --stdio": "invalid repository path",
    "hg -R '' serve --stdio": "invalid repository path ''",
    "hg -R 'alice/demo serve --stdio": "cannot parse the command",
    "hg -R alice/demo\0 serve --stdio": "NUL",
    b"hg -R \xff/demo serve --stdio": "not valid UTF-8",
    "hg -R " + "a" * 5000 + " serve --stdio": "too long",
}


@pytest.mark.parametrize("command", list(ACCEPTED), ids=repr)
def test_filter_accepts_what_the_client_sends(command):
    """The command Mercurial's client sends, in each path form it produces, gives OWNER and NAME."""
    assert sshcommand.parse_command(command) == ACCEPTED[command]


@pytest.mark.parametrize("command", list(REFUSED), ids=lambda c: repr(c)[:60])
def test_filter_refuses_everything_else(command):
    """Anything but exactly ``hg -R OWNER/NAME serve --stdio`` is refused with a one-line reason."""
    with pytest.raises(UserError) as info:
        sshcommand.parse_command(command)
    message = str(info.value)
    assert REFUSED[command] in message
    assert "\n" not in message and len(message) < 200


def test_filter_docstring_examples():
    """The examples in the module's docstring are true."""
    assert doctest.testmod(sshcommand, optionflags=doctest.ELLIPSIS).failed == 0


def test_authorized_keys_line_quoting():
    """A forced command survives sshd's option quoting: only ``\\"`` is an escape, and sh -c."""
    argv = ["/opt/hg hosting/bin/hg-hosting", "--site", '/srv/a "quoted" site', "ssh-serve", "alice"]
    line = sshcommand.authorized_keys_line(argv, "ssh-ed25519", "AAAAblob", "alice@laptop x")
    options, rest = parse_authorized_keys_line(line)
    assert shlex.split(options["command"]) == argv
    assert rest == ["ssh-ed25519", "AAAAblob", "alice@laptop x"]
    assert "restrict" in options
    with pytest.raises(UserError):
        sshcommand.authorized_keys_line(["/x\n/hg-hosting"], "ssh-ed25519", "AAAA")


def test_session_environment_names_only_the_given_user():
    """Whatever the inherited environment says, the session's user is the one passed in."""
    env = sshcommand.session_environ({"HG_HOSTING_USER": "mallory", "HGRCPATH": "/evil", "PATH": "/bin",
                                      "HOME": "/home/hg"}, "alice")
    assert env["HG_HOSTING_USER"] == "alice" and "HGRCPATH" not in env
    assert env["PATH"] == "/bin" and env["HOME"] == "/home/hg" and env["HGENCODING"] == "UTF-8"


# -- helpers -------------------------------------------------------------------------


def parse_authorized_keys_line(line: str) -> tuple[dict[str, str], list[str]]:
    """Split an ``authorized_keys`` line as sshd does: options, then type, blob, comment."""
    match = re.fullmatch(r'((?:[a-z-]+(?:="(?:[^"\\]|\\.)*")?,)*[a-z-]+(?:="(?:[^"\\]|\\.)*")?) (.*)', line)
    assert match, line
    options: dict[str, str] = {}
    for opt in re.findall(r'[a-z-]+(?:="(?:[^"\\]|\\.)*")?', match.group(1)):
        name, _, value = opt.partition("=")
        options[name] = value[1:-1].replace('\\"', '"') if value else ""
    return options, match.group(2).split(" ", 2)


def wait_for(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def child_pids(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux /proc)."""
    pids: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            pids += [int(p) for p in children.read_text().split()]
        except OSError:
            pass
    return pids


@dataclass
class Daemon:
    """An SSH server subprocess (``hg-hosting serve --ssh`` or ``ssh_server_runner.py``) and its bound port."""

    proc: subprocess.Popen
    port: int
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serve_ssh(site: SiteHandle, log: Path) -> Daemon:
    """``hg-hosting serve --ssh 127.0.0.1:0``, the real CLI; wait for the line naming its port."""
    with open(log, "w") as out:
        proc = subprocess.Popen([HG_HOSTING, "--site", str(site.root), "serve", "--ssh", "127.0.0.1:0"],
                                env=site.env, stdout=out, stderr=subprocess.STDOUT)
    pattern = re.compile(r"serving SSH on ssh://127\.0\.0\.1:(\d+)/")
    deadline = time.monotonic() + 60
    while not (match := pattern.search(log.read_text())):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"hg-hosting serve --ssh did not start (exit {proc.wait()}):\n{log.read_text()}")
        time.sleep(0.05)
    return Daemon(proc, int(match.group(1)), log)


def start_daemon(site: SiteHandle, log: Path, *extra: str) -> Daemon:
    """Start the runner (for its ``--max-sessions``); wait for the port line it prints once it listens."""
    proc = subprocess.Popen([sys.executable, str(RUNNER), str(site.root), "--log", str(log), *extra],
                            env=site.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=60)
    line = proc.stdout.readline().strip() if ready else ""
    if not line.isdigit():
        proc.kill()
        raise AssertionError(f"the SSH server did not start: {line!r}\n{log.read_text() if log.exists() else ''}")
    return Daemon(proc, int(line), log)


@dataclass
class World:
    """The shared site, its users' key pairs and the SSH server."""

    site: SiteHandle
    tmp: Path
    keys: dict[str, Path]  # name -> private key file
    daemon: Daemon
    forced: dict[str, str] = field(default_factory=dict)  # user -> fake ssh (forced command)

    @property
    def seed(self) -> Path:
        return self.tmp / "seed"

    def ssh_argv(self, key: str, *options: str, port: int | None = None) -> list[str]:
        return [SSH, "-i", str(self.keys[key]), "-F", "/dev/null",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=20", *options, "-p", str(port or self.daemon.port)]

    def ssh(self, key: str, *command: str, options: tuple[str, ...] = (), port: int | None = None,
            input: str | None = "") -> subprocess.CompletedProcess:
        """Run ``ssh hg@127.0.0.1 COMMAND`` (no COMMAND: a shell request); never raises."""
        argv = [*self.ssh_argv(key, *options, port=port), "hg@127.0.0.1", *command]
        return subprocess.run(argv, env=self.site.env, input=input, capture_output=True, text=True,
                              timeout=60)

    def url(self, full: str) -> str:
        return f"ssh://hg@127.0.0.1:{self.daemon.port}/{full}"

    def hg(self, key: str, *args: str, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``hg ARGS`` with ``--ssh`` set to the real ssh client and ``key``; never raises."""
        return run([HG, *args, "--ssh", shlex.join(self.ssh_argv(key))], {**self.site.env, **(env or {})},
                   cwd=cwd, check=False)


def assert_refused(proc: subprocess.CompletedProcess, needle: str) -> str:
    """Exited non-zero with one ``error:`` line on stderr holding ``needle``; return that line."""
    assert proc.returncode != 0, f"accepted: {proc.stdout}{proc.stderr}"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0], lines[0]
    return lines[0]


def make_key(directory: Path, name: str) -> Path:
    path = directory / name
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@example.org",
                    "-f", str(path)], check=True, capture_output=True, timeout=60)
    return path


def commit_file(world: World, wc: Path, name: str) -> str:
    """Add a file and commit it in ``wc`` (fixed date); return the new node."""
    (wc / name).write_text(f"{name}\n")
    out = run([HG, "commit", "--debug", "-A", "-d", DATE, "-m", f"add {name}"], world.site.env, cwd=wc).stdout
    match = re.search(r"committed changeset \d+:([0-9a-f]{40})", out)
    assert match, out
    return match.group(1)


def repo_log(world: World, full: str) -> list[str]:
    """Every changeset of a site repository with its phase and bookmarks, hidden ones too."""
    return run([HG, "log", "-R", str(world.site.repo_path(full)), "--hidden", "-T", "{node} {phase} {bookmarks}\n"],
               world.site.env).stdout.splitlines()


def push_count(world: World) -> int:
    """How many push records the site holds (read-only look into the database)."""
    with contextlib.closing(sqlite3.connect(f"file:{world.site.root / 'hosting.db'}?mode=ro", uri=True)) as db:
        return db.execute("SELECT count(*) FROM push").fetchone()[0]


#: The site, made through the library in one process (the CLI has its own tests).
SETUP = """
import sys
from hgext_hosting.service import accounts, repos
from hgext_hosting.service.actors import Actor
from hgext_hosting.site import Site

root, keys = sys.argv[1], sys.argv[2]
site = Site(root)
site.init()
console = Actor.of_console()
for user in ("alice", "bob", "carol"):
    accounts.add_user(console, user, email=user + "@example.org")
    accounts.add_ssh_key(console, user, open(keys + "/" + user + ".pub").read())
accounts.add_ssh_key(console, "alice", open(keys + "/alice2.pub").read())
repos.create(site, console, "alice/demo", description="public")
repos.create(site, console, "alice/secret", private=True)
repos.grant(console, "alice/demo", "bob", "write")
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    if SSH is None or SSH_KEYGEN is None:
        pytest.skip("the OpenSSH client (ssh, ssh-keygen) is not installed")
    tmp = tmp_path_factory.mktemp("ssh")
    site = site_handle(tmp)
    key_dir = tmp / "keys"
    key_dir.mkdir()
    keys = {name: make_key(key_dir, name) for name in (*USERS, "alice2", "stranger")}
    run([sys.executable, "-c", SETUP, str(site.root), str(key_dir)], site.env)
    daemon = serve_ssh(site, tmp / "daemon.log")
    try:
        world = World(site, tmp, keys, daemon)
        # a client repository with one changeset nobody pushes: for pushes that must be refused
        run([HG, "init", str(world.seed)], site.env)
        commit_file(world, world.seed, "seed")
        yield world
    finally:
        daemon.stop()
    log = daemon.log.read_text()
    assert daemon.proc.returncode == 0 and "Traceback" not in log, log[-3000:]


# -- the daemon's SSH server -----------------------------------------------------------


@needs_ssh
def test_clone_push_pull_through_the_daemon(world):
    """bob clones and pushes; the record names bob, not what his client claims; alice pulls it."""
    wc = world.tmp / "bob-wc"
    assert world.hg("bob", "clone", "-q", world.url("alice/demo"), str(wc)).returncode == 0
    alice_wc = world.tmp / "alice-wc"
    shutil.copytree(wc, alice_wc)  # what alice had cloned
    node = commit_file(world, wc, "from-bob")
    # bob's client claims to be alice, in its environment and by an SSH env request
    setenv = shlex.join(world.ssh_argv("bob", "-o", "SetEnv=HG_HOSTING_USER=alice HGRCPATH=/dev/null"))
    proc = run([HG, "push", "--ssh", setenv, world.url("alice/demo")],
               {**world.site.env, "HG_HOSTING_USER": "alice"}, cwd=wc, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = world.site.cli_json("pushlog", "alice/demo")[0]
    assert record["user"] == "bob" and record["changesets"] == [node]

    # alice pulls by the ssh://host//OWNER/NAME/ form (the path arrives as /alice/demo/)
    url = f"ssh://hg@127.0.0.1:{world.daemon.port}//alice/demo/"
    proc = world.hg("alice", "pull", url, cwd=alice_wc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # alice's copy is empty, so hg pulls by streaming the store (the site prefers it)
    pulled = world.site.hg("log", "-T", "{node}\n", cwd=alice_wc).stdout.split()
    assert pulled == [node], proc.stdout


@needs_ssh
def test_unregistered_key_is_refused(world):
    """A key nobody registered cannot log in."""
    proc = world.ssh("stranger", "hg -R alice/demo serve --stdio")
    assert proc.returncode == 255
    assert "Permission denied (publickey)" in proc.stderr


@needs_ssh
def test_user_without_write_cannot_push(world):
    """carol may read the public repository, but her push is refused with the reason, before
    upload, and neither the repository nor the push records change."""
    before = (push_count(world), repo_log(world, "alice/demo"))
    proc = world.hg("carol", "push", "-f", world.url("alice/demo"), cwd=world.seed)
    assert proc.returncode != 0
    assert "carol may not write to alice/demo" in proc.stdout + proc.stderr
    assert "adding changesets" not in proc.stdout + proc.stderr
    assert (push_count(world), repo_log(world, "alice/demo")) == before


@needs_ssh
def test_private_repository_looks_missing(world):
    """Without read, a private repository gets exactly the answer of a nonexistent one."""
    secret = world.ssh("carol", "hg -R alice/secret serve --stdio")
    missing = world.ssh("carol", "hg -R alice/nothere serve --stdio")
    assert assert_refused(secret, "no repository") == "error: no repository alice/secret"
    assert assert_refused(missing, "no repository") == "error: no repository alice/nothere"
    assert secret.returncode == missing.returncode == 1
    # through the hg client, the message reaches the user
    proc = world.hg("carol", "clone", world.url("alice/secret"), str(world.tmp / "no-clone"))
    assert proc.returncode != 0 and "remote: error: no repository alice/secret" in proc.stderr
    # the owner reads it (stdin at EOF: hg serve --stdio exits 0 at once)
    assert world.ssh("alice", "hg -R alice/secret serve --stdio").returncode == 0


@needs_ssh
@pytest.mark.parametrize("command, needle", [
    ((), "interactive shells are not available"),
    (("ls",), "unsupported command 'ls'"),
    (("ls", "/"), "unsupported command 'ls'"),
    (("hg -R alice/demo serve --stdio --debugger",), "unsupported hg command"),
    (("hg -R alice/demo serve --stdio --hidden",), "--hidden"),
    (("hg -R ../../etc serve --stdio",), "invalid repository path '../../etc'"),
    (("hg -R alice/../../../etc serve --stdio",), "invalid repository path"),
    (("hg -R /etc/passwd serve --stdio",), "no repository etc/passwd"),  # site-relative
    (("hg init alice/new",), "creating repositories over SSH is not supported"),
], ids=["shell", "ls", "ls-root", "debugger", "hidden", "dotdot", "dotdot-inside", "absolute", "init"])
def test_other_commands_are_refused(world, command, needle):
    """Shells, other commands, extra options and paths outside the site: one error line, exit 1."""
    proc = world.ssh("alice", *command)
    assert proc.returncode == 1
    assert_refused(proc, needle)


@needs_ssh
def test_pty_requests_are_refused(world):
    """A terminal is refused (OpenSSH gives up when ``-tt`` cannot have one)."""
    proc = world.ssh("alice", options=("-tt",))
    assert proc.returncode != 0
    assert "PTY allocation request failed" in proc.stderr


@needs_ssh
def test_removed_key_stops_working_at_once(world):
    """alice's second key works until ``ssh-key remove``, and fails from the very next connection."""
    assert world.ssh("alice2", "hg -R alice/demo serve --stdio").returncode == 0
    fingerprint = run([SSH_KEYGEN, "-E", "sha256", "-lf", f"{world.keys['alice2']}.pub"],
                      world.site.env).stdout.split()[1]
    world.site.cli("ssh-key", "remove", "alice", fingerprint)
    proc = world.ssh("alice2", "hg -R alice/demo serve --stdio")
    assert proc.returncode == 255 and "Permission denied (publickey)" in proc.stderr
    assert world.ssh("alice", "hg -R alice/demo serve --stdio").returncode == 0  # her other key


@needs_ssh
def test_host_key_is_the_sites(world):
    """The server presents the ed25519 host key kept in the site directory."""
    scan = subprocess.run([shutil.which("ssh-keyscan") or "ssh-keyscan", "-t", "ed25519", "-p",
                           str(world.daemon.port), "127.0.0.1"], capture_output=True, text=True, timeout=60)
    offered = scan.stdout.split()[1:3]
    kept = run([SSH_KEYGEN, "-y", "-f", str(world.site.root / "ssh_host_ed25519_key")],
               world.site.env).stdout.split()[:2]
    assert offered == kept and kept[0] == "ssh-ed25519"


@needs_ssh
def test_client_disconnect_ends_the_hg_child(world):
    """When the client goes away mid-session, the server's hg child is terminated."""
    server = world.daemon.proc.pid
    before = set(child_pids(server))
    client = subprocess.Popen([*world.ssh_argv("alice"), "hg@127.0.0.1", "hg -R alice/demo serve --stdio"],
                              env=world.site.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(b"hello\n")
        client.stdin.flush()
        assert client.stdout.readline().strip().isdigit()  # hg answered: the child runs
        started = set(child_pids(server)) - before
        assert started, "no hg child was seen"
    finally:
        client.kill()
        client.wait()
    wait_for(lambda: not (set(child_pids(server)) & started), what="the hg child to exit")


def hold_session(world: World, key: str, port: int) -> subprocess.Popen:
    """An ``hg serve --stdio`` session kept open (its stdin is ours) once hg has answered."""
    proc = subprocess.Popen([*world.ssh_argv(key, port=port), "hg@127.0.0.1", "hg -R alice/demo serve --stdio"],
                            env=world.site.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"hello\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip().isdigit(), proc.stderr.read() if proc.stderr else ""
    return proc


@needs_ssh
def test_sessions_are_bounded_and_drained_on_stop(world):
    """Past the session limit a session is refused; on SIGTERM the server stops listening and
    exits once the running session ended."""
    daemon = start_daemon(world.site, world.tmp / "limited.log", "--max-sessions", "1")
    holders: list[subprocess.Popen] = []
    try:
        holders.append(hold_session(world, "alice", daemon.port))
        assert_refused(world.ssh("bob", "hg -R alice/demo serve --stdio", port=daemon.port), "too many sessions")
        holders[0].stdin.close()  # EOF: hg serve exits, the slot is free again
        assert holders[0].wait(timeout=30) == 0
        wait_for(lambda: world.ssh("bob", "hg -R alice/demo serve --stdio", port=daemon.port).returncode == 0,
                 what="a free session slot")

        holders.append(hold_session(world, "bob", daemon.port))
        daemon.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "Connection refused" in world.ssh("alice", "x", port=daemon.port).stderr,
                 what="the server to stop listening")
        assert daemon.proc.poll() is None, "the server exited with a session running"
        holders[1].stdin.close()
        assert holders[1].wait(timeout=30) == 0
        assert daemon.proc.wait(timeout=30) == 0
    finally:
        for holder in holders:
            if holder.poll() is None:
                holder.kill()
        daemon.stop()


# -- the OpenSSH forced command: ssh-serve and ssh-authorized-keys -----------------------

FAKE_SSHD = """\
#!/bin/sh
# Stands in for ssh + sshd: drop ssh's options and host, then do what sshd does for a
# key whose authorized_keys line says command="...": run it with sh -c, the client's
# command in SSH_ORIGINAL_COMMAND.
while [ $# -gt 1 ]; do case "$1" in -*) shift;; *) shift; break;; esac; done
SSH_ORIGINAL_COMMAND="$*" SSH_CLIENT="127.0.0.1 50000 22"
export SSH_ORIGINAL_COMMAND SSH_CLIENT
exec sh -c {command}
"""


def authorized_keys(world: World) -> tuple[str, dict[str, tuple[dict[str, str], list[str]]]]:
    """``hg-hosting ssh-authorized-keys``: its output, and each line parsed by key comment."""
    out = world.site.cli("ssh-authorized-keys", "hg").stdout
    parsed = [parse_authorized_keys_line(line) for line in out.splitlines()]
    return out, {fields[2]: (options, fields) for options, fields in parsed}


def forced_ssh(world: World, user: str) -> str:
    """A fake ssh running the forced command of ``user``'s authorized_keys line."""
    if not world.forced:
        _, lines = authorized_keys(world)
        for u in USERS:
            options, _ = lines[f"{u}@example.org"]
            path = world.tmp / f"fake-sshd-{u}"
            path.write_text(FAKE_SSHD.format(command=shlex.quote(options["command"])))
            path.chmod(0o755)
            world.forced[u] = str(path)
    return world.forced[user]


def forced(world: World, user: str, command: str | None) -> subprocess.Popen:
    """Start ``ssh-serve USER`` as sshd would, with SSH_ORIGINAL_COMMAND (None: unset)."""
    env = {k: v for k, v in world.site.env.items() if k != "SSH_ORIGINAL_COMMAND"}
    if command is not None:
        env["SSH_ORIGINAL_COMMAND"] = command
    return subprocess.Popen([HG_HOSTING, "--site", str(world.site.root), "ssh-serve", user], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@needs_ssh
def test_authorized_keys_lines(world):
    """One line per registered key, forcing ``ssh-serve USER`` with restrict; ssh-keygen reads them."""
    out, lines = authorized_keys(world)
    with contextlib.closing(sqlite3.connect(f"file:{world.site.root / 'hosting.db'}?mode=ro", uri=True)) as db:
        registered = {row[0] for row in db.execute("SELECT fingerprint FROM ssh_key")}
    assert len(out.splitlines()) == len(lines) == len(registered)
    for user in USERS:
        options, (key_type, blob, comment) = lines[f"{user}@example.org"]
        assert set(options) == {"command", "restrict"}
        assert shlex.split(options["command"]) == [HG_HOSTING, "--site", str(world.site.root), "ssh-serve", user]
        assert f"{key_type} {blob}" == " ".join(Path(f"{world.keys[user]}.pub").read_text().split()[:2])
        digest = hashlib.sha256(base64.b64decode(blob)).digest()
        assert "SHA256:" + base64.b64encode(digest).decode().rstrip("=") in registered
    # OpenSSH's own parser reads the output as an authorized_keys file, options included
    ak = world.tmp / "authorized_keys"
    ak.write_text(out)
    listed = run([SSH_KEYGEN, "-E", "sha256", "-lf", str(ak)], world.site.env).stdout.splitlines()
    assert {line.split()[1] for line in listed} == registered


@needs_ssh
def test_forced_command_clone_push_pull(world):
    """Through ssh-serve, bob clones and pushes (recorded as bob, not as his client claims); alice pulls."""
    wc = world.tmp / "forced-bob"
    proc = run([HG, "clone", "-q", "--ssh", forced_ssh(world, "bob"), "ssh://hg@x/alice/demo", str(wc)],
               world.site.env, check=False)
    assert proc.returncode == 0, proc.stderr
    alice_wc = world.tmp / "forced-alice"
    shutil.copytree(wc, alice_wc)  # what alice had cloned
    node = commit_file(world, wc, "forced-bob")
    proc = run([HG, "push", "--ssh", forced_ssh(world, "bob"), "ssh://hg@x/alice/demo"],
               {**world.site.env, "HG_HOSTING_USER": "alice"}, cwd=wc, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = world.site.cli_json("pushlog", "alice/demo")[0]
    assert record["user"] == "bob" and record["changesets"] == [node]
    proc = run([HG, "pull", "--ssh", forced_ssh(world, "alice"), "ssh://x//alice/demo/"], world.site.env,
               cwd=alice_wc, check=False)
    assert proc.returncode == 0 and "added 1 changesets" in proc.stdout, proc.stdout + proc.stderr


@needs_ssh
def test_forced_command_without_write_cannot_push(world):
    """carol's push through ssh-serve is refused with the reason, and neither the repository nor the push records change."""
    before = (push_count(world), repo_log(world, "alice/demo"))
    proc = run([HG, "push", "-f", "--ssh", forced_ssh(world, "carol"), "ssh://x/alice/demo"], world.site.env,
               cwd=world.seed, check=False)
    assert proc.returncode != 0 and "carol may not write to alice/demo" in proc.stdout + proc.stderr
    assert (push_count(world), repo_log(world, "alice/demo")) == before


@needs_ssh
def test_forced_command_refusals(world):
    """ssh-serve refuses what the daemon refuses, with the same one-line messages and exit 1."""
    cases = {
        ("alice", None): "interactive shells are not available",
        ("alice", "ls"): "unsupported command 'ls'",
        ("alice", "hg -R alice/demo serve --stdio --debugger"): "unsupported hg command",
        ("alice", "hg -R ../../etc serve --stdio"): "invalid repository path '../../etc'",
        ("alice", "hg init alice/new"): "creating repositories over SSH is not supported",
        ("carol", "hg -R alice/secret serve --stdio"): "no repository alice/secret",
        ("carol", "hg -R alice/nothere serve --stdio"): "no repository alice/nothere",
        ("nobody", "hg -R alice/demo serve --stdio"): "unknown user 'nobody'",
    }
    procs = {case: forced(world, *case) for case in cases}
    accepted = forced(world, "alice", "hg -R alice/secret serve --stdio")  # stdin at EOF: exits 0
    for case, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and out == "", (case, out, err)
        assert_refused(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), cases[case])
    assert accepted.wait(timeout=60) == 0
    # word for word what the daemon answers
    daemon = world.ssh("carol", "hg -R alice/secret serve --stdio")
    assert daemon.stderr.strip() == "error: no repository alice/secret"


SSHD = "/usr/sbin/sshd"

SSHD_CONFIG = """\
HostKey {host_key}
AuthorizedKeysFile {authorized_keys}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
PidFile none
LogLevel VERBOSE
"""


@needs_ssh
@pytest.mark.skipif(not (os.path.exists(SSHD) and os.path.isdir("/run/sshd")),
                    reason="OpenSSH's sshd (openssh-server, with /run/sshd) is not installed")
def test_real_sshd_runs_the_authorized_keys_lines(world):
    """The real sshd accepts the lines (command=, restrict) and serves clone and push through them."""
    d = world.tmp / "sshd"
    d.mkdir()
    run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host")], world.site.env)
    out, _ = authorized_keys(world)
    (d / "authorized_keys").write_text(out)
    (d / "config").write_text(SSHD_CONFIG.format(host_key=d / "host", authorized_keys=d / "authorized_keys"))
    proxy = f"ProxyCommand={SSHD} -i -f {d / 'config'} -E {d / 'log'}"  # sshd on a pipe: no port
    ssh = [*world.ssh_argv("bob", "-o", proxy)]
    login = f"{getpass.getuser()}@sshd"
    refused = subprocess.run([*ssh, login, "ls"], env=world.site.env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "error: unsupported command 'ls'" in refused.stderr, refused.stderr
    wc = world.tmp / "sshd-bob"
    hg_ssh = ["--ssh", shlex.join(ssh)]
    proc = run([HG, "clone", "-q", *hg_ssh, f"ssh://{login}/alice/demo", str(wc)], world.site.env, check=False)
    assert proc.returncode == 0, proc.stderr + (d / "log").read_text()
    node = commit_file(world, wc, "via-sshd")
    proc = run([HG, "push", *hg_ssh, f"ssh://{login}/alice/demo"], world.site.env, cwd=wc, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = world.site.cli_json("pushlog", "alice/demo")[0]
    assert record["user"] == "bob" and record["changesets"] == [node]


def test_forced_command_is_in_the_cli_help(env, tmp_path):
    """Both commands are listed by ``hg-hosting --help``."""
    out = run([HG_HOSTING, "--site", str(tmp_path / "s"), "--help"], env).stdout
    assert "ssh-serve" in out and "ssh-authorized-keys" in out
