"""Watchers' mail, the Atom feed, the webhooks page, the audit log, backoff and giving up (issue 14).

One site and one daemon for the module, with a real SMTP server (aiosmtpd) on
a loopback port as ``[hosting] smtp`` and short retry settings (first retry
0.2 s, at most 0.4 s, given up after 1.5 s, a hook disabled after 2.5 s of
failing).  Receivers are real HTTP servers (:mod:`hookreceiver`).
"""

from __future__ import annotations

import email
import email.policy
import http.client
import json
import re
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import feedparser
import pytest
from clibatch import cli_batch
from conftest import Daemon, SiteHandle, commit
from eventsite import make_site, push_local, running
from eventsite import new_repo as _new_repo
from hookreceiver import Receiver, attempts, wait_until
from test_auth import db_query

PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "carol": "carol-pw-3", "root": "root-pw-4"}


class Mailbox:
    """An aiosmtpd handler keeping every message it gets."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.cond = threading.Condition()

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.cond:
            self.messages.append(message)
            self.cond.notify_all()
        return "250 OK"

    def wait(self, count: int, timeout: float = 20) -> list:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.messages)} mails, {count} expected"
                self.cond.wait(left)
            return list(self.messages)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mailbox():
    from aiosmtpd.controller import Controller

    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield box, controller.port
    controller.stop()


@pytest.fixture(scope="module")
def events_site(tmp_path_factory, mailbox) -> SiteHandle:
    return make_site(tmp_path_factory.mktemp("events"), f"""
webhook-allow = 127.0.0.1
webhook-timeout = 2
webhook-retry-first = 0.2
webhook-retry-max = 0.4
webhook-give-up = 1.5
webhook-disable-after = 2.5
smtp = 127.0.0.1:{mailbox[1]}
mail-from = hg@example.org
""", PASSWORDS, admins=("root",))


@pytest.fixture(scope="module")
def daemon(events_site: SiteHandle):
    with running(events_site) as d:
        yield d


def new_repo(site: SiteHandle, tmp_path: Path, private: bool = False) -> tuple[str, Path]:
    return _new_repo(site, tmp_path, "alice/ev", private)


def push(site: SiteHandle, wc: Path, full: str):
    return push_local(site, wc, full)


# -- HTTP helpers --------------------------------------------------------------------


def request(daemon: Daemon, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        conn.close()


def _cookies(headers) -> dict[str, str]:
    return {v.partition("=")[0]: v.partition("=")[2].split(";")[0] for k, v in headers if k.lower() == "set-cookie"}


class Browser:
    """A logged-in session: GET pages, POST forms with the page's CSRF token."""

    def __init__(self, daemon: Daemon, user: str):
        self.daemon = daemon
        _, headers, _ = request(daemon, "GET", "/-/login")
        token = _cookies(headers)["hgh_login_csrf"]
        body = urllib.parse.urlencode({"csrf": token, "user": user, "password": PASSWORDS[user], "next": "/"})
        status, headers, _ = request(daemon, "POST", "/-/login", {
            "Cookie": f"hgh_login_csrf={token}", "Content-Type": "application/x-www-form-urlencoded"}, body.encode())
        assert status == 303, status
        self.cookie = "hgh_session=" + _cookies(headers)["hgh_session"]

    def get(self, path: str) -> tuple[int, str]:
        status, _, body = request(self.daemon, "GET", path, {"Cookie": self.cookie})
        return status, body.decode()

    def post(self, path: str, fields: dict[str, str], page: str | None = None) -> tuple[int, list, str]:
        _, html = self.get(page or path)
        csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)
        body = urllib.parse.urlencode({"csrf": csrf, **fields}).encode()
        status, headers, out = request(self.daemon, "POST", path, {
            "Cookie": self.cookie, "Content-Type": "application/x-www-form-urlencoded"}, body)
        return status, headers, out.decode()


# -- mail ----------------------------------------------------------------------------


def test_watchers_get_one_mail_per_push_if_they_may_read(events_site, daemon, mailbox, tmp_path):
    site = events_site
    box, _ = mailbox
    full, wc = new_repo(site, tmp_path, private=True)
    site.cli("grant", full, "bob", "read")
    site.cli("grant", full, "carol", "read")
    site.cli("watch", full, "bob")
    site.cli("watch", full, "carol")
    assert "already watches" in site.cli("watch", full, "bob").stdout
    site.cli("revoke", full, "carol")  # carol may no longer read: she gets nothing
    before = len(box.messages)
    commit(site.hg, wc, "m.txt", "one\ntwo\nthree\n", "add m\n\nthe details")
    commit(site.hg, wc, "n.txt", "x\n", "add n")
    push(site, wc, full)
    (mail,) = box.wait(before + 1)[before:]
    assert mail["Subject"] == f"[{full}] 2 new changesets by alice"
    assert mail["To"] == "bob@example.org" and mail["From"] == "hg@example.org"
    text = mail.get_content()
    assert "add m" in text and "add n" in text and "the details" not in text
    assert "m.txt | " in text and "1 files changed, 3 insertions(+), 0 deletions(-)" in text
    assert f"http://127.0.0.1:{daemon.port}/{full}/rev/" in text
    time.sleep(1)  # nothing for carol
    assert len(box.messages) == before + 1
    site.cli("unwatch", full, "bob")
    commit(site.hg, wc, "o.txt", "o\n")
    push(site, wc, full)
    time.sleep(1)
    assert len(box.messages) == before + 1


def test_the_watch_button(events_site, daemon, mailbox, tmp_path):
    site = events_site
    full, wc = new_repo(site, tmp_path)
    bob = Browser(daemon, "bob")
    status, html = bob.get(f"/{full}")
    assert status == 200 and ">Watch</button>" in html
    status, headers, _ = bob.post(f"/{full}/watch", {"action": "watch"}, page=f"/{full}")
    assert status == 303
    assert ">Unwatch</button>" in bob.get(f"/{full}")[1]
    assert site.cli("audit", "--json", "--limit", "1").stdout.count('"watch"') == 1
    status, _, _ = request(daemon, "POST", f"/{full}/watch", {"Cookie": bob.cookie}, b"action=watch")
    assert status == 403  # no CSRF token
    bob.post(f"/{full}/watch", {"action": "unwatch"}, page=f"/{full}")
    assert ">Watch</button>" in bob.get(f"/{full}")[1]


# -- the feed ------------------------------------------------------------------------


def test_the_atom_feed_is_valid_and_as_private_as_the_repository(events_site, daemon, tmp_path):
    site = events_site
    full, wc = new_repo(site, tmp_path, private=True)
    nodes = []
    for i in range(2):
        nodes.append(commit(site.hg, wc, f"a{i}.txt", f"{i}\n", f"summary <{i}> & more"))
        push(site, wc, full)
    assert request(daemon, "GET", f"/{full}/pushlog.atom")[0] == 401
    bob = Browser(daemon, "bob")
    assert bob.get(f"/{full}/pushlog.atom")[0] == 404
    alice = Browser(daemon, "alice")
    status, body = alice.get(f"/{full}/pushlog.atom")
    assert status == 200
    feed = feedparser.parse(body)
    assert not feed.bozo, feed.bozo_exception
    assert feed.version == "atom10"
    assert feed.feed.title == f"{full}: pushes" and feed.feed.id.startswith("urn:uuid:")
    assert [e.title for e in feed.entries] == ["Push 2 by alice: 1 changeset", "Push 1 by alice: 1 changeset"]
    assert len({e.id for e in feed.entries}) == 2
    assert all(e.updated_parsed and e.link and e.author == "alice" for e in feed.entries)
    assert nodes[1][:12] in feed.entries[0].summary and "summary &lt;1&gt; &amp; more" in feed.entries[0].summary
    # Renamed: the same ids.
    site.cli("repo", "rename", full, full + "-renamed")
    again = feedparser.parse(alice.get(f"/{full}-renamed/pushlog.atom")[1])
    assert [e.id for e in again.entries] == [e.id for e in feed.entries]
    assert again.feed.id == feed.feed.id


# -- the webhooks page ---------------------------------------------------------------


def test_the_webhooks_page(events_site, daemon, tmp_path):
    site = events_site
    full, wc = new_repo(site, tmp_path)
    alice = Browser(daemon, "alice")
    page = f"/{full}/settings/hooks"
    with Receiver() as receiver:
        status, _, html = alice.post(page, {"action": "add", "url": receiver.url, "secret": "",
                                            "event-push": "on"})
        assert status == 200 and "added webhook" in html and "Secret (shown once)" in html
        commit(site.hg, wc, "w.txt", "w\n")
        push(site, wc, full)
        (hit,) = receiver.wait(1)
        deadline = time.monotonic() + 10
        while hit.delivery not in (html := alice.get(page)[1]):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        hook_id = re.search(r'name="hook" value="(\d+)"', html).group(1)
        status, _, html = alice.post(page, {"action": "redeliver", "hook": hook_id, "delivery": hit.delivery})
        assert "will be sent again" in html
        assert receiver.wait(2)[1].delivery == hit.delivery
    bob = Browser(daemon, "bob")
    assert bob.get(page)[0] == 403  # a reader is no admin
    status, _, html = alice.post(page, {"action": "add", "url": "gopher://x/"})
    assert status == 400 and "http:// or https://" in html
    status, _, html = alice.post(page, {"action": "remove", "hook": hook_id})
    assert "removed webhook" in html and "No webhooks." in html


# -- the audit log -------------------------------------------------------------------


def test_the_audit_log_has_changes_and_failed_logins(events_site, daemon):
    site = events_site
    status, _, _ = request(daemon, "GET", "/", {"Authorization": "Basic Ym9iOndyb25n"})  # bob:wrong
    assert status == 401
    entries = site.cli_json("audit", "--limit", "5")
    failed = next(e for e in entries if e["action"] == "login.failed")
    assert failed["actor"] == "bob" and failed["address"] == "127.0.0.1" and failed["details"] == {"credential": "password"}
    text = site.cli("audit", "--limit", "3").stdout.splitlines()
    assert text[0].split() == ["DATE", "ACTOR", "ACTION", "TARGET", "ADDRESS"]
    root = Browser(daemon, "root")
    status, html = root.get("/-/admin/audit")
    assert status == 200 and "login.failed" in html
    assert Browser(daemon, "bob").get("/-/admin/audit")[0] == 403
    assert site.refuse("audit", "--limit", "0") == "error: --limit must be at least 1"


# -- retrying, giving up, disabling --------------------------------------------------


def test_backoff_then_give_up_then_disable(events_site, daemon, tmp_path):
    site = events_site
    full, wc = new_repo(site, tmp_path)
    with Receiver() as receiver:
        receiver.mode = "fail"
        site.cli("webhook", "add", full, receiver.url, "--secret-stdin", input="k\n")
        hook_id = site.cli_json("webhook", "list", full)[0]["id"]
        commit(site.hg, wc, "b.txt", "b\n")
        push(site, wc, full)
        db = site.root / "hosting.db"
        wait_until(lambda: (rows := attempts(db, hook_id)) and rows[0][2] == "failed", timeout=30)
        rows = site.cli_json("webhook", "deliveries", str(hook_id))
        times = sorted(time.mktime(time.strptime(r["date"], "%Y-%m-%dT%H:%M:%SZ")) for r in rows)
        assert 3 <= len(rows) <= 8  # 0, 0.2, 0.6, 1.0, 1.4 s...: retried, not hammered
        assert all(r["status"] == 500 and r["response"] == "broken" for r in rows)
        assert times[-1] - times[0] <= 3
        # Still failing on the next push, past disable-after: the hook is disabled and says so.
        time.sleep(1.2)
        commit(site.hg, wc, "c.txt", "c\n")
        push(site, wc, full)
        wait_until(lambda: len(attempts(db, hook_id)) > len(rows), timeout=30)
        hook = site.cli_json("webhook", "list", full)[0]
        assert hook["active"] is False and hook["disabled_reason"].startswith("disabled: failing since")
        assert "failing since" in site.cli("webhook", "list", full).stdout
        # Enabled again and answered: the pending delivery goes out.
        receiver.mode = "ok"
        site.cli("webhook", "enable", str(hook_id))
        (hit,) = receiver.wait(1)
        assert hit.json["push"]["id"] == 2


def test_a_receiver_that_never_answers_times_out(events_site, daemon, tmp_path):
    site = events_site
    full, wc = new_repo(site, tmp_path)
    with Receiver() as receiver:
        receiver.mode = "hang"
        site.cli("webhook", "add", full, receiver.url, "--secret-stdin", input="k\n")
        hook_id = site.cli_json("webhook", "list", full)[0]["id"]
        commit(site.hg, wc, "t.txt", "t\n")
        push(site, wc, full)
        ((status, error, state), *_) = wait_until(lambda: attempts(site.root / "hosting.db", hook_id), timeout=30)
        assert status is None and error == "no answer within 2 s" and state == "pending"


def test_administrative_changes_are_audited_with_their_actor(events_site, daemon):
    site = events_site
    site.cli("team", "add", "auditors")
    site.cli("team", "member-add", "auditors", "bob")
    site.cli("repo", "create", "auditors/ledger", "--private")
    site.cli("grant", "auditors/ledger", "carol", "read")
    site.refuse("grant", "auditors/ledger", "nobody", "read")  # refused: nothing recorded
    site.cli("protect", "auditors/ledger", "default", "--allow", "bob")
    site.cli("repo", "set", "auditors/ledger", "description=Money")
    token = site.cli("token", "create", "carol", "--label", "ci").stdout.strip()
    assert token
    site.cli("repo", "rename", "auditors/ledger", "auditors/books")
    entries = site.cli_json("audit", "--limit", "8")
    assert [(e["action"], e["target"]) for e in reversed(entries)] == [
        ("team.add", "auditors"), ("team.member-add", "auditors"), ("repo.created", "auditors/ledger"),
        ("grant", "auditors/ledger"), ("protect", "auditors/ledger"), ("repo.update", "auditors/ledger"),
        ("token.create", "carol"), ("repo.renamed", "auditors/books")]
    assert all(e["actor"].startswith("cli") and e["address"] == "local" for e in entries)
    assert entries[0]["details"] == {"old_name": "auditors/ledger"}
    assert not any(token in json.dumps(e) for e in entries)
    # A change on a page is the logged-in user's, from their address.
    alice = Browser(daemon, "alice")
    full = "alice/audited"
    site.cli("repo", "create", full)
    alice.post(f"/{full}/settings", {"action": "grant", "subject": "bob", "level": "write"})
    last = site.cli_json("audit", "--limit", "1")[0]
    assert (last["actor"], last["action"], last["target"], last["address"]) == ("alice", "grant", full, "127.0.0.1")
    assert last["details"] == {"subject": "bob", "level": "write"}


def test_a_repository_admin_cannot_redeliver_the_owners_hook(events_site, daemon, tmp_path):
    """bob administers alice's repository, not alice's own hooks: naming his repository's hook
    with the delivery of alice's owner hook (for that repository's push) is refused."""
    site = events_site
    full, wc = new_repo(site, tmp_path)
    cli_batch(site, [(["grant", full, "bob", "admin"], None),
                     (["webhook", "add", "alice", "http://127.0.0.1:9/owner", "--events", "push"], None),
                     (["webhook", "add", full, "http://127.0.0.1:9/repo", "--events", "push"], None)])
    ((owner_hook,),) = db_query(site, "SELECT id FROM webhook WHERE url = 'http://127.0.0.1:9/owner'")
    ((repo_hook,),) = db_query(site, "SELECT id FROM webhook WHERE url = 'http://127.0.0.1:9/repo'")
    try:
        commit(site.hg, wc, "o.txt", "o\n")
        push(site, wc, full)
        (guid,) = wait_until(lambda: [g for (g,) in db_query(site, "SELECT guid FROM delivery WHERE webhook_id = ?",
                                                              (owner_hook,))])
        bob = Browser(daemon, "bob")
        page = f"/{full}/settings/hooks"
        status, _, html = bob.post(page, {"action": "redeliver", "hook": str(repo_hook), "delivery": guid})
        assert status == 400 and "no delivery" in html
        assert db_query(site, "SELECT count(*) FROM audit_entry WHERE action = 'webhook.redeliver' AND actor = 'bob'") == [(0,)]
    finally:
        site.cli("webhook", "remove", str(owner_hook))
