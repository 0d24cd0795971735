"""The site, repositories, hooks and receivers the event tests share (one copy).

``test_events``, ``test_webhooks`` and ``test_api_hooks`` each make one site per
module with :func:`make_site` (``[hosting]`` settings appended, users added at
once, with ``NAME@example.org`` addresses for the watchers' mail), one daemon
with :func:`running`, and per test a fresh repository (:func:`new_repo`) and a
receiver: a real HTTP server on a loopback port (:mod:`hookreceiver`, the
``receiver`` fixture here: import ``receiver_fixture`` into the test module).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from clibatch import cli_batch
from conftest import Daemon, SiteHandle, site_handle
from hookreceiver import Receiver

#: Deliveries to the receivers' loopback address are allowed; retries come fast.
FAST_RETRIES = """
webhook-allow = 127.0.0.1
webhook-timeout = 30
webhook-retry-first = 0.2
webhook-retry-max = 0.5
"""

_numbers = itertools.count(1)


def make_site(tmp: Path, settings: str, passwords: dict[str, str | None], admins: tuple[str, ...] = (),
              then: tuple[list[str], ...] = ()) -> SiteHandle:
    """``hg-hosting init`` in ``tmp``, ``[hosting]`` ``settings`` appended, the users added, then the
    commands ``then``: all in one process (:mod:`clibatch`)."""
    site = site_handle(tmp)
    site.cli("init")
    with open(site.root / "hgrc", "a") as f:
        f.write("\n[hosting]\n" + settings.strip() + "\n")
    users = [(["user", "add", name, "--email", f"{name}@example.org", *(["--admin"] if name in admins else []),
               *(["--password-stdin"] if password else [])], (password + "\n") if password else None)
             for name, password in passwords.items()]
    cli_batch(site, [*users, *((argv, None) for argv in then)])
    return site


@contextmanager
def running(site: SiteHandle) -> Iterator[Daemon]:
    """A daemon for the site; its log must hold no traceback when it stops."""
    daemon = Daemon(site)
    try:
        yield daemon
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]


@pytest.fixture(name="receiver")
def receiver_fixture() -> Iterator[Receiver]:
    """A receiver for one test (import ``receiver_fixture`` into a test module to use it as ``receiver``)."""
    with Receiver() as r:
        yield r


def new_repo(site: SiteHandle, tmp_path: Path, prefix: str = "alice/repo", private: bool = False) -> tuple[str, Path]:
    """A fresh repository ``PREFIXn`` and a working copy cloned from it."""
    full = f"{prefix}{next(_numbers)}"
    site.cli("repo", "create", full, *(["--private"] if private else []))
    wc = tmp_path / f"wc-{full.replace('/', '-')}"
    site.hg("clone", "-q", str(site.repo_path(full)), str(wc))
    return full, wc


def add_hook(site: SiteHandle, target: str, url: str, secret: str = "s3cret", events: str | None = None) -> int:
    """``hg-hosting webhook add`` with a given secret; the new hook's id."""
    args = ["webhook", "add", target, url, "--secret-stdin", *(["--events", events] if events else [])]
    out = site.cli(*args, input=secret + "\n").stdout
    return int(out.split()[2].rstrip(":"))


def push_local(site: SiteHandle, wc: Path, full: str, user: str = "alice"):
    """Push the working copy straight to the repository's directory (no daemon), as ``user``."""
    return site.hg("push", "-q", str(site.repo_path(full)), cwd=wc, user=user)
