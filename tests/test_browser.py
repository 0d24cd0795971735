"""The pages in a real browser: Debian's Chromium, headless, driven by Playwright.

One site and one daemon for the whole module (creating a site and hashing
passwords takes seconds each): ``alice`` (password), ``bob`` (password, member
of team ``devs``) and ``carol``; ``alice/secret`` is private, ``alice/docs`` has
a README.md with a ``<script>`` in it, ``alice/guarded`` has one changeset,
``alice/busy`` 22 one-changeset pushes by alice and bob in turn.
Every test gets a fresh browser context (its own cookies); ``alice_page`` is
logged in with a session made once through the login form.

A full-page screenshot of each main page goes to ``tests/artifacts/browser-*.png``.

The browser is ``/usr/bin/chromium`` (``.ci/run`` installs it), driven by
Playwright's Python package (the ``test`` extra; no ``playwright install``).  If
either is missing every test here fails, loudly; only ``HG_HOSTING_SKIP_BROWSER=1``
skips the module.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from clibatch import cli_batch
from conftest import ARTIFACTS, DATE, Daemon, SiteHandle, site_handle

from daemon.auth import SESSION_COOKIE

if os.environ.get("HG_HOSTING_SKIP_BROWSER") == "1":
    pytest.skip("HG_HOSTING_SKIP_BROWSER=1: browser tests skipped on request", allow_module_level=True)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORDS = {"alice": "alice-browser-pw", "bob": "bob-browser-pw"}
PHONE = {"width": 390, "height": 844}

README = """\
# Docs title

Some *emphasis* and a [link](https://example.org/).

## Getting started

<script>window.__pwned = true; document.title = "pwned";</script>

<img src="x" onerror="window.__pwned = true">
"""

#: Runs many hg commands in one Python process (each ``hg`` process pays ~1 s of imports).
#: stdin: a JSON list of steps, ``{"write": PATH, "text": TEXT}`` or ``{"hg": ARGS, "env": {...}}``;
#: stdout: a JSON list of [exit code, stdout, stderr] per hg step.
HG_BATCH = r"""
import io, json, os, sys
from mercurial import dispatch
from mercurial.main_script import request
results = []
for step in json.load(sys.stdin):
    if "write" in step:
        os.makedirs(os.path.dirname(step["write"]), exist_ok=True)
        with open(step["write"], "w") as f:
            f.write(step["text"])
        continue
    os.environ.update(step.get("env", {}))
    out, err = io.BytesIO(), io.BytesIO()
    rc = dispatch.dispatch(request([a.encode() for a in step["hg"]], fout=out, ferr=err))
    results.append([rc or 0, out.getvalue().decode(errors="replace"), err.getvalue().decode(errors="replace")])
    if step.get("check", True) and rc:
        break
json.dump(results, sys.stdout)
"""


def hg_batch(site: SiteHandle, steps: list[dict]) -> list[tuple[int, str, str]]:
    """Run the steps (see :data:`HG_BATCH`); a failing step with ``check`` (the default) raises."""
    proc = subprocess.run([sys.executable, "-c", HG_BATCH], input=json.dumps(steps), env=site.env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    hg_steps = [s for s in steps if "hg" in s]
    for step, (rc, out, err) in zip(hg_steps, results, strict=False):
        assert rc == 0 or not step.get("check", True), f"hg {step['hg']} exited {rc}\n{out}\n{err}"
    return results


def commit_steps(wc: Path, filename: str, text: str, message: str) -> list[dict]:
    return [{"write": str(wc / filename), "text": text},
            {"hg": ["--cwd", str(wc), "addremove", "-q"]},
            {"hg": ["--cwd", str(wc), "commit", "-q", "-d", DATE, "-m", message]}]


def db(site: SiteHandle, sql: str, *params) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(site.root / "hosting.db")) as conn:
        return conn.execute(sql, params).fetchall()


# -- the site, the daemon and the browser ---------------------------------------------------


class Web:
    def __init__(self, site: SiteHandle, daemon: Daemon, tmp: Path, busy_nodes: list[str]):
        self.site, self.daemon, self.tmp = site, daemon, tmp
        self.url = daemon.url
        self.busy_nodes = busy_nodes  # alice/busy's changesets, newest first, one push each


def push_steps(site: SiteHandle, tmp: Path, busy: int = 22) -> list[dict]:
    """alice/docs gets a README.md and alice/guarded one changeset, pushed by alice; alice/busy
    ``busy`` pushes of one changeset each, by alice and bob in turn, then its log."""
    seed, wc = tmp / "seed", tmp / "busy"
    steps = [{"hg": ["init", str(seed)]}, *commit_steps(seed, "README.md", README, "add a README")]
    steps += [{"hg": ["--cwd", str(seed), "push", "-q", str(site.repo_path(full))], "env": {"HG_HOSTING_USER": "alice"}}
              for full in ("alice/docs", "alice/guarded")]
    steps.append({"hg": ["init", str(wc)]})
    for i in range(busy):
        steps += commit_steps(wc, f"f{i}.txt", f"{i}\n", f"change {i}")
        steps.append({"hg": ["--cwd", str(wc), "push", "-q", str(site.repo_path("alice/busy"))],
                      "env": {"HG_HOSTING_USER": "bob" if i % 2 else "alice"}})
    steps.append({"hg": ["--cwd", str(wc), "log", "-T", "{node}\n"]})
    return steps


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """A site with users, a team and repositories, served by one daemon for the module."""
    tmp = tmp_path_factory.mktemp("browser")
    site = site_handle(tmp)
    # One process for the whole setup: each hg-hosting or hg process pays a second of imports.
    cli_batch(site, [
        (["init"], None),
        *[(["user", "add", name, "--email", f"{name}@example.org",
            *(["--password-stdin"] if name in PASSWORDS else [])], PASSWORDS.get(name, "") + "\n")
          for name in ("alice", "bob", "carol")],
        (["team", "add", "devs"], None),
        (["team", "member-add", "devs", "bob"], None),
        (["repo", "create", "alice/secret", "--private", "--description", "Top secret plans"], None),
        (["repo", "create", "alice/docs", "--description", "Documentation"], None),
        (["repo", "create", "alice/guarded", "--description", "Protected default branch"], None),
        (["repo", "create", "alice/busy", "--description", "Many pushes"], None),
        (["grant", "alice/busy", "bob", "write"], None),
    ])
    nodes = hg_batch(site, push_steps(site, tmp))[-1][1].split()
    # Only then the daemon: its start-up settles pending pushes, and fails with "database is
    # locked" when pushes run meanwhile (a product bug, reported).
    daemon = Daemon(site)
    yield Web(site, daemon, tmp, nodes)
    daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium; missing Chromium or Playwright fails every test of the module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        sync_playwright, missing = None, str(e)
    if sync_playwright is None:
        pytest.fail(f"Playwright is missing ({missing}): pip install -e '.[test]', or set "
                    "HG_HOSTING_SKIP_BROWSER=1 to skip the browser tests", pytrace=False)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium, or set HG_HOSTING_SKIP_BROWSER=1 "
                    "to skip the browser tests", pytrace=False)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Pages:
    """Opens browser contexts against the daemon and keeps track of them."""

    def __init__(self, browser, web: Web):
        self.browser, self.web = browser, web
        self.contexts = []
        self.errors: list[str] = []

    def new(self, storage_state=None, viewport=None):
        context = self.browser.new_context(base_url=self.web.url, storage_state=storage_state,
                                           viewport=viewport or {"width": 1280, "height": 800})
        context.set_default_timeout(10_000)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))
        page.on("console", lambda m: m.type == "error" and self.errors.append(
            f"{page.url}: {m.text} ({m.location.get('url')})"))
        page.on("dialog", lambda d: (self.errors.append(f"{page.url}: dialog {d.message}"), d.dismiss()))
        return page

    def close(self):
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(web, browser):  # web first: the browser closes its connections before the daemon stops
    handle = Pages(browser, web)
    yield handle
    handle.close()


def login(page, user: str, password: str):
    page.goto("/-/login")
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    return page


@pytest.fixture(scope="module")
def alice_state(web, browser):
    """Cookies of a session of alice's, made once through the login form."""
    context = browser.new_context(base_url=web.url)
    page = context.new_page()
    login(page, "alice", PASSWORDS["alice"])
    assert page.locator(".topbar").get_by_text("Log out").is_visible()
    state = context.storage_state()
    context.close()
    return state


@pytest.fixture
def alice_page(pages, alice_state):
    return pages.new(storage_state=alice_state)


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"), full_page=True)


def topbar_text(page) -> str:
    return page.locator("header.topbar").inner_text()


def console_errors(pages: Pages, *allowed: str) -> list[str]:
    """Errors the pages logged, less the expected (e.g. the 401/403 the test asked for).

    The daemon's bare error pages link no icon, so after one the browser asks for
    ``/favicon.ico``, which is a 404: not counted.
    """
    allowed = (*allowed, "/favicon.ico)")
    return [e for e in pages.errors if not any(a in e for a in allowed)]


# -- the tests ---------------------------------------------------------------------------


def test_login_form_logs_in_and_a_wrong_password_does_not(pages, web):
    """Logging in through the form gives a session; a wrong password shows an error and stays logged out."""
    page = pages.new()
    page.goto("/-/login")
    shot(page, "login")
    page.fill("input[name=user]", "alice")
    page.fill("input[name=password]", "not-her-password")
    with page.expect_navigation() as nav:
        page.click("main form button[type=submit]")
    assert nav.value.status == 401
    assert page.locator("p.error").is_visible()
    assert "Log in" in topbar_text(page) and "Log out" not in topbar_text(page)
    assert not [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]

    login(page, "alice", PASSWORDS["alice"])
    assert page.url == web.url + "/"
    assert "alice" in topbar_text(page) and "Log out" in topbar_text(page)
    (cookie,) = [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert console_errors(pages, "401") == []


def test_create_repository_from_the_new_page(alice_page, pages, web):
    """A repository created with /-/new is on the index, and its overview shows the HTTP clone URL."""
    page = alice_page
    page.goto("/-/new")
    shot(page, "new")
    name = page.locator("input[name=name]")
    name.fill("not a name!")  # the browser checks the name pattern before posting
    assert name.evaluate("e => e.validity.patternMismatch")
    name.fill("made-in-browser")
    assert name.evaluate("e => e.validity.valid")
    page.fill("input[name=description]", "Created with the form")
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    assert page.url == f"{web.url}/alice/made-in-browser"
    assert page.locator("h1").inner_text().startswith("alice / made-in-browser")
    assert page.locator(".cloneurl code").first.inner_text() == f"hg clone {web.url}/alice/made-in-browser"
    assert web.site.repo_path("alice/made-in-browser").joinpath(".hg").is_dir()

    page.goto("/")
    listed = page.locator(".repolist .reponame").all_inner_texts()
    assert "alice/made-in-browser" in listed and "alice/secret" in listed
    shot(page, "index")
    page.goto("/alice")
    assert "alice/made-in-browser" in page.locator(".repolist").inner_text()
    shot(page, "owner")
    assert console_errors(pages) == []


def test_settings_grant_a_team_and_protect_a_branch(alice_page, pages, web):
    """Granting @devs write and protecting default for alice alone in the settings lets bob push only elsewhere."""
    page = alice_page
    page.goto("/alice/guarded")
    page.locator("nav.tabs").get_by_role("link", name="Settings").click()
    assert page.url.endswith("/alice/guarded/settings")

    grant = page.locator("form", has=page.locator("input[name=action][value=grant]"))
    grant.locator("input[name=subject]").fill("@devs")
    grant.locator("select[name=level]").select_option("write")
    with page.expect_navigation():
        grant.locator("button").click()
    assert page.locator("p.message").inner_text() == "granted write to @devs"

    protect = page.locator("form", has=page.locator("input[name=action][value=protect]"))
    protect.locator("input[name=ref]").fill("default")
    protect.locator("input[name=allow]").fill("alice")
    with page.expect_navigation():
        protect.locator("button").click()
    assert page.locator("p.message").inner_text() == "protected default"
    tables = page.locator("main table")
    assert "@devs" in tables.nth(0).inner_text() and "write" in tables.nth(0).inner_text()
    assert "default" in tables.nth(1).inner_text() and "alice" in tables.nth(1).inner_text()
    shot(page, "settings")

    assert db(web.site, 'SELECT o.name, g.level FROM "grant" g JOIN owner o ON o.id = g.subject_id '
                        "JOIN repository r ON r.id = g.repository_id WHERE r.name = 'guarded'") == [("devs", "write")]
    assert db(web.site, "SELECT p.name, o.name FROM protected_ref p JOIN protected_ref_allow a ON a.ref_id = p.id "
                        "JOIN owner o ON o.id = a.subject_id") == [("default", "alice")]

    # bob (write through @devs) over HTTP: default is refused, a new branch is accepted.
    url = f"http://bob:{PASSWORDS['bob']}@127.0.0.1:{web.daemon.port}/alice/guarded"
    wc = web.tmp / "bob-guarded"
    results = hg_batch(web.site, [
        {"hg": ["clone", "-q", url, str(wc)]},
        *commit_steps(wc, "bob.txt", "on default\n", "bob on default"),
        {"hg": ["--cwd", str(wc), "push", url], "check": False},
        {"hg": ["--cwd", str(wc), "update", "-q", "-r", "0"]},
        {"hg": ["--cwd", str(wc), "branch", "-q", "feature"]},
        *commit_steps(wc, "feature.txt", "on a branch\n", "bob on feature"),
        {"hg": ["--cwd", str(wc), "push", "-q", "--new-branch", "-r", ".", url]},
    ])
    refused, accepted = results[3], results[8]
    assert refused[0] != 0 and "default" in refused[2] and "protected" in refused[2], refused
    assert accepted[0] == 0, accepted
    pushed = db(web.site, "SELECT p.user FROM push p JOIN repository r ON r.id = p.repository_id "
                          "WHERE r.name = 'guarded' AND p.state = 'done' ORDER BY p.push_id")
    assert pushed == [("alice",), ("bob",)]
    assert console_errors(pages) == []


def test_push_log_lists_pushes_and_pages(alice_page, pages, web):
    """Pushes by alice and bob show on the push log with users and short ids, 20 a page, and older pages page back."""
    nodes = web.busy_nodes
    page = alice_page
    page.goto("/alice/busy")
    recent = page.locator("table.pushes tbody tr")
    assert recent.count() == 5
    page.get_by_role("link", name="Full push log").click()
    assert "(22 pushes)" in page.locator("h2").inner_text()
    rows = page.locator("table.pushes tbody tr")
    assert rows.count() == 20
    first = rows.nth(0).locator("td").all_inner_texts()
    assert first[0] == "22" and first[1] == "bob" and first[3].split()[:3] == [nodes[0][:12], "change", "21"]
    assert rows.nth(1).locator("td").nth(1).inner_text() == "alice"
    link = rows.nth(0).locator("a.node")
    assert link.get_attribute("href") == f"/alice/busy/rev/{nodes[0][:12]}"
    assert page.locator(".pager").inner_text().startswith("page 1 of 2")
    shot(page, "pushlog")

    page.get_by_role("link", name="Older →").click()
    assert page.url.endswith("/alice/busy/pushlog?page=2")
    assert page.locator("table.pushes tbody td:first-child").all_inner_texts() == ["2", "1"]
    assert page.locator("table.pushes tbody tr").nth(1).locator("a.node").inner_text() == nodes[-1][:12]

    link = page.locator("table.pushes a.node").first
    with page.expect_navigation() as nav:
        link.click()
    assert nav.value.status == 200 and "/alice/busy/rev/" in page.url
    assert console_errors(pages) == []


def test_hgweb_log_page_has_our_top_bar(pages, web):
    """hgweb's log page has our top bar and stylesheet next to paper's, and its links lead back to our pages."""
    page = pages.new()
    failed = []
    page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
    with page.expect_response(lambda r: r.url.endswith("/static/style-paper.css")) as paper_css:
        response = page.goto("/alice/docs/log")
    assert response.status == 200 and paper_css.value.status == 200
    csp = response.headers["content-security-policy"]
    assert "style-src 'self'" in csp and "nonce-" in csp
    bar = page.locator("header.hgweb-topbar")
    assert bar.is_visible() and bar.bounding_box()["y"] == 0  # shown first although last in the markup
    assert bar.locator("a.brand").get_attribute("href") == "/"
    assert page.evaluate("getComputedStyle(document.querySelector('header.topbar')).backgroundColor") \
        == "rgb(34, 50, 77)"  # from /-/static/style.css
    assert page.locator("table.bigtable").inner_text().count("add a README") == 1
    shot(page, "hgweb-log")

    page.goto("/alice/docs/graph")
    assert page.locator("canvas").count() == 1  # paper's graph script ran (it carries the CSP nonce)
    page.goto("/alice/docs/file/tip")
    assert "README.md" in page.locator("table").inner_text()
    tabs = page.locator("nav.tabs")  # the repository's tabs, under the top bar
    tabs.get_by_role("link", name="Push log").click()
    assert page.url == f"{web.url}/alice/docs/pushlog"
    page.goto("/alice/docs/rev/tip")
    tabs.get_by_role("link", name="Overview").click()
    assert page.url == f"{web.url}/alice/docs" and page.locator("section.readme").is_visible()
    assert failed == []
    assert console_errors(pages) == []


def html_status(page, path: str) -> tuple[int, str]:
    """GET ``path`` as a page would, with the context's cookies: (status, body).

    Not ``page.goto``: a 401 carries a Basic challenge, which a browser answers with
    its password prompt (headless Chromium: ERR_INVALID_AUTH_CREDENTIALS) rather
    than showing the page.
    """
    response = page.context.request.get(path, headers={"Accept": "text/html"}, max_redirects=0)
    return response.status, response.text()


def test_private_repository_hidden_and_logout_ends_the_session(pages, alice_state, web):
    """A private repository is not listed for anonymous visitors and its URL sends a browser to the login form
    (as a missing one does); after logging out, the old session cookie is anonymous."""
    anonymous = pages.new()
    anonymous.goto("/")
    listed = anonymous.locator(".repolist").inner_text()
    assert "alice/docs" in listed and "secret" not in listed
    anonymous.goto("/?q=secret")
    assert anonymous.locator(".repolist").count() == 0 and "No repositories" in anonymous.locator("main").inner_text()
    response = anonymous.context.request.get("/alice/secret", headers={"Accept": "text/html"}, max_redirects=0)
    assert response.status == 303 and response.headers["location"].endswith("/-/login?next=%2Falice%2Fsecret")
    assert "Top secret" not in response.text()
    missing = anonymous.context.request.get("/alice/no-such-repository", headers={"Accept": "text/html"},
                                            max_redirects=0)  # the same as a missing one
    assert missing.status == 303 and missing.headers["location"].endswith("/-/login?next=%2Falice%2Fno-such-repository")
    anonymous.goto("/alice")
    assert "secret" not in anonymous.locator("main").inner_text()

    page = login(pages.new(), "alice", PASSWORDS["alice"])
    (cookie,) = [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    assert "alice/secret" in page.locator(".repolist").inner_text()
    with page.expect_navigation():
        page.locator(".topbar").get_by_role("button", name="Log out").click()
    assert "Log in" in topbar_text(page)
    assert not [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]

    replay = pages.new()
    replay.context.add_cookies([{"name": SESSION_COOKIE, "value": cookie["value"], "url": web.url}])
    replay.goto("/")
    assert "Log in" in topbar_text(replay) and "secret" not in replay.locator(".repolist").inner_text()
    assert html_status(replay, "/alice/secret")[0] == 303  # to the login form
    assert html_status(replay, "/alice/docs/settings")[0] == 303
    # alice's other session (the module's) is still valid: logging out ends only this one.
    other = pages.new(storage_state=alice_state)
    assert other.goto("/alice/secret").status == 200
    assert console_errors(pages) == []


def test_readme_rendered_as_html_without_its_script(pages, web):
    """The overview renders README.md from the tip as HTML, and its <script> and onerror neither run nor become tags."""
    page = pages.new()
    page.goto("/alice/docs")
    readme = page.locator("section.readme article")
    assert readme.locator("h1").inner_text() == "Docs title"
    assert readme.locator("h2").inner_text() == "Getting started"
    assert readme.locator("em").inner_text() == "emphasis"
    assert readme.locator("script, img").count() == 0
    assert "<script>window.__pwned" in readme.inner_text()
    assert page.evaluate("window.__pwned") is None and page.title() != "pwned"
    shot(page, "overview")

    phone = pages.new(viewport=PHONE)
    phone.goto("/alice/docs")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(phone, "overview-phone")
    phone.goto("/alice/docs/log")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert console_errors(pages) == []


def test_settings_form_without_csrf_token_is_refused(alice_page, pages, web):
    """A settings form posted without its CSRF field is refused with 403 and changes nothing."""
    page = alice_page
    page.goto("/alice/docs/settings")
    form = page.locator("form", has=page.locator("input[name=action][value=general]"))
    form.locator("textarea[name=description]").fill("changed without a token")
    form.locator("input[name=csrf]").evaluate("e => e.remove()")
    with page.expect_navigation() as nav:
        form.locator("button").click()
    assert nav.value.status == 403
    assert re.search(r"CSRF|expired", page.content())
    assert db(web.site, "SELECT description FROM repository WHERE name = 'docs'") == [("Documentation",)]

    page.goto("/alice/docs/settings")  # the same form with its token works
    form.locator("textarea[name=description]").fill("Documentation, edited")
    with page.expect_navigation() as nav:
        form.locator("button").click()
    assert nav.value.status == 200 and page.locator("p.message").inner_text() == "saved"
    assert db(web.site, "SELECT description FROM repository WHERE name = 'docs'") == [("Documentation, edited",)]
    assert console_errors(pages, "403") == []
