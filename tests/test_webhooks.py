"""Webhooks on the transactional outbox (issue 14): what committed is delivered, signed, in order.

One site and one daemon for the module, with short retry settings and
``webhook-allow = 127.0.0.1``; each test makes its own repository and its own
receiver (:mod:`hookreceiver`, a real HTTP server on a loopback port).
Pushes go over HTTP (to the daemon), SSH (``hg serve --stdio`` through a fake
ssh, no daemon involved) and locally.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

import pytest
from conftest import Daemon, SiteHandle, commit
from eventsite import FAST_RETRIES, add_hook, make_site, push_local, receiver_fixture, running  # noqa: F401
from eventsite import new_repo as _new_repo
from hookreceiver import Receiver, attempts, verify, wait_until
from pushhelpers import write_fakessh

PASSWORD = "alice-pw-1"
SETTINGS = "[hosting]" + FAST_RETRIES


@pytest.fixture(scope="module")
def events_site(tmp_path_factory) -> SiteHandle:
    return make_site(tmp_path_factory.mktemp("webhooks"), FAST_RETRIES, {"alice": PASSWORD, "bob": "bob-pw-2"})


@pytest.fixture(scope="module")
def daemon(events_site: SiteHandle):
    with running(events_site) as d:
        yield d
    assert "Starting factory" not in d.log()  # no log line per delivery


def new_repo(site: SiteHandle, tmp_path, private: bool = False):
    """A fresh repository alice/hookN and a working copy cloned from it."""
    return _new_repo(site, tmp_path, "alice/hook", private)


def push_http(site: SiteHandle, daemon: Daemon, wc: Path, full: str):
    url = f"http://alice:{PASSWORD}@127.0.0.1:{daemon.port}/{full}"
    return site.hg("push", "-q", url, cwd=wc)


def push_ssh(site: SiteHandle, wc: Path, full: str):
    fakessh = write_fakessh(site.root.parent)
    return site.hg("push", "-q", "--ssh", str(fakessh), f"ssh://x/{full}", cwd=wc, user="alice",
                   env={"FAKESSH_ROOT": str(site.root / "repos")})


def test_a_push_is_delivered_signed_with_its_changesets(events_site, daemon, receiver, tmp_path):
    site = events_site
    full, wc = new_repo(site, tmp_path)
    add_hook(site, full, receiver.url)
    node = commit(site.hg, wc, "a.txt", "one\ntwo\n", "first change\n\nmore words")
    push_local(site, wc, full)
    (hit,) = receiver.wait(1)
    assert verify("s3cret", hit)
    assert not verify("wrong", hit)
    assert hit.headers["x-hghosting-event"] == "push"
    body = hit.json
    assert body["delivery"] == hit.delivery
    assert body["event"] == "push"
    assert body["repository"]["full_name"] == full and body["repository"]["private"] is False
    assert body["repository"]["url"] == f"http://127.0.0.1:{daemon.port}/{full}"
    assert body["pusher"] == "alice"
    assert body["push"]["id"] == 1
    assert body["changeset_count"] == 1
    (cs,) = body["changesets"]
    assert cs["node"] == node and cs["files"] == ["a.txt"] and cs["phase"] == "public"
    assert cs["description"].startswith("first change") and cs["branch"] == "default"
    assert cs["parents"] == [] and cs["diffstat"] == [["a.txt", 2, 0]]
    assert body["bookmarks"] == []
    # The CLI shows the delivery.
    hook_id = site.cli_json("webhook", "list", full)[0]["id"]
    wait_until(lambda: attempts(site.root / "hosting.db", hook_id))
    rows = site.cli_json("webhook", "deliveries", str(hook_id))
    assert rows[0]["delivery"] == hit.delivery and rows[0]["status"] == 200 and rows[0]["response"] == "thanks"


@pytest.mark.parametrize("transport", ["http", "ssh"])
def test_pushes_over_every_transport_arrive_in_order(events_site, daemon, receiver, tmp_path, transport):
    site = events_site
    full, wc = new_repo(site, tmp_path)
    add_hook(site, full, receiver.url)
    pushed = []
    for i in range(2):
        pushed.append(commit(site.hg, wc, f"f{i}.txt", f"{i}\n"))
        (push_http(site, daemon, wc, full) if transport == "http" else push_ssh(site, wc, full))
    hits = receiver.wait(2)
    assert [h.json["push"]["id"] for h in hits] == [1, 2]
    assert [h.json["changesets"][0]["node"] for h in hits] == pushed
    assert len({h.delivery for h in hits}) == 2


def test_an_owner_hook_hears_every_repository_and_repository_events(events_site, daemon, receiver, tmp_path):
    site = events_site
    site.cli("team", "add", "crew")
    add_hook(site, "crew", receiver.url, events="repository")
    site.cli("repo", "create", "crew/one")
    site.cli("repo", "rename", "crew/one", "crew/two")
    site.cli("repo", "remove", "crew/two")
    hits = receiver.wait(3)
    assert [(h.headers["x-hghosting-event"], h.json["action"]) for h in hits] == [
        ("repository", "created"), ("repository", "renamed"), ("repository", "deleted")]
    assert hits[1].json["old_name"] == "crew/one" and hits[1].json["repository"]["full_name"] == "crew/two"


def test_a_receiver_that_is_down_gets_everything_once_back(events_site, daemon, tmp_path):
    site = events_site
    receiver = Receiver().start()
    port = receiver.port
    receiver.stop()  # down: connections are refused
    full, wc = new_repo(site, tmp_path)
    add_hook(site, full, f"http://127.0.0.1:{port}/hook")
    nodes = []
    for i in range(3):
        nodes.append(commit(site.hg, wc, f"d{i}.txt", f"{i}\n"))
        push_local(site, wc, full)
    hook_id = site.cli_json("webhook", "list", full)[0]["id"]
    wait_until(lambda: attempts(site.root / "hosting.db", hook_id))  # a failed attempt was recorded
    failed = site.cli_json("webhook", "deliveries", str(hook_id))
    assert failed[0]["status"] is None and failed[0]["error"] and failed[0]["state"] == "pending"
    back = Receiver(port).start()
    try:
        hits = back.wait(3)
        assert [h.json["changesets"][0]["node"] for h in hits] == nodes
        time.sleep(1)  # nothing more comes: each delivered once
        assert len(back.hits) == 3
    finally:
        back.stop()


def test_a_receiver_that_never_answers_slows_neither_pushes_nor_pages(events_site, daemon, receiver, tmp_path):
    """While deliveries hang (webhook-timeout is 30 s here), pushes over HTTP and pages are served."""
    site = events_site
    receiver.mode = "hang"
    full, wc = new_repo(site, tmp_path)
    for _ in range(3):
        add_hook(site, full, receiver.url)
    commit(site.hg, wc, "h.txt", "h\n")
    push_http(site, daemon, wc, full)
    receiver.wait(3, attempts=True)  # three requests are hanging now
    hung_at = time.monotonic()
    for _ in range(5):
        conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
        conn.request("GET", f"/{full}")
        assert conn.getresponse().status == 200
        conn.close()
    commit(site.hg, wc, "h2.txt", "h\n")
    push_http(site, daemon, wc, full)
    # All of that happened while the three requests were still waiting for an answer.
    assert time.monotonic() - hung_at < 30 and receiver.attempts == 3
    receiver.mode = "ok"
    receiver._release.set()  # the hanging requests end without an answer: retried, then delivered
    hits = receiver.wait(6, timeout=60)
    assert sorted(h.json["push"]["id"] for h in hits) == [1, 1, 1, 2, 2, 2]


def test_private_addresses_are_refused_unless_allowed(events_site, daemon, tmp_path):
    """127.0.0.2 is loopback and not in webhook-allow (127.0.0.1 is): refused before connecting."""
    site = events_site
    full, wc = new_repo(site, tmp_path)
    add_hook(site, full, "http://127.0.0.2:9/hook")
    commit(site.hg, wc, "s.txt", "s\n")
    push_local(site, wc, full)
    hook_id = site.cli_json("webhook", "list", full)[0]["id"]
    wait_until(lambda: attempts(site.root / "hosting.db", hook_id))
    rows = site.cli_json("webhook", "deliveries", str(hook_id))
    assert "127.0.0.2, a loopback, private or link-local address" in rows[0]["error"]


@pytest.mark.parametrize(("address", "host", "allow", "refused"), [
    ("93.184.216.34", "example.org", (), False),
    ("127.0.0.1", "localhost", (), True),
    ("10.1.2.3", "intranet", (), True),
    ("192.168.1.1", "router", (), True),
    ("169.254.169.254", "metadata", (), True),  # cloud metadata
    ("100.100.100.200", "metadata", (), True),  # shared address space (another cloud's metadata)
    ("::1", "localhost", (), True),
    ("::ffff:127.0.0.1", "mapped", (), True),
    ("fd00:ec2::254", "metadata6", (), True),
    ("fe80::1%eth0", "linklocal", (), True),
    ("0.0.0.0", "any", (), True),
    ("127.0.0.1", "localhost", ("127.0.0.1",), False),
    ("10.1.2.3", "intranet", ("10.0.0.0/8",), False),
    ("10.1.2.3", "ci.internal", ("ci.internal",), False),
    ("10.1.2.3", "other.internal", ("ci.internal",), True),
])
def test_refusal_rule(address, host, allow, refused):
    from daemon.deliveries import refusal

    assert (refusal(address, host, allow) is not None) is refused


def test_redeliver_sends_the_same_delivery_id(events_site, daemon, receiver, tmp_path):
    site = events_site
    full, wc = new_repo(site, tmp_path)
    hook_id = add_hook(site, full, receiver.url)
    commit(site.hg, wc, "r.txt", "r\n")
    push_local(site, wc, full)
    (first,) = receiver.wait(1)
    wait_until(lambda: attempts(site.root / "hosting.db", hook_id))
    site.cli("webhook", "redeliver", first.delivery)
    second = receiver.wait(2)[1]
    assert second.delivery == first.delivery and second.body == first.body
    assert site.refuse("webhook", "redeliver", "nope") == "error: no delivery 'nope' (see 'webhook deliveries ID')"


def test_cli_refuses_bad_input_in_one_line(events_site):
    site = events_site
    assert "http:// or https://" in site.refuse("webhook", "add", "alice", "ftp://x/")
    assert "unknown event kind" in site.refuse("webhook", "add", "alice", "http://x/", "--events", "pull")
    assert site.refuse("webhook", "remove", "999") == "error: no webhook 999"
    assert "no user or team" in site.refuse("webhook", "add", "nobody", "http://x/")
    out = site.cli("webhook", "add", "alice", "https://example.org/h").stdout
    assert "secret (shown once): " in out
    audit = site.cli_json("audit", "--limit", "1")
    assert audit[0]["action"] == "webhook.add" and audit[0]["target"] == "alice"
    assert "secret" not in json.dumps(audit[0]["details"])


def test_the_outbox_row_goes_with_a_rolled_back_push(events_site, daemon, receiver, tmp_path):
    """A pretxnclose hook refuses the push after our validator: no record, no event, no delivery."""
    site = events_site
    full, wc = new_repo(site, tmp_path)
    add_hook(site, full, receiver.url)
    commit(site.hg, wc, "x.txt", "x\n")
    push_local(site, wc, full)
    receiver.wait(1)
    commit(site.hg, wc, "y.txt", "y\n")
    refused = site.hg("--config", "hooks.pretxnclose.no=false", "push", "-q", str(site.repo_path(full)),
                      cwd=wc, user="alice", check=False)
    assert refused.returncode != 0
    push_local(site, wc, full)  # the same changeset, now accepted: push 2
    receiver.wait(2)
    time.sleep(0.5)
    assert [h.json["push"]["id"] for h in receiver.hits] == [1, 2]


def test_pushes_made_while_no_daemon_runs_go_out_when_one_runs(site, tmp_path):
    """A local push with no daemon, the repository renamed before any daemon ran: delivered under its new name."""
    with open(site.root / "hgrc", "a") as f:
        f.write("\n" + SETTINGS)
    site.add_user("alice")
    site.cli("repo", "create", "alice/quiet")
    wc = tmp_path / "wc"
    site.hg("clone", "-q", str(site.repo_path("alice/quiet")), str(wc))
    with Receiver() as receiver:
        add_hook(site, "alice/quiet", receiver.url, events="push")
        node = commit(site.hg, wc, "q.txt", "q\n")
        push_local(site, wc, "alice/quiet")
        site.cli("repo", "rename", "alice/quiet", "alice/loud")
        d = Daemon(site)
        try:
            (hit,) = receiver.wait(1)
        finally:
            d.stop()
        assert hit.json["repository"]["full_name"] == "alice/loud"
        assert hit.json["changesets"][0]["node"] == node and hit.json["changesets"][0]["files"] == ["q.txt"]
        assert verify("s3cret", hit)


def wal_backlog(db_path: Path) -> int:
    """Frames of SQLite's write-ahead log not yet copied into the database file.

    Read from the WAL-index (``-shm``) header as SQLite documents it
    (https://sqlite.org/walformat.html): ``mxFrame`` at byte 16, the checkpoint's
    ``nBackfill`` at byte 96, both in the machine's byte order.
    """
    import struct

    head = (db_path.parent / (db_path.name + "-shm")).read_bytes()[:100]
    (max_frame,) = struct.unpack_from("=I", head, 16)
    (backfilled,) = struct.unpack_from("=I", head, 96)
    return max_frame - backfilled


def test_the_daemon_keeps_the_database_log_short(events_site, daemon, receiver, tmp_path):
    """After its deliveries the daemon checkpoints SQLite's log, so a push does not pay for their pages.

    Deliveries write ~90 pages a push (payload, attempts); left in the log, a
    push's commit crossed SQLite's auto-checkpoint threshold and copied them:
    a push with three hooks and five watchers cost 1.13x one with none
    (``bench/events.py``), 1.0x with the log kept short.
    """
    site = events_site
    full, wc = new_repo(site, tmp_path)
    hooks = [add_hook(site, full, receiver.url) for _ in range(3)]
    db = site.root / "hosting.db"
    for i in range(3):
        commit(site.hg, wc, f"w{i}.txt", f"{i}\n")
        push_local(site, wc, full)
        receiver.wait(3 * (i + 1))
        wait_until(lambda i=i: all(len(attempts(db, h)) == i + 1 for h in hooks))
        wait_until(lambda: wal_backlog(db) < 16, timeout=10)
