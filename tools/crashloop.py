"""Kill pushes at random moments and at named points; prove nothing is ever half there.

Each trial pushes a few thousand changesets (a prefix of the generated corpus,
``tools/synthrepo.py``, or of the bundle given) to a fresh site repository and
kills it: SIGKILL after a random delay, Mercurial's own
``devel.debug.abort-transaction`` points, or our fault points
(``HG_HOSTING_FAULTS``).  Then, with no manual step, it pushes again (one
changeset more, so a transaction opens) and requires that the push succeeds,
``hg verify`` passes, ``hg-hosting check`` is clean, and every changeset is
covered by exactly one ``done`` push record, ids 1..n without gaps.

    python tools/crashloop.py --trials 120 [--seed 1] [--changesets 2500] [--bundle B.hg] [--events]

prints a tally per mode and outcome.  ``tests/test_crash.py`` runs a few
trials of every mode through :func:`run_trial`.

``--events`` (issue 14) runs a daemon with a webhook on every repository of
the lab's user, a receiver (``tools/hookreceiver.py``) in this process, and
adds the delivery windows (:data:`DELIVERY_MODES`: the daemon killed with
SIGKILL at a random moment while it delivers, after fanning an event out,
after claiming a delivery, after the receiver answered and before the answer
was recorded), one trial in three.  After every trial it requires that every
committed push reached the receiver with its own changesets, under one
delivery id, with the push ids of a repository first arriving in order, and
that no event is left for a push that did not land.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import synthrepo
from hookreceiver import Receiver

BIN = Path(sys.executable).parent
HG = str(BIN / "hg")
HG_HOSTING = str(BIN / "hg-hosting")

FAKE_SSH = """#!/bin/sh
# A stand-in for ssh: drop the options and the host, run the command in the site.
while [ $# -gt 1 ]; do case "$1" in -*) shift;; *) shift; break;; esac; done
# Config meant for the server only (the client would trip on it too).
if [ -n "$REMOTE_HGRCPATH" ]; then HGRCPATH="$REMOTE_HGRCPATH"; export HGRCPATH; fi
cd "$FAKESSH_ROOT" && exec sh -c "$*"
"""

#: mode -> (extra hg arguments, fault spec for HG_HOSTING_FAULTS)
MODES: dict[str, tuple[list[str], str]] = {
    "random-delay": ([], ""),
    "hg-kill-9-post-finalize": (["--config", "devel.debug.abort-transaction=kill-9-post-finalize"], ""),
    "hg-abort-post-finalize": (["--config", "devel.debug.abort-transaction=abort-post-finalize"], ""),
    "kill-before-db-write": ([], "pushlog-before-commit=kill"),
    "kill-before-db-commit": ([], "pushlog-before-db-commit=kill"),
    "kill-after-db-commit": ([], "pushlog-after-commit=kill"),
    "kill-before-done": ([], "pushlog-before-done=kill"),
}


#: mode -> HG_HOSTING_FAULTS of the daemon ("": SIGKILL after a random delay instead).
DELIVERY_MODES: dict[str, str] = {
    "daemon-kill-random": "",
    "daemon-kill-after-fan-out": "outbox-after-fan-out=kill",
    "daemon-kill-after-claim": "delivery-after-claim=kill",
    "daemon-kill-before-record": "delivery-before-record=kill",
}
#: The daemon's settings in an events lab: a short timeout, so a lease (3 timeouts) ends soon.
EVENTS_HGRC = "\n[hosting]\nwebhook-allow = 127.0.0.1\nwebhook-timeout = 1\nwebhook-retry-first = 0.2\nwebhook-retry-max = 1\n"


class TrialFailed(AssertionError):
    """A trial left the site in a state the design says cannot happen."""


@dataclass
class Lab:
    """A site, a user and a source clone of the corpus, shared by trials."""

    root: Path
    env: dict[str, str]
    source: Path
    revs: int
    normal_push_s: float = 1.0
    count: int = 0
    receiver: Receiver | None = None  # --events: the webhook's receiver
    daemon: subprocess.Popen | None = None

    @property
    def events(self) -> bool:
        return self.receiver is not None

    @property
    def site(self) -> Path:
        return self.root / "site"

    def run(self, argv, check=True, **kw) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, env=kw.pop("env", self.env), capture_output=True, text=True, **kw)
        if check and proc.returncode != 0:
            raise TrialFailed(f"{' '.join(map(str, argv))} exited {proc.returncode}: {proc.stderr[-2000:]}")
        return proc

    def cli(self, *args, check=True, **kw):
        return self.run([HG_HOSTING, "--site", str(self.site), *args], check=check, **kw)


def make_lab(root: Path, bundle: Path, changesets: int = 2500, events: bool = False) -> Lab:
    """Create the site and a single-headed source repository of about ``changesets`` changesets.

    The source is the ancestors of revision ``changesets`` of ``bundle``.
    """
    hgrc = root / "empty-hgrc"
    hgrc.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HG")}
    env.update(HGRCPATH=str(hgrc), HGPLAIN="1", HOME=str(root), HGUSER="test",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", FAKESSH_ROOT=str(root / "site" / "repos"))
    (root / "fakessh").write_text(FAKE_SSH)
    (root / "fakessh").chmod(0o755)
    lab = Lab(root, env, root / "source", changesets)
    lab.cli("init")
    lab.cli("user", "add", "alice")
    if events:
        enable_events(lab)
    lab.run([HG, "clone", "-q", "-U", "-r", str(changesets), str(bundle), str(lab.source)])
    lab.revs = int(lab.run([HG, "-R", str(lab.source), "log", "-r", "tip", "-T", "{rev}"]).stdout) + 1
    lab.normal_push_s = _timed_normal_push(lab)
    return lab


def enable_events(lab: Lab) -> None:
    """A webhook on every repository of alice, its receiver here, and a daemon delivering."""
    with open(lab.site / "hgrc", "a") as f:
        f.write(EVENTS_HGRC)
    lab.receiver = Receiver().start()
    lab.cli("webhook", "add", "alice", lab.receiver.url, "--secret-stdin", "--events", "push",
            input="crash-secret\n")
    start_daemon(lab)


def start_daemon(lab: Lab, faults: str = "") -> None:
    env = dict(lab.env)
    if faults:
        env["HG_HOSTING_FAULTS"] = faults
    log = open(lab.root / "daemon.log", "a")
    lab.daemon = subprocess.Popen([HG_HOSTING, "--site", str(lab.site), "serve", "--http", "127.0.0.1:0"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()


def stop_daemon(lab: Lab, kill: bool = False) -> None:
    if lab.daemon is not None and lab.daemon.poll() is None:
        lab.daemon.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        lab.daemon.wait(60)
    lab.daemon = None


def _timed_normal_push(lab: Lab) -> float:
    repo = _new_repo(lab)
    start = time.perf_counter()
    _push(lab, repo, "p1(tip)", "local", [], "")[0].wait()
    return time.perf_counter() - start


def _new_repo(lab: Lab) -> str:
    lab.count += 1
    name = f"crash{lab.count}"
    lab.cli("repo", "create", f"alice/{name}")
    return name


def _push(lab: Lab, name: str, rev: str, transport: str, extra: list[str], faults: str):
    """Start a push of ``rev`` (a revset) to ``alice/NAME``; faults only touch the server side."""
    env = dict(lab.env, HG_HOSTING_USER="alice")
    if faults:
        env["HG_HOSTING_FAULTS"] = faults
    if transport == "local":
        target = str(lab.site / "repos" / "alice" / name)
        argv = [HG, *extra, "-R", str(lab.source), "push", "-q", "-r", rev, target]
    else:
        if extra:  # hg serve --stdio refuses extra options: pass the config as a file
            server_rc = lab.root / f"server-{name}.rc"
            lines = []
            for item in extra[1::2]:  # "section.key=value"
                name_part, _, value = item.partition("=")
                section, _, key = name_part.partition(".")
                lines.append(f"[{section}]\n{key} = {value}\n")
            server_rc.write_text("".join(lines))
            env["REMOTE_HGRCPATH"] = str(server_rc)
        argv = [HG, "-R", str(lab.source), "push", "-q", "-r", rev, "--ssh", str(lab.root / "fakessh"),
                "--remotecmd", HG, f"ssh://x/alice/{name}"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, text=True)
    return proc, argv


def run_trial(lab: Lab, mode: str, transport: str, rng: random.Random) -> str:
    """One trial; return its outcome (what the kill left), raise TrialFailed on a violation."""
    extra, faults = MODES[mode]
    name = _new_repo(lab)
    repo_path = lab.site / "repos" / "alice" / name
    proc, _ = _push(lab, name, "p1(tip)", transport, extra, faults)
    if mode == "random-delay":
        try:
            proc.wait(timeout=rng.uniform(0, lab.normal_push_s * 1.1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=300)
    outcome = _outcome(lab, repo_path, name, proc.returncode)
    # No manual step: the next push (one changeset more) must just work.
    nxt, argv = _push(lab, name, "tip", transport, [], "")
    out, err = nxt.communicate(timeout=300)
    if nxt.returncode != 0:
        raise TrialFailed(f"[{mode}/{transport}] the next push failed ({outcome}): {err[-2000:]}")
    lab.run([HG, "-R", str(repo_path), "verify", "-q"])
    check = lab.cli("check", check=False)
    if check.returncode != 0:
        raise TrialFailed(f"[{mode}/{transport}] check is not clean ({outcome}): {check.stdout}")
    _assert_exact_coverage(lab, repo_path, name, mode, transport, outcome)
    if lab.events:
        _assert_delivered(lab, name, f"[{mode}/{transport}, {outcome}]")
    return outcome


def run_delivery_trial(lab: Lab, mode: str, rng: random.Random, pushes: int = 3) -> str:
    """Push ``pushes`` times to a new repository while the daemon is killed in a delivery window.

    Then a daemon runs again (without faults) and every push must arrive (see
    :func:`_assert_delivered`).  Returns what the kill hit.
    """
    faults = DELIVERY_MODES[mode]
    stop_daemon(lab)
    start_daemon(lab, faults)
    name = _new_repo(lab)
    before = len(lab.receiver.hits)
    killed = False
    for rev in range(pushes):
        proc, _ = _push(lab, name, str(rev), "local", [], "")
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise TrialFailed(f"[{mode}] push {rev + 1} failed: {err[-2000:]}")
        if rev == 0 and not faults:  # kill it while it fans out, claims or sends push 1
            time.sleep(rng.uniform(0, 0.6))
            killed = lab.daemon.poll() is None
            stop_daemon(lab, kill=True)
    if faults:
        try:
            lab.daemon.wait(30)
            killed = lab.daemon.returncode == -signal.SIGKILL
        except subprocess.TimeoutExpired:
            killed = False
        stop_daemon(lab, kill=True)
    got = len([h for h in lab.receiver.hits[before:] if h.json["repository"]["name"] == name])
    outcome = f"{'killed' if killed else 'not killed'}, {got}/{pushes} delivered before"
    start_daemon(lab)
    _assert_delivered(lab, name, f"[{mode}, {outcome}]")
    return outcome


def _assert_delivered(lab: Lab, name: str, where: str, timeout: float = 90) -> None:
    """Every done push of alice/NAME reached the receiver with its changesets, once per delivery id, in order."""
    with sqlite3.connect(f"file:{lab.site / 'hosting.db'}?mode=ro", uri=True) as db:
        pushes = db.execute(
            "SELECT p.push_id, p.id FROM push p JOIN repository r ON p.repository_id = r.id"
            " WHERE r.name = ? AND p.state = 'done' ORDER BY p.push_id", (name,)).fetchall()
        nodes = {pid: [n for (n,) in db.execute(
            "SELECT node FROM push_changeset WHERE push_id = ? ORDER BY position LIMIT 100", (row,))]
            for pid, row in pushes}
        orphans = db.execute(
            "SELECT e.id FROM event e LEFT JOIN push p ON p.id = e.push_id WHERE e.kind = 'push'"
            " AND (p.id IS NULL OR p.state <> 'done') AND e.repository_name = ?", (f"alice/{name}",)).fetchall()
    if orphans:
        raise TrialFailed(f"{where} events left for pushes that did not land: {orphans}")
    deadline = time.monotonic() + timeout
    while True:
        hits = [h for h in list(lab.receiver.hits) if h.json["repository"]["name"] == name]
        if {h.json["push"]["id"] for h in hits} >= set(nodes):
            break
        if time.monotonic() > deadline:
            got = sorted({h.json["push"]["id"] for h in hits})
            raise TrialFailed(f"{where} pushes {sorted(nodes)} done, {got} delivered after {timeout:g} s")
        time.sleep(0.1)
    firsts: list[int] = []
    guids: dict[int, set[str]] = {}
    for h in hits:
        pid = h.json["push"]["id"]
        if pid not in nodes:
            raise TrialFailed(f"{where} push {pid} was delivered but is not in the push log")
        if [c["node"] for c in h.json["changesets"]] != nodes[pid]:
            raise TrialFailed(f"{where} push {pid} was delivered with other changesets than it holds")
        guids.setdefault(pid, set()).add(h.delivery)
        if pid not in firsts:
            firsts.append(pid)
    if firsts != sorted(firsts):
        raise TrialFailed(f"{where} pushes first arrived in the order {firsts}")
    several = {pid: ids for pid, ids in guids.items() if len(ids) != 1}
    if several:
        raise TrialFailed(f"{where} pushes delivered under several delivery ids: {several}")


def _outcome(lab: Lab, repo_path: Path, name: str, returncode: int) -> str:
    journal = (repo_path / ".hg" / "store" / "journal").exists()
    with sqlite3.connect(f"file:{lab.site / 'hosting.db'}?mode=ro", uri=True) as db:
        states = [s for (s,) in db.execute(
            "SELECT p.state FROM push p JOIN repository r ON p.repository_id = r.id WHERE r.name = ?", (name,))]
    if returncode == 0:
        return "completed"
    if journal:
        return "journal left" + (", record pending" if "pending" in states else "")
    if "pending" in states:
        return "hg committed, record pending"
    if "done" in states:
        return "committed, client killed late"
    return "nothing landed"


def _assert_exact_coverage(lab: Lab, repo_path: Path, name: str, mode: str, transport: str, outcome: str) -> None:
    nodes = lab.run([HG, "-R", str(repo_path), "log", "--hidden", "-T", "{node}\n"]).stdout.split()
    with sqlite3.connect(f"file:{lab.site / 'hosting.db'}?mode=ro", uri=True) as db:
        pushes = db.execute(
            "SELECT p.id, p.push_id, p.state FROM push p JOIN repository r ON p.repository_id = r.id"
            " WHERE r.name = ? ORDER BY p.push_id", (name,)).fetchall()
        recorded = db.execute(
            "SELECT c.node FROM push_changeset c JOIN push p ON c.push_id = p.id"
            " JOIN repository r ON p.repository_id = r.id WHERE r.name = ?", (name,)).fetchall()
        empty = db.execute(
            "SELECT p.push_id FROM push p JOIN repository r ON p.repository_id = r.id WHERE r.name = ?"
            " AND NOT EXISTS (SELECT 1 FROM push_changeset c WHERE c.push_id = p.id)"
            " AND NOT EXISTS (SELECT 1 FROM push_bookmark b WHERE b.push_id = p.id)", (name,)).fetchall()
    where = f"[{mode}/{transport}, {outcome}]"
    recorded_nodes = [n for (n,) in recorded]
    if sorted(recorded_nodes) != sorted(nodes):
        raise TrialFailed(f"{where} {len(nodes)} changesets but {len(recorded_nodes)} recorded"
                          f" ({len(set(recorded_nodes))} distinct)")
    if [p[1] for p in pushes] != list(range(1, len(pushes) + 1)):
        raise TrialFailed(f"{where} push ids have gaps: {[p[1] for p in pushes]}")
    if any(p[2] != "done" for p in pushes):
        raise TrialFailed(f"{where} unsettled records remain: {pushes}")
    if empty:
        raise TrialFailed(f"{where} records without changesets: {empty}")
    if len(nodes) != lab.revs:
        raise TrialFailed(f"{where} the repository has {len(nodes)} changesets, expected {lab.revs}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=105)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--changesets", type=int, default=2500)
    parser.add_argument("--bundle", type=Path, help="push a prefix of this bundle (default: generate one)")
    parser.add_argument("--events", action="store_true",
                        help="a daemon delivers a webhook for every push; one trial in three kills it while it does")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    tally: collections.Counter = collections.Counter()
    failures: list[str] = []
    modes = list(MODES)
    with tempfile.TemporaryDirectory(prefix="crashloop-") as tmp:
        bundle = args.bundle
        if bundle is None:
            bundle = Path(tmp) / "corpus.hg"
            synthrepo.make_bundle(bundle)
        lab = make_lab(Path(tmp), bundle.resolve(), args.changesets, events=args.events)
        print(f"{args.changesets}-changeset pushes; a normal push takes {lab.normal_push_s:.2f} s")
        delivery_modes = list(DELIVERY_MODES)
        try:
            for i in range(args.trials):
                delivery = args.events and i % 3 == 2
                if delivery:
                    mode, transport = delivery_modes[(i // 3) % len(delivery_modes)], "local"
                else:
                    j = i - i // 3 if args.events else i
                    mode = modes[j % len(modes)]
                    transport = "stdio" if (j // len(modes)) % 2 else "local"
                try:
                    outcome = run_delivery_trial(lab, mode, rng) if delivery else run_trial(lab, mode, transport, rng)
                    tally[(mode, transport, outcome)] += 1
                except TrialFailed as e:
                    failures.append(str(e))
                    tally[(mode, transport, "FAILED")] += 1
                    outcome = f"FAILED: {str(e)[:500]}"
                print(f"trial {i + 1}/{args.trials}: {mode}/{transport}: {outcome}", flush=True)
        finally:
            if lab.events:
                stop_daemon(lab)
                lab.receiver.stop()
    print("\nmode                       transport  outcome                              trials")
    for (mode, transport, outcome), n in sorted(tally.items()):
        print(f"{mode:26} {transport:10} {outcome:36} {n}")
    print(f"\n{args.trials} trials, {args.trials - len(failures)} clean, {len(failures)} failed")
    for f in failures:
        print("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
