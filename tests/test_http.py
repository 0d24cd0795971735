"""The HTTP daemon with the stock ``hg`` client: permissions, credentials, bad input, json-pushes.

``hg-hosting serve --http 127.0.0.1:0`` runs as a subprocess (:class:`conftest.Daemon`).
Most tests share one site and one daemon (module-scoped ``shared``):

* ``alice`` owns the public ``alice/demo`` (one changeset, pushed by alice), the
  private ``alice/secret`` (one changeset), ``alice/jp`` (json-pushes) and
  ``alice/prot`` (branch ``stable`` protected, only alice allowed);
* ``bob`` may read ``alice/secret`` and write ``alice/jp``;
* ``carol`` has no grant at all;
* ``dave`` may write ``alice/demo``, ``alice/jp`` and ``alice/prot``, and has an API token.

Tests that change credentials, trip the login throttle (which blocks the
address 127.0.0.1 for five minutes), restart the daemon or crash a push get a
site and a daemon of their own.  Requests whose exact bytes matter are made
with raw sockets or :mod:`http.client`, never :mod:`urllib` (which normalizes
paths).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import HG, HG_HOSTING, Daemon, SiteHandle, commit, site_handle
from pushhelpers import cli_all, repo_state, run_all

PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "carol": "carol-pw-3", "dave": "dave-pw-4"}


# -- helpers ---------------------------------------------------------------------------


def add_users(site: SiteHandle, passwords: dict[str, str]) -> None:
    """``user add NAME --password-stdin`` for every user at once (hashing is slow)."""
    procs = [
        subprocess.Popen([HG_HOSTING, "--site", str(site.root), "user", "add", name, "--email",
                          f"{name}@example.org", "--password-stdin"], env=site.env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name in passwords
    ]
    for proc, password in zip(procs, passwords.values(), strict=True):
        out, err = proc.communicate(password + "\n", timeout=120)
        assert proc.returncode == 0, out + err


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def repo_url(daemon: Daemon, full: str, user: str | None = None, secret: str | None = None) -> str:
    """The clone URL of ``full``, with credentials in it when given."""
    if user is None:
        return f"{daemon.url}/{full}"
    return f"http://{user}:{urllib.parse.quote(secret, safe='')}@127.0.0.1:{daemon.port}/{full}"


def fetch(url: str, auth: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET with urllib: (status, headers, body), errors included."""
    request = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def status_of(daemon: Daemon, path: str, auth: str | None = None, source: str = "127.0.0.1") -> int:
    """The status of ``GET path`` sent with http.client from the address ``source``."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", path, headers={"Authorization": auth} if auth else {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def clone(site: SiteHandle, url: str, dest: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return site.hg("clone", "-q", *args, url, str(dest), check=check)


def revcount(site: SiteHandle, repo: Path) -> int:
    return len(site.hg("log", "-R", str(repo), "-T", "{node}\n").stdout.split())


def pushes(site: SiteHandle, full: str) -> list[dict]:
    return site.cli_json("pushlog", full)


def wc_with_commit(site: SiteHandle, path: Path, filename: str = "a.txt") -> str:
    site.hg("init", str(path))
    return commit(site.hg, path, filename, f"{filename}\n")


def assert_no_traceback(daemon: Daemon) -> None:
    log = daemon.log()
    assert "Traceback" not in log, log[-4000:]


# -- the shared site ---------------------------------------------------------------------


class Shared:
    """The module's site, its daemon and the nodes its set-up pushed."""

    def __init__(self, site: SiteHandle, daemon: Daemon, root: Path, dave_token: str):
        self.site, self.daemon, self.root, self.dave_token = site, daemon, root, dave_token
        self.count = 0

    def path(self, name: str) -> Path:
        """A fresh directory for a clone or a working copy."""
        self.count += 1
        return self.root / f"{name}-{self.count}"

    def url(self, full: str, user: str | None = None, secret: str | None = None) -> str:
        if user is not None and secret is None:
            secret = PASSWORDS[user]
        return repo_url(self.daemon, full, user, secret)


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Shared:
    root = tmp_path_factory.mktemp("http")
    site = site_handle(root)
    site.cli("init")
    add_users(site, PASSWORDS)
    cli_all(site, ["repo", "create", "alice/demo"], ["repo", "create", "alice/secret", "--private"],
            ["repo", "create", "alice/jp"], ["repo", "create", "alice/prot"])
    seed = root / "seed"
    wc_with_commit(site, seed)
    cli = [HG_HOSTING, "--site", str(site.root)]
    outs = run_all([
        [*cli, "token", "create", "dave", "--label", "laptop"],
        [*cli, "grant", "alice/secret", "bob", "read"], [*cli, "grant", "alice/jp", "bob", "write"],
        [*cli, "grant", "alice/demo", "dave", "write"], [*cli, "grant", "alice/jp", "dave", "write"],
        [*cli, "grant", "alice/prot", "dave", "write"],
        [*cli, "protect", "alice/prot", "stable", "--allow", "alice"],
        *[[HG, "-R", str(seed), "push", "-q", str(site.repo_path(full))]
          for full in ("alice/demo", "alice/secret", "alice/prot")],
    ], {**site.env, "HG_HOSTING_USER": "alice"})
    dave_token = outs[0].strip()
    daemon = Daemon(site)
    yield Shared(site, daemon, root, dave_token)
    daemon.stop()
    assert_no_traceback(daemon)


# -- reading ------------------------------------------------------------------------------


def test_anonymous_clone_of_public_repository(shared):
    """An anonymous ``hg clone`` of the public alice/demo gets its changeset."""
    dest = shared.path("anon")
    clone(shared.site, shared.url("alice/demo"), dest)
    assert revcount(shared.site, dest) == 1


def test_private_repository_looks_missing(shared):
    """A private repository answers exactly like a missing one: 401 with a Basic challenge anonymously, 404 to an authenticated user without read, with identical bodies, for the repository, a wire command and its pages."""
    carol = basic("carol", PASSWORDS["carol"])
    for suffix in ("", "?cmd=capabilities", "/json-pushes", "/pushlog", "/log", "/file/tip/a.txt"):
        secret = {}
        missing = {}
        for who, auth in (("anonymous", None), ("carol", carol)):
            secret[who] = fetch(f"{shared.daemon.url}/alice/secret{suffix}", auth)
            missing[who] = fetch(f"{shared.daemon.url}/alice/missing{suffix}", auth)
        for answers in (secret, missing):
            status, headers, _ = answers["anonymous"]
            assert status == 401, (suffix, answers["anonymous"])
            assert headers.get("WWW-Authenticate", "").startswith("Basic "), headers
            assert answers["carol"][0] == 404, (suffix, answers["carol"])
            assert "WWW-Authenticate" not in answers["carol"][1]
        for who in ("anonymous", "carol"):
            assert secret[who][2] == missing[who][2], (suffix, who)
            assert secret[who][1].get("Content-Type") == missing[who][1].get("Content-Type")
            assert b"secret" not in secret[who][2]
    # and the owner does see it
    assert fetch(f"{shared.daemon.url}/alice/secret?cmd=capabilities", basic("alice", PASSWORDS["alice"]))[0] == 200


def test_hg_clone_of_private_fails_like_missing(shared):
    """``hg clone`` of a private repository without read fails exactly as for a missing one, anonymously (authorization required) and as carol (HTTP Error 404)."""
    for user in (None, "carol"):
        results = []
        for name in ("secret", "missing"):
            proc = clone(shared.site, shared.url(f"alice/{name}", user), shared.path("refused"), check=False)
            text = (proc.stdout + proc.stderr).replace(f"alice/{name}", "alice/NAME")
            results.append((proc.returncode, text))
        assert results[0] == results[1]
        assert results[0][0] != 0
        expected = "authorization required" if user is None else "abort: HTTP Error 404: not found"
        assert expected in results[0][1], results[0][1]


def test_clone_with_read_grant(shared):
    """Bob, granted read on the private alice/secret, clones it with his password."""
    dest = shared.path("bob")
    clone(shared.site, shared.url("alice/secret", "bob"), dest)
    assert revcount(shared.site, dest) == 1


def test_full_clone_is_a_stream_clone(shared):
    """A full clone copies the store as it is (``server.preferuncompressed`` in the site hgrc).

    hg says "streaming all changes", and the copy verifies with the server's
    changesets and phases; a partial clone (``-r``) still gets a bundle.
    """
    url = shared.url("alice/demo")
    dest = shared.path("stream")
    proc = shared.site.hg("clone", "-U", url, str(dest))
    assert "streaming all changes" in proc.stdout, proc.stdout
    shared.site.hg("verify", "-q", "-R", str(dest))
    server = shared.site.repo_path("alice/demo")
    log = ("log", "-T", "{node} {phase}\n")
    assert shared.site.hg(*log, "-R", str(dest)).stdout == shared.site.hg(*log, "-R", str(server)).stdout
    partial = shared.site.hg("clone", "-U", "-r", "0", url, str(shared.path("bundle")))
    assert "streaming" not in partial.stdout and "adding changesets" in partial.stdout, partial.stdout


# -- pushing -------------------------------------------------------------------------------


def test_push_refused_without_login(shared):
    """An anonymous push is refused with 401 (hg says authorization is required) and nothing is recorded."""
    wc = shared.path("wc")
    clone(shared.site, shared.url("alice/demo"), wc)
    commit(shared.site.hg, wc, "anon.txt", "x\n")
    before = repo_state(shared.site, "alice/demo")
    proc = shared.site.hg("push", shared.url("alice/demo"), cwd=wc, check=False)
    assert proc.returncode != 0
    assert "abort: http authorization required" in proc.stderr, proc.stderr
    after = repo_state(shared.site, "alice/demo")
    assert (after.log, after.pushes) == (before.log, before.pushes)


def test_push_refused_without_write(shared):
    """Bob (read only, the repository being public) is refused with 403 and hg prints the policy's reason."""
    wc = shared.path("wc")
    clone(shared.site, shared.url("alice/demo"), wc)
    commit(shared.site.hg, wc, "bob.txt", "x\n")
    before = repo_state(shared.site, "alice/demo")
    proc = shared.site.hg("push", shared.url("alice/demo", "bob"), cwd=wc, check=False)
    assert proc.returncode != 0
    assert "abort: HTTP Error 403: bob may not write to alice/demo" in proc.stderr.splitlines(), proc.stderr
    after = repo_state(shared.site, "alice/demo")
    assert (after.log, after.pushes) == (before.log, before.pushes)


def test_push_accepted_with_write_by_password_and_token(shared):
    """Dave (write) pushes with his password and then with his API token as the password; both pushes are recorded under dave."""
    wc = shared.path("wc")
    clone(shared.site, shared.url("alice/demo"), wc)
    first = commit(shared.site.hg, wc, "dave1.txt", "1\n")
    before = pushes(shared.site, "alice/demo")
    shared.site.hg("push", "-q", shared.url("alice/demo", "dave"), cwd=wc)
    second = commit(shared.site.hg, wc, "dave2.txt", "2\n")
    shared.site.hg("push", "-q", shared.url("alice/demo", "dave", shared.dave_token), cwd=wc)
    after = pushes(shared.site, "alice/demo")
    assert after[2:] == before
    assert [(p["id"], p["user"], p["changesets"]) for p in after[:2]] == [
        (before[0]["id"] + 2, "dave", [second]),
        (before[0]["id"] + 1, "dave", [first]),
    ]


def test_protected_branch_refused_over_http(shared):
    """Dave (write, not on the allow-list) pushing a changeset on protected branch ``stable`` over HTTP is refused; hg prints the hook's reason on ``remote:`` lines naming dave, the repository, the branch and the changeset, and nothing lands."""
    wc = shared.path("wc")
    clone(shared.site, shared.url("alice/prot"), wc)
    node = commit(shared.site.hg, wc, "s.txt", "s\n", branch="stable")
    before = repo_state(shared.site, "alice/prot")
    proc = shared.site.hg("push", "--new-branch", shared.url("alice/prot", "dave"), cwd=wc, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    remote = [line for line in output.splitlines() if line.startswith("remote: ")]
    reason = "\n".join(remote)
    for needle in ("dave", "alice/prot", "stable", node[:12]):
        assert needle in reason, f"{needle!r} not on the remote: lines:\n{output}"
    assert "Traceback" not in output
    after = repo_state(shared.site, "alice/prot")
    assert (after.log, after.pushes) == (before.log, before.pushes)


# -- json-pushes -----------------------------------------------------------------------------


# test_json_pushes moved to tests/test_jsonpushes.py (with Mozilla's other expectations).


def test_json_pushes_of_private_repository_hidden(shared):
    """json-pushes of a private repository is hidden like the repository: identical to a missing one anonymously (401) and for carol (404); bob, who may read, gets the push."""
    carol = basic("carol", PASSWORDS["carol"])
    base = shared.daemon.url
    for auth, status in ((None, 401), (carol, 404)):
        secret = fetch(f"{base}/alice/secret/json-pushes?version=2", auth)
        missing = fetch(f"{base}/alice/missing/json-pushes?version=2", auth)
        assert secret[0] == missing[0] == status
        assert secret[2] == missing[2]
    status, _, body = fetch(f"{base}/alice/secret/json-pushes?version=2", basic("bob", PASSWORDS["bob"]))
    assert status == 200 and json.loads(body)["lastpushid"] == 1


def test_healthz(shared):
    """/healthz answers 200 with JSON {"status": "ok"}."""
    status, headers, body = fetch(f"{shared.daemon.url}/healthz")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["status"] == "ok"


# -- bad input --------------------------------------------------------------------------------


def raw_exchange(port: int, data: bytes, timeout: float = 15) -> bytes:
    """Send raw bytes, read until the server closes; b"" when it closed without a word."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    received = b""
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    finally:
        sock.close()
    return received


def raw_request(target: bytes, headers: bytes = b"", method: bytes = b"GET", body: bytes = b"") -> bytes:
    return (method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            + headers + b"\r\n" + body)


def auth_header(value: bytes) -> bytes:
    return b"Authorization: " + value + b"\r\n"


ALICE_AUTH = auth_header(basic("alice", PASSWORDS["alice"]).encode())

#: The one-line plain-text answers of the daemon's own edge (status line reason = body).
MALFORMED_PATH = "400 malformed request path"
NOT_UTF8_PATH = "400 the request path is not UTF-8"
BAD_QUERY = "400 malformed query string"
#: Twisted's own refusal of what it cannot parse: a bare ``400 Bad Request``, no body.
TWISTED_400 = "400 Bad Request"


def edge(status: str) -> tuple[str, bytes]:
    """A refusal of the daemon's edge: the status line's reason is the whole one-line body."""
    return status, status.split(" ", 1)[1].encode() + b"\n"


#: hgweb's HTML error page for an unknown command: the body holds this (chunked), not only this.
HGWEB_PAGE = b"method not found"

#: name -> (raw request, the status line after ``HTTP/1.1 ``, the exact body; for HGWEB_PAGE a
#: line of the body).  ``None, None``: Twisted closes the connection without a word.
BAD_REQUESTS: dict[str, tuple[bytes, str | None, bytes | None]] = {
    "traversal-raw": (raw_request(b"/../../etc/passwd"), *edge(MALFORMED_PATH)),
    "traversal-raw-in-repo": (raw_request(b"/alice/../../x"), *edge(MALFORMED_PATH)),
    "traversal-raw-under-repo": (raw_request(b"/alice/demo/../../../etc/passwd"), *edge(MALFORMED_PATH)),
    "traversal-encoded-dots": (raw_request(b"/%2e%2e/%2e%2e/etc/passwd"), *edge(MALFORMED_PATH)),
    "traversal-encoded-slash": (raw_request(b"/alice%2f..%2f..%2fetc%2fpasswd"), *edge(MALFORMED_PATH)),
    # one decoding: owner "%2e%2e", a valid-looking name that does not exist: hidden as a private one
    "traversal-double-encoded": (raw_request(b"/%252e%252e/%252e%252e/etc/passwd"),
                                 *edge("401 authorization required")),
    "traversal-backslash": (raw_request(b"/alice/..%5c..%5cetc%5cpasswd"), *edge(MALFORMED_PATH)),
    "traversal-static": (raw_request(b"/alice/demo/static/%2e%2e%2f%2e%2e%2fhgrc"), *edge(MALFORMED_PATH)),
    "nul-in-path": (raw_request(b"/alice/demo%00"), *edge(MALFORMED_PATH)),
    "nul-in-file-path": (raw_request(b"/alice/demo/file/tip/a.txt%00.png"), *edge(MALFORMED_PATH)),
    "basic-not-base64": (raw_request(b"/alice/demo", auth_header(b"Basic !!!not*base64!!!")),
                       *edge("400 the Basic credentials are not valid base64 UTF-8")),
    "basic-no-colon": (raw_request(b"/alice/demo", auth_header(b"Basic " + base64.b64encode(b"alice"))),
                     *edge("400 the Basic credentials are not user:password")),
    "basic-wrong-scheme": (raw_request(b"/alice/demo", auth_header(b"Digest abcdef")),
                         *edge("400 expected HTTP Basic credentials")),
    "basic-5000-chars": (raw_request(b"/alice/demo", auth_header(b"Basic " + b"QUFB" * 1250)),
                       *edge("400 expected HTTP Basic credentials")),
    "basic-control-chars": (raw_request(b"/alice/demo", auth_header(b"Basic " + base64.b64encode(b"ali\x01ce:pw"))),
                          *edge("400 the Basic credentials are not user:password")),
    "header-100k": (raw_request(b"/alice/demo", b"X-Big: " + b"a" * 100_000 + b"\r\n"), None, None),
    "headers-40k-total": (raw_request(b"/alice/demo", b"".join(b"X-Big-%d: %s\r\n" % (i, b"a" * 4000)
                                                             for i in range(10))),
                          TWISTED_400, b""),
    "path-not-utf8": (raw_request(b"/alice/%ff"), *edge(NOT_UTF8_PATH)),
    "file-path-not-utf8": (raw_request(b"/alice/demo/file/tip/%ff%fe"), *edge(NOT_UTF8_PATH)),
    "query-not-utf8-encoded": (raw_request(b"/alice/demo?cmd=capabilities&x=%ff"), *edge(BAD_QUERY)),
    "query-not-utf8-page": (raw_request(b"/alice/demo/log?rev=%ff%fe"), *edge(BAD_QUERY)),
    "query-not-utf8-raw": (raw_request(b"/alice/demo?cmd=\xff\xfe"), TWISTED_400, b""),
    "uri-10k": (raw_request(b"/alice/" + b"a" * 10_000), *edge("414 request URI too long")),
    "post-bad-content-length": (raw_request(b"/-/login", b"Content-Length: abc\r\n", b"POST"), TWISTED_400, b""),
    "login-without-csrf": (raw_request(
        b"/-/login", b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 33\r\n", b"POST",
        b"user=alice&password=alice-pw-1&x="), *edge("403 the login form has expired; reload and try again")),
    "unbundle-get-anonymous": (raw_request(b"/alice/demo?cmd=unbundle"), *edge("401 authorization required to push")),
    # hgweb's wire answer: the return code 0, then the reason
    "unbundle-get-alice": (raw_request(b"/alice/demo?cmd=unbundle", ALICE_AUTH),
                           "405 push requires POST request", b"0\npush requires POST request\n"),
    # an unknown command may write, as far as the daemon knows: anonymous must log in first
    "unknown-cmd-anonymous": (raw_request(b"/alice/demo?cmd=frobnicate"), *edge("401 authorization required to push")),
    "unknown-cmd-alice": (raw_request(b"/alice/demo?cmd=frobnicate", ALICE_AUTH), "400 method not found", HGWEB_PAGE),
    "json-pushes-bad-id": (raw_request(b"/alice/demo/json-pushes?startID=abc"), "400 Bad Request",
                           b'{"error": "startID must be an integer from -9223372036854775808 to 9223372036854775807"}\n'),
    "unknown-hosting-page": (raw_request(b"/-/../etc"), *edge(MALFORMED_PATH)),
}


def test_bad_requests_answered_exactly(shared):
    """Each of 31 malformed requests (path traversal raw and encoded, NUL, malformed Basic headers, huge headers, non-UTF-8 path and query, a 10 KB URI, a bad Content-Length, a login without CSRF, GET unbundle, unknown commands) gets its exact status line and body (BAD_REQUESTS) — the 100 KB header line: Twisted closes the connection unanswered — with no traceback nor site path in it; then the daemon still serves a clone and its log has no traceback."""
    leaks = (str(shared.site.root), str(shared.root), "/work/", "site-packages")
    problems = []
    for name, (data, status, body) in BAD_REQUESTS.items():
        response = raw_exchange(shared.daemon.port, data)
        head, _, got_body = response.partition(b"\r\n\r\n")
        got_status = head.partition(b"\r\n")[0].decode("latin-1").removeprefix("HTTP/1.1 ")
        if status is None:
            expected = response == b""
        elif body is HGWEB_PAGE:
            expected = got_status == status and HGWEB_PAGE in got_body
        else:
            expected = (got_status, got_body) == (status, body)
        if not expected:
            problems.append(f"{name}: expected {status} {body!r}, got {response[:300]!r}")
        for needle in ("Traceback", *leaks):
            if needle.encode() in response:
                problems.append(f"{name}: the response contains {needle!r}")
    assert not problems, "\n".join(problems)

    dest = shared.path("after-bad")
    clone(shared.site, shared.url("alice/demo"), dest)
    assert revcount(shared.site, dest) >= 1
    assert_no_traceback(shared.daemon)


def test_batch_cannot_smuggle_a_write(shared):
    """A ``pushkey`` nested in a POSTed ``batch`` (a read command) is refused 403 for anonymous and for bob (read only), and the bookmark is not created."""
    node = shared.site.hg("log", "-R", str(shared.site.repo_path("alice/demo")), "-r", "tip",
                          "-T", "{node}").stdout
    args = urllib.parse.urlencode({"cmds": f"pushkey namespace=bookmarks,key=evil,old=,new={node}"})
    for auth in (b"", auth_header(basic("bob", PASSWORDS["bob"]).encode())):
        response = raw_exchange(shared.daemon.port, raw_request(
            b"/alice/demo?cmd=batch", auth + b"X-HgArg-1: " + args.encode() + b"\r\nContent-Length: 0\r\n",
            b"POST"))
        assert response.startswith(b"HTTP/1.1 403 "), response[:200]
    marks = shared.site.hg("bookmarks", "-R", str(shared.site.repo_path("alice/demo")), "-T", "{bookmark}\n")
    assert "evil" not in marks.stdout.split()


def dechunk(body: bytes) -> bytes:
    """The payload of a chunked body."""
    payload = b""
    while True:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return payload
        payload, body = payload + rest[:n], rest[n + 2:]


def wait_for_log(daemon: Daemon, predicate, what: str, timeout: float = 30) -> str:
    """The daemon's log once ``predicate(log)`` holds (the daemon wrote what we wait for)."""
    deadline = time.monotonic() + timeout
    while not predicate(log := daemon.log()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log[-3000:]}"
        time.sleep(0.05)
    return log


def test_malformed_wire_arguments_answered_400(shared):
    """Malformed arguments of read-only wire commands (non-hex nodes, undecodable bytes, a garbage batch) are each answered ``400 malformed request`` with that one line, and the daemon logs one ``hgweb refused`` line for each, no traceback."""
    requests = [
        raw_request(b"/alice/demo?cmd=known&nodes=zz"),
        raw_request(b"/alice/demo?cmd=known", b"X-HgArg-1: nodes=%ff\r\n"),
        raw_request(b"/alice/demo?cmd=between&pairs=xx"),
        raw_request(b"/alice/demo?cmd=batch", b"X-HgArg-1: cmds=garbage\r\n"),
        raw_request(b"/alice/demo?cmd=getbundle", b"X-HgArg-1: heads=zz&common=qq\r\n"),
    ]
    offset = len(shared.daemon.log())
    for data in requests:
        head, _, body = raw_exchange(shared.daemon.port, data).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 malformed request\r\n"), head
        assert dechunk(body) == b"malformed request\n"
    # the access log line of the last request is written once it was answered: all are logged
    log = wait_for_log(shared.daemon, lambda text: "GET /alice/demo?cmd=getbundle HTTP/1.1\" 400" in text[offset:],
                       "the access log line of the last request")[offset:]
    assert log.count("hgweb refused /alice/demo: ") == len(requests), log
    assert "Traceback" not in log


# -- credentials: revocation, cache, throttling -----------------------------------------------


def test_revocation_effective_on_next_request(site, tmp_path):
    """Right after a successful (cached) request, revoking the token, changing the password, revoking the grant and removing the user each take effect on the very next request: 401 for bad credentials, 404 once the grant on the private repository is gone."""
    add_users(site, {"alice": "alice-pw", "bob": "bob-pw"})
    cli_all(site, ["repo", "create", "alice/secret", "--private"])
    site.cli("grant", "alice/secret", "bob", "read")
    token = site.cli("token", "create", "bob", "--label", "ci").stdout.strip()
    daemon = Daemon(site)
    try:
        caps = "/alice/secret?cmd=capabilities"

        # token revoked
        assert status_of(daemon, caps, basic("bob", token)) == 200
        site.cli("token", "revoke", "bob", "ci")
        assert status_of(daemon, caps, basic("bob", token)) == 401
        proc = clone(site, repo_url(daemon, "alice/secret", "bob", token), tmp_path / "c2", check=False)
        assert proc.returncode != 0 and "authorization failed" in proc.stderr, proc.stderr

        # password changed
        assert status_of(daemon, caps, basic("bob", "bob-pw")) == 200
        site.cli("user", "passwd", "bob", "--password-stdin", input="bob-new\n")
        assert status_of(daemon, caps, basic("bob", "bob-pw")) == 401
        assert status_of(daemon, caps, basic("bob", "bob-new")) == 200

        # grant revoked
        clone(site, repo_url(daemon, "alice/secret", "bob", "bob-new"), tmp_path / "c3")  # works before
        site.cli("revoke", "alice/secret", "bob")
        proc = clone(site, repo_url(daemon, "alice/secret", "bob", "bob-new"), tmp_path / "c4", check=False)
        assert proc.returncode != 0 and "HTTP Error 404" in proc.stderr, proc.stderr
        assert status_of(daemon, caps, basic("bob", "bob-new")) == 404

        # user removed
        assert status_of(daemon, "/", basic("bob", "bob-new")) == 200
        site.cli("user", "remove", "bob")
        assert status_of(daemon, caps, basic("bob", "bob-new")) == 401
        assert status_of(daemon, "/", basic("bob", "bob-new")) == 401
    finally:
        daemon.stop()
    assert_no_traceback(daemon)


def test_removed_user_cached_password_does_not_become_someone_else(shared):
    """Erin's cached password stops working once erin is removed, even after another user (who gets erin's old row id) is created and owns a private repository."""
    site, daemon = shared.site, shared.daemon
    add_users(site, {"erin": "erin-pw"})
    assert status_of(daemon, "/", basic("erin", "erin-pw")) == 200  # cached now
    site.cli("user", "remove", "erin")
    add_users(site, {"mallory": "mallory-pw"})
    site.cli("repo", "create", "mallory/diary", "--private")
    assert status_of(daemon, "/mallory/diary?cmd=capabilities", basic("erin", "erin-pw")) == 401


def test_failed_logins_throttled(site, daemon):
    """After 10 wrong passwords for alice from 127.0.0.1, alice's password logins from there get 429 (even the right one); her API token still works.  The throttle blocks the name from that address first (issue: lockout of innocent users): alice's right password from 127.0.0.2 and carol's from 127.0.0.1 are still accepted.  tests/test_auth.py covers the per-name and per-address limits."""
    add_users(site, {"alice": "alice-pw", "carol": "carol-pw"})
    site.cli("repo", "create", "alice/demo")
    token = site.cli("token", "create", "alice").stdout.strip()
    caps = "/alice/demo?cmd=capabilities"
    wrong = [status_of(daemon, caps, basic("alice", f"wrong-{i}")) for i in range(10)]
    assert wrong == [401] * 10
    assert status_of(daemon, caps, basic("alice", "wrong-again")) == 429
    assert status_of(daemon, caps, basic("alice", "alice-pw")) == 429
    assert status_of(daemon, caps, basic("alice", "alice-pw"), source="127.0.0.2") == 200
    assert status_of(daemon, caps, basic("alice", token)) == 200
    assert status_of(daemon, caps, basic("carol", "carol-pw")) == 200
    start = time.monotonic()
    assert status_of(daemon, caps, basic("carol", "carol-pw"), source="127.0.0.2") == 200
    assert time.monotonic() - start < 10
    assert status_of(daemon, caps) == 200  # anonymous reads of a public repository are unaffected
    # and the hg client with the token clones meanwhile
    dest = site.root.parent / "token-clone"
    clone(site, repo_url(daemon, "alice/demo", "alice", token), dest)


# -- workers, shutdown, startup recovery ----------------------------------------------------------


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_workers_concurrent_clones_and_sigterm(shared):
    """``serve --workers 2`` runs two worker processes; 6 concurrent ``hg clone`` all succeed; SIGTERM stops master and workers within a few seconds, exit status 0."""
    daemon = Daemon(shared.site, "--workers", "2")
    try:
        deadline = time.monotonic() + 20
        while len(children_of(daemon.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = children_of(daemon.proc.pid)
        assert len(workers) == 2, workers
        results: dict[int, subprocess.CompletedProcess] = {}

        def run(i: int) -> None:
            results[i] = subprocess.run([HG, "clone", "-q", repo_url(daemon, "alice/demo"),
                                         str(shared.root / f"workers-{i}")],
                                        env=shared.site.env, capture_output=True, text=True, timeout=120)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(6):
            assert results[i].returncode == 0, results[i].stderr
            assert (shared.root / f"workers-{i}" / "a.txt").exists()
        start = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        code = daemon.proc.wait(15)
        assert code == 0, daemon.log()[-3000:]
        assert time.monotonic() - start < 10
        deadline = time.monotonic() + 5
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(w) for w in workers), "a worker outlived its master"
    finally:
        daemon.stop()
    assert_no_traceback(daemon)



def test_sigterm_lets_a_large_clone_finish(big_site, tmp_path):
    """SIGTERM during a clone of the generated corpus (tens of MB, client paused mid-bundle): the daemon drains (its port still answers, /healthz with 503), waits for the clone in flight and exits 0, and the clone completes intact."""
    site = big_site
    daemon = Daemon(site)
    dest = tmp_path / "big-clone"
    client = subprocess.Popen([HG, "clone", "-q", "-U", repo_url(daemon, "alice/big"), str(dest)],
                              env=site.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The client opens its transaction once the bundle starts arriving: stop it there.
        deadline = time.monotonic() + 60
        while not (dest / ".hg" / "store" / "journal").exists():
            assert client.poll() is None, client.communicate()
            assert time.monotonic() < deadline, "the clone never started receiving"
            time.sleep(0.01)
        client.send_signal(signal.SIGSTOP)
        daemon.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while "waiting for 1 request(s) in flight" not in daemon.log():
            assert daemon.proc.poll() is None, f"the daemon exited during a clone:\n{daemon.log()}"
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.05)
        # A marker request served after the drain began: the daemon is still up, draining. That
        # it stays up until the clone ends is shown by the clone completing intact below.
        assert status_of(daemon, "/healthz") == 503
        assert daemon.proc.poll() is None, "the daemon did not wait for the clone"
        client.send_signal(signal.SIGCONT)
        _, err = client.communicate(timeout=120)
        assert daemon.proc.wait(30) == 0, daemon.log()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            client.send_signal(signal.SIGCONT)
        if client.poll() is None:
            client.kill()
            client.wait()
        daemon.stop()
    assert_no_traceback(daemon)
    assert client.returncode == 0, err
    assert revcount(site, dest) == revcount(site, site.repo_path("alice/big"))
    site.hg("-R", str(dest), "verify", "-q")


def test_startup_settles_an_abandoned_push(site, tmp_path):
    """A push SIGKILLed after the database commit leaves a journal and a pending record; the daemon settles it before it serves (no journal, no pending record, ``check`` clean) and the next HTTP push gets the next id."""
    add_users(site, {"alice": "alice-pw"})
    site.cli("repo", "create", "alice/demo")
    wc = tmp_path / "wc"
    first = wc_with_commit(site, wc)
    repo = str(site.repo_path("alice/demo"))
    site.hg("push", "-q", repo, cwd=wc, user="alice")
    second = commit(site.hg, wc, "b.txt", "b\n")
    killed = site.hg("--config", "devel.debug.abort-transaction=kill-9-post-finalize", "push", "-q", repo,
                     cwd=wc, user="alice", check=False)
    assert killed.returncode == -signal.SIGKILL, killed
    journal = site.repo_path("alice/demo") / ".hg" / "store" / "journal"
    db = site.root / "hosting.db"

    def states() -> list[tuple[int, str]]:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return conn.execute("SELECT push_id, state FROM push ORDER BY push_id").fetchall()

    assert journal.exists()
    assert states() == [(1, "done"), (2, "pending")]
    assert site.cli("check", check=False).returncode == 1

    daemon = Daemon(site)
    try:
        # Daemon() returned: the daemon says it is serving, so it settled first.
        assert not journal.exists()
        assert all(state == "done" for _, state in states()), states()
        checked = site.cli("check", check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        log = daemon.log()
        assert 0 <= log.find("recovering an interrupted transaction") < log.index("serving HTTP on"), log
        # whatever the verdict, repository and record agree, and the next push continues the ids
        landed = [p["changesets"] for p in reversed(pushes(site, "alice/demo"))]
        nodes = set(site.hg("log", "-R", repo, "-T", "{node}\n").stdout.split())
        assert [first] in landed and {n for cs in landed for n in cs} == nodes
        third = commit(site.hg, wc, "c.txt", "c\n")
        site.hg("push", "-q", repo_url(daemon, "alice/demo", "alice", "alice-pw"), cwd=wc)
        last = pushes(site, "alice/demo")[0]
        assert last["id"] == len(landed) + 1 and last["user"] == "alice"
        assert third in last["changesets"] and (second in nodes or second in last["changesets"])
    finally:
        daemon.stop()
    assert_no_traceback(daemon)


def test_overview_readme_follows_the_tip(site, daemon, tmp_path):
    """The overview's README (cached per tip) shows the pushed version after every push."""
    site.add_user("alice")
    site.cli("repo", "create", "alice/docs")
    wc = tmp_path / "wc"
    site.hg("init", str(wc))
    repo = str(site.repo_path("alice/docs"))
    for version in ("first version", "second version"):
        commit(site.hg, wc, "README.md", f"# Docs\n\n{version} of the manual\n")
        for _ in range(2):  # the second request is served from the cache
            status, _, body = fetch(f"{daemon.url}/alice/docs")
            assert status == 200
            if version == "first version":
                assert b"of the manual" not in body
        site.hg("push", "-q", repo, cwd=wc, user="alice")
        for _ in range(2):
            status, _, body = fetch(f"{daemon.url}/alice/docs")
            assert status == 200 and f"{version} of the manual".encode() in body
            assert body.count(b"of the manual") == 1


def test_request_body_over_the_limit_refused_with_413(site, tmp_path):
    """A body longer than ``[hosting] max-request-mb`` is refused with 413 and never stored.

    By its Content-Length at once, or while a chunked body passes the limit; the
    daemon keeps serving, and a push under the limit still lands.
    """
    with open(site.root / "hgrc", "a") as f:
        f.write("\n[hosting]\nmax-request-mb = 1\n")
    site.add_user("alice", "alice-pw")
    site.cli("repo", "create", "alice/demo")
    daemon = Daemon(site)
    try:
        declared = raw_exchange(daemon.port, raw_request(
            b"/alice/demo?cmd=unbundle", b"Content-Length: 2000000\r\n"
            b"Content-Type: application/mercurial-0.1\r\n", b"POST", b"x" * 1000))
        assert declared.startswith(b"HTTP/1.1 413 "), declared[:200]
        assert declared.endswith(b"request body too large: the limit is 1 MB\n"), declared[-200:]

        chunk = b"x" * 65536
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
        streamed = raw_exchange(daemon.port, raw_request(
            b"/alice/demo?cmd=unbundle", b"Transfer-Encoding: chunked\r\n", b"POST", chunked))
        assert streamed.startswith(b"HTTP/1.1 413 "), streamed[:200]

        assert status_of(daemon, "/healthz") == 200
        wc = tmp_path / "wc"
        node = wc_with_commit(site, wc)
        site.hg("push", "-q", repo_url(daemon, "alice/demo", "alice", "alice-pw"), cwd=wc)
        assert pushes(site, "alice/demo")[0]["changesets"] == [node]
        assert "refused a request body of 2000000 bytes" in daemon.log()
    finally:
        daemon.stop()
    assert_no_traceback(daemon)
