"""The HTTP edges: READMEs, archives, security headers, number ranges, static files, hiding.

One site and one daemon for the module (``pages``), set up once:

- ``alice/readme-N``: public, one per name in ``README_NAMES`` (plain or Markdown);
  ``alice/latin1`` a README that is not UTF-8, ``alice/huge`` a 4 MB README,
  ``alice/slowmd`` a README.md that costs markdown-it seconds (``![`` repeated);
- ``alice/files``: public, with ``evil.html``, ``evil.js`` and ``evil.svg``;
- ``alice/secret``: private, read granted to bob.

Tests that need their own site hgrc start their own daemon on the ``site`` fixture.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from conftest import HG, HG_HOSTING, Daemon, RssPeak, SiteHandle, site_handle
from pushhelpers import cli_all, run_all

from daemon.readme import MAX_BYTES, README_NAMES

PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "carol": "carol-pw-3"}
SLOW_MARKDOWN = "![" * (2 * 1024 * 1024)  # about 70 s of markdown-it at 35 µs a byte
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY",
                    "referrer-policy": "same-origin"}


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()


def get(daemon: Daemon, path: str, user: str | None = None, method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """``GET path`` (raw, not normalised): status, headers (lower-case names), body."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=60)
    try:
        extra = dict(headers or {})
        if user is not None:
            extra["Authorization"] = basic(user)
        conn.request(method, path, headers=extra)
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def add_users(site: SiteHandle) -> None:
    """Every user of PASSWORDS at once (hashing a password is slow)."""
    procs = [subprocess.Popen([HG_HOSTING, "--site", str(site.root), "user", "add", name, "--email",
                               f"{name}@example.org", "--password-stdin"], env=site.env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name in PASSWORDS]
    for proc, password in zip(procs, PASSWORDS.values(), strict=True):
        out, err = proc.communicate(password + "\n", timeout=120)
        assert proc.returncode == 0, out + err


class Pages:
    def __init__(self, site: SiteHandle, daemon: Daemon, root: Path):
        self.site, self.daemon, self.root = site, daemon, root


def push_files(site: SiteHandle, wc: Path, full: str, files: dict[str, bytes]) -> list[str]:
    """argv that push a new changeset holding ``files`` to ``full`` (run them with run_all)."""
    site.hg("init", str(wc))
    for name, data in files.items():
        (wc / name).write_bytes(data)
    site.hg("commit", "-q", "-A", "-d", "2020-01-01 00:00:00 +0000", "-m", "files", cwd=wc)
    return [HG, "-R", str(wc), "push", "-q", str(site.repo_path(full))]


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> Pages:
    root = tmp_path_factory.mktemp("pages")
    site = site_handle(root)
    site.cli("init")
    add_users(site)
    contents = {f"readme-{i}": {name.decode(): f"Hello from {name.decode()} <b>&amp;</b>\n".encode()}
                for i, name in enumerate(README_NAMES)}
    contents["latin1"] = {"README.txt": "caf\u00e9 cr\u00e8me\n".encode("latin-1")}
    contents["huge"] = {"README": b"0123456789abcde\n" * (4 * 1024 * 1024 // 16)}
    contents["slowmd"] = {"README.md": SLOW_MARKDOWN.encode()}
    contents["files"] = {
        "evil.html": b"<!doctype html><script>document.title='pwned'</script><h1>evil</h1>\n",
        "evil.js": b"document.title = 'pwned';\n",
        "evil.svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>\n',
        "README.md": b"# Files\n",
    }
    contents["secret"] = {"README.md": b"# Secret\n"}
    cli_all(site, *[["repo", "create", f"alice/{name}", *(["--private"] if name == "secret" else [])]
                    for name in contents])
    site.cli("grant", "alice/secret", "bob", "read")
    pushes = [push_files(site, root / f"wc-{name}", f"alice/{name}", files) for name, files in contents.items()]
    run_all(pushes, {**site.env, "HG_HOSTING_USER": "alice"})
    daemon = Daemon(site)
    yield Pages(site, daemon, root)
    daemon.stop()
    log = daemon.log()
    assert "Traceback" not in log, log[-4000:]


# -- 1, 2: READMEs ---------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(README_NAMES)))
def test_every_readme_name_renders(pages, index):
    """Each name in README_NAMES renders on the overview: Markdown formatted, the others escaped in <pre>."""
    name = README_NAMES[index].decode()
    status, headers, body = get(pages.daemon, f"/alice/readme-{index}")
    assert status == 200, body[:300]
    text = body.decode()
    assert f"<h2>{name}</h2>" in text
    if name.endswith((".md", ".markdown")):
        assert f"<p>Hello from {name} &lt;b&gt;&amp;&lt;/b&gt;</p>" in text
    else:
        assert f"<pre>Hello from {name} &lt;b&gt;&amp;amp;&lt;/b&gt;\n</pre>" in text
    assert "<b>" not in text


def test_readme_not_utf8_renders(pages):
    """A README in Latin-1 renders, its invalid bytes replaced."""
    status, _, body = get(pages.daemon, "/alice/latin1")
    assert status == 200, body[:300]
    assert "<pre>caf\ufffd cr\ufffdme\n</pre>" in body.decode()


def test_huge_readme_is_cut(pages):
    """A 4 MB README renders its first MAX_BYTES only, with a note, and quickly."""
    start = time.monotonic()
    status, _, body = get(pages.daemon, "/alice/huge")
    elapsed = time.monotonic() - start
    assert status == 200, body[:300]
    assert b"Only the first 256 KB of this file (4096 KB) are shown." in body
    assert body.count(b"0123456789abcde\n") == MAX_BYTES // 16
    print(f"4 MB README page: {elapsed:.3f} s")
    assert elapsed < 20  # generous: the old code answered 500; no timing claim beyond "it answers"


def test_pathological_markdown_falls_back_to_text(pages):
    """A README.md that costs markdown-it minutes is shown as escaped text after the CPU budget."""
    start = time.monotonic()
    status, _, body = get(pages.daemon, "/alice/slowmd")
    elapsed = time.monotonic() - start
    assert status == 200, body[:300]
    assert b"it takes too long to format" in body
    assert b"<pre>![![![" in body
    print(f"pathological README.md page: {elapsed:.3f} s")
    # the same page again comes from the cache (per tip), however slow the first was
    status, _, again = get(pages.daemon, "/alice/slowmd")
    assert status == 200 and again.count(b"<pre>") == body.count(b"<pre>")


#: Inputs on which markdown-it spends 20-40 µs of CPU per byte (measured 5-18 s for 512 KB).
SLOW_SHAPES = {
    "brackets": "[" * 600_000, "images": "![" * 300_000, "emphasis": "*_" * 300_000, "stars": "*a" * 300_000,
    "table": "|" + "a|" * 100 + "\n|" + "-|" * 100 + "\n" + ("|" + "a|" * 100 + "\n") * 3000,
}


@pytest.mark.parametrize("shape", list(SLOW_SHAPES))
def test_markdown_cpu_is_bounded(shape):
    """Each slow shape renders (as escaped text) within a few times the CPU budget, not seconds per 100 KB."""
    from daemon import readme

    start = time.thread_time()
    html = readme.render(b"README.md", SLOW_SHAPES[shape].encode())
    used = time.thread_time() - start
    print(f"{shape}: {used:.3f} s CPU")
    assert "<pre>" in html and "Only the first 128 KB" in html
    assert used < 4 * readme.BUDGET_SECONDS, f"{shape}: {used:.2f} s of CPU"


# -- 4, 5: numbers out of range, the static route --------------------------------------------


@pytest.mark.parametrize("path", [
    "/alice/files/json-pushes?endID=" + "1" + "0" * 30,
    "/alice/files/json-pushes?startID=-1" + "0" * 30,
    "/alice/files/json-pushes?node=1" + "0" * 30,
    "/alice/files/json-pushes?node=0",
    "/alice/files/pushlog?page=1" + "0" * 30,
    "/?page=1" + "0" * 18,
    "/alice?page=1" + "0" * 18,
])
def test_huge_numbers_answered_400(pages, path):
    """Numbers SQLite cannot hold (or pages before the first) are refused at the edge with 400."""
    status, headers, body = get(pages.daemon, path)
    assert status == 400, (status, body[:300])
    assert body.count(b"\n") == 1 and b"integer" in body, body


def test_numbers_in_range_still_answer(pages):
    """Ordinary values of the same parameters keep working (an empty answer past the end)."""
    status, _, body = get(pages.daemon, "/alice/files/json-pushes?startID=-1&endID=9223372036854775807")
    assert status == 200 and list(json.loads(body)) == ["1"], body
    for path in ("/alice/files/json-pushes?node=1000000", "/alice/files/pushlog?page=1000000",
                 "/?page=1000000"):
        assert get(pages.daemon, path)[0] == 200, path


@pytest.mark.parametrize("path", ["/-/static/%00", "/-/static/a%00b", "/-/static/%2e%2e/%2e%2e/hgrc",
                                  "/-/static/..%2fbase.html", "/-/static/%ff", "/-/static/a\\b"])
def test_static_path_validated(pages, path):
    """/-/static/ validates its path like every other route: 400, one line, no traceback."""
    status, headers, body = get(pages.daemon, path)
    assert status == 400, (status, body[:300])
    assert body == b"malformed request path\n" or body == b"the request path is not UTF-8\n", body
    assert "Traceback" not in pages.daemon.log()


def test_static_files_served(pages):
    """A real static file is served, with the security headers; a missing one is 404; no listing."""
    status, headers, body = get(pages.daemon, "/-/static/style.css")
    assert status == 200 and headers["content-type"].startswith("text/css"), headers
    assert {k: headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS
    for path in ("/-/static/missing.css", "/-/static/", "/-/static"):
        status, headers, _ = get(pages.daemon, path)
        assert status == 404, path
        assert {k: headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS


# -- 6: security headers, raw files ------------------------------------------------------------


def assert_security_headers(raw_headers: list[tuple[str, str]], what: str) -> None:
    """Each security header exactly once, with our value."""
    for name, value in SECURITY_HEADERS.items():
        values = [v for k, v in raw_headers if k.lower() == name]
        assert values == [value], f"{what}: {name}: {values}"


def raw_headers(daemon: Daemon, path: str, user: str | None = None) -> tuple[int, list[tuple[str, str]]]:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=60)
    try:
        conn.request("GET", path, headers={"Authorization": basic(user)} if user else {})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheaders()
    finally:
        conn.close()


@pytest.mark.parametrize(("path", "status"), [
    ("/", 200), ("/alice", 200), ("/alice/files", 200), ("/alice/files/pushlog", 200),
    ("/alice/files/json-pushes", 200), ("/healthz", 200), ("/-/static/style.css", 200),
    ("/-/static/nothing", 404), ("/-/static/%00", 400), ("/-/login", 200),
    ("/nobody/nothing", 401),  # anonymous: a missing repository looks like a private one
    ("/alice/files/log", 200), ("/alice/files/graph", 200), ("/alice/files/file/tip/evil.html", 200),
    ("/alice/files/raw-file/tip/evil.html", 200), ("/alice/files/file/tip/evil.html?style=raw", 200),
    ("/alice/files/rev/ffffffffffff", 200),  # the working directory's id: hgweb shows it
    ("/alice/files?cmd=capabilities", 200), ("/alice/files?cmd=heads", 200),
    ("/alice/files/static/mercurial.js", 200), ("/alice/files/atom-log", 200),
    ("/alice/files?cmd=known&nodes=zz", 400),
])
def test_every_response_has_the_security_headers(pages, path, status):
    """nosniff, X-Frame-Options and Referrer-Policy, once each, on pages, hgweb, static files, errors (each with its exact status)."""
    got, headers = raw_headers(pages.daemon, path)
    assert got == status, (path, got)
    assert_security_headers(headers, path)


@pytest.mark.parametrize("name", ["evil.html", "evil.js", "evil.svg"])
def test_raw_files_cannot_run(pages, name):
    """A pushed file served raw is a download in a sandbox: never HTML or script of the site's origin."""
    for path in (f"/alice/files/raw-file/tip/{name}", f"/alice/files/file/tip/{name}?style=raw",
                 f"/alice/files/raw-file/tip/{name}?style=raw"):
        status, headers = raw_headers(pages.daemon, path)
        assert status == 200, path
        assert_security_headers(headers, path)
        values = {k.lower(): v for k, v in headers}
        assert values["content-security-policy"] == "sandbox; default-src 'none'", (path, values)
        assert not values["content-type"].startswith(("text/html", "image/svg", "application/javascript",
                                                      "text/javascript")), (path, values)


def test_raw_files_with_guessed_types_are_downloads(site, tmp_path):
    """With ``web.guessmime`` (raw-file says text/html for .html), such files are attachments in a sandbox."""
    with open(site.root / "hgrc", "a") as f:
        f.write("\n[web]\nguessmime = True\n")
    site.add_user("alice")
    site.cli("repo", "create", "alice/files")
    files = {"evil.html": b"<script>document.title='pwned'</script>\n", "evil.js": b"alert(1)\n",
             "evil.svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>\n',
             "notes.txt": b"just text\n"}
    run_all([push_files(site, tmp_path / "wc", "alice/files", files)], {**site.env, "HG_HOSTING_USER": "alice"})
    daemon = Daemon(site)
    try:
        for name in files:
            status, headers = raw_headers(daemon, f"/alice/files/raw-file/tip/{name}")
            assert status == 200, name
            assert_security_headers(headers, name)
            values = {k.lower(): v for k, v in headers}
            assert values["content-security-policy"] == "sandbox; default-src 'none'", values
            kind = "inline" if name == "notes.txt" else "attachment"
            assert values["content-disposition"] == f'{kind}; filename="{name}"', values
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log()


# -- 3: archives -----------------------------------------------------------------------------------

ARCHIVES = {"zip": "application/zip", "tar.gz": "application/x-gzip", "tar.bz2": "application/x-bzip2"}


def archive_members(kind: str, body: bytes) -> list[str]:
    """The file names in an archive (without the leading ``NAME-NODE/``)."""
    if kind == "zip":
        names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    else:
        names = tarfile.open(fileobj=io.BytesIO(body), mode="r:" + kind.split(".")[1]).getnames()
    return sorted(n.split("/", 1)[1] for n in names if "/" in n and not n.endswith(".hg_archival.txt"))


@pytest.mark.parametrize("kind", list(ARCHIVES))
def test_archives_of_a_public_repository(pages, kind):
    """Anyone may download a public repository as zip, tar.gz, tar.bz2, of tip or a given changeset."""
    node = pages.site.hg("log", "-R", str(pages.site.repo_path("alice/files")), "-r", "tip",
                         "-T", "{node}").stdout
    for rev in ("tip", node[:12], node):
        status, headers, body = get(pages.daemon, f"/alice/files/archive/{rev}.{kind}")
        assert status == 200, (rev, status, body[:200])
        assert headers["content-type"] == ARCHIVES[kind], headers
        assert headers["content-disposition"].startswith("attachment; filename=files-"), headers
        assert headers["content-security-policy"] == "sandbox; default-src 'none'"
        assert {k: headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS
        assert archive_members(kind, body) == ["README.md", "evil.html", "evil.js", "evil.svg"]


def test_archives_of_a_private_repository_are_as_hidden_as_the_rest(pages):
    """A private repository's archive: 401 anonymous, 404 without read (as for a missing one), 200 with read."""
    for kind in ARCHIVES:
        secret, missing = f"/alice/secret/archive/tip.{kind}", f"/alice/nothing/archive/tip.{kind}"
        for user, expected in ((None, 401), ("carol", 404)):
            a, b = get(pages.daemon, secret, user), get(pages.daemon, missing, user)
            assert a[0] == b[0] == expected, (user, a[0], b[0])
            assert a[2] == b[2]
        status, _, body = get(pages.daemon, secret, "bob")
        assert status == 200 and archive_members(kind, body) == ["README.md"]


def test_overview_links_the_archives(pages):
    """The overview page links a download of tip in every allowed format."""
    _, _, body = get(pages.daemon, "/alice/files")
    for kind in ARCHIVES:
        assert f'href="/alice/files/archive/tip.{kind}"'.encode() in body, kind


def test_init_allows_archives(site):
    """``init`` writes ``allow-archive = zip gz bz2`` into the new site hgrc, as hgrc.example shows."""
    assert "\nallow-archive = zip gz bz2\n" in (site.root / "hgrc").read_text()
    example = Path(__file__).resolve().parent.parent / "hgrc.example"
    assert "\nallow-archive = zip gz bz2\n" in example.read_text()


@pytest.mark.parametrize("setting, allowed", [(None, ["zip", "tar.gz", "tar.bz2"]), ("", []), ("zip", ["zip"])])
def test_existing_sites_allow_archives_unless_the_admin_chose(site, tmp_path, setting, allowed):
    """A site hgrc without ``web.allow-archive`` (an older site) gets archives; an admin's value is kept."""
    hgrc = site.root / "hgrc"
    text = hgrc.read_text().replace("allow-archive = zip gz bz2\n", "")
    if setting is not None:
        text += f"\n[web]\nallow-archive = {setting}\n"
    hgrc.write_text(text)
    site.add_user("alice")
    site.cli("repo", "create", "alice/files")
    run_all([push_files(site, tmp_path / "wc", "alice/files", {"a.txt": b"a\n"})],
            {**site.env, "HG_HOSTING_USER": "alice"})
    daemon = Daemon(site)
    try:
        for kind in ARCHIVES:
            status = get(daemon, f"/alice/files/archive/tip.{kind}")[0]
            assert status == (200 if kind in allowed else 403), (kind, status)
        overview = get(daemon, "/alice/files")[2]
        for kind in ARCHIVES:
            assert (f"/alice/files/archive/tip.{kind}".encode() in overview) == (kind in allowed)
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log()


RSS_LIMIT_KB = 150 * 1024  # as tests/test_daemon_memory.py
#: Growth allowed while one archive streams (measured: 5 MB for a 30 MB archive).
RSS_GROWTH_KB = 32 * 1024


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_of_a_large_repository_streams(big_site, kind):
    """A slow client downloads the corpus as an archive while the daemon's RSS stays bounded.

    The client sleeps 2 ms after every read, through a 4 KB receive buffer; the daemon's
    VmRSS is sampled every 50 ms.  The archive must be complete (every file of tip).
    """
    site = big_site
    daemon = Daemon(site)
    try:
        with RssPeak(daemon.proc.pid) as rss:
            body, elapsed = slow_download(daemon.port, f"/alice/big/archive/tip.{kind}")
        print(f"{kind}: {len(body)} bytes in {elapsed:.1f} s; daemon VmRSS {rss.baseline} kB at start,"
              f" peak {rss.peak} kB")
        files = site.hg("files", "-R", str(site.repo_path("alice/big")), "-r", "tip").stdout.split("\n")
        assert len(archive_members(kind, body)) == len([f for f in files if f])
        assert rss.peak < RSS_LIMIT_KB, f"daemon RSS peaked at {rss.peak} kB (started at {rss.baseline} kB)"
        assert rss.peak - rss.baseline < RSS_GROWTH_KB, f"daemon RSS grew by {rss.peak - rss.baseline} kB"
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log()


def slow_download(port: int, path: str) -> tuple[bytes, float]:
    """GET ``path`` through a 4 KB receive buffer, sleeping 2 ms after every read: (body, seconds)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    chunks = []
    start = time.monotonic()
    while True:
        chunk = sock.recv(16384)
        if not chunk:
            break
        chunks.append(chunk)
        time.sleep(0.002)
    elapsed = time.monotonic() - start
    sock.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ") or head.startswith(b"HTTP/1.1 200 "), head[:300]
    return body, elapsed


# -- 7: private and missing repositories take the same work --------------------------------------

#: Run in a fresh interpreter on the site: the SQL (text, no values) that HostingApp.lookup
#: runs for each repository name and identity, and the error it ends with.
LOOKUP_PROBE = """
import json, sys
from hgext_hosting import models
from hgext_hosting.models import Owner
from hgext_hosting.site import Site
from daemon.app import HostingApp
from daemon.auth import Authenticator
from daemon.web import HTTPError, Request

site = Site(sys.argv[1]).open()
app = HostingApp(site, Authenticator(site.secret()), None, None, None)
database = models.db.obj
run = database.execute_sql
statements = []
def recording(sql, params=None, *args, **kwargs):
    statements.append(sql)
    return run(sql, params, *args, **kwargs)
database.execute_sql = recording
result = {}
for user in (None, "carol", "bob"):
    for name in sys.argv[2:]:
        owner = Owner.get(Owner.name_key == user) if user else None
        req = Request({"REQUEST_METHOD": "GET", "REQUEST_URI": f"/alice/{name}?cmd=heads"})
        req.user = owner
        statements.clear()
        try:
            app.lookup(req, "alice", name)
            outcome = "found"
        except HTTPError as e:
            outcome = f"{e.status} {e.reason}"
        result[f"{user} {name}"] = {"outcome": outcome, "sql": list(statements)}
print(json.dumps(result))
"""


def test_private_and_missing_repositories_take_the_same_queries(pages):
    """Looking up a private repository one may not read runs the same SQL as a missing one."""
    proc = subprocess.run([sys.executable, "-c", LOOKUP_PROBE, str(pages.site.root), "secret", "nothing",
                           "files"], env=pages.site.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for user, outcome in ((None, "401 authorization required"), ("carol", "404 not found")):
        private, missing = result[f"{user} secret"], result[f"{user} nothing"]
        assert private["outcome"] == missing["outcome"] == outcome, (private, missing)
        assert private["sql"] == missing["sql"], (user, private["sql"], missing["sql"])
        assert private["sql"], "nothing recorded: the probe is broken"
    assert result["bob secret"]["outcome"] == result["None files"]["outcome"] == "found"
