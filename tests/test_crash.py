"""Pushes killed at random moments and at every named point leave nothing half there.

Each trial (see ``tools/crashloop.py``) kills a push of a few thousand
changesets, then requires that the next push succeeds with no manual step,
``hg verify`` passes, ``hg-hosting check`` is clean and every changeset is
covered by exactly one push record.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import crashloop  # noqa: E402

TRIALS = [(mode, "local") for mode in crashloop.MODES] + [
    ("random-delay", "stdio"),
    ("random-delay", "local"),
    ("hg-kill-9-post-finalize", "stdio"),
    ("kill-after-db-commit", "stdio"),
    ("kill-before-done", "stdio"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, corpus: Path) -> crashloop.Lab:
    """A site and a source of 2,001 changesets (revisions 0-2000 of the generated corpus)."""
    return crashloop.make_lab(tmp_path_factory.mktemp("crash"), corpus, changesets=2000)


@pytest.mark.parametrize(("mode", "transport"), TRIALS, ids=[f"{m}-{t}" for m, t in TRIALS])
def test_killed_push_leaves_nothing_half_there(lab: crashloop.Lab, mode: str, transport: str) -> None:
    """A push killed this way is either wholly there or wholly absent once the next push ran."""
    outcome = crashloop.run_trial(lab, mode, transport, random.Random(f"{mode}{transport}"))
    if mode.startswith("kill-") or mode == "hg-kill-9-post-finalize":
        assert outcome != "completed", "the fault point was never reached"
