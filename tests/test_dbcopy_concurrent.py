"""``hg-hosting db copy URL`` while the site is in use: pushes that meet the copy.

A daemon still on the old database refuses pushes (or writes them to the new
one); a push whose commit comes while the copy holds the source lock waits and
is refused or lands in the new database, never lost.  The populated site is
:mod:`dbcopyhelpers`'; the plain moves are in ``test_dbcopy.py``.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import dbcopyhelpers
import pytest
from conftest import HG_HOSTING, Daemon, commit
from dbcopyhelpers import populated_site
from pgcluster import Cluster

cluster, populated = dbcopyhelpers.cluster, dbcopyhelpers.populated


def test_the_old_database_refuses_pushes_after_the_move(tmp_path: Path, env, populated, cluster: Cluster):
    """A daemon still on the old database after the switch refuses pushes rather than losing them."""
    site, wc, token = populated_site(populated, tmp_path, env)
    daemon = Daemon(site)
    try:
        url = cluster.createdb("stale")
        out = site.cli("db", "copy", url).stdout
        assert "restart" in out
        node = commit(site.hg, wc, "late", "late\n")
        pushed = site.hg("push", f"http://bob:{token}@127.0.0.1:{daemon.port}/alice/demo", cwd=wc, check=False)
    finally:
        daemon.stop()
    if pushed.returncode == 0:  # the daemon's push path read the new hgrc: the push is in the new database
        assert site.cli_json("pushlog", "alice/demo")[0]["changesets"] == [node]
    else:
        assert "moved" in pushed.stdout + pushed.stderr, pushed
    assert site.cli("check").returncode == 0


@pytest.mark.parametrize("source", ["sqlite", "postgresql"])
def test_a_push_during_the_copy_waits_and_is_not_lost(tmp_path: Path, env, populated, cluster: Cluster, source: str):
    """A push whose commit comes while the copy holds the source lock is refused or lands in the new database."""
    site, wc, _ = populated_site(populated, tmp_path, env)
    url = cluster.createdb(f"during_{source}")
    if source == "postgresql":  # the site moves there first; the copy under test goes back to SQLite
        site.cli("db", "copy", url)
        url = f"sqlite:///{tmp_path / 'back.db'}"
    node = commit(site.hg, wc, "during", "during\n")
    copy = subprocess.Popen([HG_HOSTING, "--site", str(site.root), "db", "copy", url], env={
        **site.env, "HG_HOSTING_FAULTS": "dbcopy-locked=sleep:3"}, stdout=subprocess.PIPE, text=True)
    assert copy.stdout is not None
    assert "locked" in copy.stdout.readline()  # the source is locked: its writers wait from here
    started = time.monotonic()
    pushed = site.hg("push", str(site.repo_path("alice/demo")), cwd=wc, user="bob", check=False)
    waited = time.monotonic() - started
    assert copy.wait(60) == 0
    if pushed.returncode == 0:
        assert site.cli_json("pushlog", "alice/demo")[0]["changesets"] == [node]
    else:
        assert "the site database has moved to" in pushed.stderr, pushed.stderr
        assert waited > 0.5  # it waited for the lock rather than failing at once
        site.hg("push", "-q", str(site.repo_path("alice/demo")), cwd=wc, user="bob")  # again: the new database
        assert [(p["id"], p["changesets"]) for p in site.cli_json("pushlog", "alice/demo")[:1]] == [(4, [node])]
    assert site.cli("check").returncode == 0
