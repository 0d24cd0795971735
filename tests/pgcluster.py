"""A throwaway PostgreSQL cluster for tests (Debian's server binaries, which ``.ci/run`` installs).

:func:`cluster` starts one on a free loopback port, run as ``nobody`` when the
tests run as root (``initdb`` refuses root), and stops and removes it on the
way out.  Tests that need none skip when the binaries are missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """A running cluster: user ``hg``, trust authentication, on 127.0.0.1:``port``."""

    bindir: Path
    port: int
    as_user: list[str]

    def run(self, *argv: str) -> None:
        subprocess.run([*self.as_user, *argv], check=True, capture_output=True, timeout=120)

    def createdb(self, name: str) -> str:
        """Create an empty database; return its URL."""
        self.run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "hg", name)
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql://hg@127.0.0.1:{self.port}/{name}"


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """Start a cluster (pytest.skip when PostgreSQL or psycopg2 is missing); stop it afterwards."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries:
        pytest.skip("PostgreSQL server binaries are not installed (.ci/run installs them)")
    pytest.importorskip("psycopg2")
    bindir = Path(binaries[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="hg-hosting-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    handle = Cluster(bindir, _free_port(), as_user)
    data = root / "data"
    handle.run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "hg", "--no-sync")
    handle.run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
               f"-F -k {root} -p {handle.port} -c listen_addresses=127.0.0.1", "start")
    try:
        yield handle
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
