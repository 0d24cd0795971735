"""The site database is passed in, not bound once per process (issue 11).

``Site.database()`` opens a site's database; ``models.bound(db)`` binds the models
to it for a block.  The CLI binds for one command, so one process can run commands
on two sites one after the other, and a test can open two sites without a subprocess.
"""

from __future__ import annotations

import contextlib
import io

import pytest
from conftest import site_handle
from insite import opened

from daemon.cli import main
from hgext_hosting import models


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory):
    """Two sites, each with a user of its own."""
    handles = []
    for name, user in (("a", "ann"), ("b", "bea")):
        handle = site_handle(tmp_path_factory.mktemp(name))
        handle.cli("init")
        handle.add_user(user)
        handles.append(handle)
    return handles


def test_two_sites_opened_one_after_the_other(two_sites, monkeypatch):
    """Each site's models read its own database, and nothing stays bound after the block."""
    seen = []
    for handle in two_sites:
        with opened(handle, monkeypatch):
            seen.append(sorted(o.name for o in models.Owner.select()))
    assert seen == [["ann"], ["bea"]]
    with pytest.raises(RuntimeError, match="no site database is bound"):
        models.database()


def test_cli_commands_in_one_process_write_to_their_own_site(two_sites, monkeypatch):
    """``main`` binds the site of each command: a second site's command writes to the second site.

    (Bound once per process, the second command wrote into the first site's database.)
    """
    a, b = two_sites
    monkeypatch.setenv("HGRCPATH", a.env["HGRCPATH"])
    for handle, team in ((a, "ateam"), (b, "bteam")):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            assert main(["--site", str(handle.root), "team", "add", team]) == 0, err.getvalue()
    assert "bteam" in b.cli("team", "list").stdout
    assert "bteam" not in a.cli("team", "list").stdout
    assert "ateam" in a.cli("team", "list").stdout
