"""``hg-hosting db copy URL``: a site's database moved between SQLite and PostgreSQL.

A site on SQLite with every kind of row (users, a team, grants, a protected
ref, a token, an SSH key, pushes: :mod:`dbcopyhelpers`) is copied to a throwaway
PostgreSQL database (:mod:`pgcluster`) and then back to a new SQLite file, each
time through the real CLI; after each move the real ``hg`` client pushes again
(push ids continue), a token still authenticates with a restarted daemon, and
``check`` is clean.  The site hgrc keeps the administrator's text.  Pushes that
meet a copy in progress are in ``test_dbcopy_concurrent.py`` (another worker).
"""

from __future__ import annotations

from pathlib import Path

import dbcopyhelpers
import pytest
from clibatch import cli_batch
from conftest import SiteHandle
from dbcopyhelpers import everything, populated_site, push, token_clone
from pgcluster import Cluster

cluster, populated = dbcopyhelpers.cluster, dbcopyhelpers.populated


def test_sqlite_to_postgresql_and_back(tmp_path: Path, env, populated, cluster: Cluster):
    """Every row moves with its id; pushes continue 4, 5...; the token still works; check is clean."""
    site, wc, token = populated_site(populated, tmp_path, env)
    before = everything(site)
    hgrc_before = (site.root / "hgrc").read_text()
    url = cluster.createdb("moved")

    out = site.cli("db", "copy", url).stdout
    assert "copied 3 rows of push" in out and "restart" in out, out
    hgrc = (site.root / "hgrc").read_text()
    assert hgrc == hgrc_before.replace("\ndatabase =\n", f"\ndatabase = {url}\n")
    assert site.cli("check").returncode == 0
    assert everything(site) == before

    fourth = push(site, wc, "g4")
    assert [p["id"] for p in site.cli_json("pushlog", "alice/demo")] == [4, 3, 2, 1]
    site.cli("user", "add", "carol")  # sequences continue after the copied ids
    token_clone(site, token, tmp_path / "clone-pg")
    assert (site.root / "hosting.db").exists()  # the old database stays, retired

    back = tmp_path / "back" / "hosting.db"
    back.parent.mkdir()
    out = site.cli("db", "copy", f"sqlite:///{back}").stdout
    assert "copied 4 rows of push" in out, out
    assert (site.root / "hgrc").read_text() == hgrc_before.replace("\ndatabase =\n", f"\ndatabase = sqlite:///{back}\n")
    assert back.stat().st_mode & 0o077 == 0
    import psycopg2

    with psycopg2.connect(url) as conn, conn.cursor() as cur:  # the PostgreSQL source is retired too
        cur.execute("SELECT key, value FROM meta")
        assert cur.fetchall() == [("moved_to", f"sqlite:///{back}")]
    fifth = push(site, wc, "g5")
    log = site.cli_json("pushlog", "alice/demo")
    assert [(p["id"], p["changesets"]) for p in log[:2]] == [(5, [fifth]), (4, [fourth])]
    assert [u["name"] for u in site.cli_json("user", "list")] == ["alice", "bob", "carol"]
    site.cli("user", "add", "dave")
    token_clone(site, token, tmp_path / "clone-sqlite")
    assert site.cli("check").returncode == 0


def test_refusals(tmp_path: Path, env, populated, cluster: Cluster):
    """A non-empty target, a bad URL, an unreachable server: one error line each, the hgrc untouched."""
    site, _, _ = populated_site(populated, tmp_path, env)
    hgrc = (site.root / "hgrc").read_text()
    other = SiteHandle(tmp_path / "other-site", site.env)
    cli_batch(other, [(["init"], None), (["user", "add", "zed"], None)])
    error = site.refuse("db", "copy", f"sqlite:///{other.root / 'hosting.db'}")
    assert "not empty" in error and "owner" in error, error

    used = cluster.createdb("used")
    other.cli("db", "copy", used)
    error = site.refuse("db", "copy", used)
    assert "not empty" in error, error

    assert "refusing to copy the site database onto itself" in site.refuse(
        "db", "copy", f"sqlite:///{site.root / 'hosting.db'}")
    for bad in ("mysql://h/db", "sqlite:///relative.db", "sqlite:///" + str(tmp_path / "no" / "dir" / "x.db"),
                "postgresql://hg:s3cret@127.0.0.1:1/nothing"):
        error = site.refuse("db", "copy", bad)
        assert "s3cret" not in error and "Traceback" not in error, error
    assert (site.root / "hgrc").read_text() == hgrc
    assert site.cli("check").returncode == 0


def test_a_failed_copy_changes_nothing_and_can_run_again(tmp_path: Path, env, populated):
    """A copy that fails after writing its rows leaves the target empty, the hgrc and the source as they were."""
    site, wc, _ = populated_site(populated, tmp_path, env)
    hgrc = (site.root / "hgrc").read_text()
    target = tmp_path / "new.db"
    failed = site.cli("db", "copy", f"sqlite:///{target}", check=False, env={"HG_HOSTING_FAULTS": "dbcopy-copied"})
    assert failed.returncode != 0 and failed.stderr.count("\n") == 1 and failed.stderr.startswith("error: ")
    assert (site.root / "hgrc").read_text() == hgrc
    push(site, wc, "still-here")  # the source was not retired
    site.cli("db", "copy", f"sqlite:///{target}")
    assert [p["id"] for p in site.cli_json("pushlog", "alice/demo")] == [4, 3, 2, 1]
    assert site.cli("check").returncode == 0


@pytest.mark.parametrize(("before", "after"), [
    ("[hosting]\n# the URL\ndatabase =\nbusy-timeout = 5000\n",
     "[hosting]\n# the URL\ndatabase = URL\nbusy-timeout = 5000\n"),
    ("[hosting]\ndatabase = sqlite:////old\n  continued\n# kept\n[web]\n",
     "[hosting]\ndatabase = URL\n# kept\n[web]\n"),
    ("# only a comment\n[hosting]\nbusy-timeout = 1\n", "# only a comment\n[hosting]\ndatabase = URL\nbusy-timeout = 1\n"),
    ("[web]\nencoding = UTF-8", "[web]\nencoding = UTF-8\n\n[hosting]\ndatabase = URL\n"),
])
def test_the_hgrc_switch_rewrites_one_line(tmp_path: Path, before: str, after: str):
    """The database line is replaced (continuation lines with it) or added; every other byte stays."""
    from hgext_hosting import dbcopy
    from hgext_hosting.site import Site

    site = Site(tmp_path)
    site.hgrc.write_text(before)
    dbcopy.switch_hgrc(site, dbcopy._database_line(site), "URL")
    assert site.hgrc.read_text() == after


def test_a_database_set_in_an_included_file_is_refused(tmp_path: Path):
    from hgext_hosting import dbcopy
    from hgext_hosting.errors import UserError
    from hgext_hosting.site import Site

    (tmp_path / "db.rc").write_text("[hosting]\ndatabase = sqlite:////x.db\n")
    site = Site(tmp_path)
    site.hgrc.write_text("%include db.rc\n")
    with pytest.raises(UserError, match="db.rc:2"):
        dbcopy._database_line(site)
