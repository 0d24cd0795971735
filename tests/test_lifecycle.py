"""The daemon's lifecycle and connection limits: start, stop, and what one client may hold.

Everything runs the real ``hg-hosting serve`` (its own process, its log in a
file), the real ``hg`` client over HTTP and over SSH (the OpenSSH client), and
raw sockets for the misbehaving clients:

- a signal drains: ``/healthz`` answers 503 at once, the listening sockets keep
  answering until the requests in flight are done and none came for about
  2 s, then the daemon exits 0; a push in flight (HTTP, ``--workers``, SSH)
  ends with ``hg push`` exiting 0 and one push record; a second signal stops
  at once;
- ``serve`` that cannot listen (HTTP, SSH, workers) prints one ``error:`` line
  and exits non-zero within seconds;
- ``serve --ssh`` alone serves SSH only; the log names the URLs served, the
  site and the worker count;
- SSH: the pre-authentication phase has a deadline, connections per address a
  cap; HTTP: the request line and headers have a deadline (a slow body does
  not), connections per address a cap, and the open-file limit is raised;
- workers never import from the directory ``serve`` was started in.

A push that must be *in flight* when the signal arrives is held by a
``pretxnchangegroup`` shell hook of the target repository: the hook creates
``gate-in`` and waits for ``gate-open``, so the test sends its signal while the
server applies the 2,000 changesets, with no timing guess.

One site (module-scoped): alice (password, SSH key); each test makes its own
repositories.  Per-daemon settings go in an extra hgrc named by ``HGRCPATH``
in that daemon's environment.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import HG, HG_HOSTING, SiteHandle, run, site_handle

SSH = shutil.which("ssh")
SSH_KEYGEN = shutil.which("ssh-keygen")
PASSWORD = "alice-pw"
CHANGESETS = 2000

HTTP_LINE = re.compile(r"serving HTTP on http://([\d.]+):(\d+)/")
SSH_LINE = re.compile(r"serving SSH on ssh://([\d.]+):(\d+)/")

needs_ssh = pytest.mark.skipif(SSH is None or SSH_KEYGEN is None, reason="the OpenSSH client is not installed")


# -- the daemon ----------------------------------------------------------------------------


class Served:
    """``hg-hosting serve ARGS`` in its own process, its log (stdout and stderr) in a file.

    ``wait_ready`` waits for the lines naming the ports (and, with ``--workers N``,
    for N + 1 "serving HTTP" lines: the master's and every worker's).
    """

    def __init__(self, world: World, *args: str, settings: str = "", cwd: Path | None = None,
                 preexec_fn=None, name: str = "daemon"):
        self.world = world
        self.args = args
        self.log_path = world.tmp / f"{name}-{time.monotonic_ns()}.log"
        env = dict(world.site.env)
        if settings:
            extra = self.log_path.with_suffix(".hgrc")
            extra.write_text(settings)
            env["HGRCPATH"] = os.pathsep.join([env["HGRCPATH"], str(extra)])
        with open(self.log_path, "w") as out:
            self.proc = subprocess.Popen([HG_HOSTING, "--site", str(world.site.root), "serve", *args],
                                         env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                         preexec_fn=preexec_fn)
        self.http_port: int | None = None
        self.ssh_port: int | None = None

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 60) -> Served:
        workers = int(self.args[self.args.index("--workers") + 1]) if "--workers" in self.args else 1
        http_lines = workers + 1 if workers > 1 else 1
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            http = HTTP_LINE.findall(text)
            ssh = SSH_LINE.findall(text)
            if ((len(http) >= http_lines or "--ssh" in self.args and "--http" not in self.args)
                    and (ssh or "--ssh" not in self.args)):
                break
            if self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited {self.proc.returncode}:\n{text}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"the daemon did not start:\n{text}")
            time.sleep(0.05)
        self.http_port = int(http[0][1]) if http else None
        self.ssh_port = int(ssh[0][1]) if ssh else None
        return self

    def signal(self, number: int = signal.SIGTERM) -> None:
        self.proc.send_signal(number)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.signal()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def url(self, full: str) -> str:
        return f"http://alice:{PASSWORD}@127.0.0.1:{self.http_port}/{full}"

    def ssh_url(self, full: str) -> str:
        return f"ssh://hg@127.0.0.1:{self.ssh_port}/{full}"


@contextlib.contextmanager
def serving(world: World, *args: str, **kwargs) -> Iterator[Served]:
    daemon = Served(world, *args, **kwargs).wait_ready()
    try:
        yield daemon
    finally:
        daemon.stop()
        assert "Traceback" not in daemon.log(), daemon.log()[-3000:]


def health(port: int, source: str = "127.0.0.1") -> int:
    """The status of ``GET /healthz`` on a new connection (ConnectionRefusedError if none)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def wait_for(predicate, timeout: float = 30, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Does the peer close ``sock`` within ``seconds``?  (Whatever it sends first is read and dropped.)"""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True


def listening_ports(pid: int) -> set[int]:
    """The TCP ports the process ``pid`` listens on (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


# -- the site --------------------------------------------------------------------------------


@dataclass
class World:
    site: SiteHandle
    tmp: Path
    key: Path | None
    source: Path  # a client repository of CHANGESETS linear changesets

    def ssh_command(self, *options: str) -> str:
        assert self.key is not None
        return shlex.join([SSH, "-i", str(self.key), "-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
                           "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", *options])

    def hg(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return run([HG, *args], self.site.env, cwd=cwd, check=False, timeout=300)

    def new_repo(self, name: str, gated: bool = False) -> Path:
        """``alice/NAME``; gated: its pretxnchangegroup hook waits for ``gate-open`` (see the module doc)."""
        self.site.cli("repo", "create", f"alice/{name}")
        path = self.site.repo_path(f"alice/{name}")
        if gated:
            gate = self.tmp / name
            gate.mkdir()
            with open(path / ".hg" / "hgrc", "a") as f:
                f.write("\n[hooks]\npretxnchangegroup.zgate = touch {in_}; while [ ! -e {open_} ]; do sleep 0.05; done\n"
                        .format(in_=shlex.quote(str(gate / "gate-in")), open_=shlex.quote(str(gate / "gate-open"))))
        return path

    def gate(self, name: str) -> Path:
        return self.tmp / name


def push_records(world: World, full: str) -> list[dict]:
    return world.site.cli_json("pushlog", full)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    tmp = tmp_path_factory.mktemp("life")
    site = site_handle(tmp)
    site.cli("init")
    site.add_user("alice", PASSWORD)
    key = None
    if SSH_KEYGEN is not None:
        key = tmp / "alice-key"
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=60)
        site.cli("ssh-key", "add", "alice", f"{key}.pub")
    source = tmp / "source"
    run([HG, "init", str(source)], site.env)
    run([HG, "debugbuilddag", "-q", "-n", f"+{CHANGESETS}"], site.env, cwd=source, timeout=300)
    return World(site, tmp, key, source)


# -- 1. a signal drains ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["http", "http-sigint", "workers", "ssh"])
def test_signal_lets_a_push_in_flight_finish(world, mode):
    """SIGTERM (or SIGINT) while the server applies a 2,000-changeset push: /healthz turns 503 at
    once while the port keeps answering, the push's later requests are served, ``hg push`` exits 0,
    the push is recorded once, and the daemon then exits 0 by itself.  Over HTTP, with
    ``--workers 2``, and over SSH."""
    if mode == "ssh" and world.key is None:
        pytest.skip("the OpenSSH client is not installed")
    name = f"drain-{mode}"
    world.new_repo(name, gated=True)
    gate = world.gate(name)
    args = {"http": ("--http", "127.0.0.1:0"), "http-sigint": ("--http", "127.0.0.1:0"), "workers": ("--http", "127.0.0.1:0", "--workers", "2"),
            "ssh": ("--http", "127.0.0.1:0", "--ssh", "127.0.0.1:0")}[mode]
    daemon = Served(world, *args).wait_ready()
    push = None
    try:
        if mode == "ssh":
            argv = [HG, "push", "--ssh", world.ssh_command(), daemon.ssh_url(f"alice/{name}")]
        else:
            argv = [HG, "push", daemon.url(f"alice/{name}")]
        push = subprocess.Popen(argv, env=world.site.env, cwd=world.source, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: (gate / "gate-in").exists() or push.poll() is not None, 120, "the push to reach the hook")
        assert push.poll() is None, push.communicate()[0]
        daemon.signal(signal.SIGINT if mode == "http-sigint" else signal.SIGTERM)
        # Draining: the port still answers, and tells a load balancer to go elsewhere.
        wait_for(lambda: health(daemon.http_port) == 503, 10, "/healthz to answer 503")
        time.sleep(1)
        assert daemon.proc.poll() is None and health(daemon.http_port) == 503
        (gate / "gate-open").touch()
        output = push.communicate(timeout=120)[0]
        assert push.returncode == 0, output
        assert daemon.wait(60) == 0, daemon.log()[-3000:]
    finally:
        (gate / "gate-open").touch()
        if push is not None and push.poll() is None:
            push.kill()
            push.communicate()
        daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]
    records = push_records(world, f"alice/{name}")
    assert len(records) == 1 and len(records[0]["changesets"]) == CHANGESETS, records[:1]


def test_health_checks_do_not_prolong_the_drain(world):
    """A load balancer polling /healthz during the drain does not keep an idle daemon up: it exits 0
    about 2 s after the signal, far before drain-seconds (30)."""
    daemon = Served(world, "--http", "127.0.0.1:0").wait_ready()
    try:
        start = time.monotonic()
        daemon.signal(signal.SIGTERM)
        statuses = []
        while daemon.proc.poll() is None and time.monotonic() - start < 40:
            with contextlib.suppress(OSError):
                statuses.append(health(daemon.http_port))
            time.sleep(0.2)
        elapsed = time.monotonic() - start
        assert daemon.wait(30) == 0, daemon.log()[-3000:]
    finally:
        daemon.stop()
    assert elapsed < 15, elapsed
    assert statuses and set(statuses) == {503}, statuses


def test_second_signal_stops_at_once(world):
    """A second SIGTERM during the drain stops the daemon at once (exit 1: a request was cut),
    although a push is still held in its hook; the next start settles what it left."""
    name = "drain-twice"
    world.new_repo(name, gated=True)
    gate = world.gate(name)
    daemon = Served(world, "--http", "127.0.0.1:0").wait_ready()
    push = subprocess.Popen([HG, "push", daemon.url(f"alice/{name}")], env=world.site.env, cwd=world.source,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (gate / "gate-in").exists() or push.poll() is not None, 120, "the push to reach the hook")
        daemon.signal(signal.SIGTERM)
        wait_for(lambda: health(daemon.http_port) == 503, 10, "/healthz to answer 503")
        start = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 1, daemon.log()[-3000:]
        elapsed = time.monotonic() - start
        assert elapsed < 10, elapsed
    finally:
        (gate / "gate-open").touch()
        push.communicate(timeout=120)
        daemon.stop()
    log = daemon.log()
    assert "Traceback" not in log and "stopping now" in log, log[-3000:]
    with serving(world, "--http", "127.0.0.1:0") as again:
        assert health(again.http_port) == 200
    checked = world.site.cli("check", check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_worker_that_dies_is_replaced(world):
    """A worker killed after it started serving is replaced, and the daemon keeps serving."""
    with serving(world, "--http", "127.0.0.1:0", "--workers", "2") as daemon:
        first = re.search(r"worker 0 \(pid (\d+)\): serving HTTP", daemon.log())
        assert first, daemon.log()
        os.kill(int(first.group(1)), signal.SIGKILL)
        wait_for(lambda: len(re.findall(r"worker 0 \(pid \d+\): serving HTTP", daemon.log())) == 2, 60,
                 "a new worker 0")
        assert all(health(daemon.http_port) == 200 for _ in range(4))
        assert daemon.proc.poll() is None
    assert daemon.proc.returncode == 0, daemon.log()[-3000:]


def test_drain_is_bounded(world):
    """A request still running ``drain-seconds`` after the signal (a hook that does not return)
    does not hold the daemon: it closes the connections, waits briefly for the thread, exits 1."""
    name = "drain-bounded"
    world.new_repo(name, gated=True)
    gate = world.gate(name)
    daemon = Served(world, "--http", "127.0.0.1:0", settings="[hosting]\ndrain-seconds = 2\n").wait_ready()
    push = subprocess.Popen([HG, "push", daemon.url(f"alice/{name}")], env=world.site.env, cwd=world.source,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (gate / "gate-in").exists() or push.poll() is not None, 120, "the push to reach the hook")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 1, daemon.log()[-3000:]
        assert not (gate / "gate-open").exists()
    finally:
        (gate / "gate-open").touch()
        push.communicate(timeout=120)
        daemon.stop()
    log = daemon.log()
    assert "Traceback" not in log and "exiting without it" in log, log[-3000:]
    checked = world.site.cli("check", check=False)  # the next start (or check --repair) settles it
    assert checked.returncode in (0, 1), checked.stdout + checked.stderr


# -- 2. serve that cannot listen ------------------------------------------------------------------


@pytest.mark.parametrize("which", ["http", "ssh", "workers"])
def test_serve_that_cannot_listen_exits(world, which):
    """With the port taken, ``serve`` prints one ``error:`` line and exits non-zero within 5 s of it."""
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    args = {"http": ["--http", f"127.0.0.1:{port}"],
            "ssh": ["--http", "127.0.0.1:0", "--ssh", f"127.0.0.1:{port}"],
            "workers": ["--http", f"127.0.0.1:{port}", "--workers", "2"]}[which]
    try:
        proc = subprocess.Popen([HG_HOSTING, "--site", str(world.site.root), "serve", *args], env=world.site.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stderr.readline()
            seen = time.monotonic()
            code = proc.wait(30)
            elapsed = time.monotonic() - seen
            rest = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        taken.close()
    assert line.startswith(f"error: cannot start the daemon: Couldn't listen on 127.0.0.1:{port}"), line + rest
    assert code != 0 and elapsed < 5, (code, elapsed)
    assert rest == "" and proc.stdout.read() == "", rest


@pytest.mark.parametrize("key, value", [("max-request-mb", "lots"), ("login-throttle-pair", "0"),
                                        ("trusted-proxies", "10.0.0.0/33")])
def test_bad_setting_with_workers_is_one_error(world, key, value):
    """A malformed setting the HTTP side reads stops ``serve --workers 2`` with one error line,
    before any worker starts (workers used to die on it and be restarted forever)."""
    daemon = Served(world, "--http", "127.0.0.1:0", "--workers", "2", settings=f"[hosting]\n{key} = {value}\n")
    try:
        code = daemon.wait(30)
    finally:
        daemon.kill()
    log = daemon.log()
    assert code != 0, log
    assert re.fullmatch(rf"error: (cannot start the daemon: )?.*{key}.*\n", log), log


# -- 3 and 4. SSH alone; what the log says --------------------------------------------------------


@needs_ssh
def test_ssh_only(world):
    """``serve --ssh`` alone listens on the SSH port only, and the real OpenSSH client clones through it."""
    world.new_repo("ssh-only")
    with serving(world, "--ssh", "127.0.0.1:0") as daemon:
        assert listening_ports(daemon.proc.pid) == {daemon.ssh_port}
        assert "serving HTTP" not in daemon.log()
        dest = world.tmp / "ssh-only-clone"
        proc = world.hg("clone", "-q", "--ssh", world.ssh_command(), daemon.ssh_url("alice/ssh-only"), str(dest))
        assert proc.returncode == 0, proc.stderr
        assert (dest / ".hg").is_dir()


def test_refuses_workers_without_http(world):
    """``--workers`` applies to HTTP: with ``--ssh`` alone it is refused in one line."""
    proc = world.site.cli("serve", "--ssh", "127.0.0.1:0", "--workers", "2", check=False)
    assert proc.returncode != 0 and proc.stderr.startswith("error: --workers") and proc.stderr.count("\n") == 1


def test_log_names_what_is_served(world):
    """The start log names the URLs, the site and the worker count; no factory reprs."""
    with serving(world, "--http", "127.0.0.1:0", "--ssh", "127.0.0.1:0", "--workers", "2") as daemon:
        log = daemon.log()
    assert f"site {world.site.root}" in log, log
    assert re.search(r"serving HTTP on http://127\.0\.0\.1:\d+/ with 2 workers", log), log
    assert re.search(r"serving SSH on ssh://127\.0\.0\.1:\d+/ \(host key SHA256:", log), log
    assert "Starting factory" not in log and "Stopping factory" not in log and " at 0x" not in log, log


# -- 5. SSH connection limits ------------------------------------------------------------------


def test_ssh_preauth_deadline(world):
    """A connection that never sends its version string, or stalls in the key exchange, is closed
    after ``[hosting] ssh-login-seconds``."""
    with serving(world, "--http", "127.0.0.1:0", "--ssh", "127.0.0.1:0",
                 settings="[hosting]\nssh-login-seconds = 2\n") as daemon:
        silent = socket.create_connection(("127.0.0.1", daemon.ssh_port))
        stalled = socket.create_connection(("127.0.0.1", daemon.ssh_port))
        stalled.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        with silent, stalled:
            assert closed_within(silent, 20)
            assert closed_within(stalled, 20)


@needs_ssh
def test_ssh_connections_per_address(world):
    """Past ``[hosting] ssh-max-per-address`` connections from one address, more from it are closed
    at once; another address still gets in, and so does the first once it closed some."""
    world.new_repo("ssh-cap")
    with serving(world, "--http", "127.0.0.1:0", "--ssh", "127.0.0.1:0",
                 settings="[hosting]\nssh-max-per-address = 3\n") as daemon:
        held = [socket.create_connection(("127.0.0.1", daemon.ssh_port), source_address=("127.0.0.1", 0))
                for _ in range(3)]
        try:
            for sock in held:
                sock.settimeout(10)
                assert sock.recv(100).startswith(b"SSH-2.0-")
            extra = socket.create_connection(("127.0.0.1", daemon.ssh_port), source_address=("127.0.0.1", 0))
            with extra:
                assert closed_within(extra, 10)
            other = world.hg("clone", "-q", "--ssh", world.ssh_command("-b", "127.0.0.2"),
                             daemon.ssh_url("alice/ssh-cap"), str(world.tmp / "ssh-cap-other"))
            assert other.returncode == 0, other.stderr
        finally:
            for sock in held:
                sock.close()
        wait_for(lambda: world.hg("clone", "-q", "--ssh", world.ssh_command(), daemon.ssh_url("alice/ssh-cap"),
                                  str(world.tmp / f"ssh-cap-{time.monotonic_ns()}")).returncode == 0,
                 30, "a clone from 127.0.0.1 after the held connections closed")


# -- 6. HTTP connection limits ------------------------------------------------------------------


def test_http_header_deadline(world):
    """A request whose headers trickle in (one line every half second) is cut after
    ``[hosting] http-header-seconds``; a request whose headers are in but whose body trickles
    longer than that is answered."""
    with serving(world, "--http", "127.0.0.1:0", settings="[hosting]\nhttp-header-seconds = 2\n") as daemon:
        slow = socket.create_connection(("127.0.0.1", daemon.http_port))
        with slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            start = time.monotonic()
            answer = b""
            closed = False
            for i in range(40):  # 20 s of header lines
                try:
                    slow.sendall(b"X-Slow-%d: 1\r\n" % i)
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                slow.settimeout(0.5)
                try:
                    data = slow.recv(65536)
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    closed = True
                    break
                answer += data
                if not data:
                    closed = True
                    break
            assert closed, "the slow headers were never cut"
            assert time.monotonic() - start < 15
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer

        body = b"x" * 10
        upload = socket.create_connection(("127.0.0.1", daemon.http_port))
        with upload:
            upload.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                           % len(body))
            for byte in body:  # 4 s of body, past the 2 s header deadline
                time.sleep(0.4)
                upload.sendall(bytes([byte]))
            upload.settimeout(30)
            answer = b""
            while chunk := upload.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 "), answer
        assert not answer.startswith(b"HTTP/1.1 408"), answer


def test_http_header_deadline_spares_a_slow_download(world):
    """A client that reads a large response (a stream clone's ``stream_out`` of a 24 MB random
    file, more than the socket buffers hold) slowly, pausing longer than ``http-header-seconds``,
    still gets all of it."""
    repo = world.new_repo("slow-download")
    (repo / "random.bin").write_bytes(os.urandom(24 << 20))
    committed = run([HG, "commit", "-q", "-A", "-m", "random"], {**world.site.env, "HG_HOSTING_USER": "alice"},
                    cwd=repo, check=False, timeout=300)
    assert committed.returncode == 0, committed.stderr
    with serving(world, "--http", "127.0.0.1:0", settings="[hosting]\nhttp-header-seconds = 1\n") as daemon:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", daemon.http_port))
        with sock:
            sock.sendall(b"GET /alice/slow-download?cmd=stream_out HTTP/1.1\r\nHost: x\r\n"
                         b"Connection: close\r\n\r\n")
            sock.settimeout(30)
            received = sock.recv(1024)
            time.sleep(3)  # three deadlines long, mid-response
            while chunk := sock.recv(65536):
                received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert len(body) > 24 << 20, len(body)
    assert body.endswith(b"\r\n0\r\n\r\n"), body[-50:]  # the chunked body's end


def test_http_connections_per_address(world):
    """Past ``[hosting] http-max-per-address`` open connections from one address, more from it are
    closed at once; another address is served meanwhile."""
    with serving(world, "--http", "127.0.0.1:0", settings="[hosting]\nhttp-max-per-address = 4\n") as daemon:
        held = [socket.create_connection(("127.0.0.1", daemon.http_port), source_address=("127.0.0.1", 0))
                for _ in range(4)]
        try:
            assert health(daemon.http_port, source="127.0.0.2") == 200
            extra = socket.create_connection(("127.0.0.1", daemon.http_port), source_address=("127.0.0.1", 0))
            with extra:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert closed_within(extra, 10)
            assert health(daemon.http_port, source="127.0.0.2") == 200
        finally:
            for sock in held:
                sock.close()
        wait_for(lambda: health(daemon.http_port) == 200, 10, "a request from 127.0.0.1 after the others closed")


def test_open_file_limit_raised(world):
    """The daemon raises its soft open-file limit to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard open-file limit is {hard}")

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    with serving(world, "--http", "127.0.0.1:0", preexec_fn=low_soft_limit) as daemon:
        limits = Path(f"/proc/{daemon.proc.pid}/limits").read_text()
    line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
    now_soft, now_hard = line.split()[3:5]
    assert now_soft == now_hard and now_soft != "256", line


# -- 7. workers' import path -----------------------------------------------------------------


def test_workers_do_not_import_from_the_current_directory(world):
    """A ``token.py`` in the directory ``serve --workers 2`` starts from is never imported."""
    cwd = world.tmp / "hostile-cwd"
    cwd.mkdir()
    marker = cwd / "imported"
    (cwd / "token.py").write_text(f"open({str(marker)!r}, 'a').write('imported\\n')\n")
    with serving(world, "--http", "127.0.0.1:0", "--workers", "2", cwd=cwd) as daemon:
        assert health(daemon.http_port) == 200
    assert not marker.exists(), daemon.log()[-3000:]
