"""json-pushes as Mozilla's tools read it, and the push log's readers at any scale.

The expectations come from hg.mozilla.org's pushlog (mozilla/version-control-tools,
``hgext/pushlog/feed.py`` and its ``.t`` tests: test-hgweb-user-queries.t,
test-hgweb-feed.t, test-empty-pushes.t) and from the clients that read it:
mozregression's ``json_pushes.py`` (``.json()`` on errors, ``changesets[-1]``),
Treeherder's pushlog ingestion (``json-pushes/?full=1&version=2``, ``lastpushid``)
and mozci's ``hgmo``.

One site and one daemon for the module (``jp``): ``alice/jp`` holds

1. alice: a1, a2 (default);
2. dave: d1 (branch ``stable``), t1 (tags a1 ``v1.0``, on stable);
3. bob: the bookmark ``release`` on a2 only (left out of json-pushes);
4. alice: e1 (default, the tip).

The scale test runs the daemon's WSGI application in a fresh interpreter and
counts SQLite virtual-machine steps (deterministic, unlike timings) for each
reader on a one-push repository and on one with 200,000 push records.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from posixpath import normpath

import pytest
from conftest import Daemon, commit, site_handle
from pushhelpers import cli_all

from hgext_hosting import pushdb


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class JP:
    """The module's site, daemon and nodes."""

    def __init__(self, site, daemon, nodes: dict[str, str]):
        self.site, self.daemon, self.nodes = site, daemon, nodes

    def get(self, query: str = "", path: str = "json-pushes", status: int = 200):
        code, headers, body = fetch(f"{self.daemon.url}/alice/jp/{path}{query}")
        assert code == status, (query, code, body)
        assert headers["Content-Type"].startswith("application/json"), headers
        return json.loads(body)

    def ids(self, query: str) -> list[str]:
        return sorted(self.get(query), key=int)


@pytest.fixture(scope="module")
def jp(tmp_path_factory):
    root = tmp_path_factory.mktemp("jp")
    site = site_handle(root)
    site.cli("init")
    for name in ("alice", "bob", "dave"):
        site.add_user(name)
    cli_all(site, ["repo", "create", "alice/jp"], ["repo", "create", "alice/empty"])
    cli_all(site, ["grant", "alice/jp", "bob", "write"], ["grant", "alice/jp", "dave", "write"])
    wc = root / "wc"
    site.hg("init", str(wc))
    target = str(site.repo_path("alice/jp"))
    nodes = {"a1": commit(site.hg, wc, "a1.txt", "1\n", "first")}
    nodes["a2"] = commit(site.hg, wc, "a2.txt", "2\n", "second")
    site.hg("push", "-q", target, cwd=wc, user="alice")
    nodes["d1"] = commit(site.hg, wc, "d1.txt", "3\n", "third", branch="stable")
    site.hg("tag", "-q", "-d", "2020-01-01 00:00:00 +0000", "-r", nodes["a1"], "v1.0", cwd=wc)
    nodes["t1"] = site.hg("log", "-r", ".", "-T", "{node}", cwd=wc).stdout
    site.hg("push", "-q", "--new-branch", target, cwd=wc, user="dave")
    site.hg("bookmark", "-r", nodes["a2"], "release", cwd=wc)
    site.hg("push", "-q", "-B", "release", target, cwd=wc, user="bob", check=False)
    site.hg("update", "-q", "-r", nodes["a2"], cwd=wc)
    nodes["e1"] = commit(site.hg, wc, "e1.txt", "4\n", "fourth")
    site.hg("push", "-q", "-f", target, cwd=wc, user="alice")
    daemon = Daemon(site)
    yield JP(site, daemon, nodes)
    daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]


def test_setup_recorded_four_pushes(jp):
    """The fixture's four pushes, the third bookmark-only, are in the CLI's push log."""
    rows = jp.site.cli_json("pushlog", "alice/jp")
    assert sorted(r["id"] for r in rows) == [1, 2, 3, 4]
    third = next(r for r in rows if r["id"] == 3)
    assert third["changesets"] == [] and third["bookmarks"][0]["name"] == "release"


def test_json_pushes(jp):
    """Versions 1 and 2, startID/endID (exclusive/inclusive), changeset, fromchange/tochange, user, full, tipsonly and startdate/enddate as hg.mozilla.org answers them (moved from test_http, updated: the bookmark-only push is left out, a tochange without a start is ignored as Mozilla does)."""
    n = jp.nodes
    v1 = jp.get()
    assert sorted(v1) == ["1", "2", "4"]
    assert v1["1"]["changesets"] == [n["a1"], n["a2"]] and v1["1"]["user"] == "alice"
    assert v1["2"]["changesets"] == [n["d1"], n["t1"]] and v1["2"]["user"] == "dave"
    assert v1["4"]["changesets"] == [n["e1"]]
    for push in v1.values():
        assert isinstance(push["date"], int) and abs(push["date"] - time.time()) < 3600
    assert jp.get("?version=2") == {"lastpushid": 4, "pushes": v1}
    assert jp.get("?version=1") == v1

    assert jp.ids("?startID=1&endID=2") == ["2"]
    assert jp.ids("?startID=0&endID=4") == ["1", "2", "4"]
    assert jp.ids("?startID=2") == ["4"]
    assert jp.get("?version=2&startID=4") == {"lastpushid": 4, "pushes": {}}
    assert jp.ids(f"?changeset={n['d1']}") == ["2"]
    assert jp.ids(f"?changeset={n['a2'][:12]}&changeset={n['d1']}") == ["1", "2"]
    assert jp.ids(f"?fromchange={n['a1']}&tochange={n['d1']}") == ["2"]
    assert jp.ids(f"?fromchange={n['a2']}") == ["2", "4"]
    assert jp.ids(f"?tochange={n['a1']}") == ["1", "2", "4"]  # no start: the last pushes
    assert jp.ids("?user=dave") == ["2"]
    assert jp.ids("?user=alice&user=bob") == ["1", "4"]

    full = jp.get("?full=1&startID=0&endID=1")
    cs = full["1"]["changesets"]
    assert [c["node"] for c in cs] == [n["a1"], n["a2"]]
    assert set(cs[1]) >= {"author", "desc", "branch", "parents", "tags", "files", "node"}
    assert cs[1]["author"] == "test <test@example.org>" and cs[1]["desc"] == "second"
    assert cs[1]["branch"] == "default" and cs[1]["files"] == ["a2.txt"]
    assert cs[1]["parents"] == [n["a1"]] and cs[0]["parents"] == ["0" * 40]
    assert cs[0]["tags"] == ["v1.0"] and cs[1]["tags"] == []  # bookmarks are not tags

    tips = jp.get("?tipsonly=1")
    assert {k: v["changesets"] for k, v in tips.items()} == {"1": [n["a2"]], "2": [n["t1"]], "4": [n["e1"]]}

    fmt = "%Y-%m-%d %H:%M:%S +0000"
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime(fmt)
    in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).strftime(fmt)
    q = urllib.parse.urlencode
    assert jp.ids("?" + q({"startdate": hour_ago, "enddate": in_an_hour})) == ["1", "2", "4"]
    assert jp.get("?" + q({"startdate": in_an_hour})) == {}
    assert jp.get("?" + q({"enddate": hour_ago, "startID": 0})) == {}


def test_treeherder_and_mozregression_urls(jp):
    """Treeherder's ``json-pushes/?full=1&version=2`` (trailing slash) and mozregression's ``fromchange``/``tochange``/``full=1`` answer with the fields they read; every push has ``changesets[-1]``."""
    doc = jp.get("?full=1&version=2", path="json-pushes/")
    assert doc["lastpushid"] == 4
    newest = doc["pushes"][str(max(map(int, doc["pushes"])))]
    assert newest["changesets"][-1]["node"] == jp.nodes["e1"]
    for push in doc["pushes"].values():
        assert push["changesets"][-1]["node"] and push["user"] and push["date"]
        assert {"author", "desc"} <= set(push["changesets"][-1])
    moz = jp.get(f"?fromchange={jp.nodes['a2']}&tochange={jp.nodes['e1']}&full=1")
    assert sorted(moz) == ["2", "4"] and moz["4"]["changesets"][-1]["desc"] == "fourth"


def test_bookmark_only_push_left_out(jp):
    """A push without changesets (bookmark-only) is in no json-pushes answer, whatever the query; ``lastpushid`` stays the highest id; the push log page still shows it."""
    for query in ("", "?version=2", "?startID=2&endID=3", "?user=bob", "?tipsonly=1", "?full=1"):
        doc = jp.get(query)
        pushes = doc["pushes"] if "lastpushid" in doc else doc
        assert "3" not in pushes, query
        assert all(p["changesets"] for p in pushes.values()), query
    assert jp.get("?version=2&user=bob") == {"lastpushid": 4, "pushes": {}}
    status, _, body = fetch(f"{jp.daemon.url}/alice/jp/pushlog")
    assert status == 200 and b"bookmark release" in body


@pytest.mark.parametrize("rev, pushes", [
    ("tip", ["4"]), ("v1.0", ["1"]), ("stable", ["2"]), ("release", ["1"]), ("0", ["1"]), ("3", ["2"]),
    ("default", ["4"]),
])
def test_revisions_by_any_name(jp, rev, pushes):
    """``changeset=`` takes what Mercurial resolves: ``tip``, a tag, a branch (its head), a bookmark, a revision number."""
    assert jp.ids("?" + urllib.parse.urlencode({"changeset": rev})) == pushes


def test_fromchange_tochange_by_name(jp):
    """``fromchange``/``tochange`` take names too: after the push holding v1.0 (a1, push 1) up to tip's."""
    assert jp.ids("?fromchange=v1.0&tochange=tip") == ["2", "4"]
    assert jp.ids("?fromchange=release&tochange=stable") == ["2"]


@pytest.mark.parametrize("query, status, message", [
    ("?changeset=nope", 404, "unknown revision 'nope'"),
    ("?fromchange=deadbeef", 404, "unknown revision 'deadbeef'"),
    ("?startID=0&tochange=nope", 404, "unknown revision 'nope'"),
    ("?version=3", 400, "version parameter must be 1 or 2"),
    ("?startdate=not+a+date", 400, "cannot parse date 'not a date'"),
    ("?startID=abc", 400, None),
    ("?changeset=" + "f" * 300, 404, None),
])
def test_errors_are_json(jp, query, status, message):
    """Errors answer ``application/json`` ``{"error": ...}`` with their status (mozregression calls ``.json()`` before the status); an unknown revision is 404 ``unknown revision 'X'``."""
    doc = jp.get(query, status=status)
    assert list(doc) == ["error"] and doc["error"]
    if message is not None:
        assert doc["error"] == message


def test_empty_repository_and_full_with_any_value(jp):
    """As test-empty-repo.t: an empty repository answers ``{}`` and ``{"lastpushid": 0, "pushes": {}}``; ``full`` counts whatever its value (``full=0`` too); a ``fromchange`` no push holds starts at 0."""
    code, _, body = fetch(f"{jp.daemon.url}/alice/empty/json-pushes")
    assert code == 200 and json.loads(body) == {}
    code, _, body = fetch(f"{jp.daemon.url}/alice/empty/json-pushes?version=2")
    assert code == 200 and json.loads(body) == {"lastpushid": 0, "pushes": {}}
    for value in ("full", "full=0", "full=1"):
        assert jp.get(f"?{value}&startID=3")["4"]["changesets"][0]["desc"] == "fourth", value
    assert jp.ids("?fromchange=null&endID=2") == ["1", "2"]


def test_page_in_the_path(jp):
    """``json-pushes/N`` (and ``?node=N``) is page N of the last pushes, 10 a page: page 2 of three pushes is empty, page 1 is the default."""
    assert jp.get("?version=2", path="json-pushes/2") == {"lastpushid": 4, "pushes": {}}
    assert jp.get("?node=2") == {}
    assert jp.get(path="json-pushes/1") == jp.get()
    assert jp.get(path="json-pushes/x", status=404) == {"error": "not found"}


def test_mozilla_dates(jp):
    """``startdate``/``enddate`` take ``YYYY-MM-DD[ HH[:MM[:SS]]]`` in the server's local time, an hour alone meaning HH:00."""
    now = time.time()
    later = time.localtime(now + 7200)
    earlier = time.localtime(now - 7200)
    hour = lambda t: time.strftime("%Y-%m-%d %H", t)  # noqa: E731
    q = urllib.parse.urlencode
    assert jp.ids("?" + q({"startdate": hour(earlier), "enddate": hour(later)})) == ["1", "2", "4"]
    assert jp.get("?" + q({"startdate": hour(later)})) == {}
    assert jp.ids("?" + q({"startdate": time.strftime("%Y-%m-%d %H:%M", earlier)})) == ["1", "2", "4"]
    assert jp.ids("?" + q({"startdate": time.strftime("%Y-%m-%d", time.localtime(now - 2 * 86400))})) \
        == ["1", "2", "4"]
    assert jp.get("?" + q({"startdate": "2020-13-01"}), status=400)["error"].startswith("cannot parse date")


def test_pushloghtml_shows_the_range(jp):
    """``pushloghtml?fromchange=A&tochange=B`` (the links Mozilla's tools print) is our push log page for that range; an unknown revision is 404."""
    n = jp.nodes
    status, headers, body = fetch(f"{jp.daemon.url}/alice/jp/pushloghtml?fromchange={n['a2']}&tochange={n['d1']}")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    shown = re.findall(r'<a class="node"[^>]*>([0-9a-f]{12})</a>', body.decode())  # a summary may name others
    assert n["d1"][:12] in shown and n["t1"][:12] in shown
    assert n["a1"][:12] not in shown and n["e1"][:12] not in shown
    status, _, body = fetch(f"{jp.daemon.url}/alice/jp/pushloghtml")
    shown = re.findall(r'<a class="node"[^>]*>([0-9a-f]{12})</a>', body.decode())
    assert status == 200 and n["e1"][:12] in shown and n["a1"][:12] in shown
    assert fetch(f"{jp.daemon.url}/alice/jp/pushloghtml?fromchange=nope")[0] == 404


def test_schema_step_3_adds_the_reader_indexes(tmp_path):
    """A version-2 site gets the push readers' indexes from ``hg-hosting init`` (schema step 3)."""
    site = site_handle(tmp_path)
    site.cli("init")
    db = sqlite3.connect(next(site.root.glob("*.db")))
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'push'")}
    new = {"push_repository_id_state_push_id", "push_repository_id_state_date"}
    assert new <= names
    for name in new:
        db.execute(f"DROP INDEX {name}")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.commit()
    assert "schema version 2" in site.refuse("user", "list")
    site.cli("init")
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'push'")}
    assert new <= names
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [(str(pushdb.SCHEMA_VERSION),)]



def insert_pushes(db_path, repository_id: int, shapes: str, state: str = "done") -> None:
    """Push records made by the push path's own writer (:func:`pushdb.insert_push`), one per
    character of ``shapes``: ``c`` adds a (fake) changeset, ``b`` only moves a bookmark."""
    conn = pushdb.SqliteConnection(str(db_path), 10_000)
    with conn.write():
        for i, shape in enumerate(shapes):
            nodes = [f"{repository_id:08x}{i:032x}"] if shape == "c" else []
            marks = [] if nodes else [("mark", None, None)]
            pushdb.insert_push(conn, repository_id, "bot", "", "{}", nodes, marks, state=state)
    conn.conn.close()


def test_deep_pages_leave_out_bookmark_only_pushes(jp):
    """``json-pushes/N`` and ``?node=N`` hold the Nth ten of the pushes with changesets, newest first, whatever bookmark-only pushes lie between them; a push still pending is in no page and ``lastpushid`` is the highest done id."""
    site = jp.site
    site.cli("repo", "create", "alice/deep")
    db_path = next(site.root.glob("*.db"))
    with sqlite3.connect(db_path) as db:
        ((repository_id,),) = db.execute("SELECT id FROM repository WHERE name = 'deep'")
    shapes = "ccbcccbbccccbccccccbcccbccccccccbcc"
    insert_pushes(db_path, repository_id, shapes)
    insert_pushes(db_path, repository_id, "c", state="pending")
    with_changesets = [str(i + 1) for i, shape in enumerate(shapes) if shape == "c"][::-1]
    pages = [with_changesets[i:i + 10] for i in range(0, len(with_changesets), 10)] + [[]]
    url = f"{jp.daemon.url}/alice/deep/json-pushes"
    for number, expected in enumerate(pages, 1):
        status, _, body = fetch(f"{url}/{number}?version=2")
        doc = json.loads(body)
        assert status == 200 and doc["lastpushid"] == len(shapes)
        assert sorted(doc["pushes"], key=int, reverse=True) == expected, number
        status, _, body = fetch(f"{url}?node={number}")
        assert status == 200 and sorted(json.loads(body), key=int, reverse=True) == expected
    status, _, body = fetch(f"{url}?startID=0")
    assert sorted(json.loads(body), key=int, reverse=True) == with_changesets


def test_schema_step_11_numbers_the_pushes_with_changesets(tmp_path):
    """A version-10 site gets ``push.cset_seq`` from ``hg-hosting init`` (schema step 11): the pushes with changesets numbered 1, 2... per repository in push order, the others NULL, with its index; new pushes continue the numbering."""
    site = site_handle(tmp_path)
    site.cli("init")
    site.add_user("alice")
    cli_all(site, ["repo", "create", "alice/one"], ["repo", "create", "alice/two"])
    db_path = next(site.root.glob("*.db"))
    db = sqlite3.connect(db_path, isolation_level=None)
    ids = dict(db.execute("SELECT name, id FROM repository"))
    insert_pushes(db_path, ids["one"], "cbcc")
    insert_pushes(db_path, ids["two"], "bbcb")

    def numbers() -> dict[int, list]:
        rows = db.execute("SELECT repository_id, cset_seq FROM push ORDER BY repository_id, push_id")
        found: dict[int, list] = {}
        for rid, seq in rows:
            found.setdefault(rid, []).append(seq)
        return found

    made = numbers()
    assert made == {ids["one"]: [1, None, 2, 3], ids["two"]: [None, None, 1, None]}
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'push'")}
    assert "push_repository_id_state_cset_seq" in indexes
    db.execute("DROP INDEX push_repository_id_state_cset_seq")
    db.execute("ALTER TABLE push DROP COLUMN cset_seq")
    db.execute("UPDATE meta SET value = '10' WHERE key = 'schema_version'")
    assert "schema version 10" in site.refuse("user", "list")
    site.cli("init")
    assert numbers() == made
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'push'")}
    assert "push_repository_id_state_cset_seq" in indexes
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [(str(pushdb.SCHEMA_VERSION),)]
    insert_pushes(db_path, ids["two"], "cb")
    assert numbers()[ids["two"]] == [None, None, 1, None, 2, None]


def test_check_repair_renumbers_the_pushes_with_changesets(tmp_path):
    """When ``check --repair`` takes a push's last changesets (gone from the repository) and keeps the push for its bookmark, the push loses its number and the later pushes with changesets close the gap, so json-pushes' pages stay windows of the numbers."""
    site = site_handle(tmp_path)
    site.cli("init")
    site.add_user("alice")
    site.cli("repo", "create", "alice/mend")
    target = str(site.repo_path("alice/mend"))
    wc = tmp_path / "wc"
    site.hg("init", str(wc))
    commit(site.hg, wc, "a", "1\n")
    site.hg("push", "-q", target, cwd=wc, user="alice")
    db_path = next(site.root.glob("*.db"))
    db = sqlite3.connect(db_path, isolation_level=None)
    ((repository_id,),) = db.execute("SELECT id FROM repository WHERE name = 'mend'")
    conn = pushdb.SqliteConnection(str(db_path), 10_000)
    with conn.write():  # push 2: a changeset the repository never got, and a bookmark move
        pushdb.insert_push(conn, repository_id, "bot", "", "{}", ["f" * 40], [("m", None, None)], state="done")
    conn.conn.close()
    commit(site.hg, wc, "b", "2\n")
    site.hg("push", "-q", target, cwd=wc, user="alice")
    numbers = "SELECT push_id, cset_seq FROM push WHERE repository_id = ? ORDER BY push_id"
    assert db.execute(numbers, (repository_id,)).fetchall() == [(1, 1), (2, 2), (3, 3)]
    site.cli("check", "--repair", check=False)
    assert db.execute(numbers, (repository_id,)).fetchall() == [(1, 1), (2, None), (3, 2)]

# -- the cost does not grow with the history ---------------------------------------------------

def sqlite_steps(site, monkeypatch, paths: list[str]) -> dict[str, dict]:
    """SQLite VM steps (in hundreds) of each request through the daemon's WSGI application,
    run in this process on the site (its database passed in)."""
    from insite import opened

    from daemon.service import make_app
    from hgext_hosting import models

    result = {}
    with opened(site, monkeypatch) as opened_site:
        app = make_app(opened_site)
        connection = models.database().connection()
        steps = [0]

        def count():
            steps[0] += 1
            return 0

        said: list[str] = []

        def start_response(status, headers, exc_info=None):
            said.append(status)

        connection.set_progress_handler(count, 100)
        try:
            for path in paths:
                environ = {"REQUEST_METHOD": "GET", "REQUEST_URI": path, "REMOTE_ADDR": "127.0.0.1",
                           "SERVER_NAME": "localhost", "SERVER_PORT": "80", "wsgi.url_scheme": "http"}
                list(app(environ, start_response))  # warm
                steps[0] = 0
                body = b"".join(app(environ, start_response))
                result[path] = {"status": said[-1], "hsteps": steps[0], "bytes": len(body)}
        finally:
            connection.set_progress_handler(None, 100)
            models.database().close()
    return result


BIG = 200_000
START = datetime(2020, 1, 1)


def fill_pushes(db_path, repository_id: int, count: int) -> None:
    """``count`` done push records, one fake changeset each, in one transaction."""
    db = sqlite3.connect(db_path)
    with db:
        db.executemany(
            'INSERT INTO push (repository_id, push_id, "user", date, state, txnid, details)'
            " VALUES (?, ?, 'bot', ?, 'done', '', '{}')",
            ((repository_id, i, str(START + timedelta(seconds=i))) for i in range(1, count + 1)),
        )
        db.execute("UPDATE push SET cset_seq = push_id WHERE repository_id = ?", (repository_id,))
        db.execute(
            "INSERT INTO push_changeset (push_id, position, node)"
            " SELECT id, 0, printf('%040x', push_id) FROM push WHERE repository_id = ?",
            (repository_id,),
        )
    db.close()


def test_readers_cost_does_not_grow_with_the_history(tmp_path, monkeypatch):
    """json-pushes (last pushes, a range of ids, a range of dates, version 2, a deep page), the push log's newest, a deep and the last page, the overview, pushloghtml and a deep page of the API's pushes run within 1.5x the SQLite steps (+2,000 steps) on a repository of 200,000 pushes as on one of a single push."""
    site = site_handle(tmp_path)
    site.cli("init")
    site.add_user("alice")
    cli_all(site, ["repo", "create", "alice/small"], ["repo", "create", "alice/big"])
    db_path = next(site.root.glob("*.db"))
    db = sqlite3.connect(db_path)
    ids = dict(db.execute("SELECT name, id FROM repository"))
    db.close()
    fill_pushes(db_path, ids["small"], 1)
    fill_pushes(db_path, ids["big"], BIG)
    paths = {
        "json-pushes": "json-pushes",
        "json-pushes v2": "json-pushes?version=2",
        "json-pushes ids": "json-pushes?version=2&startID={mid}&endID={mid10}",
        "json-pushes dates": "json-pushes?startdate=2020-01-01+00:00:00+%2B0000&enddate=2020-01-01+00:00:11+%2B0000",
        "pushlog": "pushlog",
        "pushlog deep": "pushlog?page={deep}",
        "pushlog last": "pushlog?page={last}",
        "overview": "",
        "pushloghtml ids": "pushloghtml?startID={mid}&endID={mid10}",
        "json-pushes deep page": "json-pushes/{jpdeep}?version=2",
        "api pushes deep page": "../../api/v1/repos/alice/{name}/pushes?per_page=1&page={apideep}",
    }
    small = {"name": "small", "mid": 0, "mid10": 1, "deep": 1, "last": 1, "jpdeep": 1, "apideep": 1}
    big = {"name": "big", "mid": BIG // 2, "mid10": BIG // 2 + 10, "deep": BIG // 40, "last": BIG // 20,
           "jpdeep": BIG // 20, "apideep": BIG // 2}
    urls = [normpath(f"/alice/small/{p.format(**small)}").rstrip("/") for p in paths.values()]
    urls += [normpath(f"/alice/big/{p.format(**big)}").rstrip("/") for p in paths.values()]
    result = sqlite_steps(site, monkeypatch, urls)
    problems = []
    for name, small_url, big_url in zip(paths, urls[: len(paths)], urls[len(paths):], strict=True):
        one, many = result[small_url], result[big_url]
        print(f"{name}: {one['hsteps'] * 100} steps for 1 push, {many['hsteps'] * 100} for {BIG:,}")
        assert one["status"].startswith("200") and many["status"].startswith("200"), (name, one, many)
        if many["hsteps"] > 1.5 * one["hsteps"] + 20:
            problems.append(f"{name}: {many['hsteps'] * 100} steps against {one['hsteps'] * 100}")
    assert not problems, "\n".join(problems)


# -- the same on PostgreSQL ---------------------------------------------------------------------

def test_json_pushes_and_pages_on_postgresql(pg_site, tmp_path):
    """On PostgreSQL: json-pushes by revision names, ranges and dates, the bookmark-only push left out, JSON errors, the push log page and pushloghtml."""
    site = pg_site
    site.add_user("alice")
    site.cli("repo", "create", "alice/pg")
    repo = str(site.repo_path("alice/pg"))
    wc = tmp_path / "wc"
    site.hg("init", str(wc))
    first = commit(site.hg, wc, "a", "a\n")
    site.hg("push", "-q", repo, cwd=wc, user="alice")
    second = commit(site.hg, wc, "b", "b\n")
    site.hg("push", "-q", repo, cwd=wc, user="alice")
    site.hg("bookmark", "-q", "-r", first, "mark", cwd=wc)
    site.hg("push", "-q", "-B", "mark", repo, cwd=wc, user="alice", check=False)
    daemon = Daemon(site)
    try:
        def get(query: str, path: str = "json-pushes", status: int = 200):
            code, headers, body = fetch(f"{daemon.url}/alice/pg/{path}{query}")
            assert code == status, (query, code, body)
            return json.loads(body) if headers["Content-Type"].startswith("application/json") else body.decode()

        doc = get("?version=2")
        assert doc["lastpushid"] == 3 and sorted(doc["pushes"]) == ["1", "2"]
        assert doc["pushes"]["2"]["changesets"] == [second]
        assert sorted(get("?changeset=tip")) == ["2"] and sorted(get("?changeset=mark")) == ["1"]
        assert sorted(get("?fromchange=0&tochange=tip")) == ["2"]
        assert sorted(get("?startdate=2000-01-01&enddate=2999-01-01")) == ["1", "2"]
        assert get("?changeset=nope", status=404) == {"error": "unknown revision 'nope'"}
        assert get("?version=2", path="json-pushes/2") == {"lastpushid": 3, "pushes": {}}
        page = get("", path="pushlog")
        assert "(3 pushes)" in page and "bookmark mark" in page and second[:12] in page
        page = get(f"?fromchange={first}&tochange={second}", path="pushloghtml")
        assert second[:12] in page and first[:12] + "</a>" not in page
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]


def test_push_log_pages_are_windows_of_ids(jp):
    """Page N of the push log holds push ids top-20(N-1) down to top-20N+1: 45 pushes make 3 pages; with push 30 dropped (``check --repair`` after a strip) page 1 shows 19, and no page repeats another's push."""
    site, daemon = jp.site, jp.daemon
    site.cli("repo", "create", "alice/gaps")
    db_path = next(site.root.glob("*.db"))
    with sqlite3.connect(db_path) as db:
        ((repository_id,),) = db.execute("SELECT id FROM repository WHERE name = 'gaps'")
    fill_pushes(db_path, repository_id, 45)
    with sqlite3.connect(db_path) as db:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("DELETE FROM push WHERE push_id = 30")
    seen = []
    for page, count in ((1, 19), (2, 20), (3, 5)):
        status, _, body = fetch(f"{daemon.url}/alice/gaps/pushlog?page={page}")
        text = body.decode()
        assert status == 200 and f"page {page} of 3" in text
        ids = [int(x) for x in re.findall(r'<a class="pushid"[^>]*>(\d+)</a>', text)]
        assert len(ids) == count, (page, ids)
        seen += ids
    assert sorted(seen) == [i for i in range(1, 46) if i != 30]
    assert "Traceback" not in daemon.log()


# -- evolution: obsolete changesets ----------------------------------------------------

EVOLVE = ("--config", "extensions.evolve=", "--config", "extensions.topic=")


def test_obsolete_changesets_amend_and_prune(jp, tmp_path):
    """As Mozilla's pushlog: changesets obsolete now (hidden) move from ``changesets`` to ``obsoletechangesets`` (a push left with none still listed, ``changesets: []``); ``full`` adds ``precursors`` to a changeset with predecessors; a marker-only push stays out; a repository made publishing later still hides them; a publishing repository is unchanged."""
    site, daemon = jp.site, jp.daemon
    cli_all(site, ["repo", "create", "alice/evo", "--non-publishing"], ["repo", "create", "alice/pub"])
    evo, pub = str(site.repo_path("alice/evo")), str(site.repo_path("alice/pub"))
    hg = lambda *a, **k: site.hg(*EVOLVE, *a, **k)  # noqa: E731
    wc = tmp_path / "wc"
    hg("init", str(wc))
    root = commit(hg, wc, "root.txt", "0\n", "root")
    old = commit(hg, wc, "c1.txt", "1\n", "first")
    hg("push", "-q", evo, cwd=wc, user="alice")  # push 1: root, old
    (wc / "c1.txt").write_text("1 amended\n")
    hg("amend", "-q", "-d", "2020-01-01 00:00:00 +0000", cwd=wc)
    new = hg("log", "-r", ".", "-T", "{node}", cwd=wc).stdout
    hg("push", "-q", evo, cwd=wc, user="alice")  # push 2: new, and the marker old -> new
    pruned = commit(hg, wc, "c2.txt", "2\n", "second")
    hg("push", "-q", evo, cwd=wc, user="alice")  # push 3
    hg("prune", "-q", "-r", pruned, cwd=wc)
    hg("push", "-q", evo, cwd=wc, user="alice", check=False)  # push 4: the prune marker only
    # The publishing one, by a client without evolve (a local push would load it on both ends).
    site.hg("push", "-q", "-r", new, pub, cwd=wc, user="alice")

    def get(full: str, query: str = "") -> dict:
        code, _, body = fetch(f"{daemon.url}/{full}/json-pushes{query}")
        assert code == 200, body
        return json.loads(body)

    v1 = get("alice/evo")
    assert v1 == {
        "1": {"changesets": [root], "obsoletechangesets": [old], "date": v1["1"]["date"], "user": "alice"},
        "2": {"changesets": [new], "date": v1["2"]["date"], "user": "alice"},
        "3": {"changesets": [], "obsoletechangesets": [pruned], "date": v1["3"]["date"], "user": "alice"},
    }
    v2 = get("alice/evo", "?version=2")
    assert v2["lastpushid"] == 4 and v2["pushes"] == v1
    assert get("alice/evo", "?startID=0&endID=1&tipsonly=1") == {"1": v1["1"]}  # root is the tip shown

    # As Mozilla's test-obsolescence-pushlog.t: a hidden changeset names its push in
    # changeset=, fromchange= and tochange= (it is in the push log; hg hides it).
    assert get("alice/evo", f"?changeset={old[:12]}") == {"1": v1["1"]}
    assert get("alice/evo", f"?changeset={pruned}") == {"3": v1["3"]}
    assert get("alice/evo", f"?fromchange={old[:12]}") == {"2": v1["2"], "3": v1["3"]}
    assert get("alice/evo", f"?startID=1&tochange={pruned[:12]}") == {"2": v1["2"], "3": v1["3"]}

    full = get("alice/evo", "?full=1&version=2")["pushes"]
    assert [c["node"] for c in full["1"]["changesets"]] == [root]
    # With full, obsolete changesets are described as the visible ones are (Mozilla's shape).
    (described,) = full["1"]["obsoletechangesets"]
    assert described["node"] == old and described["desc"] == "first" and described["author"]
    assert described["parents"] == [root] and described["files"] == ["c1.txt"]
    assert "precursors" not in full["1"]["changesets"][0]
    assert full["3"]["changesets"] == [] and [c["node"] for c in full["3"]["obsoletechangesets"]] == [pruned]
    (changeset,) = full["2"]["changesets"]
    assert changeset["node"] == new and changeset["precursors"] == [old]
    assert changeset["desc"] == "first" and "obsoletechangesets" not in full["2"]

    # Made publishing later, it keeps its markers and hidden changesets (and evolve).
    site.cli("repo", "set", "alice/evo", "publishing=true")
    assert get("alice/evo") == v1

    published = get("alice/pub", "?full=1")
    assert list(published) == ["1"] and "obsoletechangesets" not in published["1"]
    assert [c["node"] for c in published["1"]["changesets"]] == [root, new]
    assert all("precursors" not in c for c in published["1"]["changesets"])
    assert get("alice/pub")["1"]["changesets"] == [root, new]
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]


def test_the_whole_push_log_of_a_long_history(tmp_path):
    """``hg-hosting pushlog`` without a limit lists every push of a 1,203-push history, each with its own changeset.

    The changesets and bookmarks are read 500 pushes a query
    (``pushlog._IN_CHUNK``, under the smallest limit on a statement's
    parameters SQLite builds have); no push loses or swaps them at a chunk's edge.
    """
    site = site_handle(tmp_path)
    site.cli("init")
    site.add_user("alice")
    site.cli("repo", "create", "alice/long")
    db_path = next(site.root.glob("*.db"))
    db = sqlite3.connect(db_path)
    (repository_id,) = db.execute("SELECT id FROM repository WHERE name = 'long'").fetchone()
    db.close()
    fill_pushes(db_path, repository_id, 1203)
    rows = site.cli_json("pushlog", "alice/long")
    assert [r["id"] for r in rows] == list(range(1203, 0, -1))
    assert [r["changesets"] for r in rows] == [[f"{i:040x}"] for i in range(1203, 0, -1)]


def test_recording_a_push_costs_the_same_after_a_long_history(tmp_path):
    """Recording a push (``pushdb.insert_push``, on every push's path) runs within 1.5x the
    SQLite steps (+2,000) on a repository of 200,000 pushes as on one of a single push:
    its next id and its next ``cset_seq`` are index probes, not a walk of the history."""
    site = site_handle(tmp_path)
    site.cli("init")
    site.add_user("alice")
    cli_all(site, ["repo", "create", "alice/small"], ["repo", "create", "alice/big"])
    db_path = next(site.root.glob("*.db"))
    db = sqlite3.connect(db_path)
    ids = dict(db.execute("SELECT name, id FROM repository"))
    db.close()
    fill_pushes(db_path, ids["small"], 1)
    fill_pushes(db_path, ids["big"], BIG)
    conn = pushdb.SqliteConnection(str(db_path), 5000)
    steps = {}
    for name in ("small", "big"):
        count = [0]

        def step(count=count) -> int:
            count[0] += 1
            return 0

        conn.conn.set_progress_handler(step, 100)
        conn.conn.execute("BEGIN IMMEDIATE")
        try:
            _, push_id = pushdb.insert_push(conn, ids[name], "alice", "t", "{}", ["ab" * 20], [])
        finally:
            conn.conn.execute("ROLLBACK")
            conn.conn.set_progress_handler(None, 100)
        assert push_id == (2 if name == "small" else BIG + 1)
        steps[name] = count[0]
    assert steps["big"] <= 1.5 * steps["small"] + 20, steps
