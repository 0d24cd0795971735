"""The extension as Mercurial sees it: its help, its commands, the site hgrc."""

from __future__ import annotations

from pathlib import Path

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
