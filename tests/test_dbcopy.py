"""``hg-hosting db copy URL``: a site's database moved between SQLite and PostgreSQL.

A site on SQLite with every kind of row (users, a team, grants, a protected
ref, a token, an SSH key, pushes) is copied to a throwaway PostgreSQL
database (:mod:`pgcluster`) and then back to a new SQLite file, each time
through the real CLI; after each move the real ``hg`` client pushes again
(push ids continue), a token still authenticates with a restarted daemon,
and ``check`` is clean.  The site hgrc keeps the administrator's text.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pgcluster
import pytest
from conftest import HG_HOSTING, Daemon, SiteHandle, commit, site_handle
from pgcluster import Cluster

#: The administrator's own text in the site hgrc, which the switch must keep.
ADMIN_TEXT = "\n# Our own notes: the database moves to PostgreSQL in May.\n[ui]\nusername = ops\n"


@pytest.fixture(scope="module")
def cluster():
    with pgcluster.cluster() as c:
        yield c


def _key(tmp: Path) -> str:
    if not shutil.which("ssh-keygen"):
        pytest.skip("ssh-keygen is not installed")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f",
                    str(tmp / "id_alice")], check=True, capture_output=True)
    return str(tmp / "id_alice.pub")


def _populated_site(tmp_path: Path) -> tuple[SiteHandle, Path, str]:
    """A SQLite site with one row at least in every table that has to move; (site, wc, token)."""
    site = site_handle(tmp_path)
    site.cli("init")
    with open(site.root / "hgrc", "a") as f:
        f.write(ADMIN_TEXT)
    site.add_user("alice", "alice-pw", admin=True)
    site.add_user("bob")
    site.cli("team", "add", "devs")
    site.cli("team", "member-add", "devs", "alice")
    site.cli("repo", "create", "alice/demo", "--private")
    site.cli("grant", "alice/demo", "bob", "write")
    site.cli("protect", "alice/demo", "stable", "--allow", "@devs")
    site.cli("ssh-key", "add", "alice", _key(tmp_path))
    token = site.cli("token", "create", "bob", "--label", "ci").stdout.strip()
    wc = tmp_path / "wc"
    site.hg("init", str(wc))
    for i in range(3):
        commit(site.hg, wc, f"f{i}", f"{i}\n")
        site.hg("push", "-q", str(site.repo_path("alice/demo")), cwd=wc, user="bob")
    return site, wc, token


def _push(site: SiteHandle, wc: Path, name: str, user: str = "bob") -> str:
    node = commit(site.hg, wc, name, name + "\n")
    site.hg("push", "-q", str(site.repo_path("alice/demo")), cwd=wc, user=user)
    return node


def _everything(site: SiteHandle) -> dict:
    """What the CLI shows of every moved row (ids and dates included)."""
    return {
        "users": site.cli_json("user", "list"),
        "teams": site.cli_json("team", "list"),
        "repos": site.cli_json("repo", "list"),
        "tokens": site.cli_json("token", "list", "bob"),
        "keys": site.cli_json("ssh-key", "list", "alice"),
        "pushlog": site.cli_json("pushlog", "alice/demo"),
    }


def _token_clone(site: SiteHandle, token: str, dest: Path) -> None:
    """Clone the private repository through a freshly started daemon with bob's token."""
    daemon = Daemon(site)
    try:
        site.hg("clone", "-q", f"http://bob:{token}@127.0.0.1:{daemon.port}/alice/demo", str(dest))
        refused = site.hg("clone", "-q", f"http://bob:wrong@127.0.0.1:{daemon.port}/alice/demo",
                          str(dest) + "-wrong", check=False)
        assert refused.returncode != 0
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log()


def test_sqlite_to_postgresql_and_back(tmp_path: Path, cluster: Cluster):
    """Every row moves with its id; pushes continue 4, 5...; the token still works; check is clean."""
    site, wc, token = _populated_site(tmp_path)
    before = _everything(site)
    hgrc_before = (site.root / "hgrc").read_text()
    url = cluster.createdb("moved")

    out = site.cli("db", "copy", url).stdout
    assert "copied 3 rows of push" in out and "restart" in out, out
    hgrc = (site.root / "hgrc").read_text()
    assert hgrc == hgrc_before.replace("\ndatabase =\n", f"\ndatabase = {url}\n")
    assert site.cli("check").returncode == 0
    assert _everything(site) == before

    fourth = _push(site, wc, "g4")
    assert [p["id"] for p in site.cli_json("pushlog", "alice/demo")] == [4, 3, 2, 1]
    site.cli("user", "add", "carol")  # sequences continue after the copied ids
    _token_clone(site, token, tmp_path / "clone-pg")
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
    fifth = _push(site, wc, "g5")
    log = site.cli_json("pushlog", "alice/demo")
    assert [(p["id"], p["changesets"]) for p in log[:2]] == [(5, [fifth]), (4, [fourth])]
    assert [u["name"] for u in site.cli_json("user", "list")] == ["alice", "bob", "carol"]
    site.cli("user", "add", "dave")
    _token_clone(site, token, tmp_path / "clone-sqlite")
    assert site.cli("check").returncode == 0


def test_the_old_database_refuses_pushes_after_the_move(tmp_path: Path, cluster: Cluster):
    """A daemon still on the old database after the switch refuses pushes rather than losing them."""
    site, wc, token = _populated_site(tmp_path)
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
def test_a_push_during_the_copy_waits_and_is_not_lost(tmp_path: Path, cluster: Cluster, source: str):
    """A push whose commit comes while the copy holds the source lock is refused or lands in the new database."""
    site, wc, _ = _populated_site(tmp_path)
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


def test_refusals(tmp_path: Path, cluster: Cluster):
    """A non-empty target, a bad URL, an unreachable server: one error line each, the hgrc untouched."""
    site, _, _ = _populated_site(tmp_path)
    hgrc = (site.root / "hgrc").read_text()
    other = SiteHandle(tmp_path / "other-site", site.env)
    other.cli("init")
    other.add_user("zed")
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


def test_a_failed_copy_changes_nothing_and_can_run_again(tmp_path: Path):
    """A copy that fails after writing its rows leaves the target empty, the hgrc and the source as they were."""
    site, wc, _ = _populated_site(tmp_path)
    hgrc = (site.root / "hgrc").read_text()
    target = tmp_path / "new.db"
    failed = site.cli("db", "copy", f"sqlite:///{target}", check=False, env={"HG_HOSTING_FAULTS": "dbcopy-copied"})
    assert failed.returncode != 0 and failed.stderr.count("\n") == 1 and failed.stderr.startswith("error: ")
    assert (site.root / "hgrc").read_text() == hgrc
    _push(site, wc, "still-here")  # the source was not retired
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
