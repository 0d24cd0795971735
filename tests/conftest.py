"""Fixtures shared by the tests: a real site on disk, the real CLI and the real hg client.

Everything runs as subprocesses of the installed console scripts (``hg-hosting``,
``hg``) next to the test interpreter, with an isolated ``HOME`` and ``HGRCPATH``
so that no user configuration leaks in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
HG = str(BIN / "hg")
HG_HOSTING = str(BIN / "hg-hosting")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
TOOLS = Path(__file__).resolve().parent.parent / "tools"

sys.path.insert(0, str(TOOLS))

import synthrepo  # noqa: E402


def pytest_configure(config) -> None:
    """Compile the project's modules to bytecode once, for every process the tests start.

    Each ``hg`` and ``hg-hosting`` process loads the extension's modules; with
    ``PYTHONDONTWRITEBYTECODE`` set (as on this machine) none writes a ``.pyc``,
    and every process compiled ~15 modules from source again (~0.1 s of CPU each).
    A ``.pyc`` that exists is read all the same.  Up-to-date files are skipped.
    """
    import compileall

    root = Path(__file__).resolve().parent.parent
    for package in ("hgext_hosting", "daemon", "hgext3rd"):
        if (root / package).is_dir():
            compileall.compile_dir(root / package, quiet=2)

#: Fixed commit date, so that changeset hashes are stable between runs.
DATE = "2020-01-01 00:00:00 +0000"


def base_env(home: Path) -> dict[str, str]:
    """An environment with no user or system hg config and no site chosen."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HG", "REMOTE_"))}
    hgrc = home / "empty-hgrc"
    hgrc.touch()
    env.update(
        HOME=str(home),
        HGRCPATH=str(hgrc),
        HGPLAIN="1",
        HGENCODING="utf-8",
        HGUSER="test <test@example.org>",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        LC_ALL="C.UTF-8",
    )
    return env


def run(argv: list[str], env: dict[str, str], *, cwd=None, input: str | None = None,
        check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, env=env, cwd=cwd, input=input, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


@dataclass
class SiteHandle:
    """A site created by ``hg-hosting init`` in a temporary directory."""

    root: Path
    env: dict[str, str]

    def cli(self, *args: str, input: str | None = None, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return run([HG_HOSTING, "--site", str(self.root), *args], {**self.env, **(env or {})},
                   input=input, check=check)

    def cli_json(self, *args: str):
        return json.loads(self.cli(*args, "--json").stdout)

    def refuse(self, *args: str, input: str | None = None) -> str:
        """Run a command that must be refused; return its one error line."""
        proc = self.cli(*args, input=input, check=False)
        assert proc.returncode != 0, f"{args} was accepted: {proc.stdout}"
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        return lines[0]

    def repo_path(self, full_name: str) -> Path:
        return self.root / "repos" / full_name

    def hg(self, *args: str, cwd=None, user: str | None = None, check: bool = True,
           env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess:
        extra = dict(env or {})
        if user is not None:
            extra["HG_HOSTING_USER"] = user
        return run([HG, *args], {**self.env, **extra}, cwd=cwd, check=check, input=input)

    def add_user(self, name: str, password: str | None = None, admin: bool = False) -> None:
        args = ["user", "add", name, "--email", f"{name}@example.org"]
        if admin:
            args.append("--admin")
        if password is not None:
            args.append("--password-stdin")
        self.cli(*args, input=None if password is None else password + "\n")


def site_handle(tmp: Path) -> SiteHandle:
    """A handle on ``tmp/site`` with its own empty ``tmp/home`` (the site is not created yet)."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return SiteHandle(tmp / "site", base_env(home))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return base_env(home)


@pytest.fixture(scope="session")
def site_template(tmp_path_factory) -> Path:
    """A site made by ``hg-hosting init`` once per worker, for :func:`site` to copy.

    ``init`` costs a Python start and the schema steps (about a second on a busy
    machine); a copy of what it wrote is the same site for a few milliseconds.
    Nothing in a site names its own directory, and no test edits this one.
    """
    tmp = tmp_path_factory.mktemp("site-template")
    handle = site_handle(tmp)
    handle.cli("init")
    return handle.root


@pytest.fixture
def site(tmp_path: Path, env: dict[str, str], site_template: Path) -> SiteHandle:
    """A new site (a copy of :func:`site_template`, just as ``hg-hosting init`` made it)."""
    handle = SiteHandle(tmp_path / "site", env)
    shutil.copytree(site_template, handle.root, symlinks=True)
    return handle


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The generated corpus as a bundle: 3,000 public changesets, 35 MB (``tools/synthrepo.py``).

    Built once into ``tests/artifacts/`` and reused by every xdist worker and by
    later runs until the generator changes.
    """
    return synthrepo.cached_bundle(ARTIFACTS)[0]


@pytest.fixture(scope="session")
def big_site_template(tmp_path_factory, corpus: Path) -> Path:
    """A site with alice/big holding the corpus, made once per run for :func:`big_site` to copy.

    The unbundle of 3,000 changesets through the push hooks costs seconds of CPU
    (tens on a loaded machine); a copy of the result costs a fraction of one.
    Under xdist the first worker that needs it builds it in the run's shared
    temporary directory (the parent of each worker's), under an exclusive
    ``flock``; the others wait for it and copy the same one.
    """
    import fcntl

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _build_big_site(tmp_path_factory.mktemp("big-site-template"), corpus)
    shared = tmp_path_factory.getbasetemp().parent / "big-site-template"
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "done").exists():
            shutil.rmtree(shared, ignore_errors=True)  # a half-built one from a worker that died
            shared.mkdir()
            _build_big_site(shared, corpus)
            (shared / "done").touch()
    return shared / "site"


def _build_big_site(tmp: Path, corpus: Path) -> Path:
    site = site_handle(tmp)
    site.cli("init")
    site.add_user("alice")
    site.cli("repo", "create", "alice/big")
    site.hg("-R", str(site.repo_path("alice/big")), "unbundle", "-q", str(corpus), user="alice")
    return site.root


@pytest.fixture
def big_site(tmp_path: Path, env: dict[str, str], big_site_template: Path) -> SiteHandle:
    """A site with the public alice/big holding a large history (the generated corpus), alice its only user."""
    handle = SiteHandle(tmp_path / "site", env)
    shutil.copytree(big_site_template, handle.root, symlinks=True)
    return handle


def commit(hg_run, wc: Path, filename: str, content: str, message: str | None = None,
           branch: str | None = None) -> str:
    """Write a file in a working copy and commit it with a fixed date; return the node.

    One ``hg commit -A --debug`` (its ``committed changeset REV:NODE`` line names the
    node) rather than addremove, commit and log: three processes cost three starts.
    """
    (wc / filename).parent.mkdir(parents=True, exist_ok=True)
    (wc / filename).write_text(content)
    if branch:
        hg_run("branch", "-q", "-f", branch, cwd=wc)
    proc = hg_run("commit", "-A", "--debug", "-d", DATE, "-m", message or f"change {filename}", cwd=wc)
    nodes = COMMITTED.findall(f"{proc.stdout}\n{proc.stderr}")
    assert nodes, f"hg commit --debug named no changeset:\n{proc.stdout}\n{proc.stderr}"
    return nodes[-1]


#: The line ``hg commit --debug`` prints for the changeset it made.
COMMITTED = re.compile(r"^committed changeset \d+:([0-9a-f]{40})$", re.M)


# -- the daemon ------------------------------------------------------------------------


class Daemon:
    """``hg-hosting serve`` on an ephemeral loopback port, its log captured to a file."""

    def __init__(self, site: SiteHandle, *extra: str, env: dict[str, str] | None = None):
        import re
        import time

        self.site = site
        self.log_path = site.root.parent / f"daemon-{id(self)}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [HG_HOSTING, "--site", str(site.root), "serve", "--http", "127.0.0.1:0", *extra],
            env={**site.env, **(env or {})}, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        pattern = re.compile(r"serving HTTP on http://[\d.]+:(\d+)/")
        while time.monotonic() < deadline:
            match = pattern.search(self.log_path.read_text())
            if match:
                self.port = int(match.group(1))
                break
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.log_path.read_text()}")
            time.sleep(0.05)
        else:
            self.stop()
            raise AssertionError(f"daemon did not start: {self.log_path.read_text()}")
        self.url = f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout: float = 30) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def daemon(site: SiteHandle):
    """A daemon serving ``site``; stopped (SIGTERM) after the test."""
    d = Daemon(site)
    yield d
    d.stop()
    assert "Traceback" not in d.log(), d.log()[-3000:]


# -- memory ------------------------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    """A process's resident memory (``VmRSS``) in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RssPeak:
    """Samples a process's VmRSS every 50 ms in a thread while the ``with`` block runs.

    ``baseline`` is the RSS when the block starts, ``peak`` the highest sample so far.
    """

    def __init__(self, pid: int, interval: float = 0.05):
        import threading

        self.pid, self.interval = pid, interval
        self.baseline = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kb(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssPeak:
        self.baseline = self.peak = rss_kb(self.pid)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_url():
    """A database in a throwaway PostgreSQL cluster (:mod:`pgcluster`), one cluster per test module."""
    import pgcluster

    with pgcluster.cluster() as cluster:
        yield cluster.createdb("hosting")


@pytest.fixture
def pg_site(tmp_path: Path, postgres_url: str) -> SiteHandle:
    """A new site whose hgrc names ``postgres_url`` (``init`` then creates no SQLite file)."""
    from hgext_hosting.site import SITE_HGRC_TEMPLATE

    site = site_handle(tmp_path)
    site.root.mkdir()
    (site.root / "hgrc").write_text(
        SITE_HGRC_TEMPLATE.replace("\ndatabase =\n", f"\ndatabase = {postgres_url}\n"))
    site.cli("init")
    assert not (site.root / "hosting.db").exists()
    return site

