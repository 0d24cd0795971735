"""Helpers for tests that push with the real ``hg`` client to a site repository.

A :class:`Pusher` pushes either to the repository's path (``local``: the client
process opens the site repository itself) or through ``hg serve --stdio`` over a
pipe (``stdio``: a fake ``ssh`` command runs the remote ``hg -R OWNER/NAME serve
--stdio`` inside ``SITE/repos``, with the environment the client passes down).
Either way the identity is the ``HG_HOSTING_USER`` of that environment.

:func:`repo_state` is what a push may change: every changeset of the site
repository with its phase and bookmarks (``hg log``), every push row of any
state (read from SQLite) and the push log as ``hg-hosting pushlog --json``
prints it.  Refusals compare the first two (the rows are a superset of what the
CLI shows); accepted pushes check all three against each other.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from clibatch import cli_batch
from conftest import HG, HG_HOSTING, SiteHandle

TRANSPORTS = ("local", "stdio")

#: A stand-in for ssh: drop the options and the host, run the remote command in $FAKESSH_ROOT.
FAKESSH = """\
#!/bin/sh
while [ $# -gt 1 ]; do case "$1" in -*) shift;; *) shift; break;; esac; done
cd "$FAKESSH_ROOT" && exec sh -c "$*"
"""


def write_fakessh(directory: Path) -> Path:
    path = directory / "fakessh"
    if not path.exists():
        path.write_text(FAKESSH)
        path.chmod(0o755)
    return path


@dataclass
class Pusher:
    """Pushes from a client working copy to a site repository over one transport."""

    site: SiteHandle
    transport: str
    fakessh: Path

    def url(self, full: str) -> str:
        if self.transport == "local":
            return str(self.site.repo_path(full))
        return f"ssh://x/{full}"

    def argv(self, args: tuple[str, ...], full: str) -> list[str]:
        argv = ["push", *args]
        if self.transport == "stdio":
            argv += ["--ssh", str(self.fakessh)]
        return [*argv, self.url(full)]

    def environ(self, user: str | None, env: dict[str, str] | None) -> dict[str, str]:
        extra = {"FAKESSH_ROOT": str(self.site.root / "repos"), **(env or {})}
        if user is not None:
            extra["HG_HOSTING_USER"] = user
        return extra

    def push(self, wc: Path, *args: str, user: str | None = None, full: str = "alice/demo",
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``hg push [ARGS] URL`` from ``wc``; never raises on a non-zero exit."""
        return self.site.hg(*self.argv(args, full), cwd=wc, check=False,
                            env=self.environ(user, env))

    def start(self, wc: Path, *args: str, user: str | None = None,
              full: str = "alice/demo") -> subprocess.Popen:
        """Start the same push in the background (for concurrent pushes)."""
        return subprocess.Popen(
            [HG, *self.argv(args, full)], cwd=wc, text=True,
            env={**self.site.env, **self.environ(user, None)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )


@dataclass
class RepoState:
    """What a push can change: changesets (with phase and bookmarks) and the push records."""

    log: list[str]  # "NODE PHASE BOOKMARKS", newest first, hidden changesets included
    rows: list[tuple]  # every push row, any state, straight from the database (see db_pushes)
    pushes: list[dict] | None = None  # hg-hosting pushlog --json, newest first (None: not read)

    @property
    def nodes(self) -> set[str]:
        return {line.split()[0] for line in self.log}

    @property
    def last_id(self) -> int:
        return self.rows[-1][0] if self.rows else 0


def db_pushes(site: SiteHandle, full: str) -> list[tuple]:
    """Every push row of ``full`` in any state, oldest first: ``(id, user, state, nodes, bookmarks)``.

    Read with sqlite3 rather than the CLI, which shows only settled (``done``)
    pushes: a refused push must not leave even a ``pending`` row.
    """
    owner, name = full.split("/")
    conn = sqlite3.connect(site.root / "hosting.db", timeout=30)
    try:
        pushes = conn.execute(
            'SELECT p.id, p.push_id, p.user, p.state FROM push p'
            ' JOIN repository r ON p.repository_id = r.id JOIN owner o ON r.owner_id = o.id'
            ' WHERE o.name_key = ? AND r.name_key = ? ORDER BY p.push_id',
            (owner.lower(), name.lower()),
        ).fetchall()
        return [
            (push_id, user, state,
             [n for (n,) in conn.execute(
                 "SELECT node FROM push_changeset WHERE push_id = ? ORDER BY position", (pk,))],
             conn.execute("SELECT name, old, new FROM push_bookmark WHERE push_id = ? ORDER BY name",
                          (pk,)).fetchall())
            for pk, push_id, user, state in pushes
        ]
    finally:
        conn.close()


def run_all(argvs: list[list[str]], env: dict[str, str], timeout: float = 120) -> list[str]:
    """Run commands at the same time; all must succeed; return their stdouts."""
    procs = [subprocess.Popen(a, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for a in argvs]
    outs = [p.communicate(timeout=timeout) for p in procs]
    for argv, proc, (out, err) in zip(argvs, procs, outs, strict=True):
        assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}\n{out}\n{err}"
    return [out for out, _ in outs]


def cli_all(site: SiteHandle, *commands: list[str]) -> None:
    """Run independent ``hg-hosting`` commands (setup only), all in one process (:mod:`clibatch`):
    a process start costs more than most commands."""
    cli_batch(site, [(c, None) for c in commands])


def log_argv(site: SiteHandle, full: str) -> list[str]:
    return [HG, "log", "-R", str(site.repo_path(full)), "--hidden", "-T", "{node} {phase} {bookmarks}\n"]


def repo_states(site: SiteHandle, *fulls: str, cli: bool = True) -> list[RepoState]:
    """The state of several repositories (``hg log`` and, with ``cli``, the pushlog CLI run at once)."""
    argvs = []
    for full in fulls:
        argvs.append(log_argv(site, full))
        if cli:
            argvs.append([HG_HOSTING, "--site", str(site.root), "pushlog", full, "--json"])
    outs = iter(run_all(argvs, site.env))
    states = []
    for full in fulls:
        log = next(outs).splitlines()
        pushes = json.loads(next(outs)) if cli else None
        states.append(RepoState(log, db_pushes(site, full), pushes))
    return states


def repo_state(site: SiteHandle, full: str = "alice/demo", cli: bool = True) -> RepoState:
    return repo_states(site, full, cli=cli)[0]


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def assert_push_failed(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The push exited non-zero and one line of its output (stdout+stderr) holds every needle.

    One line, other than ``pushing to URL`` (which names the repository anyway):
    the refusal itself must name the user, the repository, the ref and the changeset.
    """
    out = output(proc)
    assert proc.returncode != 0, f"the push was accepted:\n{out}"
    lines = [line for line in out.splitlines() if not line.startswith("pushing to ")]
    assert any(all(n in line for n in needles) for line in lines), \
        f"no line of the client's output holds all of {needles}:\n{out}"
    return out


def assert_unchanged(site: SiteHandle, before: RepoState, full: str = "alice/demo") -> None:
    """Neither the repository nor any push row (pending ones included) has changed."""
    after = repo_state(site, full, cli=False)
    assert after.log == before.log, "the refused push changed the repository"
    assert after.rows == before.rows, "the refused push left a push row"


def assert_refused(site: SiteHandle, proc: subprocess.CompletedProcess, before: RepoState,
                   *needles: str, full: str = "alice/demo") -> None:
    """Refused with every needle in the output; neither changesets nor record landed."""
    assert_push_failed(proc, *needles)
    assert_unchanged(site, before, full)


def check_records(state: RepoState) -> None:
    """Push ids run 1..N and every row is settled; if read, the CLI shows exactly these rows."""
    assert [r[0] for r in state.rows] == list(range(1, len(state.rows) + 1)), state.rows
    assert all(r[2] == "done" for r in state.rows), f"unsettled push rows: {state.rows}"
    if state.pushes is None:
        return
    shown = [(p["id"], p["user"], "done", p["changesets"],
              [(b["name"], b["old"], b["new"]) for b in p["bookmarks"]]) for p in reversed(state.pushes)]
    assert shown == state.rows, f"the CLI shows {state.pushes}\nthe database holds {state.rows}"
    dates = [datetime.datetime.strptime(p["date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
             for p in reversed(state.pushes)]
    assert dates == sorted(dates), "push dates go backwards"
    now = datetime.datetime.now(datetime.UTC)
    assert all(abs(now - d) < datetime.timedelta(minutes=10) for d in dates), f"not UTC now: {dates}"


def check_pushlog(site: SiteHandle, full: str = "alice/demo") -> RepoState:
    """``hg-hosting pushlog --json`` shows every push row, all settled, ids 1..N, UTC dates."""
    state = repo_state(site, full, cli=True)
    check_records(state)
    return state


def assert_recorded(site: SiteHandle, proc: subprocess.CompletedProcess, before: RepoState,
                    user: str, changesets: list[str], full: str = "alice/demo",
                    bookmarks: list[dict] | None = None, ok_codes: tuple[int, ...] = (0,),
                    cli: bool = False) -> RepoState:
    """Accepted: exactly one new record, with the next id, ``user``, ``changesets`` in order, settled.

    The pushlog CLI is read only with ``cli`` (each test ends with :func:`check_pushlog`,
    which compares the CLI with every row at once).
    """
    assert proc.returncode in ok_codes, f"the push failed ({proc.returncode}):\n{output(proc)}"
    after = repo_state(site, full, cli=cli)
    check_records(after)
    assert after.rows[:-1] == before.rows, f"expected one new record after {before.rows}: {after.rows}"
    push_id, pusher, _state, nodes, marks = after.rows[-1]
    assert (push_id, pusher, nodes) == (before.last_id + 1, user, changesets)
    assert after.nodes == before.nodes | set(changesets) and not set(changesets) & before.nodes
    if bookmarks is not None:
        assert marks == [(b["name"], b["old"], b["new"]) for b in bookmarks]
    return after
