"""The extension as Mercurial sees it: its help, its commands, the site hgrc."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import HG, commit, run

from hgext_hosting.site import SITE_HGRC_TEMPLATE


def test_hg_help_hosting_teaches_the_admin(site):
    """`hg help hosting` inside a site repository prints the extension's manual."""
    site.add_user("alice")
    site.cli("repo", "create", "alice/demo")
    out = site.hg("help", "hosting", cwd=site.repo_path("alice/demo")).stdout
    assert out.startswith("hosting extension - check and record every push")
    assert "HG_HOSTING_USER" in out and "busy-timeout" in out and "pushlog" in out


def test_hgrc_example_is_what_init_writes(site):
    """hgrc.example is the site hgrc that init writes, so the documentation cannot drift."""
    example = Path(__file__).resolve().parent.parent / "hgrc.example"
    assert example.read_text() == SITE_HGRC_TEMPLATE
    assert (site.root / "hgrc").read_text() == SITE_HGRC_TEMPLATE


def test_repositories_outside_a_site_are_left_alone(site, tmp_path):
    """A repository that merely enables the extension, outside any site, commits freely."""
    repo = tmp_path / "plain"
    site.hg("init", str(repo))
    (repo / ".hg" / "hgrc").write_text("[extensions]\nhosting =\n")
    (repo / "f").write_text("x\n")
    site.hg("commit", "-q", "-A", "-m", "x", "-d", "2020-01-01 00:00 +0000", cwd=repo)
    assert site.hg("log", "-T", "{rev}", cwd=repo).stdout == "0"


def test_a_push_process_does_not_import_peewee(site, tmp_path):
    """The push path asks the database in plain SQL: importing peewee would cost ~40 ms a push.

    bench/hook_cost.py measures the cost; this keeps the reason for it from
    coming back unnoticed.  The push must still be checked and recorded.
    """
    site.add_user("alice")
    site.cli("repo", "create", "alice/demo")
    wc = tmp_path / "wc"
    site.hg("init", str(wc))
    commit(site.hg, wc, "a", "a\n")
    proc = run([sys.executable, "-X", "importtime", HG, "push", str(site.repo_path("alice/demo"))],
               {**site.env, "HG_HOSTING_USER": "alice"}, cwd=wc)
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "hgext_hosting.hooks" in imported and "hgext_hosting.recorder" in imported
    assert not {m for m in imported if m.split(".")[0] in ("peewee", "playhouse")}
    assert "hgext_hosting.models" not in imported
    assert [p["user"] for p in site.cli_json("pushlog", "alice/demo")] == ["alice"]
