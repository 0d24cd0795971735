"""Repository pages and one look everywhere (issue 12), in real headless Chromium.

One site and one daemon for the module (see :func:`web`): ``alice`` (member of
team ``devs``), ``bob``; team ``ops`` without alice.  ``alice/src`` has a Python
file and a push of 12 changesets on branch ``feature`` by "Carol Coder";
``alice/empty`` is empty; ``alice/secret`` is private; ``alice/taken`` exists to
be collided with; ``alice/lifecycle`` is renamed and transferred, ``alice/doomed`` deleted.

The flows: the settings page's rename, transfer, visibility and delete with
their refusals; forks (the form's proposals, "forked from" and its link through
a rename and a removal); the empty overview and the copy button; push log rows;
hgweb's pages in the site's look with syntax highlighting; the error pages;
browsers sent to the login form while hg clients get 401.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from clibatch import cli_batch
from conftest import ARTIFACTS, DATE, HG, Daemon, site_handle
from test_browser import (  # noqa: F401 - browser is a fixture
    PASSWORDS,
    Pages,
    browser,
    console_errors,
    db,
    hg_batch,
    login,
)

#: Where the screenshots of :func:`test_screenshots_of_every_page` go.
SHOTS = Path(os.environ.get("REPOLOOK_SHOTS") or ARTIFACTS / "repolook")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}

HELLO = '''"""A small module."""
import os


def main(argv: list[str]) -> int:
    """Print the arguments."""
    for arg in argv:
        print(os.path.basename(arg))
    return 0
'''


def src_steps(site, tmp: Path) -> list[dict]:
    """alice/src: hello.py (alice), then one push of 12 changesets on branch feature (Carol Coder)."""
    wc = tmp / "src"
    steps = [{"hg": ["init", str(wc)]}, {"write": str(wc / "hello.py"), "text": HELLO},
             {"hg": ["--cwd", str(wc), "commit", "-q", "-A", "-d", DATE, "-u", "Alice <alice@example.org>",
                     "-m", "add hello.py\n\nA longer body that the push log does not show."]},
             {"hg": ["--cwd", str(wc), "push", "-q", str(site.repo_path("alice/src"))],
              "env": {"HG_HOSTING_USER": "alice"}},
             {"hg": ["--cwd", str(wc), "branch", "-q", "feature"]}]
    for i in range(12):
        steps += [{"write": str(wc / f"n{i}.txt"), "text": f"{i}\n"},
                  {"hg": ["--cwd", str(wc), "commit", "-q", "-A", "-d", DATE, "-u", "Carol Coder <carol@example.org>",
                          "-m", f"feature step {i}"]}]
    steps.append({"hg": ["--cwd", str(wc), "push", "-q", "--new-branch", str(site.repo_path("alice/src"))],
                  "env": {"HG_HOSTING_USER": "bob"}})
    return steps


class Web:
    def __init__(self, site, daemon: Daemon, tmp: Path):
        self.site, self.daemon, self.tmp, self.url = site, daemon, tmp, daemon.url


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("repolook")
    site = site_handle(tmp)
    cli_batch(site, [
        (["init"], None),
        *[(["user", "add", name, "--email", f"{name}@example.org", "--password-stdin"], PASSWORDS[name] + "\n")
          for name in ("alice", "bob")],
        (["team", "add", "devs"], None),
        (["team", "member-add", "devs", "alice"], None),
        (["team", "add", "ops"], None),
        (["repo", "create", "alice/src", "--description", "Sources"], None),
        (["repo", "create", "alice/empty", "--description", "Nothing yet"], None),
        (["repo", "create", "alice/secret", "--private"], None),
        (["repo", "create", "alice/taken"], None),
        (["repo", "create", "alice/lifecycle"], None),
        (["repo", "create", "alice/doomed"], None),
        (["grant", "alice/src", "bob", "write"], None),
    ])
    hg_batch(site, src_steps(site, tmp))
    daemon = Daemon(site)
    yield Web(site, daemon, tmp)
    daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]


@pytest.fixture
def pages(web, browser):  # noqa: F811 - browser is the imported fixture
    handle = Pages(browser, web)
    yield handle
    handle.close()


@pytest.fixture(scope="module")
def states(web, browser):  # noqa: F811
    """Storage states (cookies) of a session of alice's and of bob's, made through the login form."""
    found = {}
    for name in ("alice", "bob"):
        context = browser.new_context(base_url=web.url)
        login(context.new_page(), name, PASSWORDS[name])
        found[name] = context.storage_state()
        context.close()
    return found


def as_user(pages: Pages, states: dict, name: str, viewport=None):
    return pages.new(storage_state=states[name], viewport=viewport)


def repo_row(web, full: str) -> tuple | None:
    owner, name = full.split("/")
    rows = db(web.site, "SELECT r.id, r.private, r.forked_from_id FROM repository r JOIN owner o ON o.id = r.owner_id"
                        " WHERE o.name = ? AND r.name = ?", owner, name)
    return rows[0] if rows else None


def submit(page, action: str):
    """Click the submit button of the settings form whose ``action`` is ``action``; the navigation's response."""
    form = page.locator("form", has=page.locator(f"input[name=action][value={action}]"))
    with page.expect_navigation() as nav:
        form.locator("button[type=submit]").first.click()
    return nav.value


# -- the settings page ------------------------------------------------------------------------


def test_settings_rename_transfer_visibility_delete_and_refusals(pages, states, web):
    """Rename, transfer, make private/public and delete from the settings page, each refusal changing nothing."""
    page = as_user(pages, states, "alice")
    page.goto("/alice/lifecycle/settings")
    headings = page.locator("main section h2").all_inner_texts()
    assert headings == ["General", "Access", "Protected branches and bookmarks", "Danger zone"]
    rid = repo_row(web, "alice/lifecycle")[0]

    # Rename to a taken name: refused on the page, the typed name kept, nothing moved.
    page.locator("form[aria-label=Rename] input[name=name]").fill("taken")
    response = submit(page, "rename")
    assert response.status == 400
    assert "taken" in page.locator("p.error").inner_text()
    assert page.locator("form[aria-label=Rename] input[name=name]").input_value() == "taken"
    assert repo_row(web, "alice/lifecycle")[0] == rid and web.site.repo_path("alice/lifecycle").is_dir()

    # Rename: to the new URL, the old one gone.
    page.locator("form[aria-label=Rename] input[name=name]").fill("cycle")
    response = submit(page, "rename")
    assert response.status == 200 and page.url == f"{web.url}/alice/cycle/settings"
    assert repo_row(web, "alice/cycle")[0] == rid and repo_row(web, "alice/lifecycle") is None
    assert page.context.request.get("/alice/lifecycle", headers={"Accept": "text/html"}).status == 404

    # Private, then public again; an anonymous browser is sent to log in meanwhile.
    response = submit(page, "visibility")
    assert response.status == 200 and page.locator("p.message").inner_text() == "alice/cycle is now private"
    assert repo_row(web, "alice/cycle")[1] == 1
    anonymous = pages.new()
    anonymous.goto("/alice/cycle")
    assert anonymous.url == f"{web.url}/-/login?next=%2Falice%2Fcycle"
    submit(page, "visibility")
    assert page.locator("p.message").inner_text() == "alice/cycle is now public" and repo_row(web, "alice/cycle")[1] == 0

    # Transfer to an owner alice may not create for (a forged choice): 403, nothing moved.
    page.evaluate("document.querySelector('form[aria-label=Transfer] select').add(new Option('ops', 'ops', true, true))")
    response = submit(page, "transfer")
    assert response.status == 403 and "may not create repositories for ops" in page.locator("p.error").inner_text()
    assert repo_row(web, "alice/cycle")[0] == rid

    # Transfer to team devs (alice is a member): to the new URL.
    page.locator("form[aria-label=Transfer] select").select_option("devs")
    response = submit(page, "transfer")
    assert response.status == 200 and page.url == f"{web.url}/devs/cycle"
    assert repo_row(web, "devs/cycle")[0] == rid and web.site.repo_path("devs/cycle").is_dir()

    page.goto("/alice/doomed/settings")
    # Delete with the wrong confirmation: nothing deleted.
    page.locator("form[aria-label=Delete] input[name=confirm]").fill("doomed")
    response = submit(page, "delete")
    assert response.status == 400 and "type alice/doomed to confirm" in page.locator("p.error").inner_text()
    assert repo_row(web, "alice/doomed") is not None and web.site.repo_path("alice/doomed").is_dir()

    # Delete with the full name: to the owner's page, the repository gone.
    page.locator("form[aria-label=Delete] input[name=confirm]").fill("alice/doomed")
    response = submit(page, "delete")
    assert response.status == 200 and page.url == f"{web.url}/alice"
    assert repo_row(web, "alice/doomed") is None and not web.site.repo_path("alice/doomed").exists()
    assert console_errors(pages, "403", "400", "404") == []


def test_settings_page_for_a_writer_is_forbidden_in_the_site_look(pages, states, web):
    """bob (write on alice/src) gets the 403 page, in the site's look with a way back, and no Settings tab."""
    page = as_user(pages, states, "bob")
    page.goto("/alice/src")
    assert page.locator("nav.tabs").get_by_role("link", name="Settings").count() == 0
    response = page.goto("/alice/src/settings")
    assert response.status == 403
    assert page.locator("header.topbar").is_visible() and "Log out" in page.locator("header.topbar").inner_text()
    assert page.locator(".errorpage h1").inner_text() == "Forbidden"
    assert page.locator(".errorpage").get_by_role("link", name="← All repositories").get_attribute("href") == "/"
    assert console_errors(pages, "403") == []


# -- forks -------------------------------------------------------------------------------------


def test_fork_form_and_forked_from_through_rename_and_removal(pages, states, web):
    """The fork form proposes bob's namespace and the source's name; the fork says where it came from."""
    site = web.site
    cli_batch(site, [(["repo", "create", "alice/origin"], None)])
    hg_batch(site, [{"hg": ["--cwd", str(site.repo_path("alice/src")), "push", "-q", "-r", "0",
                            str(site.repo_path("alice/origin"))], "env": {"HG_HOSTING_USER": "alice"}}])
    page = as_user(pages, states, "bob")
    page.goto("/alice/origin")
    page.locator("nav.tabs").get_by_role("link", name="Fork").click()
    assert page.locator("select[name=owner]").input_value() == "bob"
    assert page.locator("input[name=name]").input_value() == "origin"
    with page.expect_navigation():
        page.get_by_role("button", name="Fork").click()
    assert page.url == f"{web.url}/bob/origin"
    link = page.locator("p.forked a")
    assert page.locator("p.forked").inner_text() == "forked from alice/origin"
    assert link.get_attribute("href") == "/alice/origin"
    assert repo_row(web, "bob/origin")[2] == repo_row(web, "alice/origin")[0]

    # A rename of the source keeps the link; a source the visitor may not read is not named.
    cli_batch(site, [(["repo", "rename", "alice/origin", "alice/origin2"], None)])
    page.reload()
    assert page.locator("p.forked a").get_attribute("href") == "/alice/origin2"
    cli_batch(site, [(["repo", "set", "alice/origin2", "private=true"], None)])
    page.reload()
    assert page.locator("p.forked").count() == 0
    assert "origin2" not in page.content()

    # Removing the source clears the link (ON DELETE SET NULL), the fork stays.
    cli_batch(site, [(["repo", "remove", "alice/origin2"], None)])
    assert repo_row(web, "bob/origin")[2] is None
    page.reload()
    assert page.locator("p.forked").count() == 0
    assert console_errors(pages) == []


# -- the overview ------------------------------------------------------------------------------


def test_empty_overview_shows_the_first_push_and_copy_buttons_copy(pages, states, web):
    """An empty repository explains its first push with its clone URL; a copy button fills the clipboard."""
    page = as_user(pages, states, "alice")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto("/alice/empty")
    url = f"{web.url}/alice/empty"
    steps = page.locator("#first-push").inner_text()
    assert steps.splitlines()[0] == "hg init empty" and steps.splitlines()[-1] == f"hg push {url}"
    assert page.locator("table.pushes").count() == 0
    page.locator("button[data-copy=clone-1]").click()
    page.wait_for_function("document.querySelector('button[data-copy=clone-1]').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == f"hg clone {url}"
    page.locator("button[data-copy=first-push]").click()
    page.wait_for_function("document.querySelector('button[data-copy=first-push]').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == steps
    script = page.context.request.get("/-/static/site.js")
    assert script.status == 200 and "javascript" in script.headers["content-type"]
    assert console_errors(pages) == []


def test_push_log_rows_show_summary_author_branch_and_more(pages, web):
    """Each push shows its pusher and date, each changeset its summary, author and branch, 10 then 'and 2 more'."""
    page = pages.new()
    page.goto("/alice/src/pushlog")
    rows = page.locator("table.pushes tbody tr")
    assert rows.count() == 2
    newest, oldest = rows.nth(0), rows.nth(1)
    assert newest.locator("td.pusher").inner_text() == "bob"
    assert newest.locator("time.age").get_attribute("datetime").endswith("Z")
    items = newest.locator("ul.changesets li:not(.more)")
    assert items.count() == 10
    assert items.nth(0).locator(".summary").inner_text() == "feature step 0"
    assert items.nth(0).locator(".author").inner_text() == "Carol Coder"
    assert items.nth(0).locator(".branch").inner_text() == "feature"
    assert newest.locator("li.more").inner_text() == "and 2 more"
    assert oldest.locator(".summary").inner_text() == "add hello.py"
    assert oldest.locator(".branch").count() == 0  # default is not badged
    with page.expect_navigation():
        newest.locator("li.more a").click()
    assert page.locator("table.pushes ul.changesets li").count() == 12
    assert console_errors(pages) == []


# -- hgweb in the site's look ------------------------------------------------------------------


def test_hgweb_pages_have_the_top_bar_tabs_and_highlighting(pages, states, web):
    """hgweb's pages: the user's top bar, the repository's tabs (Settings for admins), highlighted files."""
    page = as_user(pages, states, "alice")
    failed = []
    page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
    page.goto("/alice/src/log")
    bar = page.locator("header.hgweb-topbar")
    assert bar.bounding_box()["y"] == 0 and "Log out" in bar.inner_text() and "alice" in bar.inner_text()
    tabs = page.locator("nav.tabs")
    assert tabs.locator("[aria-current=page]").inner_text() == "Log"
    assert {"Overview", "Log", "Graph", "Files", "Push log", "Fork", "Settings"} <= set(
        tabs.locator("a").all_inner_texts())
    with page.expect_response(lambda r: r.url.endswith("/highlightcss")) as css:
        page.goto("/alice/src/file/tip/hello.py")
    assert css.value.status == 200
    keyword = page.locator(".sourcelines span.k").first
    assert keyword.inner_text() in ("def", "for", "return")
    assert page.evaluate("getComputedStyle(document.querySelector('.sourcelines span.k')).fontWeight") == "700"
    assert tabs.locator("[aria-current=page]").inner_text() == "Files"
    with page.expect_navigation():
        tabs.get_by_role("link", name="Settings").click()
    assert page.url == f"{web.url}/alice/src/settings"

    anonymous = pages.new()
    anonymous.goto("/alice/src/log")
    assert "Log in" in anonymous.locator("header.hgweb-topbar").inner_text()
    assert set(anonymous.locator("nav.tabs a").all_inner_texts()) == {"Overview", "Log", "Graph", "Files", "Push log"}
    assert failed == []
    assert console_errors(pages) == []


# -- browsers to the login form, hg clients 401 ------------------------------------------------


def test_browsers_are_sent_to_log_in_identically_for_private_and_missing(pages, web):
    """Anonymous Chromium on a private, a missing repository and a login-only page lands on the login form."""
    page = pages.new()
    for path in ("/alice/secret", "/alice/no-such", "/alice/secret/log", "/-/new"):
        response = page.goto(path)
        quoted = path.replace("/", "%2F")
        assert response.status == 200 and page.url == f"{web.url}/-/login?next={quoted}", path
    page.goto("/alice/secret/log?rev=tip")
    page.fill("input[name=user]", "alice")
    page.fill("input[name=password]", PASSWORDS["alice"])
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    assert page.url == f"{web.url}/alice/secret/log?rev=tip"
    assert console_errors(pages) == []


def fetch(url: str, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(request) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


def test_hg_clients_still_get_401_with_a_challenge(web):
    """The real hg client, and requests shaped like hg's, get 401 + WWW-Authenticate, never the redirect."""
    proc = subprocess.run([HG, "clone", "-U", f"{web.url}/alice/secret", str(web.tmp / "nope")], env=web.site.env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0 and "authorization" in proc.stderr.lower(), proc.stderr
    browserish = "text/html,application/xhtml+xml,*/*;q=0.8"
    for path, headers in [
        ("/alice/secret?cmd=capabilities", {"Accept": browserish}),
        ("/alice/no-such?cmd=capabilities", {"Accept": browserish}),
        ("/alice/secret", {"Accept": "application/mercurial-0.1"}),
        ("/alice/secret", {"Accept": browserish, "X-HgArg-1": "cmds=heads+"}),
        ("/alice/secret", {"Accept": browserish, "X-HgProto-1": "0.1 0.2 comp=zstd,zlib,none,bzip2"}),
        ("/alice/secret", {"Accept": browserish, "User-Agent": "mercurial/proto-1.0 (Mercurial 7.2)"}),
    ]:
        status, answer = fetch(web.url + path, headers)
        assert status == 401 and answer.get("WWW-Authenticate", "").startswith("Basic"), (path, headers, status)
    assert fetch(web.url + "/alice/secret", {"Accept": browserish})[0] == 303
    assert fetch(web.url + "/alice/no-such", {"Accept": browserish})[1]["Location"].endswith(
        "/-/login?next=%2Falice%2Fno-such")


def test_error_pages_in_the_site_look(pages, states, web):
    """A logged-in visitor's 404 (private or missing alike) is a page of the site with a way back."""
    page = as_user(pages, states, "bob")
    texts = []
    for path in ("/alice/secret", "/alice/no-such"):
        response = page.goto(path)
        assert response.status == 404
        assert page.locator("header.topbar").is_visible() and page.locator(".errorpage h1").inner_text() == "Not Found"
        texts.append(page.locator("main").inner_text())
        assert "text/html" in response.headers["content-type"] and "script-src 'self'" in response.headers[
            "content-security-policy"]
    assert texts[0].replace("secret", "X") == texts[1].replace("no-such", "X")
    assert console_errors(pages, "404") == []


# -- screenshots ---------------------------------------------------------------------------------


SHOT_PAGES = {
    "overview": "/alice/src",
    "overview-empty": "/alice/empty",
    "pushlog": "/alice/src/pushlog",
    "pushloghtml": "/alice/src/pushloghtml?startID=1&endID=2",
    "settings": "/alice/src/settings",
    "fork": "/alice/src/fork",
    "hgweb-log": "/alice/src/log",
    "hgweb-graph": "/alice/src/graph",
    "hgweb-file": "/alice/src/file/tip/hello.py",
    "hgweb-files": "/alice/src/file/tip",
    "hgweb-changeset": "/alice/src/rev/0",
    "error-404": "/alice/no-such",
}


def test_screenshots_of_every_page(pages, states, web):
    """Full-page PNGs at 1280 px and 390 px of every repository page (for looking at), none wider than the view."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    too_wide = []
    for width, viewport in (("1280", DESKTOP), ("390", PHONE)):
        page = as_user(pages, states, "alice", viewport=viewport)
        for name, path in SHOT_PAGES.items():
            page.goto(path)
            page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            if overflow > 0:
                too_wide.append(f"{path} at {width} px is {overflow} px too wide")
    assert too_wide == []
    assert console_errors(pages, "404") == []
