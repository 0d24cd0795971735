"""What the daemon's SSH server costs a clone: ``hg clone`` over SSH against a plain ``hg serve --stdio`` pipe.

Measures, on this machine and in one run, the wall time of ``hg clone -U`` of the
Flask corpus (``shared/data/flask.hg``, 5,534 changesets) three ways:

``daemon``
    ``ssh://hg@127.0.0.1:PORT/alice/flask`` through the daemon's SSH server
    (``daemon/ssh.py``, started by ``tests/ssh_server_runner.py`` on port 0),
    with the stock OpenSSH client and an ed25519 key registered for alice.
    This is everything a user pays: key exchange, public-key authentication
    (a database lookup), the command filter and read check, ``hg serve
    --stdio`` in a child process with the hosting extension loaded, and the
    encrypted channel with back-pressure.
``pipe-site``
    the same site repository served by ``hg -R PATH serve --stdio`` over a
    pipe (a fake ``ssh`` runs it directly): the extension still loads, the
    SSH transport and the daemon are gone.  daemon / pipe-site is the cost of
    the SSH server itself.
``pipe-plain``
    a plain copy of the corpus outside the site (``hg init`` + ``hg unbundle``,
    no extension), served the same way: ``hg serve --stdio`` as it comes.
    daemon / pipe-plain is the ratio the target applies to (≤ 1.2x).

The corpus goes into the site repository with ``hg unbundle`` run with
``HG_HOSTING_USER=alice`` (the hooks record it as one push).  Trials rotate
the order of the three kinds (daemon first, then pipe-site first, then
pipe-plain first, ...) so that drift hits all alike; one untimed warm-up round
runs first.  Every clone must hold all 5,534 changesets.  The client runs with
``HGRCPATH`` pointing at an empty file and ``HGPLAIN=1``.

Wall time is what the target applies to, but on a shared machine it swings
with the load, so each clone's CPU time (user + system) is reported too,
summed over every process involved: the client ``hg`` and ``ssh``, the server
``hg``, and for ``daemon`` the daemon's own CPU during the clone plus its
reaped child.  (The bench process makes itself a child subreaper, so that the
processes ``hg clone`` does not wait for are still counted.)  Also reported:
the daemon's own CPU time per clone (SSH encryption and relaying) and its peak
RSS.  Linux only (``/proc``, ``prctl``).

Usage (from the repository root)::

    /work/venv/bin/python bench/ssh_clone.py [--trials N] [--quick] [--json FILE] [-v]

Exit status: 0 when the target is met, 1 when it is missed, 2 when the
benchmark itself failed (a clone failed or was incomplete).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchenv import BIN, isolated_env

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "flask.hg"
RUNNER = ROOT / "tests" / "ssh_server_runner.py"
SSH = shutil.which("ssh") or "/usr/bin/ssh"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"

KINDS = ("daemon", "pipe-site", "pipe-plain")
TARGET_RATIO = 1.2
CLK_TCK = os.sysconf("SC_CLK_TCK")

FAKE_SSH = """\
#!/bin/sh
# A stand-in for ssh: whatever the client asks, serve one repository over this pipe.
exec {hg} -R {repo} serve --stdio
"""


class BenchError(RuntimeError):
    """The benchmark could not measure what it claims to."""


@dataclass
class Sample:
    wall: float  # seconds, the client's hg clone
    cpu: float  # user + system seconds of every process involved (client, ssh, daemon, server hg)
    daemon_cpu: float  # of those, the daemon process itself (encryption, relaying)


def process_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of one process, and of its children it has waited for (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / CLK_TCK
    children = (int(fields[13]) + int(fields[14])) / CLK_TCK
    return own, children


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def become_subreaper() -> None:
    """Adopt orphaned descendants, so that their CPU time is counted when we reap them.

    ``hg clone`` does not always wait for its ssh process (nor the server ``hg``
    behind a fake ssh) before exiting; without this they would be reparented to
    init and their CPU time lost.  Linux: ``prctl(PR_SET_CHILD_SUBREAPER)``.
    """
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:
        raise BenchError("prctl(PR_SET_CHILD_SUBREAPER) failed")


def reap_orphans(keep: int, timeout: float = 30.0) -> None:
    """Wait for every child process except ``keep`` (the daemon) to exit, and reap it."""
    deadline = time.monotonic() + timeout
    while True:
        pids = set()
        for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
            pids |= {int(p) for p in children.read_text().split()}
        pids.discard(keep)
        if not pids:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"processes {sorted(pids)} did not exit after the clone")
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Bench:
    def __init__(self, work: Path, hg: str, hg_hosting: str, corpus: Path, verbose: bool):
        self.work = work
        self.hg = hg
        self.hg_hosting = hg_hosting
        self.corpus = corpus
        self.verbose = verbose
        self.site = work / "site"
        self.plain = work / "plain"
        self.key = work / "alice_ed25519"
        self.clones = work / "clones"
        self.counter = 0
        self.daemon: subprocess.Popen | None = None
        self.port = 0
        self.env = isolated_env(work)

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> str:
        proc = subprocess.run(argv, env=env or self.env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(argv)} exited {proc.returncode}\n"
                             f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}")
        return proc.stdout

    def log(self, msg: str) -> None:
        if self.verbose:
            print(msg, file=sys.stderr, flush=True)

    # -- setup ----------------------------------------------------------------

    def setup(self) -> None:
        self.log(f"setup in {self.work}")
        cli = [self.hg_hosting, "--site", str(self.site)]
        self.run([*cli, "init"])
        self.run([*cli, "user", "add", "alice"])
        self.run([*cli, "repo", "create", "alice/flask"])
        self.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)])
        self.run([*cli, "ssh-key", "add", "alice", f"{self.key}.pub"])
        site_repo = self.site / "repos" / "alice" / "flask"
        self.run([self.hg, "-R", str(site_repo), "unbundle", "-q", str(self.corpus)],
                 dict(self.env, HG_HOSTING_USER="alice"))
        self.run([self.hg, "init", str(self.plain)])
        self.run([self.hg, "-R", str(self.plain), "unbundle", "-q", str(self.corpus)])
        self.expected = len(self.run([self.hg, "-R", str(self.plain), "log", "-T", "x"]))
        site_count = len(self.run([self.hg, "-R", str(site_repo), "log", "-T", "x"]))
        if self.expected < 5000 or site_count != self.expected:
            raise BenchError(f"the corpus loaded {site_count} / {self.expected} changesets")
        pushes = json.loads(self.run([*cli, "pushlog", "alice/flask", "--json"]))
        if len(pushes) != 1 or len(pushes[0]["changesets"]) != self.expected:
            raise BenchError("the unbundle was not recorded as one push of every changeset")
        if self.run([self.hg, "-R", str(site_repo), "debugrequires"]) != \
                self.run([self.hg, "-R", str(self.plain), "debugrequires"]):
            raise BenchError("the site repository and the plain one differ in format")
        self.fakes = {}
        for kind, repo in (("pipe-site", site_repo), ("pipe-plain", self.plain)):
            path = self.work / f"fake-ssh-{kind}"
            path.write_text(FAKE_SSH.format(hg=shlex.quote(self.hg), repo=shlex.quote(str(repo))))
            path.chmod(0o755)
            self.fakes[kind] = str(path)
        self.clones.mkdir()
        self.start_daemon()

    def start_daemon(self) -> None:
        self.daemon = subprocess.Popen(
            [sys.executable, str(RUNNER), str(self.site), "--log", str(self.work / "daemon.log")],
            env=self.env, stdout=subprocess.PIPE, text=True)
        line = self.daemon.stdout.readline().strip()
        if not line.isdigit():
            raise BenchError(f"the SSH server did not start: {line!r}")
        self.port = int(line)
        self.ssh = shlex.join([SSH, "-F", "/dev/null", "-i", str(self.key), "-o", "IdentitiesOnly=yes",
                               "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                               "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                               "-p", str(self.port)])

    def stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            self.daemon.wait(timeout=60)

    # -- measuring ------------------------------------------------------------

    def clone(self, kind: str) -> Sample:
        """Clone one way; return its wall time and the CPU time of every process involved."""
        dest = self.clones / f"{kind}-{self.counter}"
        self.counter += 1
        if kind == "daemon":
            argv = [self.hg, "clone", "-U", "-q", "--ssh", self.ssh,
                    f"ssh://hg@127.0.0.1:{self.port}/alice/flask", str(dest)]
        else:
            argv = [self.hg, "clone", "-U", "-q", "--ssh", self.fakes[kind], "ssh://x/repo", str(dest)]
        daemon_before, client_before = process_cpu(self.daemon.pid), children_cpu()
        start = time.perf_counter()
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        reap_orphans(keep=self.daemon.pid)
        client = children_cpu() - client_before
        daemon_after = process_cpu(self.daemon.pid)
        # the daemon's hg child is reaped by the daemon right after the clone ends
        if kind == "daemon":
            deadline = time.monotonic() + 5
            while daemon_after[1] == daemon_before[1] and time.monotonic() < deadline:
                time.sleep(0.01)
                daemon_after = process_cpu(self.daemon.pid)
        own = daemon_after[0] - daemon_before[0]
        child = daemon_after[1] - daemon_before[1]
        if proc.returncode != 0:
            raise BenchError(f"{kind} clone exited {proc.returncode}: {proc.stderr.strip()}")
        have = len(self.run([self.hg, "-R", str(dest), "log", "-T", "x"]))
        if have != self.expected:
            raise BenchError(f"{kind} clone holds {have} changesets, expected {self.expected}")
        shutil.rmtree(dest)
        return Sample(elapsed, client + own + child, own)

    def round(self, index: int) -> dict[str, Sample]:
        order = KINDS[index % 3:] + KINDS[:index % 3] if index >= 0 else KINDS
        samples = {kind: self.clone(kind) for kind in order}
        self.log(f"  round {index} ({' '.join(order)}): "
                 + ", ".join(f"{k} {samples[k].wall:.3f} s (cpu {samples[k].cpu:.2f} s)" for k in KINDS)
                 + f"; daemon's own cpu {samples['daemon'].daemon_cpu:.2f} s; load {os.getloadavg()[0]:.2f}")
        return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=None, metavar="N", help="rounds (default 7)")
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--json", metavar="FILE", help="write the numbers to FILE")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the Flask bundle")
    parser.add_argument("--hg", default=str(BIN / "hg"))
    parser.add_argument("--hg-hosting", default=str(BIN / "hg-hosting"))
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every round on stderr")
    args = parser.parse_args(argv)
    trials = args.trials or (3 if args.quick else 7)
    if not args.corpus.is_file():
        print(f"error: no corpus at {args.corpus}", file=sys.stderr)
        return 2
    if not Path(SSH).is_file():
        print("error: the OpenSSH client is not installed", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="ssh-clone-", dir=args.workdir))
    bench = Bench(work, args.hg, args.hg_hosting, args.corpus, args.verbose)
    try:
        ssh_version = subprocess.run([SSH, "-V"], capture_output=True, text=True).stderr.strip()
        print(f"nproc {os.cpu_count()}  |  Python {platform.python_version()}  |  {ssh_version}"
              f"  |  {platform.platform()}  |  rounds {trials}", flush=True)
        load_start = os.getloadavg()
        started = time.perf_counter()
        become_subreaper()
        bench.setup()
        bench.log("warm-up round (not counted)")
        bench.round(-1)
        rounds = [bench.round(i) for i in range(trials)]
        total = time.perf_counter() - started
        load_end = os.getloadavg()
        rss = peak_rss_mb(bench.daemon.pid)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        bench.stop_daemon()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    median = {k: statistics.median(r[k].wall for r in rounds) for k in KINDS}
    cpu = {k: statistics.median(r[k].cpu for r in rounds) for k in KINDS}
    paired = statistics.median(r["daemon"].wall / r["pipe-plain"].wall for r in rounds)
    ratio = median["daemon"] / median["pipe-plain"]
    transport = median["daemon"] / median["pipe-site"]
    daemon_cpu = statistics.median(r["daemon"].daemon_cpu for r in rounds)
    print(f"\nhg clone -U of the corpus ({bench.expected} changesets), median of {trials} rounds:")
    print(f"  {'':<10} {'wall ms':>8} {'CPU ms':>8}   (CPU: user+sys of every process involved)")
    for k in KINDS:
        print(f"  {k:<10} {median[k] * 1000:8.0f} {cpu[k] * 1000:8.0f}")
    print(f"daemon / pipe-plain: wall {ratio:.3f}x (paired {paired:.3f}x), CPU"
          f" {cpu['daemon'] / cpu['pipe-plain']:.3f}x; target <= {TARGET_RATIO}x on wall:"
          f" {'PASS' if ratio <= TARGET_RATIO else 'FAIL'}")
    print(f"daemon / pipe-site (the SSH server alone): wall {transport:.3f}x,"
          f" CPU {cpu['daemon'] / cpu['pipe-site']:.3f}x")
    print(f"daemon process CPU per clone (encryption, relaying; not its hg child): {daemon_cpu * 1000:.0f} ms;"
          f" daemon peak RSS {rss:.0f} MB")
    print(f"{len(rounds) * 3 + 3} clones in {total:.0f} s; load average {load_start[0]:.2f} at start,"
          f" {load_end[0]:.2f} at end (nproc {os.cpu_count()}; above it, other processes were competing)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "changesets": bench.expected, "rounds": [
                {k: {"wall_s": r[k].wall, "cpu_s": r[k].cpu, "daemon_cpu_s": r[k].daemon_cpu} for k in KINDS}
                for r in rounds],
            "median_s": median, "median_cpu_s": cpu, "ratio": ratio, "paired_ratio": paired, "ssh_server_ratio": transport,
            "target_ratio": TARGET_RATIO, "pass": ratio <= TARGET_RATIO, "daemon_peak_rss_mb": rss,
            "load": [load_start[0], load_end[0]],
        }, indent=2) + "\n")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
