"""The environment every benchmark runs ``hg`` and ``hg-hosting`` in.

No user or system configuration (``HGRCPATH`` names an empty file, ``HOME``
is the work directory's), no inherited ``HG*``, ``REMOTE_*`` or ``SSH_*``
variables, plain output, and the interpreter's own scripts first on ``PATH``,
so that the measured commands are the same on every machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def isolated_env(work: Path) -> dict[str, str]:
    """A clean environment for hg under ``work`` (creates ``work/home`` and an empty hgrc)."""
    home = work / "home"
    home.mkdir(exist_ok=True)
    empty = work / "empty-hgrc"
    empty.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HG", "REMOTE_", "SSH_"))}
    env.update(HOME=str(home), HGRCPATH=str(empty), HGPLAIN="1", HGENCODING="utf-8",
               HGUSER="bench <bench@example.org>", LC_ALL="C.UTF-8",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return env
