"""Kill pushes at random moments and at named points; prove nothing is ever half there.

Each trial pushes a few thousand changesets (a prefix of the generated corpus,
``tools/synthrepo.py``, or of the bundle given) to a fresh site repository and
kills it: SIGKILL after a random delay, Mercurial's own
``devel.debug.abort-transaction`` points, or our fault points
(``HG_HOSTING_FAULTS``).  Then, with no manual step, it pushes again (one
changeset more, so a transaction opens) and requires that the push succeeds,
``hg verify`` passes, ``hg-hosting check`` is clean, and every changeset is
covered by exactly one ``done`` push record, ids 1..n without gaps.

    python tools/crashloop.py --trials 120 [--seed 1] [--changesets 2500] [--bundle B.hg]

prints a tally per mode and outcome.  ``tests/test_crash.py`` runs a few
trials of every mode through :func:`run_trial`.
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

    @property
    def site(self) -> Path:
        return self.root / "site"

    def run(self, argv, check=True, **kw) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, env=kw.pop("env", self.env), capture_output=True, text=True, **kw)
        if check and proc.returncode != 0:
            raise TrialFailed(f"{' '.join(map(str, argv))} exited {proc.returncode}: {proc.stderr[-2000:]}")
        return proc

    def cli(self, *args, check=True):
        return self.run([HG_HOSTING, "--site", str(self.site), *args], check=check)


def make_lab(root: Path, bundle: Path, changesets: int = 2500) -> Lab:
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
    lab.run([HG, "clone", "-q", "-U", "-r", str(changesets), str(bundle), str(lab.source)])
    lab.revs = int(lab.run([HG, "-R", str(lab.source), "log", "-r", "tip", "-T", "{rev}"]).stdout) + 1
    lab.normal_push_s = _timed_normal_push(lab)
    return lab


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
    return outcome


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
        lab = make_lab(Path(tmp), bundle.resolve(), args.changesets)
        print(f"{args.changesets}-changeset pushes; a normal push takes {lab.normal_push_s:.2f} s")
        for i in range(args.trials):
            mode = modes[i % len(modes)]
            transport = "stdio" if (i // len(modes)) % 2 else "local"
            try:
                outcome = run_trial(lab, mode, transport, rng)
                tally[(mode, transport, outcome)] += 1
            except TrialFailed as e:
                failures.append(str(e))
                tally[(mode, transport, "FAILED")] += 1
            print(f"trial {i + 1}/{args.trials}: {mode}/{transport}: "
                  f"{'FAILED' if failures and failures[-1].startswith(f'[{mode}') else outcome}", flush=True)
    print("\nmode                      transport  outcome                              trials")
    for (mode, transport, outcome), n in sorted(tally.items()):
        print(f"{mode:25} {transport:10} {outcome:36} {n}")
    print(f"\n{args.trials} trials, {args.trials - len(failures)} clean, {len(failures)} failed")
    for f in failures:
        print("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
