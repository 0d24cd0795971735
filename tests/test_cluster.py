"""Several daemons on one site and one PostgreSQL, behind HAProxy (docs/deploy.md).

One module-scoped cluster serves every test: a throwaway PostgreSQL
(conftest's ``postgres_url``), a site whose hgrc names it, three
``hg-hosting serve`` processes on fixed free loopback ports, and HAProxy
(Debian's ``haproxy``) run in the foreground from ``contrib/haproxy.cfg.in``
with those ports filled in.  The tests drive the real ``hg`` client:

- a revoked token, a removed grant, a disabled user, a changed protection or
  visibility is in force on every daemon at the next request; sessions and the login throttle
  work whichever daemon a request lands on;
- 12 concurrent pushes through HAProxy to 3 repositories: all recorded once,
  push ids 1..N, ``check`` and ``hg verify`` clean;
- ``kill -9`` of a daemon while pushes are in flight (a site hook holds each
  push inside its transaction while a flag file exists, and writes the pid of
  the daemon running it, so the kill lands mid-push): the push either landed and
  is recorded or left nothing; HAProxy sends new requests to the others; the
  restarted daemon settles what was pending;
- a rolling restart (SIGTERM, the drain, restart, rejoin) of every daemon while
  a client clones, pulls and pushes through HAProxy: no client command fails.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from clibatch import cli_batch
from conftest import HG, Daemon, SiteHandle, commit, run, site_handle
from test_auth import basic, cookies, form_login, request

from hgext_hosting.site import SITE_HGRC_TEMPLATE

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
DAEMONS = 3
PASSWORD = "alice-cluster-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what: str, timeout: float = 60.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def render_haproxy(http_bind: str, ssh_bind: str, http_ports: list[int], ssh_ports: list[int]) -> str:
    """contrib/haproxy.cfg.in with the addresses filled in (what a deployment does by hand)."""
    text = (CONTRIB / "haproxy.cfg.in").read_text()
    servers = "\n".join(f"    server web{i + 1} 127.0.0.1:{p} check" for i, p in enumerate(http_ports))
    ssh = "\n".join(f"    server ssh{i + 1} 127.0.0.1:{p} check" for i, p in enumerate(ssh_ports))
    values = {"HTTP_BIND": http_bind, "SSH_BIND": ssh_bind, "HTTP_SERVERS": servers, "SSH_SERVERS": ssh}
    # Markers in comments ("#   @@HTTP_BIND@@ ...") stay as they are.
    return re.sub(r"^(.*?)@@([A-Z_]+)@@", lambda m: m.group(0) if "#" in m.group(1)
                  else m.group(1) + values[m.group(2)], text, flags=re.M)


class HAProxy:
    """``haproxy -db -f CFG`` in the foreground, with an admin socket to read server states."""

    def __init__(self, work: Path, http_ports: list[int], ssh_ports: list[int] | None = None):
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.path.exists(haproxy):
            pytest.skip("haproxy is not installed (.ci/run installs Debian's haproxy)")
        self.port = free_port()
        self.socket = work / "haproxy.sock"
        self.ssh_port = free_port()
        cfg = render_haproxy(f"127.0.0.1:{self.port}", f"127.0.0.1:{self.ssh_port}", http_ports, ssh_ports or [])
        cfg = cfg.replace("global\n", f"global\n    stats socket {self.socket} level admin\n", 1)
        self.cfg = work / "haproxy.cfg"
        self.cfg.write_text(cfg)
        run(["haproxy", "-c", "-f", str(self.cfg)], {"PATH": os.environ["PATH"]})
        self.log_path = work / "haproxy.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(self.cfg)], stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: self.socket.exists() and self.states() and all(
            s == "UP" for s in self.states().values()), "HAProxy to see every daemon up")

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def states(self) -> dict[str, str]:
        """{server name: UP/DOWN/...} for the HTTP backend."""
        try:
            text = self.command("show stat")
        except OSError:
            return {}
        states = {}
        for line in text.splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[0] == "hg_daemons" and fields[1].startswith("web"):
                states[fields[1]] = fields[17].split(" ")[0]
        return states

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Cluster:
    def __init__(self, site: SiteHandle, work: Path):
        self.site, self.work = site, work
        self.ports = [free_port() for _ in range(DAEMONS)]
        self.ssh_ports = [free_port() for _ in range(DAEMONS)]
        self.daemons: list[Daemon] = [self.start(i) for i in range(DAEMONS)]
        self.logs: list[str] = []
        self.haproxy = HAProxy(work, self.ports, self.ssh_ports)
        self.token = site.cli("token", "create", "alice", "--label", "cluster").stdout.strip()

    def start(self, i: int) -> Daemon:
        return Daemon(self.site, "--http", f"127.0.0.1:{self.ports[i]}", "--ssh", f"127.0.0.1:{self.ssh_ports[i]}")

    def restart(self, i: int) -> None:
        self.logs.append(self.daemons[i].log())
        self.daemons[i] = self.start(i)

    def push_url(self, repo: str) -> str:
        return f"http://alice:{self.token}@127.0.0.1:{self.haproxy.port}/{repo}"

    def all_logs(self) -> str:
        return "\n".join(self.logs + [d.log() for d in self.daemons])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres_url):
    work = tmp_path_factory.mktemp("cluster")
    site = site_handle(work)
    site.root.mkdir()
    hgrc = SITE_HGRC_TEMPLATE.replace("\ndatabase =\n", f"\ndatabase = {postgres_url}\n")
    hgrc = hgrc.replace("\n[hosting]\n", "\n[hosting]\ntrusted-proxies = 127.0.0.1\n"
                        "http-max-per-address = 100000\nssh-max-per-address = 100000\ndrain-seconds = 20\n", 1)
    # The kill -9 test's hook: while the flag file exists, a push waits inside its
    # transaction after writing the pid of the daemon running it ($PPID: hg runs the
    # hook with sh -c).
    hgrc += (f"\n[hooks]\npretxnchangegroup.zz-cluster-test = "
             f"if [ -e {work}/slow ]; then echo $PPID >> {work}/inflight; sleep 3; fi\n")
    # Pushes to different branches of one repository do not refuse each other
    # (docs/deploy.md): the client checks only the heads it updates.
    hgrc = hgrc.replace("\n[server]\n", "\n[server]\nconcurrent-push-mode = check-related\n", 1)
    (site.root / "hgrc").write_text(hgrc)
    cli_batch(site, [(["init"], None),
                     (["user", "add", "alice", "--email", "alice@example.org", "--password-stdin"], PASSWORD + "\n"),
                     (["user", "add", "bob", "--email", "bob@example.org", "--password-stdin"], "bob-cluster-pw\n")])
    c = Cluster(site, work)
    c.postgres_url = postgres_url
    try:
        yield c
    finally:
        c.haproxy.stop()
        for d in c.daemons:
            d.stop()
    logs = c.all_logs()
    assert "Traceback" not in logs, logs[-5000:]


def hg_ok(site: SiteHandle, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return site.hg(*args, cwd=cwd)


def pushlog_ids(site: SiteHandle, repo: str) -> list[int]:
    return sorted(p["id"] for p in site.cli_json("pushlog", repo))


def assert_consistent(site: SiteHandle, repo: str) -> None:
    """Ids 1..N, every changeset in the repository recorded exactly once, hg verify clean."""
    log = site.cli_json("pushlog", repo)
    ids = sorted(p["id"] for p in log)
    assert ids == list(range(1, len(ids) + 1)), ids
    recorded = [n for p in log for n in p["changesets"]]
    assert len(recorded) == len(set(recorded))
    nodes = site.hg("-R", str(site.repo_path(repo)), "log", "-T", "{node}\n").stdout.split()
    assert sorted(recorded) == sorted(nodes)
    site.hg("-R", str(site.repo_path(repo)), "verify", "-q")


# -- every rule is in force on every daemon at the next request ------------------------------


def test_revocations_and_settings_in_force_on_every_daemon(cluster: Cluster, tmp_path: Path):
    """A token used on every daemon, then revoked: 401 on each.  A grant removed, a repository
    made private, a branch protected: in force on each daemon at the next request."""
    site, daemons = cluster.site, cluster.daemons
    site.cli("repo", "create", "alice/rules", "--private")
    site.cli("grant", "alice/rules", "bob", "write")
    token = site.cli("token", "create", "bob", "--label", "rules").stdout.strip()
    caps = "/alice/rules?cmd=capabilities"
    assert [request(d, "GET", caps, basic("bob", token))[0] for d in daemons] == [200] * DAEMONS
    site.cli("token", "revoke", "bob", "rules")
    assert [request(d, "GET", caps, basic("bob", token))[0] for d in daemons] == [401] * DAEMONS

    # The grant: bob reads through each daemon (his password now cached there), then loses it.
    bob = basic("bob", "bob-cluster-pw")
    assert [request(d, "GET", caps, bob)[0] for d in daemons] == [200] * DAEMONS
    site.cli("revoke", "alice/rules", "bob")
    assert 200 not in [request(d, "GET", caps, bob)[0] for d in daemons]

    # Visibility, changed from the settings page served by daemon 1: anonymous reads
    # work on every daemon once public, on none once private again.
    status_, headers, _ = form_login(daemons[0], "alice", PASSWORD)
    assert status_ == 303
    cookie = "hgh_session=" + cookies(headers)["hgh_session"]

    def set_private(private: bool) -> None:
        _, _, page = request(daemons[0], "GET", "/alice/rules/settings", {"Cookie": cookie})
        csrf = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()
        fields = {"csrf": csrf, "action": "settings", "description": "rules"}
        if private:
            fields["private"] = "on"
        answer = request(daemons[0], "POST", "/alice/rules/settings", {
            "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
            urllib.parse.urlencode(fields).encode())[0]
        assert answer in (200, 303), answer

    set_private(False)
    assert [request(d, "GET", caps)[0] for d in daemons] == [200] * DAEMONS
    set_private(True)
    assert 200 not in [request(d, "GET", caps)[0] for d in daemons]


def test_protection_in_force_on_every_daemon(cluster: Cluster, tmp_path: Path):
    """``protect`` after pushes through each daemon: the next push to the branch through any
    daemon is refused; ``unprotect``: it lands through each."""
    site, daemons = cluster.site, cluster.daemons
    site.cli("repo", "create", "alice/prot")
    site.cli("grant", "alice/prot", "bob", "write")
    wc = tmp_path / "wc"
    site.hg("init", str(wc))
    for i, d in enumerate(daemons):
        commit(site.hg, wc, "f", f"{i}\n")
        site.hg("push", "-q", f"http://bob:bob-cluster-pw@127.0.0.1:{d.port}/alice/prot", cwd=wc)
    site.cli("protect", "alice/prot", "default", "--allow", "alice")
    for i, d in enumerate(daemons):
        commit(site.hg, wc, "f", f"refused {i}\n")
        refused = site.hg("push", f"http://bob:bob-cluster-pw@127.0.0.1:{d.port}/alice/prot", cwd=wc,
                          check=False)
        assert refused.returncode != 0 and "protected branch 'default'" in refused.stderr, refused.stderr
        site.hg("rollback", "-q", cwd=wc)
        site.hg("revert", "-q", "--all", cwd=wc)
    site.cli("unprotect", "alice/prot", "default")
    for i, d in enumerate(daemons):
        commit(site.hg, wc, "f", f"again {i}\n")
        site.hg("push", "-q", f"http://bob:bob-cluster-pw@127.0.0.1:{d.port}/alice/prot", cwd=wc)
    assert_consistent(site, "alice/prot")


def test_sessions_and_throttle_on_any_daemon(cluster: Cluster):
    """A session made on daemon 1 works on 2 and 3; logged out on 3, it is over on 1.  Wrong
    passwords spread over the daemons are counted once: the pair's limit (10) is shared."""
    site, daemons = cluster.site, cluster.daemons
    site.add_user("sam", "sam-cluster-pw")
    status_, headers, _ = form_login(daemons[0], "sam", "sam-cluster-pw")
    assert status_ == 303
    cookie = {"Cookie": "hgh_session=" + cookies(headers)["hgh_session"]}
    assert [request(d, "GET", "/-/new", cookie)[0] for d in daemons] == [200] * DAEMONS
    site.cli("user", "passwd", "sam", "--password-stdin", input="sam-new-pw\n")
    assert [request(d, "GET", "/-/new", cookie)[0] for d in daemons] == [401] * DAEMONS

    caps = "/alice/rules?cmd=capabilities"
    answers = [request(daemons[i % DAEMONS], "GET", caps, basic("sam", f"wrong{i}"), source="127.0.0.9")[0]
               for i in range(15)]
    assert answers == [401] * 10 + [429] * 5, answers


def test_disabled_user_refused_on_every_daemon(cluster: Cluster):
    """dora's password (cached by each daemon), token and session work on every daemon; disabled,
    each is refused on every daemon at the next request (issue 15); enabled, password and token work
    again everywhere and nothing of hers was deleted."""
    site, daemons = cluster.site, cluster.daemons
    site.add_user("dora", "dora-cluster-pw")
    site.cli("repo", "create", "dora/own", "--private")
    token = site.cli("token", "create", "dora", "--label", "dora").stdout.strip()
    status_, headers, _ = form_login(daemons[1], "dora", "dora-cluster-pw")
    assert status_ == 303
    session = {"Cookie": "hgh_session=" + cookies(headers)["hgh_session"]}
    caps = "/dora/own?cmd=capabilities"
    ways = {"password": basic("dora", "dora-cluster-pw"), "token": basic("dora", token), "session": session}

    def answers() -> dict[str, list[int]]:
        return {way: [request(d, "GET", caps, h)[0] for d in daemons] for way, h in ways.items()}

    assert answers() == {way: [200] * DAEMONS for way in ways}
    site.cli("user", "disable", "dora")
    assert answers() == {"password": [403] * DAEMONS, "token": [403] * DAEMONS, "session": [401] * DAEMONS}
    site.cli("user", "enable", "dora")
    del ways["session"]  # ended for good by the disable
    assert answers() == {way: [200] * DAEMONS for way in ways}
    assert [r["name"] for r in site.cli_json("repo", "list") if r["owner"] == "dora"] == ["dora/own"]


# -- SSH through HAProxy (TCP mode) ------------------------------------------------------------


def test_ssh_clone_and_push_through_haproxy(cluster: Cluster, tmp_path: Path):
    """HAProxy's TCP frontend hands SSH sessions to the daemons' Conch servers (one host key: the
    site's): a clone, a push and a pull over ``ssh://`` through it, the push recorded once."""
    site = cluster.site
    key = tmp_path / "id_alice"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f", str(key)],
        {"PATH": os.environ["PATH"]})
    site.cli("ssh-key", "add", "alice", str(key) + ".pub")
    site.cli("repo", "create", "alice/over-ssh")
    ssh = shlex.join(["ssh", "-i", str(key), "-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
                      "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                      "-o", "LogLevel=ERROR"])
    url = f"ssh://hg@127.0.0.1:{cluster.haproxy.ssh_port}/alice/over-ssh"
    wc = tmp_path / "wc"
    hg_ok(site, "--config", f"ui.ssh={ssh}", "clone", "-q", url, str(wc))
    commit(site.hg, wc, "a.txt", "over ssh\n", "over ssh")
    hg_ok(site, "--config", f"ui.ssh={ssh}", "push", "-q", url, cwd=wc)
    assert pushlog_ids(site, "alice/over-ssh") == [1]
    other = tmp_path / "other"
    hg_ok(site, "--config", f"ui.ssh={ssh}", "clone", "-q", url, str(other))
    assert site.hg("log", "-T", "{desc}", cwd=other).stdout == "over ssh"


# -- concurrent pushes through HAProxy ------------------------------------------------------


def _prepare_source(site: SiteHandle, work: Path, repos: list[str], pushers: int) -> Path:
    """A repository holding a root on default and ``pushers`` children, each on a branch
    of its own (one ``hg debugbuilddag``); the root is pushed to every repository first."""
    source = work / "source"
    site.hg("init", str(source))
    dag = "+1:base " + " ".join(f"<base @b{i} +1" for i in range(pushers))
    site.hg("debugbuilddag", "--new-file", dag, cwd=source)
    for repo in repos:
        site.hg("push", "-q", "-r", "0", str(site.repo_path(repo)), cwd=source, user="alice")
    return source


def _push_all(cluster: Cluster, source: Path, jobs: list[tuple[str, str]]) -> list[subprocess.CompletedProcess]:
    """Push each (repository, branch) of ``jobs`` from ``source`` through HAProxy, all at once."""
    site = cluster.site

    def push(job):
        repo, branch = job
        return site.hg("push", "-q", "--new-branch", "-r", branch, cluster.push_url(repo), cwd=source,
                       check=False)

    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(push, jobs))


#: What a push refused because another one changed the same heads says (hg's own check).
RACE = "remote repository changed while pushing - please try again"


#: Concurrent pushes per repository in the HAProxy test: 4 on each of 3 repositories keeps
#: every repository's lock contended by pushes arriving through different daemons at
#: once (HAProxy spreads each push's requests over the 3), which is what the ids 1..N and
#: "recorded once" assertions are about; 10 per repository (30 pushes) proved nothing more
#: and cost a minute of CPU on a 2-core machine.
PER_REPO = 4


def test_concurrent_pushes_through_haproxy(cluster: Cluster, tmp_path: Path):
    """12 pushes at once through HAProxy, 4 to each of 3 repositories: each lands, ids are
    1..5 in each (the root, then the 4), every changeset recorded once; ``check`` and
    ``hg verify`` are clean."""
    site = cluster.site
    repos = [f"alice/many{i}" for i in range(3)]
    cli_batch(site, [(["repo", "create", repo], None) for repo in repos])
    pushers = 3 * PER_REPO
    source = _prepare_source(site, tmp_path, repos, pushers)
    jobs = [(repos[i % 3], f"b{i}") for i in range(pushers)]
    started = time.monotonic()
    results = _push_all(cluster, source, jobs)
    elapsed = time.monotonic() - started
    failed = [(r.returncode, r.stderr) for r in results if r.returncode != 0]
    assert not failed, "\n".join(f"{code}: {err}" for code, err in failed)
    for repo in repos:
        assert pushlog_ids(site, repo) == list(range(1, PER_REPO + 2))  # the root, then the pushes
        assert_consistent(site, repo)
    site.cli("check")
    print(f"{pushers} concurrent pushes through HAProxy: {elapsed:.1f} s")


def test_kill_9_during_pushes(cluster: Cluster, tmp_path: Path):
    """``kill -9`` of the daemon running a push inside its transaction: that push left nothing
    or landed recorded; the other pushes land; HAProxy sends new requests elsewhere; the
    killed daemon's next start settles what was pending; ``check`` is clean."""
    site, work = cluster.site, cluster.work
    repos = [f"alice/kill{i}" for i in range(3)]
    cli_batch(site, [(["repo", "create", repo], None) for repo in repos])
    source = _prepare_source(site, tmp_path, repos, 9)
    jobs = [(repos[i % 3], f"b{i}") for i in range(9)]
    inflight = work / "inflight"
    inflight.unlink(missing_ok=True)
    (work / "slow").touch()
    victim_index: list[int] = []
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pushes = pool.submit(_push_all, cluster, source, jobs)
            pids = {d.proc.pid: i for i, d in enumerate(cluster.daemons)}

            def victim():
                if not inflight.exists():
                    return None
                for line in inflight.read_text().split():
                    if int(line) in pids:
                        return pids[int(line)]
                return None

            index = wait_for(lambda: victim() is not None and (victim(),), "a push inside a transaction")[0]
            victim_index.append(index)
            cluster.daemons[index].proc.send_signal(signal.SIGKILL)
            cluster.daemons[index].proc.wait()
            (work / "slow").unlink()
            results = pushes.result(timeout=300)
    finally:
        (work / "slow").unlink(missing_ok=True)
    index = victim_index[0]
    # New requests go to the others at once (a refused connection is retried elsewhere).
    for _ in range(6):
        run([HG, "identify", f"{cluster.haproxy.url}/alice/kill0"], site.env)
    failed = [r for r in results if r.returncode != 0]
    assert len(failed) <= len(jobs) - 1, [r.stderr for r in failed]
    for r in failed:
        assert "Traceback" not in r.stderr and "abort:" in r.stderr, r.stderr
    # The pushes that followed to the same repository settled what the killed one left.
    assert not _unsettled(cluster, repos)
    cluster.restart(index)
    wait_for(lambda: cluster.haproxy.states().get(f"web{index + 1}") == "UP", "the restarted daemon up")
    print(f"kill -9: {len(failed)} of {len(jobs)} pushes failed")

    # A lone push killed mid-transaction, nothing after it: the daemon's next start settles it.
    alone = "alice/kill-alone"
    site.cli("repo", "create", alone)
    site.hg("push", "-q", "-r", "0", str(site.repo_path(alone)), cwd=source, user="alice")
    inflight.unlink(missing_ok=True)
    (work / "slow").touch()
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pushes = pool.submit(_push_all, cluster, source, [(alone, "b0")])
            pids = {d.proc.pid: i for i, d in enumerate(cluster.daemons)}
            index = wait_for(lambda: victim() is not None and (victim(),), "the lone push in its transaction")[0]
            cluster.daemons[index].proc.send_signal(signal.SIGKILL)
            cluster.daemons[index].proc.wait()
            (result,) = pushes.result(timeout=300)
    finally:
        (work / "slow").unlink(missing_ok=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert _unsettled(cluster, [alone])
    cluster.restart(index)
    assert not _unsettled(cluster, [alone])
    assert "recovering an interrupted transaction" in cluster.daemons[index].log(), cluster.daemons[index].log()
    wait_for(lambda: cluster.haproxy.states().get(f"web{index + 1}") == "UP", "the restarted daemon up")
    repos.append(alone)
    for repo in repos:
        assert_consistent(site, repo)
    site.cli("check")
    landed = sum(len(site.cli_json("pushlog", repo)) for repo in repos)
    assert landed >= 3 + len(jobs) - len(failed)


def _unsettled(cluster: Cluster, repos: list[str]) -> list[str]:
    """The repositories with an interrupted transaction or a ``pending`` push record."""
    import psycopg2

    left = [r for r in repos if (cluster.site.repo_path(r) / ".hg" / "store" / "journal").exists()]
    with psycopg2.connect(cluster.postgres_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM push WHERE state = 'pending'")
        if cur.fetchone()[0]:
            left.append("pending records")
    conn.close()
    return left


# -- rolling restart --------------------------------------------------------------------------


def test_rolling_restart_fails_no_client_command(cluster: Cluster, tmp_path: Path):
    """Each daemon in turn: SIGTERM (it drains), wait for its exit, start it on its port,
    wait for HAProxy to see it up.  Meanwhile a client clones, pulls, commits and pushes
    through HAProxy without a pause: not one of its commands fails."""
    site = cluster.site
    repo = "alice/rolling"
    site.cli("repo", "create", repo)
    url = f"{cluster.haproxy.url}/{repo}"
    wc = tmp_path / "wc"
    site.hg("clone", "-q", url, str(wc))
    stop = threading.Event()
    failures: list[str] = []
    commands = [0]
    pushes = [0]

    def attempt(argv: list[str], cwd=None) -> bool:
        proc = site.hg(*argv, cwd=cwd, check=False)
        commands[0] += 1
        if proc.returncode != 0:
            failures.append(f"hg {' '.join(argv)}: {proc.stderr}")
        return proc.returncode == 0

    def cloner():  # full clones and identify, one after the other
        n = 0
        while not stop.is_set():
            n += 1
            attempt(["clone", "-U", "-q", url, str(tmp_path / f"c{n}")])
            shutil.rmtree(tmp_path / f"c{n}", ignore_errors=True)
            attempt(["identify", url])

    def puller():
        reader = tmp_path / "reader"
        if not attempt(["clone", "-q", url, str(reader)]):
            return
        while not stop.is_set():
            attempt(["pull", "-q", "-u", url], cwd=reader)

    def pusher():
        n = 0
        while not stop.is_set():
            n += 1
            commit(site.hg, wc, "f", f"{n}\n")
            if attempt(["push", "-q", cluster.push_url(repo)], cwd=wc):
                pushes[0] += 1

    threads = [threading.Thread(target=t) for t in (cloner, puller, pusher)]
    for thread in threads:
        thread.start()
    try:
        for i in range(DAEMONS):
            before = commands[0]
            wait_for(lambda b=before: commands[0] >= b + 2, "the client to run", timeout=120)
            old = cluster.daemons[i]
            assert old.stop(timeout=60) == 0, old.log()[-2000:]
            assert re.search(r"draining", old.log()), old.log()[-2000:]
            cluster.restart(i)
            wait_for(lambda i=i: cluster.haproxy.states().get(f"web{i + 1}") == "UP", "the daemon to rejoin")
        before = commands[0]
        wait_for(lambda: commands[0] >= before + 2, "the client to run", timeout=120)
    finally:
        stop.set()
        for thread in threads:
            thread.join(300)
    assert not failures, failures
    assert pushes[0] >= DAEMONS
    assert pushlog_ids(site, repo) == list(range(1, pushes[0] + 1))
    assert_consistent(site, repo)
    print(f"rolling restart: {commands[0]} client commands, {pushes[0]} pushes, none failed")
