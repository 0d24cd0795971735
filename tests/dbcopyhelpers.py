"""The site the ``db copy`` tests start from (``test_dbcopy*.py``), built once per worker and copied.

A SQLite site with one row at least in every table that has to move (users, a
team, grants, a protected ref, a token, an SSH key, three pushes) costs a dozen
processes to build; :func:`populated_template` builds it once and each test
copies it (nothing in a site or its working copy names its own directory).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pgcluster
import pytest
from clibatch import cli_batch
from conftest import DATE, Daemon, SiteHandle, commit, site_handle

#: The administrator's own text in the site hgrc, which the switch must keep.
ADMIN_TEXT = "\n# Our own notes: the database moves to PostgreSQL in May.\n[ui]\nusername = ops\n"


def populated_template(tmp: Path) -> tuple[Path, Path, str]:
    """Build the populated site in ``tmp``; return (site root, working copy, bob's token)."""
    if not shutil.which("ssh-keygen"):
        pytest.skip("ssh-keygen is not installed")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f",
                    str(tmp / "id_alice")], check=True, capture_output=True)
    site = site_handle(tmp)
    site.cli("init")
    with open(site.root / "hgrc", "a") as f:
        f.write(ADMIN_TEXT)
    outs = cli_batch(site, [
        (["user", "add", "alice", "--email", "alice@example.org", "--admin", "--password-stdin"], "alice-pw\n"),
        (["user", "add", "bob", "--email", "bob@example.org"], None),
        (["team", "add", "devs"], None),
        (["team", "member-add", "devs", "alice"], None),
        (["repo", "create", "alice/demo", "--private"], None),
        (["grant", "alice/demo", "bob", "write"], None),
        (["protect", "alice/demo", "stable", "--allow", "@devs"], None),
        (["ssh-key", "add", "alice", str(tmp / "id_alice.pub")], None),
        (["token", "create", "bob", "--label", "ci"], None),
    ])
    token = outs[-1].strip()
    wc = tmp / "wc"
    site.hg("init", str(wc))
    for i in range(3):
        (wc / f"f{i}").write_text(f"{i}\n")
        site.hg("commit", "-q", "-A", "-d", DATE, "-m", f"change f{i}", cwd=wc)
        site.hg("push", "-q", str(site.repo_path("alice/demo")), cwd=wc, user="bob")
    return site.root, wc, token


def populated_site(template: tuple[Path, Path, str], tmp_path: Path,
                   env: dict[str, str]) -> tuple[SiteHandle, Path, str]:
    """A copy of the template in ``tmp_path``: (site, working copy, bob's token)."""
    root, wc, token = template
    site = SiteHandle(tmp_path / "site", env)
    shutil.copytree(root, site.root, symlinks=True)
    shutil.copytree(wc, tmp_path / "wc", symlinks=True)
    return site, tmp_path / "wc", token


def push(site: SiteHandle, wc: Path, name: str, user: str = "bob") -> str:
    node = commit(site.hg, wc, name, name + "\n")
    site.hg("push", "-q", str(site.repo_path("alice/demo")), cwd=wc, user=user)
    return node


def everything(site: SiteHandle) -> dict:
    """What the CLI shows of every moved row (ids and dates included), read in one process."""
    what = {
        "users": ["user", "list"],
        "teams": ["team", "list"],
        "repos": ["repo", "list"],
        "tokens": ["token", "list", "bob"],
        "keys": ["ssh-key", "list", "alice"],
        "pushlog": ["pushlog", "alice/demo"],
    }
    outs = cli_batch(site, [([*argv, "--json"], None) for argv in what.values()])
    return {name: json.loads(out) for name, out in zip(what, outs, strict=True)}


def token_clone(site: SiteHandle, token: str, dest: Path) -> None:
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


# The module fixtures both db-copy files use: bind them in a test module with
# ``cluster, populated = dbcopyhelpers.cluster, dbcopyhelpers.populated``.

@pytest.fixture(scope="module")
def cluster():
    """A throwaway PostgreSQL cluster for the module."""
    with pgcluster.cluster() as c:
        yield c


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """The populated site, built once for the module (:func:`populated_template`)."""
    return populated_template(tmp_path_factory.mktemp("populated"))
