"""What a user reads stays inside the repository: every relative link resolves to a file of ours.

A clone has no ``../shared/``; the README once linked the contract there.  These
tests read the documents a user reads (the README, ``docs/``, ``hgrc.example``)
and check every relative Markdown link and every path-like mention of a file
outside the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", ROOT / "hgrc.example", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(document: Path):
    text = document.read_text(encoding="utf-8")
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # an absolute URL or an anchor
        resolved = (document.parent / target.split("#", 1)[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{document.name} links outside the repository: {target}"
        assert resolved.exists(), f"{document.name} links to a missing file: {target}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_mention_of_files_outside_the_repository(document: Path):
    text = document.read_text(encoding="utf-8")
    assert "../shared" not in text and "shared/SPEC" not in text, document.name


def test_the_readme_names_the_contract():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/spec.md)" in readme
    spec = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    # The CLI table covers every command the CLI has.
    from daemon.cli import build_parser  # the hg-hosting program: admin's commands and serve

    commands = build_parser()._subparsers._group_actions[0].choices
    for command in commands:
        assert f"`{command}" in spec, f"docs/spec.md does not document '{command}'"
