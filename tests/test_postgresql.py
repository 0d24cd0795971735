"""The same site on PostgreSQL: the models, the CLI, the push path and the daemon.

A throwaway PostgreSQL cluster (:mod:`pgcluster`) is started for this module.  The site's
hgrc names it in ``[hosting] database``; everything else is the real CLI, the
real ``hg`` client and the real daemon, as on SQLite.
"""

from __future__ import annotations

from pathlib import Path

from conftest import Daemon, SiteHandle, commit


def test_a_site_on_postgresql_checks_and_records_pushes(pg_site: SiteHandle, tmp_path: Path):
    """Pushes are decided and recorded through the push path's SQL on PostgreSQL; check, fork and HTTP work."""
    site = pg_site
    site.add_user("alice", "alice-pw")
    site.add_user("bob")
    site.cli("repo", "create", "alice/demo")
    site.cli("team", "add", "devs")
    site.cli("team", "member-add", "devs", "alice")
    site.cli("grant", "alice/demo", "bob", "write")
    site.cli("protect", "alice/demo", "stable", "--allow", "@devs")
    repo = str(site.repo_path("alice/demo"))

    wc = tmp_path / "wc"
    site.hg("init", str(wc))
    first = commit(site.hg, wc, "a", "a\n")
    refused = site.hg("push", repo, cwd=wc, user="nobody", check=False)
    assert refused.returncode != 0 and "unknown user 'nobody'" in refused.stderr
    site.hg("push", "-q", repo, cwd=wc, user="bob")

    stable = commit(site.hg, wc, "b", "b\n", branch="stable")
    refused = site.hg("push", "--new-branch", repo, cwd=wc, user="bob", check=False)
    assert f"bob may not push to protected branch 'stable' of alice/demo (changeset {stable[:12]})" in refused.stderr
    site.hg("push", "-q", "--new-branch", repo, cwd=wc, user="alice")
    site.hg("bookmark", "-q", "mark", cwd=wc)
    # exit 1: no changesets to push; the bookmark is exported all the same
    site.hg("push", "-q", "-B", "mark", repo, cwd=wc, user="bob", check=False)

    log = site.cli_json("pushlog", "alice/demo")
    assert [(p["id"], p["user"]) for p in log] == [(3, "bob"), (2, "alice"), (1, "bob")]
    assert log[2]["changesets"] == [first] and log[1]["changesets"] == [stable]
    assert log[0]["bookmarks"] == [{"name": "mark", "old": None, "new": stable}]
    assert site.cli("check").returncode == 0

    site.cli("repo", "fork", "alice/demo", "bob/demo")
    assert site.cli_json("pushlog", "bob/demo")[0]["changesets"] == [first, stable]

    daemon = Daemon(site)
    try:
        clone = tmp_path / "clone"
        site.hg("clone", "-q", f"{daemon.url}/alice/demo", str(clone))
        third = commit(site.hg, clone, "c", "c\n")
        site.hg("push", "-q", f"http://alice:alice-pw@127.0.0.1:{daemon.port}/alice/demo", cwd=clone)
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log()
    newest = site.cli_json("pushlog", "alice/demo")[0]
    assert newest["id"] == 4 and newest["user"] == "alice" and newest["changesets"] == [third]
