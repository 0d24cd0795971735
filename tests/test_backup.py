"""``hg-hosting backup`` and ``restore``: a consistent copy of a live site, and back.

The copy must be a site on which ``check`` is clean and ``hg verify`` passes:
every push record in it has its changesets and every changeset has a record,
even when pushes run during the backup or a crash left a push half settled.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from clibatch import cli_batch
from conftest import HG, Daemon, SiteHandle, commit, site_handle
from pushhelpers import cli_all, db_pushes, run_all

#: One pusher per repository, all pushing while the backup runs.  Five keep pushes in
#: flight on several repositories when the backup takes each repository's lock (what
#: the consistent-prefix assertions are about); ten proved nothing more for twice the CPU.
REPOS = [f"alice/r{i}" for i in range(5)]
#: Changesets each concurrent pusher pushes, one push each.
PUSHES_EACH = 4


def _restored(site: SiteHandle, directory: Path) -> SiteHandle:
    return SiteHandle(directory, site.env)


def _assert_sound(restored: SiteHandle, repos: list[str]) -> None:
    """``check`` is clean and every repository passes ``hg verify``."""
    check = restored.cli("check", check=False)
    assert check.returncode == 0 and check.stdout.strip() == "ok: the database and the repositories agree", \
        check.stdout + check.stderr
    for full in repos:
        restored.hg("-R", str(restored.repo_path(full)), "verify", "-q")


def _done_rows(site: SiteHandle, full: str) -> int:
    return sum(1 for row in db_pushes(site, full) if row[2] == "done")


def _pending_rows(site: SiteHandle) -> int:
    conn = sqlite3.connect(site.root / "hosting.db", timeout=30)
    try:
        return conn.execute("SELECT count(*) FROM push WHERE state = 'pending'").fetchone()[0]
    finally:
        conn.close()


def _wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_backup_during_concurrent_pushes_restores_clean(site: SiteHandle, tmp_path: Path):
    """A backup taken while 5 pushers push restores to a site that checks clean and verifies.

    It holds some pushes and not others, all whole, all settled: a prefix of each
    repository's log on the live site, which goes on taking pushes.
    """
    cli_batch(site, [(["user", "add", "alice", "--password-stdin"], "alice-pw\n"),
                     *((["repo", "create", full], None) for full in REPOS)])
    source = tmp_path / "source"
    site.hg("init", str(source))
    for n in range(PUSHES_EACH):
        commit(site.hg, source, f"f{n}", f"{n}\n" * 2000)
    run_all([[HG, "clone", "-q", "-U", str(source), str(tmp_path / f"wc{i}")] for i in range(len(REPOS))],
            site.env)
    # Each pusher pushes half its changesets, waits at the gate until the backup is done, then the rest:
    # the backup starts once a first push is recorded, while the others push, and cannot hold the second half.
    gate = tmp_path / "gate"
    half = PUSHES_EACH // 2
    scripts = [" && ".join([*(f"hg push -q -r {n} {site.repo_path(full)}" for n in range(half)),
                            f"while [ ! -e {gate} ]; do sleep 0.05; done",
                            *(f"hg push -q -r {n} {site.repo_path(full)}" for n in range(half, PUSHES_EACH))])
               for full in REPOS]
    procs = [subprocess.Popen(["sh", "-c", script], cwd=tmp_path / f"wc{i}", text=True,
                              env={**site.env, "HG_HOSTING_USER": "alice"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i, script in enumerate(scripts)]
    try:
        _wait_for(lambda: any(_done_rows(site, full) for full in REPOS), "a first push")
        dest = tmp_path / "backup"
        out = site.cli("backup", str(dest)).stdout
    finally:
        gate.touch()
        outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), outs
    assert f"and {len(REPOS)} repositories" in out and "pushes waited" in out, out

    manifest = json.loads((dest / "hg-hosting-backup.json").read_text())
    assert manifest["database"] == "sqlite" and manifest["repositories"] == sorted(REPOS)
    restored = _restored(site, tmp_path / "restored")
    proc = site.cli("restore", str(dest), str(restored.root))
    assert "ok: the database and the repositories agree" in proc.stdout, proc.stdout
    _assert_sound(restored, REPOS)

    in_backup = sum(_done_rows(restored, full) for full in REPOS)
    assert 1 <= in_backup <= len(REPOS) * half, in_backup
    print(f"\n{in_backup} of {len(REPOS) * half} pushes before the gate are in the backup; {out}")
    assert sum(_done_rows(site, full) for full in REPOS) == len(REPOS) * PUSHES_EACH
    for full in REPOS:  # each repository holds exactly the pushes its records say, in order
        rows = db_pushes(restored, full)
        assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
        log = restored.hg("log", "-R", str(restored.repo_path(full)), "-T", "{node}\n", "-r", "sort(all(), rev)")
        assert log.stdout.split() == [node for row in rows for node in row[3]]
        assert rows == db_pushes(site, full)[: len(rows)]  # a prefix of what the live site holds

    # The restored site serves, takes pushes and records them; the live site is untouched.
    daemon = Daemon(restored)
    try:
        clone = tmp_path / "clone"
        restored.hg("clone", "-q", f"{daemon.url}/alice/r0", str(clone))
        node = commit(restored.hg, clone, "after", "after restore\n")
        restored.hg("push", "-q", f"http://alice:alice-pw@127.0.0.1:{daemon.port}/alice/r0", cwd=clone)
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log()
    assert db_pushes(restored, "alice/r0")[-1][3] == [node]
    assert node not in {n for row in db_pushes(site, "alice/r0") for n in row[3]}
    _assert_sound(restored, ["alice/r0"])


def test_backup_waits_for_a_push_in_flight(site: SiteHandle, tmp_path: Path):
    """A push whose record is still ``pending`` (inside its transaction) is waited for, then copied whole.

    Without the repository locks the copy would hold the pending row and a journal:
    ``check`` on the restored site would report both.
    """
    cli_all(site, ["user", "add", "alice", "--email", "alice@example.org"], ["repo", "create", "alice/demo"])
    wc = tmp_path / "wc"
    site.hg("init", str(wc))
    node = commit(site.hg, wc, "a", "a\n")
    push = subprocess.Popen(
        [HG, "push", "-q", str(site.repo_path("alice/demo"))], cwd=wc, text=True,
        env={**site.env, "HG_HOSTING_USER": "alice", "HG_HOSTING_FAULTS": "pushlog-after-commit=sleep:2"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: _pending_rows(site) == 1, "the pending record")
        out = site.cli("backup", str(tmp_path / "backup")).stdout
    finally:
        assert push.wait(60) == 0, push.communicate()
    restored = _restored(site, tmp_path / "restored")
    site.cli("restore", str(tmp_path / "backup"), str(restored.root))
    _assert_sound(restored, ["alice/demo"])
    assert db_pushes(restored, "alice/demo") == [(1, "alice", "done", [node], [])], out


@pytest.mark.parametrize(("fault", "landed"), [("pushlog-after-commit=kill", False),
                                               ("pushlog-before-done=kill", True)])
def test_a_push_killed_mid_way_is_settled_in_the_copy(site: SiteHandle, tmp_path: Path, fault: str,
                                                      landed: bool):
    """A crash leftover (a pending row, maybe a journal) is settled as the next push would settle it."""
    cli_all(site, ["user", "add", "alice", "--email", "alice@example.org"], ["repo", "create", "alice/demo"])
    wc = tmp_path / "wc"
    site.hg("init", str(wc))
    node = commit(site.hg, wc, "a", "a\n")
    killed = site.hg("push", "-q", str(site.repo_path("alice/demo")), cwd=wc, check=False,
                     env={"HG_HOSTING_USER": "alice", "HG_HOSTING_FAULTS": fault})
    assert killed.returncode != 0 and _pending_rows(site) == 1
    out = site.cli("backup", str(tmp_path / "backup")).stdout
    assert "settled: alice/demo: push 1 had" in out, out
    restored = _restored(site, tmp_path / "restored")
    site.cli("restore", str(tmp_path / "backup"), str(restored.root))
    _assert_sound(restored, ["alice/demo"])
    assert db_pushes(restored, "alice/demo") == ([(1, "alice", "done", [node], [])] if landed else [])


def test_backup_copies_the_site_files_and_links_only_store_files(site: SiteHandle, tmp_path: Path):
    """hgrc, secret and host key come along (0600 kept); tmp/ and locks do not; --copy links nothing."""
    cli_all(site, ["user", "add", "alice", "--email", "alice@example.org"], ["repo", "create", "alice/demo"])
    wc = tmp_path / "wc"
    site.hg("init", str(wc))
    commit(site.hg, wc, "a", "a\n")
    site.hg("push", "-q", str(site.repo_path("alice/demo")), cwd=wc, user="alice")
    (site.root / "tmp" / "junk").write_text("x")

    linked = tmp_path / "linked"
    site.cli("backup", str(linked))
    for name in ("hgrc", "secret", "ssh_host_ed25519_key"):
        assert (linked / name).read_bytes() == (site.root / name).read_bytes()
    for name in ("secret", "ssh_host_ed25519_key", "hosting.db"):
        assert (linked / name).stat().st_mode & 0o777 == 0o600, name
    assert not (linked / "tmp").exists()
    repo = linked / "repos" / "alice" / "demo" / ".hg"
    live = site.repo_path("alice/demo") / ".hg"
    assert (repo / "store" / "00changelog.i").samefile(live / "store" / "00changelog.i")
    assert not (repo / "hgrc").samefile(live / "hgrc")
    assert not (repo / "cache").exists() and not (repo / "store" / "lock").exists()

    copied = tmp_path / "copied"
    site.cli("backup", "--copy", str(copied))
    store = copied / "repos" / "alice" / "demo" / ".hg" / "store"
    assert all(p.stat().st_nlink == 1 for p in store.rglob("*") if p.is_file())

    # A later push to the live site leaves the hardlinked backup as it was (hg breaks the links).
    before = (repo / "store" / "00changelog.i").read_bytes()
    commit(site.hg, wc, "b", "b\n")
    site.hg("push", "-q", str(site.repo_path("alice/demo")), cwd=wc, user="alice")
    assert (repo / "store" / "00changelog.i").read_bytes() == before
    restored = _restored(site, tmp_path / "restored")
    site.cli("restore", str(linked), str(restored.root))
    _assert_sound(restored, ["alice/demo"])
    assert len(db_pushes(restored, "alice/demo")) == 1


def test_backup_and_restore_refuse_in_one_line(site: SiteHandle, tmp_path: Path):
    """A non-empty or in-site DEST, a non-empty DIR, a directory that is not a backup: one error line each."""
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    assert "exists and is not empty" in site.refuse("backup", str(full))
    assert "is inside the site" in site.refuse("backup", str(site.root / "backups"))
    assert not (site.root / "backups").exists()
    assert "not a complete hg-hosting backup" in site.refuse("restore", str(full), str(tmp_path / "new"))
    assert not (tmp_path / "new").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    site.cli("backup", str(empty))  # an empty directory is fine
    assert "exists and is not empty" in site.refuse("restore", str(empty), str(full))
    assert "PostgreSQL" in site.refuse("restore", str(empty), str(tmp_path / "new"), "--database",
                                       "postgresql://x@127.0.0.1/y")
    assert not (tmp_path / "new").exists()

    # The site database locked by another process past the busy timeout.
    (site.root / "hgrc").write_text((site.root / "hgrc").read_text().replace("busy-timeout = 5000",
                                                                             "busy-timeout = 200"))
    holder = sqlite3.connect(site.root / "hosting.db", isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")  # in WAL mode, readers are shut out too
        holder.execute("BEGIN EXCLUSIVE")
        line = site.refuse("backup", str(tmp_path / "locked"))
    finally:
        holder.rollback()
        holder.close()
    assert "locked" in line and not (tmp_path / "locked").exists()


def _pause(out: str) -> float:
    return float(out.rsplit("pushes waited ", 1)[1].split()[0])


def test_backup_of_the_generated_corpus(big_site: SiteHandle, tmp_path: Path):
    """3,000 changesets, hardlinked and copied: both restore to sound sites; the pauses are printed.

    No timing is asserted (shared machines); ``-s`` shows how long pushes waited each way.
    """
    site = big_site
    linked = site.cli("backup", str(tmp_path / "linked")).stdout
    copied = site.cli("backup", "--copy", str(tmp_path / "copied")).stdout
    print(f"\ncorpus backup, hardlinks: {linked}corpus backup, copies: {copied}")
    assert " 0 hardlinked" in copied and " 0 hardlinked" not in linked
    assert _pause(linked) >= 0 and _pause(copied) >= 0
    restored = _restored(site, tmp_path / "restored")
    site.cli("restore", "--copy", str(tmp_path / "linked"), str(restored.root))
    _assert_sound(restored, ["alice/big"])
    store = restored.repo_path("alice/big") / ".hg" / "store"
    assert all(p.stat().st_nlink == 1 for p in store.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def pg_cluster():
    import pgcluster

    with pgcluster.cluster() as cluster:
        yield cluster


def test_a_postgresql_site_backs_up_with_pg_dump_and_restores_into_an_empty_database(
        pg_cluster, tmp_path: Path):
    """pg_dump of the snapshot, restored with --database into an empty database: check clean, same log."""
    from hgext_hosting.site import SITE_HGRC_TEMPLATE

    live_url = pg_cluster.createdb("live")
    site = site_handle(tmp_path)
    site.root.mkdir()
    (site.root / "hgrc").write_text(SITE_HGRC_TEMPLATE.replace("\ndatabase =\n", f"\ndatabase = {live_url}\n"))
    site.cli("init")
    site.add_user("alice")
    cli_all(site, ["repo", "create", "alice/a"], ["repo", "create", "alice/b"])
    wc = tmp_path / "wc"
    site.hg("init", str(wc))
    nodes = [commit(site.hg, wc, f"f{n}", f"{n}\n") for n in range(2)]
    site.hg("push", "-q", "-r", "0", str(site.repo_path("alice/a")), cwd=wc, user="alice")
    site.hg("push", "-q", str(site.repo_path("alice/a")), cwd=wc, user="alice")
    site.hg("push", "-q", str(site.repo_path("alice/b")), cwd=wc, user="alice")

    dest = tmp_path / "backup"
    site.cli("backup", str(dest))
    assert (dest / "hosting.pgdump").is_file() and not (dest / "hosting.db").exists()
    assert "--database" in site.refuse("restore", str(dest), str(tmp_path / "r0"))
    assert "is not empty" in site.refuse("restore", str(dest), str(tmp_path / "r0"), "--database", live_url)
    assert not (tmp_path / "r0").exists()

    restored_url = pg_cluster.createdb("restored")
    restored = SiteHandle(tmp_path / "restored", site.env)
    out = site.cli("restore", str(dest), str(restored.root), "--database", restored_url).stdout
    assert "ok: the database and the repositories agree" in out, out
    assert f"database = {restored_url}" in (restored.root / "hgrc").read_text()
    _assert_sound(restored, ["alice/a", "alice/b"])
    for full in ("alice/a", "alice/b"):
        assert restored.cli_json("pushlog", full) == site.cli_json("pushlog", full)
    assert [p["changesets"] for p in restored.cli_json("pushlog", "alice/a")] == [[nodes[1]], [nodes[0]]]


def test_a_repository_locked_past_lock_timeout_stops_the_backup(site: SiteHandle, tmp_path: Path):
    """A push holding its lock longer than [hosting] lock-timeout: one error line, nothing left in DEST."""
    cli_all(site, ["user", "add", "alice", "--email", "alice@example.org"], ["repo", "create", "alice/demo"])
    (site.root / "hgrc").write_text((site.root / "hgrc").read_text().replace(
        "[hosting]\n", "[hosting]\nlock-timeout = 1\n", 1))
    wc = tmp_path / "wc"
    site.hg("init", str(wc))
    commit(site.hg, wc, "a", "a\n")
    push = subprocess.Popen(
        [HG, "push", "-q", str(site.repo_path("alice/demo"))], cwd=wc, text=True,
        env={**site.env, "HG_HOSTING_USER": "alice", "HG_HOSTING_FAULTS": "pushlog-after-commit=sleep:8"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: _pending_rows(site) == 1, "the pending record")
        line = site.refuse("backup", str(tmp_path / "backup"))
    finally:
        assert push.wait(60) == 0, push.communicate()
    assert line == ("error: alice/demo stayed locked for more than 1 s ([hosting] lock-timeout);"
                    " no backup was made"), line
    assert not (tmp_path / "backup").exists()


@pytest.mark.parametrize(("before", "after"), [
    ("[hosting]\ndatabase = sqlite:////live/hosting.db\nbusy-timeout = 5\n",
     "[hosting]\ndatabase = NEW\nbusy-timeout = 5\n"),
    ("[hosting]\ndatabase = postgresql://a\n  continued\n[web]\nx = 1\n",
     "[hosting]\ndatabase = NEW\n[web]\nx = 1\n"),
    ("[hosting]\nbusy-timeout = 5\n[web]\nx = 1\n", "[hosting]\ndatabase = NEW\nbusy-timeout = 5\n[web]\nx = 1\n"),
    ("[web]\nx = 1", "[web]\nx = 1\n\n[hosting]\ndatabase = NEW\n"),
])
def test_restore_points_the_hgrc_at_the_restored_database(tmp_path: Path, before: str, after: str):
    """The restored hgrc names the restored database, never the one the backup came from."""
    from hgext_hosting.dbcopy import set_site_database
    from hgext_hosting.site import Site

    hgrc = tmp_path / "hgrc"
    hgrc.write_text(before)
    set_site_database(Site(tmp_path), "NEW")
    assert hgrc.read_text() == after
