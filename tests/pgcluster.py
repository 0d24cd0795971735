"""A throwaway PostgreSQL cluster for tests: Debian's server binaries on a free loopback port.

:func:`running_cluster` runs ``initdb`` and ``pg_ctl start`` in a temporary
directory (as ``nobody`` when the tests run as root: ``initdb`` refuses root)
and yields a :class:`Cluster`; the cluster is stopped and removed afterwards.
Tests skip when the binaries or ``psycopg2`` are missing (``.ci/run``
installs them).
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
    """A running cluster whose superuser ``hg`` logs in without a password (trust)."""

    bindir: Path
    port: int
    as_user: list[str]

    def run(self, *argv: str) -> None:
        subprocess.run([*self.as_user, *argv], check=True, capture_output=True, timeout=120)

    def url(self, dbname: str) -> str:
        return f"postgresql://hg@127.0.0.1:{self.port}/{dbname}"

    def createdb(self, dbname: str) -> str:
        """Create an empty database; return its URL."""
        self.run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "hg", dbname)
        return self.url(dbname)


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    """A started cluster for the ``with`` block, stopped and removed after it."""
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
    cluster = Cluster(bindir, _free_port(), as_user)
    data = root / "data"
    cluster.run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "hg", "--no-sync")
    cluster.run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                f"-F -k {root} -p {cluster.port} -c listen_addresses=127.0.0.1", "start")
    try:
        yield cluster
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
