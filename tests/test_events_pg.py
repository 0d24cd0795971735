"""Several daemons on one database deliver each event once, in order (issue 14).

Two daemons (one with ``--workers 2``) share a site whose database is
PostgreSQL (a throwaway cluster, :mod:`pgcluster`): the outbox's claims
(``UPDATE ... RETURNING`` with a lease) let exactly one of them deliver each
event, and a repository's events still arrive in push order.
"""

from __future__ import annotations

import time

from conftest import Daemon, SiteHandle, commit
from hookreceiver import Receiver, verify

SETTINGS = "\n[hosting]\nwebhook-allow = 127.0.0.1\nwebhook-retry-first = 0.2\nwebhook-retry-max = 0.5\n"
PUSHES = 3


def two_daemons_deliver_once(site: SiteHandle, tmp_path, *second: str) -> None:
    with open(site.root / "hgrc", "a") as f:
        f.write(SETTINGS)
    site.add_user("alice")
    site.cli("repo", "create", "alice/one")
    site.cli("repo", "create", "alice/two")
    wcs = {}
    for name in ("one", "two"):
        wcs[name] = tmp_path / f"wc-{name}"
        site.hg("clone", "-q", str(site.repo_path(f"alice/{name}")), str(wcs[name]))
    daemons = [Daemon(site), Daemon(site, *second)]
    try:
        with Receiver() as receiver:
            site.cli("webhook", "add", "alice", receiver.url, "--secret-stdin", input="k\n")
            for i in range(PUSHES):
                for name in ("one", "two"):
                    commit(site.hg, wcs[name], f"{name}{i}.txt", f"{i}\n")
                    site.hg("push", "-q", str(site.repo_path(f"alice/{name}")), cwd=wcs[name], user="alice")
            hits = receiver.wait(2 * PUSHES)
            time.sleep(1)  # a second delivery of anything would come now
            assert len(receiver.hits) == 2 * PUSHES
            assert len({h.delivery for h in receiver.hits}) == 2 * PUSHES
            assert all(verify("k", h) for h in hits)
            for name in ("one", "two"):
                ids = [h.json["push"]["id"] for h in hits if h.json["repository"]["name"] == name]
                assert ids == list(range(1, PUSHES + 1))
    finally:
        for d in daemons:
            d.stop()
            assert "Traceback" not in d.log(), d.log()[-3000:]


def test_two_daemons_on_postgresql(pg_site, tmp_path):
    two_daemons_deliver_once(pg_site, tmp_path, "--workers", "2")

