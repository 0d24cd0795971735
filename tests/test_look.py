"""The last of the one look (issue 12) and topics in hgweb (issue 16 A), in headless Chromium and over HTTP.

One site and one daemon for the module: ``alice`` (site admin, so her top bar has
Settings and Admin) and ``bob``.  ``alice/src`` holds ``hello.py`` and two files
of Python around the ``highlight`` limit (``under.py`` just under 256 KB,
``over.py`` just over, in a second changeset); ``alice/topical`` is non-publishing and gets, over HTTP
from the real ``hg`` with evolve and topic, a root, two changesets in topic
``fix-login``, then an amend of the second (its predecessor is obsolete);
``alice/broken`` has a ``.hg/requires`` naming a format no Mercurial knows
(written after the daemon started), so opening it fails: the 500 page.

The flows: hgweb's pages show one navigation (the repository's tabs and, under
them, only paper's views the tabs lack); the login page is a card; the top bar
is one line on a phone, its links in a ``<details>`` menu; highlighting stops at
256 KB; a failing page is a 500 in the site's look with no traceback or path;
hgweb's log, graph and changeset pages badge a changeset's topic and hide
obsolete changesets as ``hg log`` does.  Screenshots (1280 and 390 px) go to
``browserkit.SHOTS`` (``HG_HOSTING_SHOTS``).
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import browserkit
import pytest
from browserkit import DESKTOP, PHONE, login, screenshots, skip_unless_browser
from clibatch import cli_batch
from conftest import DATE, Daemon, site_handle
from test_browser import hg_batch

skip_unless_browser()
#: The module's fixtures: one Chromium after ``web``, fresh contexts per test (browserkit's docstring).
browser, tabs = browserkit.browser, browserkit.tabs

PASSWORDS = {"alice": "alice-look-pw", "bob": "bob-look-pw"}
EVOLVE = ["--config", "extensions.evolve=", "--config", "extensions.topic="]
#: highlight's limit (daemon.hgwebs.HIGHLIGHT_FILES): size('<256K').
LIMIT = 256 * 1024


def python_of_size(size: int) -> str:
    """Python source of exactly ``size`` bytes, full of keywords Pygments colours."""
    lines, total, i = [], 0, 0
    while total < size:
        line = f"def f{i:06}(): return {i:06}\n"
        lines.append(line)
        total += len(line)
        i += 1
    return "".join(lines)[:size - 1] + "\n"


class Web:
    def __init__(self, site, daemon, tmp, topical: dict[str, str]):
        self.site, self.daemon, self.tmp, self.url = site, daemon, tmp, daemon.url
        #: alice/topical's changesets by description: node (the amended-away one included).
        self.topical = topical


def topical_steps(web_url: str, wc) -> list[dict]:
    """A root, two changesets in topic fix-login, pushed over HTTP; the second amended and pushed again."""
    url = web_url.replace("http://", f"http://alice:{PASSWORDS['alice']}@") + "/alice/topical"
    hg = ["--cwd", str(wc), *EVOLVE]

    def commit(name: str, message: str) -> list[dict]:
        return [{"write": str(wc / name), "text": message + "\n"},
                {"hg": [*hg, "commit", "-q", "-A", "-d", DATE, "-u", "Alice <alice@example.org>", "-m", message]}]

    return [{"hg": ["init", str(wc)]}, *commit("root.txt", "root of topical"),
            {"hg": [*hg, "topic", "-q", "fix-login"]},
            *commit("one.txt", "topic step one"), *commit("two.txt", "topic step two"),
            {"hg": [*hg, "push", "-q", url]},
            {"hg": [*hg, "amend", "-q", "-d", DATE, "-m", "topic step two, amended"]},
            {"hg": [*hg, "push", "-q", url]},
            {"hg": [*hg, "log", "--hidden", "-T", "{node}\t{desc}\n"]}]


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("look")
    site = site_handle(tmp)
    cli_batch(site, [
        (["init"], None),
        (["user", "add", "alice", "--admin", "--email", "alice@example.org", "--password-stdin"],
         PASSWORDS["alice"] + "\n"),
        (["user", "add", "bob", "--email", "bob@example.org", "--password-stdin"], PASSWORDS["bob"] + "\n"),
        (["repo", "create", "alice/src", "--description", "Sources"], None),
        (["repo", "create", "alice/topical", "--non-publishing", "--description", "Drafts and topics"], None),
        (["repo", "create", "alice/broken"], None),
    ])
    wc = tmp / "src"
    # The big files in a changeset of their own: rendering its 20,000-line diff takes seconds.
    hg_batch(site, [{"hg": ["init", str(wc)]},
                    {"write": str(wc / "hello.py"), "text": "def main():\n    return 0\n"},
                    {"hg": ["--cwd", str(wc), "commit", "-q", "-A", "-d", DATE, "-m", "hello"]},
                    {"write": str(wc / "under.py"), "text": python_of_size(LIMIT - 1024)},
                    {"write": str(wc / "over.py"), "text": python_of_size(LIMIT + 1024)},
                    {"hg": ["--cwd", str(wc), "commit", "-q", "-A", "-d", DATE, "-m", "big files"]},
                    {"hg": ["--cwd", str(wc), "push", "-q", str(site.repo_path("alice/src"))],
                     "env": {"HG_HOSTING_USER": "alice"}}])
    daemon = Daemon(site)
    log = hg_batch(site, topical_steps(daemon.url, tmp / "topical"))[-1][1]
    topical = {desc: node for node, desc in (line.split("\t") for line in log.splitlines())}
    requires = site.repo_path("alice/broken") / ".hg" / "requires"
    requires.write_text(requires.read_text() + "exp-format-from-the-future\n")
    yield Web(site, daemon, tmp, topical)
    daemon.stop()
    failures = re.findall(r"unexpected failure on (\S+)", daemon.log())
    # Only the broken repository failed, and only where the tests asked for it.
    assert all(path.startswith("/alice/broken") for path in failures), daemon.log()[-3000:]
    assert daemon.log().count("Traceback") == len(failures), daemon.log()[-3000:]


@pytest.fixture(scope="module")
def alice_state(web, browser):
    """Cookies of a session of alice's, made once through the login form."""
    context = browser.new_context(base_url=web.url)
    login(context.new_page(), "alice", PASSWORDS["alice"])
    state = context.storage_state()
    context.close()
    return state


def get(web, path: str, accept: str = "text/html") -> tuple[int, str]:
    request = urllib.request.Request(web.url + path, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def visible_texts(locator) -> list[str]:
    """The texts of the elements ``locator`` matches that are rendered (one round trip)."""
    return locator.evaluate_all("els => els.filter(e => e.checkVisibility()).map(e => e.innerText.trim())")


# -- 1. one navigation on hgweb's pages ---------------------------------------------------------


#: hgweb pages of alice/src and the views of paper's menu each must show (besides archives).
HGWEB_MENUS = {
    "/alice/src/log": {"tags", "bookmarks", "branches", "changeset"},
    "/alice/src/graph": {"tags", "bookmarks", "branches", "changeset"},
    "/alice/src/file/tip": {"tags", "bookmarks", "branches", "changeset"},
    "/alice/src/file/tip/hello.py": {"tags", "bookmarks", "branches", "changeset", "file", "latest", "diff",
                                     "comparison", "annotate", "file log", "raw"},
    "/alice/src/rev/0": {"tags", "bookmarks", "branches", "changeset", "raw"},
    "/alice/src/tags": {"tags", "bookmarks", "branches"},
}


def test_hgweb_pages_have_one_navigation(tabs, web, alice_state):
    """Under our tabs only paper's views the tabs lack: no log, graph or browse twice, in our sub-tab row."""
    page = tabs.page(storage_state=alice_state)
    for path, wanted in HGWEB_MENUS.items():
        response = page.goto(path)
        assert response.status == 200, path
        ours = {t.lower() for t in visible_texts(page.locator(".hgweb-repohead nav.tabs a"))}
        theirs = visible_texts(page.locator(".container .menu li"))
        assert ours == {"overview", "log", "graph", "files", "push log", "fork", "settings"}, path
        assert not {"log", "graph", "browse", "help"} & set(theirs), (path, theirs)
        assert len(theirs) == len(set(theirs)), (path, theirs)
        assert wanted <= set(theirs), (path, theirs)
        assert set(theirs) - wanted <= {"zip", "gz", "bz2"}, (path, theirs)
        # The row is ours: it sits under the tabs, left-aligned with them.
        tabs_box, menu_box = page.evaluate("""[".hgweb-repohead nav.tabs", ".container .menu"].map(s => {
            const r = document.querySelector(s).getBoundingClientRect(); return {x: r.x, y: r.y, height: r.height}; })""")
        assert menu_box["y"] >= tabs_box["y"] + tabs_box["height"] - 1, path
        assert abs(menu_box["x"] - tabs_box["x"]) <= 1, path
    page.goto("/alice/src/file/tip/hello.py")
    assert page.locator(".container .menu li.active").inner_text() == "file"
    assert page.locator(".hgweb-repohead nav.tabs [aria-current=page]").inner_text() == "Files"
    screenshots(page, "look-hgweb-file")
    page.goto("/alice/src/log")
    screenshots(page, "look-hgweb-log")


# -- 2. the login page --------------------------------------------------------------------------


def test_login_page_is_a_card_like_the_other_account_pages(tabs, web):
    """The login form sits in the centred card of join/register/forgot, at 1280 and 390 px."""
    for viewport in (DESKTOP, PHONE):
        page = tabs.page(viewport=viewport)
        page.goto("/-/login?next=%2Falice%2Fsrc")
        card = page.locator("main .auth-card")
        assert card.locator("h1").inner_text() == "Log in"
        assert card.locator("form input[name=user]").is_visible()
        assert card.locator("form button[type=submit]").inner_text() == "Log in"
        box = card.bounding_box()
        width = viewport["width"]
        if viewport is DESKTOP:
            assert box["width"] <= 26 * 16 + 1
            assert abs(box["x"] - (width - box["x"] - box["width"])) <= 2  # centred
        else:
            assert box["x"] >= 0 and box["x"] + box["width"] <= width
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    screenshots(page, "look-login")
    # The card still logs in, to the page asked for.
    page.fill("input[name=user]", "bob")
    page.fill("input[name=password]", PASSWORDS["bob"])
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    assert page.url == web.url + "/alice/src"


# -- 3. the top bar on a phone ------------------------------------------------------------------


def test_top_bar_is_one_line_on_a_phone_with_its_links_in_a_menu(tabs, web, alice_state):
    """At 390 px the bar is as tall as at 1280 px: the links fold into a <details> menu that opens without script."""
    desktop = tabs.page(storage_state=alice_state)
    desktop.goto("/alice/src")
    bar = desktop.locator("header.topbar")
    height = bar.bounding_box()["height"]
    for name in ("New repository", "alice", "Settings", "Admin"):
        assert bar.get_by_role("link", name=name, exact=True).is_visible(), name
    assert bar.get_by_role("button", name="Log out").is_visible()

    for path in ("/alice/src", "/alice/src/log", "/-/settings"):
        phone = tabs.page(viewport=PHONE, storage_state=alice_state)
        phone.goto(path)
        bar = phone.locator("header.topbar")
        assert abs(bar.bounding_box()["height"] - height) <= 2, path  # one line
        assert not bar.get_by_role("link", name="Admin").is_visible()
        toggle = bar.locator("details summary")
        assert toggle.is_visible() and "alice" in toggle.inner_text()
        toggle.click()
        for name in ("New repository", "Settings", "Admin"):
            assert bar.get_by_role("link", name=name, exact=True).is_visible(), (path, name)
        menu = bar.locator("details nav").bounding_box()
        assert menu["x"] >= 0 and menu["x"] + menu["width"] <= PHONE["width"], path
        assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], path
        if path == "/alice/src":
            screenshots(phone, "look-topbar-open")
    with phone.expect_navigation():
        bar.get_by_role("link", name="Admin").click()
    assert phone.url == web.url + "/-/admin"
    screenshots(phone, "look-admin")
    phone.goto("/")
    screenshots(phone, "look-index")

    anonymous = tabs.page(viewport=PHONE)
    anonymous.goto("/alice/src")
    bar = anonymous.locator("header.topbar")
    assert abs(bar.bounding_box()["height"] - height) <= 2
    assert bar.get_by_role("link", name="Log in").is_visible()


# -- 4. highlighting's limit and the 500 page ---------------------------------------------------


def test_highlighting_stops_at_256_kb(web):
    """A file just under 256 KB is coloured by Pygments; one just over is shown plain, every line of it."""
    status, under = get(web, "/alice/src/file/tip/under.py")
    assert status == 200 and under.count('<span class="k">def</span>') > 1000
    status, over = get(web, "/alice/src/file/tip/over.py")
    assert status == 200 and '<span class="k">' not in over
    assert "def f000000(): return 000000" in over
    last = python_of_size(LIMIT + 1024).splitlines()[-1]
    assert last.split("(")[0] in over  # the whole file, not a cut
    assert "highlightcss" not in over  # no stylesheet for a plain file


def test_500_page_in_the_site_look_without_traceback_or_path(tabs, web, alice_state):
    """A repository that cannot be opened: a browser gets the 500 page with the top bar and a way back;
    an hg client one plain line; neither names the file system, the exception or the format."""
    page = tabs.page(storage_state=alice_state)
    secrets = (str(web.site.root), "Traceback", "exp-format-from-the-future", "RequirementError", "requires",
               ".hg")
    for path in ("/alice/broken/log", "/alice/broken/file/tip", "/alice/broken/graph"):
        response = page.goto(path)
        assert response.status == 500, path
        assert "text/html" in response.headers["content-type"]
        assert page.locator("header.topbar").is_visible() and "alice" in page.locator("header.topbar").inner_text()
        assert page.locator(".errorpage h1").inner_text() == "Internal Server Error"
        assert page.locator(".errorpage").get_by_role("link", name="← All repositories").get_attribute("href") == "/"
        body = page.content()
        assert not [s for s in secrets if s in body], (path, [s for s in secrets if s in body])
    screenshots(page, "look-error-500")
    page.locator(".errorpage").get_by_role("link", name="← All repositories").click()
    assert page.url == web.url + "/"
    status, body = get(web, "/alice/broken?cmd=capabilities", accept="application/mercurial-0.1")
    assert status == 500 and body == "internal error; see the server log\n"


# -- 5. topics and obsolete changesets in hgweb -------------------------------------------------


def test_hgweb_badges_topics_and_hides_obsolete_changesets(tabs, web):
    """Log, graph and changeset pages badge the topic of draft changesets; the amended-away one is hidden
    there as in ``hg log`` of the repository itself, and its own page is a 404."""
    nodes = web.topical
    assert set(nodes) == {"root of topical", "topic step one", "topic step two", "topic step two, amended"}
    shown = web.site.hg("log", "-R", str(web.site.repo_path("alice/topical")), "-T", "{desc}\n").stdout.split("\n")
    assert set(filter(None, shown)) == {"root of topical", "topic step one", "topic step two, amended"}

    page = tabs.page()
    for view, rows in (("log", "table.bigtable tbody tr:has(td.description)"), ("graph", "#graphnodes li")):
        page.goto(f"/alice/topical/{view}")
        entries = page.locator(rows)
        by_desc = {}
        for i in range(entries.count()):
            entry = entries.nth(i)
            desc = entry.locator("a").first.inner_text()
            by_desc[desc] = visible_texts(entry.locator(".topic"))
        assert by_desc == {"topic step two, amended": ["topic fix-login"], "topic step one": ["topic fix-login"],
                           "root of topical": []}, view
        screenshots(page, f"look-topics-{view}")

    page.goto(f"/alice/topical/rev/{nodes['topic step two, amended'][:12]}")
    assert visible_texts(page.locator(".container .topic")) == ["topic fix-login"]
    screenshots(page, "look-topics-changeset")
    status, _ = get(web, f"/alice/topical/rev/{nodes['topic step two'][:12]}")
    assert status == 404
    # The push log shows the topic with the same badge.
    page.goto("/alice/topical/pushlog")
    assert "topic fix-login" in visible_texts(page.locator("table.pushes .badge.topic"))
