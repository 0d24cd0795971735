"""The push path with the real ``hg`` client: who may push, what is recorded, and what is not.

Every test pushes from a client working copy outside the site, either to the
site repository's path (``local``) or through ``hg serve --stdio`` over a pipe
(``stdio``, see :mod:`pushhelpers`).  After every refusal the client must exit
non-zero with a line naming what the refusal is about, and neither the site
repository (changesets, phases, bookmarks) nor any push row (pending ones
included) may have changed; after every accepted push there is exactly one new,
settled record with the next id, and each test ends by comparing ``hg-hosting
pushlog --json`` with every row.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import DATE, HG, commit
from pushhelpers import (
    TRANSPORTS,
    Pusher,
    RepoState,
    assert_push_failed,
    assert_recorded,
    assert_refused,
    assert_unchanged,
    check_pushlog,
    check_records,
    cli_all,
    output,
    repo_states,
    run_all,
    write_fakessh,
)

#: A repository just created: no changesets, no pushes (what ``repo create`` makes).
EMPTY = RepoState([], [])


@pytest.fixture(params=TRANSPORTS)
def pusher(request, site, tmp_path) -> Pusher:
    return Pusher(site, request.param, write_fakessh(tmp_path))


@pytest.fixture
def local(site, tmp_path) -> Pusher:
    return Pusher(site, "local", write_fakessh(tmp_path))


@pytest.fixture
def pushers(site, tmp_path) -> dict[str, Pusher]:
    """One pusher per transport, for tests that push over both within one site."""
    fakessh = write_fakessh(tmp_path)
    return {t: Pusher(site, t, fakessh) for t in TRANSPORTS}


@pytest.fixture
def wc(site, tmp_path) -> Path:
    """An empty client working copy outside the site."""
    path = tmp_path / "wc"
    site.hg("init", str(path))
    return path


def add_users(site, *names: str, admins: tuple[str, ...] = ()) -> None:
    cli_all(site, *[["user", "add", n, "--email", f"{n}@example.org", *(["--admin"] if n in admins else [])]
                    for n in names])


def setup_demo(site, *others: str, admins: tuple[str, ...] = (), then: tuple[list[str], ...] = ()) -> None:
    """Users alice (owner of the public repository alice/demo) and ``others``; then ``then``."""
    users = [["user", "add", n, "--email", f"{n}@example.org", *(["--admin"] if n in admins else [])]
             for n in ("alice", *others)]
    cli_all(site, *users, ["repo", "create", "alice/demo"], *then)  # one process for all


def site_hgrc_append(site, text: str) -> str:
    """Append to the site hgrc; return its previous content (to restore)."""
    hgrc = site.root / "hgrc"
    original = hgrc.read_text()
    hgrc.write_text(original + text)
    return original


def check_clean(site) -> None:
    proc = site.cli("check", check=False)
    assert proc.returncode == 0, f"check found differences:\n{proc.stdout}{proc.stderr}"


# -- who may push --------------------------------------------------------------


def test_identity_and_write_access(site, pusher, wc):
    """A push with no identity, an unknown user, only REMOTE_USER set, or by bob without write (nothing on a public repository, then a read grant) is refused naming the user and repository; alice's push and then bob's with a write grant are recorded under the HG_HOSTING_USER name."""
    setup_demo(site, "bob")
    node = commit(site.hg, wc, "a.txt", "a\n")
    attempts = [
        ({}, ["no authenticated user", "alice/demo"]),
        ({"user": "zed"}, ["unknown user", "zed", "alice/demo"]),
        ({"env": {"REMOTE_USER": "alice"}}, ["no authenticated user", "alice/demo"]),
        ({"user": "bob"}, ["bob", "alice/demo"]),
    ]
    for how, needles in attempts:
        proc = pusher.push(wc, **how)
        assert_refused(site, proc, EMPTY, *needles)
        if pusher.transport == "stdio":  # refused before the bundle is uploaded
            assert "adding changesets" not in output(proc)
    site.cli("grant", "alice/demo", "bob", "read")
    assert_refused(site, pusher.push(wc, user="bob"), EMPTY, "bob", "alice/demo")

    state = assert_recorded(site, pusher.push(wc, user="alice"), EMPTY, "alice", [node])
    site.cli("grant", "alice/demo", "bob", "write")
    node2 = commit(site.hg, wc, "b.txt", "b\n")
    assert_recorded(site, pusher.push(wc, user="bob"), state, "bob", [node2])
    check_pushlog(site)


def test_process_environment_cannot_pose_as_hgweb(site, pushers, wc):
    """REQUEST_METHOD and REMOTE_USER=alice in the environment of a local push or an ``hg serve --stdio`` session do not make bob (HG_HOSTING_USER, no write) alice: each push is refused naming bob and the repository, and neither changesets nor a push row land."""
    setup_demo(site, "bob")
    commit(site.hg, wc, "a.txt", "a\n")
    spoof = {"REQUEST_METHOD": "POST", "REMOTE_USER": "alice"}
    for pusher in pushers.values():
        assert_refused(site, pusher.push(wc, user="bob", env=spoof), EMPTY, "bob", "alice/demo")


# -- protected refs --------------------------------------------------------------


def test_protected_branch(site, pusher, wc):
    """A changeset on protected branch ``stable`` from bob (write, not allowed) is refused naming bob, the repository, the branch and that changeset, and nothing of the push lands; the same changesets pushed by alice get the next id, and a member of an allowed team, a site admin and bob on another branch may push."""
    setup_demo(site, "bob", "carol", "root", admins=("root",), then=(["team", "add", "devs"],))
    cli_all(site, ["grant", "alice/demo", "bob", "write"], ["grant", "alice/demo", "carol", "write"],
            ["team", "member-add", "devs", "carol"],
            ["protect", "alice/demo", "stable", "--allow", "alice", "--allow", "@devs"])
    base = commit(site.hg, wc, "a.txt", "a\n")
    state = assert_recorded(site, pusher.push(wc, user="alice"), EMPTY, "alice", [base])

    on_default = commit(site.hg, wc, "b.txt", "b\n")
    on_stable = commit(site.hg, wc, "s.txt", "s\n", branch="stable")
    assert_refused(site, pusher.push(wc, "--new-branch", user="bob"), state,
                   "bob", "alice/demo", "stable", on_stable[:12])

    state = assert_recorded(site, pusher.push(wc, "--new-branch", user="alice"), state, "alice",
                            [on_default, on_stable])
    by_team = commit(site.hg, wc, "c.txt", "c\n")  # still on stable
    state = assert_recorded(site, pusher.push(wc, user="carol"), state, "carol", [by_team])
    by_admin = commit(site.hg, wc, "r.txt", "r\n")
    state = assert_recorded(site, pusher.push(wc, user="root"), state, "root", [by_admin])
    elsewhere = commit(site.hg, wc, "d.txt", "d\n", branch="default")
    assert_recorded(site, pusher.push(wc, user="bob"), state, "bob", [elsewhere])
    check_pushlog(site)


def test_protected_bookmark(site, pusher, wc):
    """Bob (write, not allowed) moving or deleting protected bookmark ``main``, with or without new changesets, is refused naming bob, the repository, the bookmark and the changeset; alice's bookmark-only move is recorded with no changesets and {name, old, new}; bob may push another bookmark."""
    setup_demo(site, "bob", then=(["grant", "alice/demo", "bob", "write"],
                                  ["protect", "alice/demo", "main", "--allow", "alice"]))
    c1 = commit(site.hg, wc, "a.txt", "a\n")
    c2 = commit(site.hg, wc, "b.txt", "b\n")
    site.hg("bookmark", "-r", c1, "main", cwd=wc)
    state = assert_recorded(site, pusher.push(wc, "-B", "main", "-r", c2, user="alice"), EMPTY, "alice",
                            [c1, c2], bookmarks=[{"name": "main", "old": None, "new": c1}])

    site.hg("bookmark", "-f", "-r", c2, "main", cwd=wc)
    assert_refused(site, pusher.push(wc, "-B", "main", user="bob"), state,
                   "bob", "alice/demo", "main", c2[:12])
    state = assert_recorded(site, pusher.push(wc, "-B", "main", user="alice"), state, "alice", [],
                            bookmarks=[{"name": "main", "old": c1, "new": c2}],
                            ok_codes=(0, 1))  # hg push says "no changes found" (1)
    assert f"{c2} public main" in state.log

    c3 = commit(site.hg, wc, "c.txt", "c\n")  # -B main pushes c3 with the move
    site.hg("bookmark", "-f", "-r", c3, "main", cwd=wc)
    assert_refused(site, pusher.push(wc, "-B", "main", user="bob"), state,
                   "bob", "alice/demo", "main", c3[:12])
    site.hg("bookmark", "-d", "main", cwd=wc)
    assert_refused(site, pusher.push(wc, "-B", "main", user="bob"), state, "bob", "alice/demo", "main")

    site.hg("bookmark", "-r", c3, "feature", cwd=wc)
    assert_recorded(site, pusher.push(wc, "-B", "feature", user="bob"), state, "bob", [c3],
                    bookmarks=[{"name": "feature", "old": None, "new": c3}])
    pushes = check_pushlog(site).pushes
    assert pushes[1]["changesets"] == [] and pushes[1]["bookmarks"] == [{"name": "main", "old": c1, "new": c2}]


# -- what is recorded --------------------------------------------------------------


def test_phase_only_push(site, pushers, wc):
    """On a non-publishing repository, making a pushed draft public and pushing again is refused for bob (no write) and recorded for alice as a push with no changesets and a "phases" entry; check stays clean."""
    setup_demo(site, "bob")
    site.cli("repo", "set", "alice/demo", "publishing=false")
    node = commit(site.hg, wc, "a.txt", "a\n")
    state = assert_recorded(site, pushers["local"].push(wc, user="alice"), EMPTY, "alice", [node])
    assert state.log == [f"{node} draft "]

    site.hg("phase", "--public", "-r", ".", cwd=wc)
    for pusher in pushers.values():
        assert_refused(site, pusher.push(wc, user="bob"), state, "bob", "alice/demo")
    after = assert_recorded(site, pushers["stdio"].push(wc, user="alice"), state, "alice", [], bookmarks=[],
                            ok_codes=(0, 1), cli=True)  # hg push says "no changes found" (1)
    assert after.log == [f"{node} public "]
    assert after.pushes[0]["phases"] == [[node, 1, 0]]  # draft -> public
    check_clean(site)


def test_pushlog_in_the_repository_matches_the_cli(site, local, wc):
    """``hg pushlog`` inside the site repository shows the same pushes (text and --json) as ``hg-hosting pushlog``."""
    setup_demo(site)
    commit(site.hg, wc, "a.txt", "a\n")
    commit(site.hg, wc, "b.txt", "b\n")
    site.hg("bookmark", "-r", "0", "feature", cwd=wc)
    assert local.push(wc, "-r", "0", user="alice").returncode == 0  # a new bookmark needs -B
    assert local.push(wc, "-B", "feature", user="alice").returncode in (0, 1)  # bookmark only
    assert local.push(wc, user="alice").returncode == 0
    expected = check_pushlog(site).pushes
    assert [(p["id"], len(p["changesets"]), len(p["bookmarks"])) for p in expected] == [
        (3, 1, 0), (2, 0, 1), (1, 1, 0)]
    repo = str(site.repo_path("alice/demo"))
    assert json.loads(site.hg("-R", repo, "pushlog", "--json").stdout) == expected
    # hg pushlog prints tab-separated lines, hg-hosting pushlog a table under a header line
    hg_rows = [line.split("\t")[:3] for line in site.hg("-R", repo, "pushlog").stdout.splitlines()]
    cli_rows = [line.split()[:3] for line in site.cli("pushlog", "alice/demo").stdout.splitlines()[1:]]
    assert hg_rows == cli_rows == [[str(p["id"]), p["date"], p["user"]] for p in expected]


# -- refusals after the checks ------------------------------------------------------


def test_admin_hook_refusal_leaves_nothing(site, pusher, wc):
    """An administrator's failing pretxnchangegroup or pretxnclose hook (the latter after the recorder is attached) refuses the push with neither changesets nor record, and the next push gets the next id."""
    setup_demo(site)
    first = commit(site.hg, wc, "a.txt", "a\n")
    state = assert_recorded(site, pusher.push(wc, user="alice"), EMPTY, "alice", [first])
    for hook in ("pretxnchangegroup.zzfail", "pretxnclose.zzfail"):
        node = commit(site.hg, wc, f"{hook}.txt", "x\n")
        original = site_hgrc_append(site, f"\n[hooks]\n{hook} = false\n")
        assert_refused(site, pusher.push(wc, user="alice"), state, hook)
        (site.root / "hgrc").write_text(original)
        state = assert_recorded(site, pusher.push(wc, user="alice"), state, "alice", [node])
    assert [r[0] for r in state.rows] == [1, 2, 3]
    check_pushlog(site)


def test_failure_after_the_record_is_written_leaves_nothing(site, local, wc):
    """When the push fails after its record was committed to the database (hg aborting after the finalizers, or an error right after the record's COMMIT), the record is removed with the changesets, and the next push reuses the id."""
    setup_demo(site)
    first = commit(site.hg, wc, "a.txt", "a\n")
    state = assert_recorded(site, local.push(wc, user="alice"), EMPTY, "alice", [first])
    node = commit(site.hg, wc, "b.txt", "b\n")

    original = site_hgrc_append(site, "\n[devel]\ndebug.abort-transaction = abort-post-finalize\n")
    assert_refused(site, local.push(wc, user="alice"), state, "abort-post-finalize")
    (site.root / "hgrc").write_text(original)
    for fault in ("pushlog-before-db-commit", "pushlog-after-commit"):
        proc = local.push(wc, user="alice", env={"HG_HOSTING_FAULTS": fault})
        assert_refused(site, proc, state, fault)

    assert_recorded(site, local.push(wc, user="alice"), state, "alice", [node])
    check_pushlog(site)
    check_clean(site)


# -- the database ----------------------------------------------------------------------


def test_database_locked(site, pushers, wc):
    """While another connection holds the database's write lock, a push (local or stdio) fails within the busy timeout with a message about the database and lands nothing; once released, the next push gets the next id and check is clean."""
    setup_demo(site)
    first = commit(site.hg, wc, "a.txt", "a\n")
    state = assert_recorded(site, pushers["local"].push(wc, user="alice"), EMPTY, "alice", [first])
    hgrc = site.root / "hgrc"
    assert "busy-timeout = 5000\n" in hgrc.read_text()
    hgrc.write_text(hgrc.read_text().replace("busy-timeout = 5000\n", "busy-timeout = 300\n"))
    node = commit(site.hg, wc, "b.txt", "b\n")

    conn = sqlite3.connect(site.root / "hosting.db", isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        for transport, pusher in pushers.items():
            started = time.monotonic()
            proc = pusher.push(wc, user="alice")
            elapsed = time.monotonic() - started
            assert_push_failed(proc, "database")
            assert elapsed < 10, f"{transport}: the push took {elapsed:.1f} s with a 300 ms busy timeout"
            assert_unchanged(site, state)  # readers are not blocked by the writer (WAL)
    finally:
        conn.rollback()
        conn.close()
    assert_recorded(site, pushers["stdio"].push(wc, user="alice"), state, "alice", [node])
    check_pushlog(site)
    check_clean(site)


def test_database_of_another_schema(site, pushers, wc):
    """A database whose schema version is not this code's refuses a push (local or stdio) with a message about the schema and lands nothing; restored, the push is recorded as push 1."""
    setup_demo(site)
    node = commit(site.hg, wc, "a.txt", "a\n")

    def set_version(value: str) -> str:
        with sqlite3.connect(site.root / "hosting.db") as conn:
            old = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
            conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (value,))
        conn.close()
        return old

    version = set_version("999")
    try:
        procs = [p.push(wc, user="alice") for p in pushers.values()]
        log = site.hg("log", "-R", str(site.repo_path("alice/demo")), "--hidden", "-T", "{node}\n").stdout
    finally:
        set_version(version)
    for proc in procs:
        assert_push_failed(proc, "schema", "999")
    assert log == ""
    assert_unchanged(site, EMPTY)
    assert_recorded(site, pushers["local"].push(wc, user="alice"), EMPTY, "alice", [node])
    check_pushlog(site)


# -- concurrency -------------------------------------------------------------------------


N = 10


def finish(procs: list[subprocess.Popen], users: list[str]) -> None:
    """Wait for pushes started at the same time; every one must have succeeded."""
    failed = []
    for user, proc in zip(users, procs, strict=True):
        out, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failed.append((user, proc.returncode, out + err))
    assert not failed, f"{len(failed)} of {len(procs)} concurrent pushes failed: {failed}"


def test_concurrent_pushes(site, local, tmp_path):
    """Ten users pushing ten distinct heads to one repository at once all succeed with one record each (ids 1..N contiguous, the right user on each), and so do ten pushes to ten repositories at once; check stays clean."""
    users = [f"u{i}" for i in range(N)]
    add_users(site, *users)
    cli_all(site, ["repo", "create", "u0/shared"], *[["repo", "create", f"{u}/demo"] for u in users])
    cli_all(site, *[["grant", "u0/shared", u, "write"] for u in users[1:]])

    base_wc = tmp_path / "base"
    site.hg("init", str(base_wc))
    base = commit(site.hg, base_wc, "base.txt", "base\n")
    clones = [tmp_path / f"wc-{u}" for u in users]
    for u, clone in zip(users, clones, strict=True):
        shutil.copytree(base_wc, clone, symlinks=True)
        (clone / f"{u}.txt").write_text(f"{u}\n")
    committed = run_all([[HG, "--cwd", str(c), "commit", "--debug", "-A", "-d", DATE, "-m", f"by {u}"]
                         for u, c in zip(users, clones, strict=True)], site.env)
    heads = {u: re.search(r"^committed changeset \d+:([0-9a-f]{40})$", out, re.M).group(1)
             for u, out in zip(users, committed, strict=True)}
    assert len(set(heads.values())) == N

    # one repository, ten new heads at once
    first = assert_recorded(site, local.push(base_wc, user="u0", full="u0/shared"), EMPTY, "u0", [base],
                            full="u0/shared")
    finish([local.start(c, "-f", user=u, full="u0/shared") for u, c in zip(users, clones, strict=True)], users)
    after = check_pushlog(site, "u0/shared")
    assert len(after.rows) == N + 1 and after.rows[0] == first.rows[0]
    assert sorted((r[1], r[3]) for r in after.rows[1:]) == sorted((u, [h]) for u, h in heads.items())
    assert after.nodes == {base, *heads.values()}

    # ten repositories at once
    finish([local.start(c, user=u, full=f"{u}/demo") for u, c in zip(users, clones, strict=True)], users)
    for u, state in zip(users, repo_states(site, *[f"{u}/demo" for u in users], cli=False), strict=True):
        check_records(state)
        assert [(r[0], r[1], r[3]) for r in state.rows] == [(1, u, [base, heads[u]])]
        assert state.nodes == {base, heads[u]}
    check_clean(site)
