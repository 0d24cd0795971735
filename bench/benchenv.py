"""The environment every benchmark runs ``hg`` and ``hg-hosting`` in.

No user or system configuration (``HGRCPATH`` names an empty file, ``HOME``
is the work directory's), no inherited ``HG*``, ``REMOTE_*`` or ``SSH_*``
variables, plain output, and the interpreter's own scripts first on ``PATH``,
so that the measured commands are the same on every machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def work_directory(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A fresh temporary directory for a benchmark's site and clones; removed on the
    way out, even after a failure, unless ``keep`` (``--keep``: its path is printed)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


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


def start_daemon(site: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, int]:
    """``hg-hosting serve`` on an ephemeral loopback port, logging to ``log``: (process, port)."""
    out = open(log, "w")  # noqa: SIM115 - the daemon's log, open for its lifetime
    proc = subprocess.Popen([str(BIN / "hg-hosting"), "--site", str(site), "serve", "--http", "127.0.0.1:0"],
                            env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(r"serving HTTP on http://[\d.]+:(\d+)/", log.read_text())
        if match:
            return proc, int(match.group(1))
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited: {log.read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the daemon did not start")


@contextlib.contextmanager
def serving(site: Path, env: dict[str, str], log: Path) -> Iterator[tuple[int, int]]:
    """:func:`start_daemon` for a block: yields its ``(pid, port)``, terminates it on the way out."""
    proc, port = start_daemon(site, env, log)
    try:
        yield proc.pid, port
    finally:
        proc.terminate()
        proc.wait(30)


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process ``pid`` has used so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
