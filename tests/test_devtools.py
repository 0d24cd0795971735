"""The developer's commands from the README: ``make serve``.

``make serve`` runs for real (the Makefile's own recipe, with this test run's
virtualenv as ``VENV``) on a port the test chose, and is stopped with SIGTERM.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import BIN

ROOT = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make")


# -- make serve ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_serve(env: dict[str, str], site: Path, port: int, log: Path, timeout: float = 60) -> str:
    """Run ``make serve SITE=site HTTP=127.0.0.1:port`` until the daemon answers; stop it; return its output."""
    venv = BIN.parent
    argv = [MAKE, "-C", str(ROOT), "serve", f"HTTP=127.0.0.1:{port}", f"SITE={site}", f"VENV={venv}",
            "-o", f"{venv}/bin/hg-hosting"]  # never rebuild the test run's virtualenv
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while f"serving HTTP on 127.0.0.1:{port}" not in log.read_text():
            assert proc.poll() is None, f"make serve exited {proc.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, f"make serve did not start: {log.read_text()}"
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as response:
            assert response.status == 200
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # make and the daemon: the session this test started
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return log.read_text()


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_make_serve_on_a_chosen_address_says_where_and_who(tmp_path, env):
    """make serve HTTP=... serves there, prints the URL, the admin and, on an existing site, how to reset a password."""
    site = tmp_path / "site"
    port = free_port()
    first = make_serve(env, site, port, tmp_path / "first.log")
    assert f"http://127.0.0.1:{port}/" in first
    assert "created site admin admin" in first and "password (shown once): " in first

    port = free_port()
    again = make_serve(env, site, port, tmp_path / "again.log")
    assert f"http://127.0.0.1:{port}/" in again
    assert "site admins: admin" in again
    assert re.search(rf"reset a password with: \S*hg-hosting --site {re.escape(str(site))} user passwd admin",
                     again), again
