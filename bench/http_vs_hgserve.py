"""The daemon's HTTP side against ``hg serve`` on the same repository, same machine, same run.

Compares ``hg-hosting serve`` with Mercurial's own ``hg serve`` on the Flask
corpus (``shared/data/flask.hg``, 5,534 changesets) and on 1,000 small
repositories, measured in one run with the two targets interleaved (round 0
daemon first, round 1 ``hg serve`` first, ...) after one untimed warm-up
round, and prints medians, ratios, the issue's targets and PASS/FAIL.

Set-up (in a temporary directory):

- site ``S``: ``hg-hosting init``, user ``alice`` with a password
  (``--password-stdin``), ``repo create alice/flask``, the corpus unbundled
  into it with ``HG_HOSTING_USER=alice hg unbundle`` (recorded as one push);
- ``plain``: a ``cp -a`` of that repository outside the site minus its
  ``.hg/hgrc`` (the ``%include`` of the site hgrc), so ``hg serve`` serves the
  same revlogs without loading the hosting extension;
- site ``S2`` with 1,000 repositories ``uNN/rNNN`` (10 users, 100 each, 3
  changesets each, unbundled in-process with the extension loaded so every
  one has its push record) and ``plain2``, their copy without hgrc, for
  ``hg serve --web-conf`` (``[paths] / = plain2/**``).

Servers: ``hg-hosting serve`` (one process) and ``hg-hosting serve --workers 2``
on ``S``; ``hg serve -R plain --config web.push_ssl=false --config
web.allow-push=*``; on ``S2`` ``hg-hosting serve`` and ``--workers 2``, and
``hg serve --web-conf``.  Every server writes its access log to a file.

Measurements (client: the stock ``hg`` with ``HGRCPATH`` pointing at an empty
file and ``HGPLAIN=1``; pages: ``http.client``).  The CPU time of every clone,
pull and push is recorded too, server side (``/proc/PID/stat`` of the server
processes) and client side (the ``hg`` processes, ``RUSAGE_CHILDREN``):

``clone``      ``hg clone -U`` of the corpus (anonymous), wall time.
``pull``       ``hg pull`` into an up-to-date clone (no-op), wall time.
``push``       one new changeset on top, committed untimed, then ``hg push``
               timed: to the daemon as alice (credentials in the URL, so the
               extension's hooks check and record it), to ``hg serve`` without
               authentication (``allow-push=*``).
``clone8``     8 ``hg clone -U`` processes at once, wall time until the last
               ends: ``--workers 2`` daemon against ``hg serve`` (the
               one-process daemon is measured too, for information).
``log``        ``GET /alice/flask/log`` against ``GET /log``, median per request,
               each on a fresh connection (keep-alive reported for
               information: ``hg serve`` then stalls ~40 ms per request on
               Nagle's algorithm against delayed ACKs).
``index``      ``GET /`` of the 1,000-repository site against
               ``hg serve --web-conf``'s index, median per request (fresh
               connections).  The daemon's index is paged (its first page
               must count all 1,000); the time to walk all its pages is
               reported for information.
``rss``        after every one of the 1,000 repositories has been served
               (``/OWNER/NAME``, ``/OWNER/NAME/log``, ``?cmd=capabilities``,
               over fresh connections from 4 threads so both workers get
               traffic), VmRSS and VmHWM of each worker process of the
               ``--workers 2`` daemon (children of its master), < 150 MB.

Caveat when reading the ratios: the ``hg`` client reuses its connection, and
``hg serve`` (Mercurial 7.2) then answers every request after the first about
40 ms late (Nagle's algorithm against the client's delayed ACK; the
``log_keepalive`` line shows it on a page).  A clone makes 3 requests, a no-op
pull 3, a push 8, so ``hg serve``'s pull and push times carry ~0.1 s of that
stall; the daemon (Twisted) does not have it.

Every clone is checked to hold all the changesets the server has, every push
to have added one changeset, and the daemon's push log to hold every push.

Usage (from the repository root)::

    /work/venv/bin/python bench/http_vs_hgserve.py [--quick] [--json FILE] [-v] [--keep]
        [--only clone,pull,clone8,log,push,index,rss]

``--only`` runs some measurements (for working on one target); the verdict
then covers only those.  ``--no-stream`` turns off the site's default
``server.preferuncompressed = True``, so that the daemon's clones are bundle
clones like ``hg serve``'s (for information: the targets apply to the
product's defaults).

Exit status: 0 when every target is met, 1 when one is missed, 2 when the
benchmark itself failed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchenv import BIN, cpu_seconds, isolated_env

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "flask.hg"

PASSWORD = "bench-password-42"
DAEMON, HGSERVE = "daemon", "hg serve"
KINDS = (DAEMON, HGSERVE)
RSS_LIMIT_MB = 150.0
MANY_OWNERS = 10

#: key: (title, unit, reference for hg serve measured in the issue, target ratio)
TARGETS = {
    "clone": ("full clone", "s", 1.65, 1.0),
    "pull": ("no-op pull", "s", 0.27, 1.1),
    "push": ("1-changeset push, all hooks", "s", 0.51, 1.15),
    "clone8": ("8 concurrent clones (--workers 2)", "s", 10.5, 0.75),
    "log": ("/log page", "ms", 5.8, 1.2),
    "index": ("index, 1,000 repositories", "ms", 444.0, 0.05),
}
#: What --only can choose.
MEASURES = ("clone", "pull", "clone8", "log", "push", "index", "rss")


class BenchError(RuntimeError):
    """The benchmark could not measure what it claims to."""


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Result:
    samples: dict[str, list[float]] = field(default_factory=dict)  # kind -> values (s or ms)

    def add(self, kind: str, value: float) -> None:
        self.samples.setdefault(kind, []).append(value)

    def median(self, kind: str) -> float:
        return statistics.median(self.samples[kind])


# -- processes --------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MB."""
    status = proc_status(pid)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's children it has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime




# -- HTTP ---------------------------------------------------------------------------


class Client:
    """One keep-alive connection (reopened whenever the server closes it)."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def get(self, path: str, close: bool = False) -> tuple[int, bytes, float]:
        headers = {"Accept": "text/html"}
        if close:
            headers["Connection"] = "close"
        start = time.perf_counter()
        try:
            self.conn.request("GET", path, headers=headers)
            resp = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError):
            self.conn.close()  # a kept-alive connection the server had closed: once more
            start = time.perf_counter()
            self.conn.request("GET", path, headers=headers)
            resp = self.conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - start
        if resp.will_close or close:
            self.conn.close()
        return resp.status, body, elapsed

    def close(self) -> None:
        self.conn.close()


REPO_LINK = re.compile(rb'href="/(u\d+/r\d+)/?"')


# -- the benchmark ---------------------------------------------------------------------


class Bench:
    def __init__(self, work: Path, corpus: Path, hg: str, hg_hosting: str, quick: bool, many: int, verbose: bool,
                 only: frozenset[str] = frozenset(MEASURES), stream: bool = True):
        self.only, self.stream = only, stream
        self.work, self.corpus, self.hg, self.hg_hosting = work, corpus, hg, hg_hosting
        self.quick, self.many, self.verbose = quick, many, verbose
        self.site, self.plain = work / "S", work / "plain"
        self.site2, self.plain2 = work / "S2", work / "plain2"
        self.scratch = work / "scratch"
        self.scratch.mkdir()
        self.servers: dict[str, Server] = {}
        self.results: dict[str, Result] = {}
        self.info: dict[str, object] = {}
        self.counter = 0
        self.client_cpu = 0.0
        self.env = isolated_env(work)

    def log(self, msg: str) -> None:
        if self.verbose:
            print(msg, file=sys.stderr, flush=True)

    def run(self, argv: list[str], env: dict[str, str] | None = None, input: str | None = None,
            cwd: Path | None = None) -> str:
        proc = subprocess.run(argv, env=env or self.env, capture_output=True, text=True, input=input, cwd=cwd)
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(map(str, argv))} exited {proc.returncode}\n"
                             f"stdout: {proc.stdout.strip()[-2000:]}\nstderr: {proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def revs(self, repo: Path) -> int:
        """Number of changesets of a local repository."""
        return int(self.run([self.hg, "-R", str(repo), "log", "-r", "tip", "-T", "{rev}"]) or -1) + 1

    def fresh(self, label: str) -> Path:
        self.counter += 1
        return self.scratch / f"{label}-{self.counter}"

    # -- set-up ---------------------------------------------------------------------

    def setup(self) -> None:
        t0 = time.perf_counter()
        cli = [self.hg_hosting, "--site", str(self.site)]
        self.run([*cli, "init"])
        if not self.stream:
            with open(self.site / "hgrc", "a") as f:
                f.write("\n[server]\npreferuncompressed = False\n")
        self.run([*cli, "user", "add", "alice", "--email", "alice@example.org", "--password-stdin"],
                 input=PASSWORD + "\n")
        self.run([*cli, "repo", "create", "alice/flask"])
        self.site_repo = self.site / "repos" / "alice" / "flask"
        self.run([self.hg, "-R", str(self.site_repo), "unbundle", "-q", str(self.corpus)],
                 dict(self.env, HG_HOSTING_USER="alice"))
        self.run(["cp", "-a", str(self.site_repo), str(self.plain)])
        (self.plain / ".hg" / "hgrc").unlink()
        self.expected = self.revs(self.plain)
        if self.expected < 5000 or self.revs(self.site_repo) != self.expected:
            raise BenchError(f"the corpus loaded {self.revs(self.site_repo)} / {self.expected} changesets")
        pushes = json.loads(self.run([*cli, "pushlog", "alice/flask", "--json"]))
        if len(pushes) != 1 or len(pushes[0]["changesets"]) != self.expected:
            raise BenchError("the unbundle was not recorded as one push of every changeset")
        self.log(f"corpus site and plain copy ready ({self.expected} changesets) in {time.perf_counter() - t0:.0f} s")
        self.start_daemon("daemon", self.site)
        self.start_daemon("daemon-w2", self.site, "--workers", "2")
        self.start_hgserve("hgserve", ["-R", str(self.plain), "--config", "web.push_ssl=false",
                                       "--config", "web.allow-push=*"])

    def setup_many(self) -> None:
        t0 = time.perf_counter()
        self.run([self.hg_hosting, "--site", str(self.site2), "init"])
        small = self.work / "small"
        self.run([self.hg, "init", str(small)])
        for i in range(3):
            for j in range(3):
                (small / f"file{j}.txt").write_text(f"line {i} of file {j}\n" * (i + 1))
            self.run([self.hg, "-R", str(small), "commit", "-A", "-q", "-d", "2020-01-01 00:00:00 +0000",
                      "-m", f"change {i}"])
        bundle = self.work / "small.hg"
        self.run([self.hg, "-R", str(small), "bundle", "-q", "--all", "--type", "zstd-v2;phases=yes", str(bundle)])
        self.run([sys.executable, str(Path(__file__).resolve()), "--populate", str(self.site2),
                  "--bundle", str(bundle), "--count", str(self.many)])
        repos = sorted(p.parent for p in (self.site2 / "repos").glob("*/*/.hg"))
        if len(repos) != self.many:
            raise BenchError(f"{len(repos)} repositories in S2, expected {self.many}")
        shutil.copytree(self.site2 / "repos", self.plain2, symlinks=True)
        for hgrc in self.plain2.glob("*/*/.hg/hgrc"):
            hgrc.unlink()
        self.many_names = [f"{p.parent.name}/{p.name}" for p in repos]
        webconf = self.work / "web.conf"
        webconf.write_text(f"[paths]\n/ = {self.plain2}/**\n")
        self.log(f"{self.many} repositories ready in {time.perf_counter() - t0:.0f} s")
        self.start_daemon("daemon-many", self.site2)
        self.start_daemon("daemon-many-w2", self.site2, "--workers", "2")
        self.start_hgserve("hgserve-many", ["--web-conf", str(webconf)])

    def start_daemon(self, name: str, site: Path, *extra: str) -> None:
        logfile = self.work / f"{name}.log"
        with open(logfile, "w") as out:
            proc = subprocess.Popen([self.hg_hosting, "--site", str(site), "serve", "--http", "127.0.0.1:0", *extra],
                                    env=self.env, stdout=out, stderr=subprocess.STDOUT)
        pattern = re.compile(r"serving HTTP on http://[\d.]+:(\d+)/")
        self.servers[name] = Server(name, proc, self._wait_port(proc, logfile, pattern), logfile)
        if extra:  # --workers: wait until every worker listens
            deadline = time.monotonic() + 60
            while logfile.read_text().count("serving HTTP on") < 3:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise BenchError(f"{name}: workers did not start\n{logfile.read_text()[-2000:]}")
                time.sleep(0.05)

    def start_hgserve(self, name: str, args: list[str]) -> None:
        logfile = self.work / f"{name}.log"
        with open(logfile, "w") as out:
            proc = subprocess.Popen([self.hg, "serve", *args, "-p", "0", "--address", "127.0.0.1"],
                                    env=self.env, stdout=out, stderr=subprocess.STDOUT)
        pattern = re.compile(r"listening at http://[^/]*:(\d+)/")
        self.servers[name] = Server(name, proc, self._wait_port(proc, logfile, pattern), logfile)

    def _wait_port(self, proc: subprocess.Popen, logfile: Path, pattern: re.Pattern) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            match = pattern.search(logfile.read_text())
            if match:
                return int(match.group(1))
            if proc.poll() is not None:
                raise BenchError(f"{proc.args} exited {proc.returncode}: {logfile.read_text()[-2000:]}")
            time.sleep(0.05)
        raise BenchError(f"{proc.args} did not start: {logfile.read_text()[-2000:]}")

    def stop(self) -> None:
        for server in self.servers.values():
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        for server in self.servers.values():
            try:
                server.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait()

    def repo_url(self, kind: str, server: str | None = None, auth: bool = False) -> str:
        if kind == DAEMON:
            s = self.servers[server or "daemon"]
            cred = f"alice:{PASSWORD}@" if auth else ""
            return f"http://{cred}127.0.0.1:{s.port}/alice/flask"
        return self.servers["hgserve"].url + "/"

    def server_repo(self, kind: str) -> Path:
        return self.site_repo if kind == DAEMON else self.plain

    # -- rounds -------------------------------------------------------------------------

    def server_pids(self, kind: str) -> list[int]:
        """The processes doing a target's server-side work (for its CPU time)."""
        name = {DAEMON: "daemon", HGSERVE: "hgserve", "daemon-w1": "daemon", "daemon-w2": "daemon-w2"}[kind]
        pid = self.servers[name].proc.pid
        return [pid, *children(pid)] if name == "daemon-w2" else [pid]

    def rounds(self, key: str, count: int, measure, kinds=KINDS) -> Result:
        """A warm-up round, then ``count`` rounds with the order of ``kinds`` alternating.

        Also keeps, per kind, the server-side CPU seconds of each measurement
        (user + system of the server processes, ``/proc/PID/stat``).
        """
        result = self.results.setdefault(key, Result())
        cpu = self.results.setdefault(f"{key}_server_cpu", Result())
        client_cpu = self.results.setdefault(f"{key}_client_cpu", Result())
        for index in range(-1, count):
            order = list(kinds) if index % 2 == 0 or index < 0 else list(reversed(kinds))
            values, used, client = {}, {}, {}
            for k in order:
                pids = self.server_pids(k)
                before = sum(cpu_seconds(p) for p in pids)
                self.client_cpu = 0.0
                values[k] = measure(k)
                used[k] = sum(cpu_seconds(p) for p in pids) - before
                client[k] = self.client_cpu
            if index >= 0:
                for k in kinds:
                    result.add(k, values[k])
                    cpu.add(k, used[k])
                    client_cpu.add(k, client[k])
            self.log(f"  {key} round {index} ({' then '.join(order)}): "
                     + ", ".join(f"{k} {values[k]:.4g} (cpu: server {used[k]:.2f}, client {client[k]:.2f})"
                                 for k in kinds)
                     + f"; load {os.getloadavg()[0]:.2f}")
        return result

    # clone

    def clone(self, kind: str, server: str | None = None) -> float:
        dest = self.fresh("clone")
        cpu = children_cpu()
        start = time.perf_counter()
        self.run([self.hg, "clone", "-U", "-q", self.repo_url(kind, server), str(dest)])
        elapsed = time.perf_counter() - start
        self.client_cpu = children_cpu() - cpu
        self.check_clone(dest, kind)
        shutil.rmtree(dest)
        return elapsed

    def check_clone(self, dest: Path, kind: str) -> None:
        have, want = self.revs(dest), self.revs(self.server_repo(kind))
        if have != want:
            raise BenchError(f"a clone from {kind} holds {have} changesets, the server {want}")

    # no-op pull

    def prepare_pull(self) -> None:
        self.pull_dest = {}
        for kind in KINDS:
            dest = self.fresh("pull")
            self.run([self.hg, "clone", "-U", "-q", self.repo_url(kind), str(dest)])
            self.pull_dest[kind] = dest

    def pull(self, kind: str) -> float:
        cpu = children_cpu()
        start = time.perf_counter()
        out = self.run([self.hg, "pull", "-R", str(self.pull_dest[kind]), self.repo_url(kind)])
        elapsed = time.perf_counter() - start
        self.client_cpu = children_cpu() - cpu
        if "no changes found" not in out:
            raise BenchError(f"the pull from {kind} was not a no-op: {out}")
        return elapsed

    # push

    def prepare_push(self) -> None:
        self.wc = {}
        for kind in KINDS:
            wc = self.fresh("wc")
            self.run([self.hg, "clone", "-q", self.repo_url(kind), str(wc)])
            self.wc[kind] = wc
        self.pushes = 0

    def push(self, kind: str) -> float:
        wc = self.wc[kind]
        self.counter += 1
        (wc / "bench-push.txt").write_text(f"push {self.counter}\n")
        self.run([self.hg, "-R", str(wc), "commit", "-A", "-q", "-m", f"bench push {self.counter}"])
        before = self.revs(self.server_repo(kind))
        os.sync()
        cpu = children_cpu()
        start = time.perf_counter()
        out = self.run([self.hg, "-R", str(wc), "push", self.repo_url(kind, auth=True)])
        elapsed = time.perf_counter() - start
        self.client_cpu = children_cpu() - cpu
        if "added 1 changesets" not in out or self.revs(self.server_repo(kind)) != before + 1:
            raise BenchError(f"the push to {kind} did not add one changeset: {out}")
        if kind == DAEMON:
            self.pushes += 1
        return elapsed

    def check_pushlog(self) -> None:
        pushes = json.loads(self.run([self.hg_hosting, "--site", str(self.site), "pushlog", "alice/flask", "--json"]))
        pushes.sort(key=lambda p: p["id"])
        if len(pushes) != 1 + self.pushes or any(len(p["changesets"]) != 1 for p in pushes[1:]):
            raise BenchError(f"the push log holds {len(pushes)} pushes, expected {1 + self.pushes}")
        if any(p.get("user") not in (None, "alice") for p in pushes):
            raise BenchError("a push was recorded for someone else than alice")

    # 8 concurrent clones

    def concurrent(self, kind: str, n: int = 8) -> float:
        server = {"daemon-w2": "daemon-w2", "daemon-w1": "daemon"}.get(kind)
        url = self.repo_url(DAEMON, server) if server else self.repo_url(HGSERVE)
        dests = [self.fresh("c8") for _ in range(n)]
        cpu = children_cpu()
        start = time.perf_counter()
        procs = [subprocess.Popen([self.hg, "clone", "-U", "-q", url, str(d)], env=self.env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for d in dests]
        errors = [p.communicate()[1] for p in procs]
        elapsed = time.perf_counter() - start
        self.client_cpu = children_cpu() - cpu
        if any(p.returncode for p in procs):
            raise BenchError(f"a concurrent clone from {kind} failed: {[e for e in errors if e][:1]}")
        for d in dests:
            self.check_clone(d, DAEMON if server else HGSERVE)
            shutil.rmtree(d)
        return elapsed

    # pages

    def pages(self, key: str, paths: dict[str, tuple[str, str]], per_round: int, count: int,
              check=None, keepalive: bool = False) -> Result:
        """GET ``paths[kind] = (server, path)`` ``per_round`` times per kind and round; ms per request.

        Each request on a fresh connection (as ``urllib`` does) unless ``keepalive``.
        """
        clients = {k: Client(self.servers[s].port) for k, (s, _) in paths.items()}
        result = self.results.setdefault(key, Result())
        sizes: dict[str, int] = {}
        try:
            for index in range(-1, count):
                order = list(paths) if index % 2 == 0 or index < 0 else list(reversed(paths))
                round_ms = {}
                for kind in order:
                    times = []
                    for _ in range(per_round):
                        status, body, elapsed = clients[kind].get(paths[kind][1], close=not keepalive)
                        if status != 200:
                            raise BenchError(f"GET {paths[kind][1]} from {kind}: {status} {body[:300]!r}")
                        if check is not None:
                            check(kind, body)
                        sizes[kind] = len(body)
                        times.append(elapsed * 1000)
                    if index >= 0:
                        for t in times:
                            result.add(kind, t)
                    round_ms[kind] = statistics.median(times)
                self.log(f"  {key} round {index}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in round_ms.items())
                         + f"; load {os.getloadavg()[0]:.2f}")
        finally:
            for c in clients.values():
                c.close()
        self.info[f"{key}_body_bytes"] = sizes
        return result

    def check_index(self, kind: str, body: bytes) -> None:
        """hg serve lists every repository; the daemon a first page that counts them all."""
        listed = len(set(REPO_LINK.findall(body)))
        self.info.setdefault("index_rows", {})[kind] = listed
        if listed == self.many:
            return
        if kind == HGSERVE or listed == 0 or f"({self.many} repositories)".encode() not in body:
            raise BenchError(f"the index of {kind} lists {listed} of {self.many} repositories")

    def index_all_pages(self, server: str, rounds: int) -> dict[str, object]:
        """Median time to walk every page of the daemon's index (for information)."""
        client = Client(self.servers[server].port)
        totals, seen = [], set()
        try:
            for _ in range(rounds):
                total, page, seen = 0.0, 1, set()
                while True:
                    status, body, elapsed = client.get(f"/?page={page}", close=True)
                    if status != 200:
                        raise BenchError(f"GET /?page={page} from {server}: {status}")
                    total += elapsed
                    found = set(REPO_LINK.findall(body))
                    if not found or found <= seen:
                        break
                    seen |= found
                    if b"page=%d" % (page + 1) not in body:
                        break
                    page += 1
                totals.append(total * 1000)
        finally:
            client.close()
        if len(seen) != self.many:
            raise BenchError(f"the pages of {server}'s index list {len(seen)} of {self.many} repositories")
        return {"pages": page, "median_ms": statistics.median(totals), "samples_ms": totals}

    def serve_every_repository(self, server: str, threads: int = 4) -> dict[str, object]:
        """Overview, /log and capabilities of every repository, over fresh connections."""
        port = self.servers[server].port
        paths = [p for name in self.many_names for p in (f"/{name}", f"/{name}/log", f"/{name}?cmd=capabilities")]
        errors: list[str] = []

        def work(chunk: list[str]) -> None:
            client = Client(port)
            for path in chunk:
                status, body, _ = client.get(path, close=True)
                if status != 200:
                    errors.append(f"{path}: {status} {body[:200]!r}")
            client.close()

        start = time.perf_counter()
        pool = [threading.Thread(target=work, args=(paths[i::threads],)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - start
        if errors:
            raise BenchError(f"{len(errors)} requests to {server} failed, e.g. {errors[0]}")
        return {"requests": len(paths), "seconds": elapsed}

    def memory(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for server in ("daemon-many-w2", "daemon-many"):
            pid = self.servers[server].proc.pid
            workers = children(pid) if server.endswith("w2") else [pid]
            if server.endswith("w2") and len(workers) != 2:
                raise BenchError(f"{server}: found {len(workers)} worker processes, expected 2")
            before = {w: rss_mb(w)[0] for w in workers}
            cpu_before = {w: cpu_seconds(w) for w in workers}
            served = self.serve_every_repository(server)
            after = {w: rss_mb(w) for w in workers}
            out[server] = {
                "workers": [{"pid": w, "rss_before_mb": before[w], "rss_mb": after[w][0], "hwm_mb": after[w][1],
                             "cpu_s": cpu_seconds(w) - cpu_before[w]} for w in workers],
                **served,
            }
            self.log(f"  {server}: {served['requests']} requests in {served['seconds']:.1f} s; "
                     + ", ".join(f"pid {w}: RSS {before[w]:.0f} -> {after[w][0]:.0f} MB (peak {after[w][1]:.0f}),"
                                 f" cpu {cpu_seconds(w) - cpu_before[w]:.1f} s" for w in workers))
        pid = self.servers["hgserve-many"].proc.pid
        out["hgserve-many"] = {"rss_mb": rss_mb(pid)[0], "hwm_mb": rss_mb(pid)[1]}
        return out

    # -- everything ---------------------------------------------------------------------

    def main(self) -> None:
        q, want = self.quick, self.only.__contains__
        self.setup()
        if want("clone"):
            self.log("full clone")
            self.rounds("clone", 3 if q else 7, self.clone)
        if want("pull"):
            self.log("no-op pull")
            self.prepare_pull()
            self.rounds("pull", 5 if q else 15, self.pull)
        if want("clone8"):
            self.log("8 concurrent clones")
            self.rounds("clone8", 2 if q else 4, self.concurrent, kinds=("daemon-w2", HGSERVE, "daemon-w1"))
        if want("log"):
            self.log("/log page")
            self.pages("log", {DAEMON: ("daemon", "/alice/flask/log"), HGSERVE: ("hgserve", "/log")},
                       per_round=20, count=6 if q else 15)
            self.pages("log_keepalive", {DAEMON: ("daemon", "/alice/flask/log"), HGSERVE: ("hgserve", "/log")},
                       per_round=10, count=2 if q else 4, keepalive=True)
        if want("push"):
            self.log("1-changeset push")
            self.prepare_push()
            self.rounds("push", 5 if q else 11, self.push)
            self.check_pushlog()
        self.info["daemon_rss_after_corpus_mb"] = {
            "daemon": rss_mb(self.servers["daemon"].proc.pid),
            "daemon-w2 workers": [rss_mb(w) for w in children(self.servers["daemon-w2"].proc.pid)],
            "hgserve": rss_mb(self.servers["hgserve"].proc.pid),
        }
        if want("index") or want("rss"):
            self.log(f"setting up {self.many} repositories")
            self.setup_many()
        if want("index"):
            self.log(f"index of {self.many} repositories")
            self.pages("index", {DAEMON: ("daemon-many", "/"), HGSERVE: ("hgserve-many", "/")},
                       per_round=3 if q else 5, count=4 if q else 8, check=self.check_index)
            self.info["index_all_pages"] = self.index_all_pages("daemon-many", 3 if q else 7)
        if want("rss"):
            self.log("serving every repository, then worker RSS")
            self.info["memory"] = self.memory()
        for name, server in self.servers.items():
            if "Traceback" in server.log.read_text():
                raise BenchError(f"{name} logged a traceback: see {server.log}")


# -- populating the 1,000-repository site (run in a child process) -------------------------


def populate(site_dir: str, bundle: str, count: int) -> int:
    """Create ``count`` repositories ``uNN/rNNN`` and unbundle ``bundle`` into each, in-process."""
    from mercurial import dispatch

    try:
        from mercurial.main_script import request  # Mercurial 7.2
    except ImportError:
        request = dispatch.request

    from hgext_hosting import models, repositories
    from hgext_hosting.service import accounts
    from hgext_hosting.service.actors import Actor
    from hgext_hosting.site import Site

    site = Site(site_dir).open()
    models.bind(site.database())
    owners = [f"u{i:02d}" for i in range(MANY_OWNERS)]
    for owner in owners:
        accounts.add_user(Actor.of_console(), owner, email=f"{owner}@example.org")
    for i in range(count):
        owner = owners[i % MANY_OWNERS]
        repo = repositories.create_repo(site, f"{owner}/r{i:03d}", description=f"repository number {i}")
        path = site.repo_path(repo.owner.name, repo.name)
        os.environ["HG_HOSTING_USER"] = owner
        rc = dispatch.dispatch(request([b"-R", os.fsencode(path), b"unbundle", b"-q",
                                                 os.fsencode(bundle)]))
        if rc:
            print(f"unbundle into {owner}/r{i:03d} exited {rc}", file=sys.stderr)
            return 2
    return 0


# -- the report ---------------------------------------------------------------------------


def report(bench: Bench) -> tuple[list[dict], bool]:
    rows = []
    for key, (title, unit, ref, target) in TARGETS.items():
        if key not in bench.results:
            continue
        res = bench.results[key]
        ours = res.median("daemon-w2" if key == "clone8" else DAEMON)
        theirs = res.median(HGSERVE)
        ratio = ours / theirs
        rows.append({"key": key, "title": title, "unit": unit, "daemon": ours, "hgserve": theirs,
                     "ratio": ratio, "target": target, "reference_hgserve": ref, "pass": ratio <= target,
                     "n": len(res.samples[HGSERVE])})
    if "memory" in bench.info:
        workers = bench.info["memory"]["daemon-many-w2"]["workers"]
        worst = max(w["rss_mb"] for w in workers)
        rows.append({"key": "rss", "title": "RSS per worker after 1,000 repos", "unit": "MB", "daemon": worst,
                     "hgserve": bench.info["memory"]["hgserve-many"]["rss_mb"], "ratio": None,
                     "target": RSS_LIMIT_MB, "reference_hgserve": None, "pass": worst < RSS_LIMIT_MB,
                     "n": len(workers)})
    print()
    print(f"{'measure':<36} {'n':>3} {'daemon':>10} {'hg serve':>10} {'ratio':>7} {'target':>8} "
          f"{'ref hg serve':>13}  result")
    for r in rows:
        def fmt(v: float, unit: str = r["unit"]) -> str:
            return f"{v:8.1f} {unit}" if unit in ("ms", "MB") else f"{v:8.3f} {unit}"

        ratio = f"{r['ratio']:6.3f}x" if r["ratio"] is not None else f"{'':>7}"
        target = f"<= {r['target']:.2f}x" if r["ratio"] is not None else f"< {r['target']:.0f} MB"
        ref = fmt(r["reference_hgserve"]) if r["reference_hgserve"] is not None else ""
        print(f"{r['title']:<36} {r['n']:>3} {fmt(r['daemon']):>10} {fmt(r['hgserve']):>10} {ratio} {target:>8} "
              f"{ref:>13}  {'PASS' if r['pass'] else 'FAIL'}")
    print()
    if "clone8" in bench.results:
        c8 = bench.results["clone8"]
        print(f"8 concurrent clones, one-process daemon (information): {c8.median('daemon-w1'):.2f} s "
              f"({c8.median('daemon-w1') / c8.median(HGSERVE):.3f}x hg serve)")
    if "log_keepalive" in bench.results:
        ka = bench.results["log_keepalive"]
        print(f"/log over one keep-alive connection (information): daemon {ka.median(DAEMON):.2f} ms, "
              f"hg serve {ka.median(HGSERVE):.2f} ms")
    for key in ("clone", "pull", "push", "clone8"):
        if f"{key}_server_cpu" not in bench.results:
            continue
        cpu, client = bench.results[f"{key}_server_cpu"], bench.results[f"{key}_client_cpu"]
        print(f"CPU per {key} (median; server + hg client): "
              + ", ".join(f"{k} {cpu.median(k):.2f} + {client.median(k):.2f} s" for k in cpu.samples))
    if "index_all_pages" in bench.info:
        _print_index_and_memory(bench)
    return rows, all(r["pass"] for r in rows)


def _print_index_and_memory(bench: Bench) -> None:
    walk = bench.info["index_all_pages"]
    print(f"index: every page of the daemon's ({walk['pages']} pages, all {bench.many} repositories): "
          f"{walk['median_ms']:.1f} ms in all ({walk['median_ms'] / bench.results['index'].median(HGSERVE):.3f}x"
          f" hg serve's one page)")
    print(f"index rows listed: {bench.info.get('index_rows')}; body bytes: {bench.info.get('index_body_bytes')}; "
          f"/log body bytes: {bench.info.get('log_body_bytes')}")
    for server in ("daemon-many-w2", "daemon-many") if "memory" in bench.info else ():
        m = bench.info["memory"][server]
        print(f"{server}: {m['requests']} requests over {bench.many} repositories in {m['seconds']:.1f} s; "
              + "; ".join(f"pid {w['pid']} RSS {w['rss_before_mb']:.0f} -> {w['rss_mb']:.0f} MB "
                          f"(peak {w['hwm_mb']:.0f} MB, cpu {w['cpu_s']:.1f} s)" for w in m["workers"]))


def _measures(text: str) -> frozenset[str]:
    chosen = frozenset(filter(None, text.split(",")))
    unknown = chosen - set(MEASURES)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose among {','.join(MEASURES)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--json", metavar="FILE", help="write every sample and the table to FILE")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the Flask bundle")
    parser.add_argument("--repos", type=int, default=1000, help="repositories for the index (default 1000)")
    parser.add_argument("--hg", default=str(BIN / "hg"))
    parser.add_argument("--hg-hosting", default=str(BIN / "hg-hosting"))
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (and print it)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every round on stderr")
    parser.add_argument("--only", type=_measures, default=frozenset(MEASURES),
                        help="comma-separated: " + ",".join(MEASURES))
    parser.add_argument("--no-stream", action="store_true",
                        help="the daemon's site without server.preferuncompressed (bundle clones)")
    parser.add_argument("--populate", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.populate:
        return populate(args.populate, args.bundle, args.count)
    if not args.corpus.is_file():
        print(f"error: no corpus at {args.corpus}", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="http-bench-", dir=args.workdir))
    bench = Bench(work, args.corpus, args.hg, args.hg_hosting, args.quick, args.repos, args.verbose, args.only,
                  not args.no_stream)
    hg_version = subprocess.run([args.hg, "version", "-q"], capture_output=True, text=True,
                                env=bench.env).stdout.strip()
    print(f"nproc {os.cpu_count()}  |  Python {platform.python_version()}  |  {hg_version}  |  "
          f"{platform.platform()}  |  {'quick' if args.quick else 'full'} run"
          f"{'  |  daemon without stream clones' if args.no_stream else ''}", flush=True)
    load_start = os.getloadavg()
    started = time.perf_counter()
    try:
        bench.main()
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        bench.stop()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    rows, ok = report(bench)
    load_end = os.getloadavg()
    total = time.perf_counter() - started
    print(f"\n{total:.0f} s in all; load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end "
          f"(nproc {os.cpu_count()}; above it, other processes were competing)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "table": rows,
            "samples": {k: r.samples for k, r in bench.results.items()},
            "info": bench.info,
            "load": [load_start[0], load_end[0]], "nproc": os.cpu_count(), "quick": args.quick,
            "changesets": bench.expected,
        }, indent=2, default=str) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
