"""The developer's commands from the README: ``make serve`` and ``tools/install-test-deps``.

``make serve`` runs for real (the Makefile's own recipe, with this test run's
virtualenv as ``VENV``) on a port the test chose, and is stopped with SIGTERM.
``tools/install-test-deps`` runs for real too: once with everything installed,
and once as a user without root rights (``nobody``) on a ``PATH`` that hides
``chromium``, where it must print the command to run instead of installing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import BIN

ROOT = Path(__file__).resolve().parent.parent
INSTALL_TEST_DEPS = ROOT / "tools" / "install-test-deps"
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
        while f"serving HTTP on http://127.0.0.1:{port}/" not in log.read_text():
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


# -- tools/install-test-deps ------------------------------------------------------------


def test_install_test_deps_with_everything_installed_only_looks(env):
    """With every package installed the script says so, exits 0, installs nothing and is quick."""
    started = time.monotonic()
    proc = subprocess.run([str(INSTALL_TEST_DEPS)], env={**env, "VENV": str(BIN.parent)},
                          capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "install-test-deps: every test dependency is installed\n", proc.stdout
    assert "installing" not in proc.stdout + proc.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s"  # a look, not an apt-get run (measured: ~10 ms)


def _without_root_rights() -> dict:
    """subprocess.run arguments that run a command as a user who cannot install packages."""
    if os.geteuid() == 0:
        return {"user": "nobody", "group": "nogroup", "extra_groups": []}
    sudo = shutil.which("sudo")
    if sudo and subprocess.run([sudo, "-n", "true"], capture_output=True).returncode == 0:
        pytest.skip("this user may sudo without a password: the script would install")
    return {}


def test_install_test_deps_without_rights_prints_the_command(env):
    """A user without root rights missing chromium gets the exact apt-get line to run, exit 1, nothing installed."""
    rights = _without_root_rights()
    with tempfile.TemporaryDirectory(prefix="no-chromium-") as tmp:
        Path(tmp).chmod(0o755)
        bindir = Path(tmp) / "bin"
        bindir.mkdir()
        # A virtualenv this user can run (the test run's may live under /root): the script checks
        # python3-venv only when there is none yet.
        base = "/usr/bin/python3" if rights else sys.executable
        if not os.access(base, os.X_OK):
            pytest.skip(f"no Python that {rights.get('user', 'this user')} can run")
        venv = Path(tmp) / "venv"
        subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        for command in ("bash", "env", "id", "ssh", "ssh-keygen", "sshd", "haproxy", "make"):
            found = shutil.which(command, path=f"{os.environ['PATH']}:/usr/sbin:/sbin")
            assert found, f"{command} is not installed"
            (bindir / command).symlink_to(found)
        proc = subprocess.run([str(INSTALL_TEST_DEPS)], cwd="/", capture_output=True, text=True, timeout=120,
                              env={"PATH": str(bindir), "VENV": str(venv), "LC_ALL": "C"}, **rights)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[0] == "install-test-deps: missing Debian packages: chromium", proc.stderr
    assert lines[-1].strip() == ("sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium"
                                 + ("" if Path("/run/sshd").is_dir() else " && sudo mkdir -p /run/sshd"))
