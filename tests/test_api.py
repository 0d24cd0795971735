"""The REST API (/api/v1): every operation as anonymous, reader, writer, repository
admin and site admin, and with each token scope; its conventions; bad input.

One site and one daemon for the module.  The cast:

- ``alice`` owns ``alice/demo`` (public, with history) and ``alice/secret`` (private);
- ``bob`` holds ``write`` on alice/demo, ``carol`` ``read``; ``dave`` nothing;
- ``root`` is a site admin.

Each of them has a token of every scope (``TOKENS[user][scope]``), made with
``hg-hosting token create --scope``.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import urllib.parse

import pytest
from conftest import HG_HOSTING, Daemon, commit, site_handle
from pushhelpers import cli_all, run_all
from test_auth import PASSWORDS, add_users, db_query, request, session_cookie

USERS = ("alice", "bob", "carol", "dave")
SCOPES = ("read", "write", "admin")


class Api:
    """The daemon, the site, and a token of each scope for each user."""

    def __init__(self, site, daemon, tokens, nodes, tmp):
        self.site, self.daemon, self.tokens, self.nodes, self.tmp = site, daemon, tokens, nodes, tmp

    def call(self, method: str, path: str, who: str | None = None, scope: str = "write", body=None,
             headers: dict[str, str] | None = None, raw: bytes | None = None):
        """``(status, headers, parsed body)`` of one request; ``who`` None is anonymous."""
        h = dict(headers or {})
        if who is not None:
            h["Authorization"] = f"Bearer {self.tokens[who][scope]}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        status, hdrs, payload = request(self.daemon, method, "/api/v1" + path, h, data)
        ctype = dict((k.lower(), v) for k, v in hdrs).get("content-type", "")
        parsed = json.loads(payload) if payload and ctype.startswith("application/json") else payload
        return status, {k.lower(): v for k, v in hdrs}, parsed

    def get(self, path: str, who: str | None = None, scope: str = "read", **kw):
        return self.call("GET", path, who, scope, **kw)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    site = site_handle(tmp)
    site.cli("init")
    add_users(site, {name: PASSWORDS[name] for name in ("alice", "bob")})
    cli_all(site, ["user", "add", "carol"], ["user", "add", "dave"], ["user", "add", "root", "--admin"],
            ["team", "add", "devs"])
    cli_all(site, ["team", "member-add", "devs", "bob"], ["repo", "create", "alice/secret", "--private"],
            ["repo", "create", "alice/demo", "--description", "the demo"])
    cli_all(site, ["grant", "alice/demo", "bob", "write"], ["grant", "alice/demo", "carol", "read"])
    argvs = [[HG_HOSTING, "--site", str(site.root), "token", "create", user, "--scope", scope, "--label", scope]
             for user in (*USERS, "root") for scope in SCOPES]
    outputs = iter(run_all(argvs, site.env))
    tokens = {user: {scope: next(outputs).strip() for scope in SCOPES} for user in (*USERS, "root")}
    wc = tmp / "wc"
    site.hg("clone", "-q", str(site.repo_path("alice/demo")), str(wc))
    nodes = [commit(site.hg, wc, "README.txt", "hello\n", "first")]
    nodes.append(commit(site.hg, wc, "src/main.py", "print('hi')\n", "second"))
    site.hg("tag", "-q", "-d", "2020-01-01 00:00:00 +0000", "v1", "-r", nodes[1], cwd=wc)
    site.hg("bookmark", "-q", "-r", nodes[1], "stable", cwd=wc)
    site.hg("push", "-q", "-B", "stable", str(site.repo_path("alice/demo")), cwd=wc, user="alice")
    nodes.append(commit(site.hg, wc, "feature.txt", "f\n", "on a branch", branch="feature"))
    site.hg("push", "-q", "--new-branch", str(site.repo_path("alice/demo")), cwd=wc, user="bob")
    daemon = Daemon(site)
    yield Api(site, daemon, tokens, nodes, tmp)
    daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]


def error_of(body) -> dict:
    assert set(body) == {"error"}, body
    assert set(body["error"]) <= {"status", "message", "field"}
    return body["error"]


# -- the document -------------------------------------------------------------------------------


def test_the_document_is_generated_from_the_route_table(api):
    from daemon.api import routes

    status, headers, doc = api.get("/openapi.json")
    assert status == 200 and doc["openapi"] == "3.1.0"
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert documented == {(r.method, "/api/v1" + r.path) for r in routes.ROUTES}
    for path, item in doc["paths"].items():
        for op in item.values():
            assert "default" in op["responses"] and op["x-scope"] in SCOPES, (path, op)


def test_the_document_page_lists_every_operation_without_external_resources(api):
    status, _, page = request(api.daemon, "GET", "/-/api")
    assert status == 200
    html = page.decode()
    from daemon.api import routes

    for route in routes.ROUTES:
        assert f'id="{route.operation_id}"' in html
    # the site's own script (copy buttons, dates) only: nothing from elsewhere
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/-/static/site.js" defer>']
    assert "http://" not in html.replace(api.daemon.url, "")


# -- the caller -------------------------------------------------------------------------------------


def test_user_needs_authentication(api):
    status, headers, body = api.get("/user")
    assert status == 401 and "www-authenticate" in headers
    assert error_of(body) == {"status": 401, "message": "authorization required"}


@pytest.mark.parametrize("scope", SCOPES)
def test_user_with_each_scope(api, scope):
    status, _, body = api.get("/user", "carol", scope)
    assert status == 200 and body["name"] == "carol" and body["is_admin"] is False


def test_basic_with_password_and_with_token(api):
    for secret in (PASSWORDS["alice"], api.tokens["alice"]["read"]):
        auth = "Basic " + base64.b64encode(f"alice:{secret}".encode()).decode()
        status, _, body = api.get("/user", headers={"Authorization": auth})
        assert status == 200 and body["name"] == "alice"


def test_a_wrong_bearer_token_is_401(api):
    status, headers, body = api.get("/user", headers={"Authorization": "Bearer hgh_wrong"})
    assert status == 401 and error_of(body)["status"] == 401


# -- repositories: reading and privacy ----------------------------------------------------------------


def test_listing_shows_what_the_caller_may_read(api):
    status, headers, body = api.get("/repos")
    assert status == 200 and [r["full_name"] for r in body] == ["alice/demo"]
    assert headers["x-total-count"] == "1"
    status, _, body = api.get("/repos", "alice")
    assert [r["full_name"] for r in body] == ["alice/demo", "alice/secret"]
    # the last push's date, per repository (one MAX each), as the repository itself says
    assert body[0]["last_push"] == api.get("/repos/alice/demo")[2]["last_push"] and body[1]["last_push"] is None
    status, _, body = api.get("/repos", "root", "admin")
    assert [r["full_name"] for r in body] == ["alice/demo", "alice/secret"]
    # a write-scoped token of a site admin is no site admin: alice/secret is not theirs
    status, _, body = api.get("/repos", "root", "write")
    assert [r["full_name"] for r in body] == ["alice/demo"]


def test_listing_pages_with_link_headers(api):
    status, headers, body = api.get("/repos?per_page=1&page=2", "alice")
    assert status == 200 and [r["full_name"] for r in body] == ["alice/secret"]
    links = dict((rel, url) for url, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', headers["link"]))
    assert set(links) == {"first", "prev", "last"}
    assert "page=1" in links["prev"] and "per_page=1" in links["last"] and "page=2" in links["last"]
    assert headers["x-total-count"] == "2"


@pytest.mark.parametrize("query, field", [("per_page=101", "per_page"), ("per_page=0", "per_page"),
                                          ("page=0", "page"), ("page=x", "page"),
                                          ("page=99999999999999999999999", "page")])
def test_listing_refuses_pages_out_of_range(api, query, field):
    status, _, body = api.get("/repos?" + query)
    assert status == 422 and error_of(body)["field"] == field


def test_get_repository(api):
    status, headers, body = api.get("/repos/alice/demo")
    assert status == 200 and body["full_name"] == "alice/demo" and body["description"] == "the demo"
    assert body["permission"] == "read" and body["last_push"].endswith("Z")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["created"])
    assert api.get("/repos/alice/demo", "bob", "write")[2]["permission"] == "write"
    assert api.get("/repos/alice/demo", "alice", "read")[2]["permission"] == "read"
    assert api.get("/repos/alice/demo", "alice", "write")[2]["permission"] == "admin"


def test_a_private_repository_is_missing_to_those_who_may_not_read_it(api):
    for who in (None, "dave"):
        secret = api.get("/repos/alice/secret", who)
        missing = api.get("/repos/alice/nothing", who)
        assert secret[0] == missing[0] == (401 if who is None else 404)
        assert error_of(secret[2])["message"].replace("secret", "X") == \
            error_of(missing[2])["message"].replace("nothing", "X")
    assert "www-authenticate" in api.get("/repos/alice/secret")[1]
    for sub in ("pushes", "branches", "grants", "changesets/tip", "raw/tip/README.txt"):
        assert api.get(f"/repos/alice/secret/{sub}", "dave")[0] == 404
        assert api.get(f"/repos/alice/secret/{sub}")[0] == 401
    assert api.get("/repos/alice/secret", "alice")[0] == 200


def test_etag_and_if_none_match(api):
    status, headers, _ = api.get("/repos/alice/demo")
    etag = headers["etag"]
    status, headers2, body = api.get("/repos/alice/demo", headers={"If-None-Match": etag})
    assert status == 304 and body == b"" and headers2["etag"] == etag
    assert api.get("/repos/alice/demo", headers={"If-None-Match": 'W/"other"'})[0] == 200


# -- repositories: writing ----------------------------------------------------------------------------


def repo_rows(api) -> list[tuple]:
    return db_query(api.site, "SELECT o.name, r.name, r.private, r.description FROM repository r"
                              " JOIN owner o ON o.id = r.owner_id ORDER BY 1, 2")


def test_publishing_set_through_the_api(api):
    """Issue 16's API face: a repository made non-publishing at creation, made publishing by PATCH,
    and the .hg/hgrc the pushes obey follows (evolve and topic only while non-publishing)."""
    status, _, body = api.call("POST", "/repos", "bob", body={"owner": "bob", "name": "drafty", "publishing": False})
    assert status == 201 and body["publishing"] is False
    hgrc = api.site.repo_path("bob/drafty") / ".hg" / "hgrc"
    assert "evolve" in hgrc.read_text()
    assert api.call("PATCH", "/repos/bob/drafty", "bob", "read", body={"publishing": True})[0] == 403
    status, _, body = api.call("PATCH", "/repos/bob/drafty", "bob", body={"publishing": True})
    assert status == 200 and body["publishing"] is True
    assert "evolve" not in hgrc.read_text()
    assert [r["publishing"] for r in api.site.cli_json("repo", "list") if r["name"] == "bob/drafty"] == [True]
    assert api.call("DELETE", "/repos/bob/drafty", "bob")[0] == 204


def test_create_update_rename_fork_delete(api):
    status, headers, body = api.call("POST", "/repos", "bob", body={"owner": "bob", "name": "tool",
                                                                    "description": "a tool"})
    assert status == 201 and headers["location"].endswith("/api/v1/repos/bob/tool")
    assert body["full_name"] == "bob/tool" and body["permission"] == "admin"
    status, _, body = api.call("PATCH", "/repos/bob/tool", "bob", body={"private": True})
    assert status == 200 and body["private"] is True and body["description"] == "a tool"
    assert api.get("/repos/bob/tool")[0] == 401
    status, headers, body = api.call("POST", "/repos/bob/tool/rename", "bob", body={"name": "tool2"})
    assert status == 200 and body["full_name"] == "bob/tool2" and headers["location"].endswith("/repos/bob/tool2")
    status, headers, body = api.call("POST", "/repos/alice/demo/fork", "bob", body={"owner": "devs"})
    assert status == 201 and body["full_name"] == "devs/demo"
    assert api.get("/repos/devs/demo/pushes")[2][0]["user"] == "bob"
    # a team member holds write on the team's repository, not admin
    assert api.call("DELETE", "/repos/devs/demo", "bob")[0] == 403
    for full, who, scope in (("bob/tool2", "bob", "write"), ("devs/demo", "root", "admin")):
        status, _, body = api.call("DELETE", f"/repos/{full}", who, scope)
        assert status == 204 and body == b""
    assert ("bob", "tool2", 1, "a tool") not in repo_rows(api)


@pytest.mark.parametrize("who, scope, body, status, field", [
    ("carol", "read", {"owner": "carol", "name": "x"}, 403, None),     # a read-scoped token creates nothing
    ("carol", "write", {"owner": "alice", "name": "x"}, 403, None),    # not carol's to create for
    (None, "read", {"owner": "alice", "name": "x"}, 401, None),
    ("alice", "write", {"owner": "alice", "name": "demo"}, 409, None),  # taken
    ("alice", "write", {"owner": "alice", "name": "../x"}, 422, "name"),
    ("alice", "write", {"owner": "alice"}, 422, "name"),
    ("alice", "write", {"owner": "alice", "name": 5}, 422, "name"),
    ("alice", "write", {"owner": "alice", "name": "x", "extra": 1}, 422, "extra"),
    ("alice", "write", {"owner": "alice", "name": "x", "private": "yes"}, 422, "private"),
])
def test_create_refusals_change_nothing(api, who, scope, body, status, field):
    before = repo_rows(api)
    got, _, answer = api.call("POST", "/repos", who, scope, body=body)
    assert got == status, answer
    error = error_of(answer)
    assert error["status"] == status and error.get("field") == field
    assert repo_rows(api) == before


@pytest.mark.parametrize("raw, ctype, status", [
    (b"{not json", "application/json", 400),
    (b"[1, 2]", "application/json", 422),
    (b'{"owner": NaN}', "application/json", 400),
    (b"[" * 20000 + b"]" * 20000, "application/json", 400),
    (b"\xff\xfe", "application/json", 400),
    (b'{"owner": "alice", "name": "x"}', "text/plain", 415),
    (b"x" * (65 * 1024), "application/json", 413),
])
def test_malformed_bodies_are_4xx_json(api, raw, ctype, status):
    before = repo_rows(api)
    got, headers, body = api.call("POST", "/repos", "alice", raw=raw, headers={"Content-Type": ctype})
    assert got == status and error_of(body)["status"] == status
    assert "Traceback" not in json.dumps(body) and str(api.site.root) not in json.dumps(body)
    assert repo_rows(api) == before


def test_update_needs_the_admin_level_and_a_write_scope(api):
    before = repo_rows(api)
    assert api.call("PATCH", "/repos/alice/demo", "bob", body={"description": "x"})[0] == 403
    assert api.call("PATCH", "/repos/alice/demo", "alice", "read", body={"description": "x"})[0] == 403
    assert api.call("PATCH", "/repos/alice/demo", "dave", body={"description": "x"})[0] == 403
    assert api.call("PATCH", "/repos/alice/secret", "dave", body={"description": "x"})[0] == 404
    assert api.call("DELETE", "/repos/alice/demo", "carol")[0] == 403
    assert api.call("DELETE", "/repos/alice/demo")[0] == 401
    assert repo_rows(api) == before
    status, _, body = api.call("PATCH", "/repos/alice/demo", "root", "admin", body={"description": "by root"})
    assert status == 200 and body["description"] == "by root"
    assert api.call("PATCH", "/repos/alice/demo", "root", "write", body={"description": "x"})[0] == 403
    api.call("PATCH", "/repos/alice/demo", "alice", body={"description": "the demo"})


def test_unknown_paths_and_methods(api):
    status, _, body = api.get("/nothing")
    assert status == 404 and error_of(body)["status"] == 404
    status, headers, body = api.call("PUT", "/repos", "alice", body={})
    assert status == 405 and "GET" in headers["allow"] and "POST" in headers["allow"]
    assert api.get("/repos/a%2Fb/c")[0] == 400
    assert error_of(api.get("/repos/alice/..")[2])["status"] == 400
    assert request(api.daemon, "GET", "/api/v2/repos")[0] == 404


# -- grants and protected refs --------------------------------------------------------------------------


def test_grants(api):
    assert api.call("PUT", "/repos/alice/demo/grants/dave", "alice", body={"level": "read"})[0] == 204
    status, _, body = api.get("/repos/alice/demo/grants", "alice", "write")
    assert {"subject": "dave", "level": "read"} in body
    assert api.call("PUT", "/repos/alice/demo/grants/@devs", "alice", body={"level": "publish"})[0] == 204
    assert api.call("DELETE", "/repos/alice/demo/grants/@devs", "alice")[0] == 204
    assert api.call("DELETE", "/repos/alice/demo/grants/dave", "alice")[0] == 204
    assert api.call("DELETE", "/repos/alice/demo/grants/dave", "alice")[0] == 404
    status, _, body = api.call("PUT", "/repos/alice/demo/grants/nobody", "alice", body={"level": "read"})
    assert status == 422 and error_of(body)["field"] == "subject"
    status, _, body = api.call("PUT", "/repos/alice/demo/grants/dave", "alice", body={"level": "boss"})
    assert status == 422 and error_of(body)["field"] == "level"
    assert api.get("/repos/alice/demo/grants", "carol")[0] == 403
    assert api.get("/repos/alice/demo/grants", "bob")[0] == 403
    assert api.get("/repos/alice/secret/grants", "bob")[0] == 404
    assert api.call("PUT", "/repos/alice/demo/grants/dave", "alice", "read", body={"level": "read"})[0] == 403


def test_protected_refs(api):
    status, _, body = api.call("PUT", "/repos/alice/demo/protected/release/1.0", "alice",
                               body={"allow": ["bob", "@devs"]})
    assert status == 200 and body == {"ref": "release/1.0", "allow": ["bob", "@devs"]}
    assert api.get("/repos/alice/demo/protected", "alice", "write")[2] == [{"ref": "release/1.0",
                                                                            "allow": ["@devs", "bob"]}]
    assert api.get("/repos/alice/demo/protected", "alice", "read")[0] == 403
    assert api.call("PUT", "/repos/alice/demo/protected/x", "bob", body={"allow": ["bob"]})[0] == 403
    status, _, body = api.call("PUT", "/repos/alice/demo/protected/x", "alice", body={"allow": []})
    assert status == 422 and error_of(body)["field"] == "allow"
    assert api.call("DELETE", "/repos/alice/demo/protected/release/1.0", "alice")[0] == 204
    assert api.call("DELETE", "/repos/alice/demo/protected/release/1.0", "alice")[0] == 404
    assert api.get("/repos/alice/demo/protected", "alice", "write")[2] == []


# -- the push log ---------------------------------------------------------------------------------------


def test_pushes(api):
    status, headers, body = api.get("/repos/alice/demo/pushes")
    assert status == 200 and [p["id"] for p in body] == [2, 1] and headers["x-total-count"] == "2"
    assert body[1]["user"] == "alice" and body[1]["changesets"][:2] == api.nodes[:2]
    assert body[0]["user"] == "bob" and body[0]["date"].endswith("Z")
    status, headers, body = api.get("/repos/alice/demo/pushes?per_page=1&page=2")
    assert [p["id"] for p in body] == [1] and 'rel="prev"' in headers["link"]
    assert api.get("/repos/alice/demo/pushes/1")[2]["id"] == 1
    for bad in ("3", "0", "-1", "abc", "99999999999999999999999"):
        status, _, body = api.get(f"/repos/alice/demo/pushes/{bad}")
        assert status == 404 and error_of(body)["status"] == 404, bad


# -- contents ------------------------------------------------------------------------------------------


def test_branches_bookmarks_tags(api):
    assert [b["name"] for b in api.get("/repos/alice/demo/branches")[2]] == ["default", "feature"]
    assert api.get("/repos/alice/demo/bookmarks")[2] == [{"name": "stable", "node": api.nodes[1]}]
    assert api.get("/repos/alice/demo/tags")[2] == [{"name": "v1", "node": api.nodes[1]}]


def test_changesets(api):
    status, _, body = api.get(f"/repos/alice/demo/changesets/{api.nodes[1][:12]}")
    assert status == 200 and body["node"] == api.nodes[1] and body["parents"] == [api.nodes[0]]
    assert body["files"] == ["src/main.py"] and body["phase"] == "public" and body["description"] == "second"
    assert body["date"] == "2020-01-01T00:00:00Z" and body["tags"] == ["v1"] and body["bookmarks"] == ["stable"]
    assert api.get("/repos/alice/demo/changesets/feature")[2]["node"] == api.nodes[2]
    assert api.get("/repos/alice/demo/changesets/stable")[2]["node"] == api.nodes[1]
    for bad in ("nothing", "0" * 40, "null", "all()", "1:2", "wdir()", "ffffffffffffffffffffffffffffffffffffffff"):
        status, _, body = api.get("/repos/alice/demo/changesets/" + urllib.parse.quote(bad, safe=""))
        assert status == 404 and error_of(body)["status"] == 404, bad


def test_raw_files(api):
    status, headers, body = api.get(f"/repos/alice/demo/raw/{api.nodes[1]}/src/main.py")
    assert status == 200 and body == b"print('hi')\n"
    assert headers["content-type"] == "application/octet-stream" and "sandbox" in headers["content-security-policy"]
    assert api.get("/repos/alice/demo/raw/default/README.txt")[2] == b"hello\n"
    for path in ("src", "nothing", "src/../README.txt", "..%2F..%2Fhosting.db", "%2Fetc%2Fpasswd"):
        status, _, body = api.get(f"/repos/alice/demo/raw/default/{path}")
        assert status in (400, 404) and error_of(body)["status"] == status, path
        assert str(api.site.root) not in json.dumps(body)


# -- tokens, keys ------------------------------------------------------------------------------------------


def test_tokens_create_list_delete_and_scopes(api):
    status, headers, body = api.call("POST", "/user/tokens", "dave", body={"label": "ci", "scope": "read"})
    assert status == 201 and body["scope"] == "read" and body["token"].startswith("hgh_")
    assert headers["location"].endswith("/user/tokens/ci")
    assert {"label": "ci", "scope": "read"}.items() <= next(
        t for t in api.get("/user/tokens", "dave")[2] if t["label"] == "ci").items()
    read = {"Authorization": f"Bearer {body['token']}"}
    assert api.get("/user", headers=read)[2]["name"] == "dave"
    # a read-scoped token changes nothing, its own account included
    status, _, answer = api.call("POST", "/user/tokens", headers=read, body={"label": "more"})
    assert status == 403 and "scope" in error_of(answer)["message"]
    # a write-scoped token cannot make an admin-scoped one
    status, _, answer = api.call("POST", "/user/tokens", "dave", body={"label": "x", "scope": "admin"})
    assert status == 403
    assert api.call("DELETE", "/user/tokens/ci", "dave")[0] == 204
    assert api.get("/user", headers=read)[0] == 401
    assert api.call("DELETE", "/user/tokens/ci", "dave")[0] == 404


def test_ssh_keys(api):
    keyfile = api.tmp / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "laptop", "-f", str(keyfile)], check=True)
    status, headers, body = api.call("POST", "/user/keys", "carol", body={"key": (api.tmp / "k.pub").read_text()})
    assert status == 201 and body["comment"] == "laptop" and headers["location"].endswith(f"/user/keys/{body['id']}")
    assert [k["id"] for k in api.get("/user/keys", "carol")[2]] == [body["id"]]
    assert api.call("POST", "/user/keys", "dave", body={"key": (api.tmp / "k.pub").read_text()})[0] == 409
    status, _, answer = api.call("POST", "/user/keys", "carol", body={"key": "ssh-rsa nope"})
    assert status == 422
    assert api.call("DELETE", f"/user/keys/{body['id']}", "dave")[0] == 404
    assert api.call("DELETE", f"/user/keys/{body['id']}", "carol")[0] == 204
    assert api.get("/user/keys", "carol")[2] == []


# -- teams and users -------------------------------------------------------------------------------------------


def test_teams_and_members(api):
    assert [t["name"] for t in api.get("/teams")[2]] == ["devs"]
    assert api.get("/teams/devs/members")[2] == ["bob"]
    assert api.get("/teams/nope")[0] == 404
    assert api.call("POST", "/teams", "alice", body={"name": "ops"})[0] == 403
    assert api.call("POST", "/teams", "root", "write", body={"name": "ops"})[0] == 403
    status, headers, body = api.call("POST", "/teams", "root", "admin", body={"name": "ops"})
    assert status == 201 and headers["location"].endswith("/teams/ops")
    assert api.call("PUT", "/teams/ops/members/carol", "root", "admin")[0] == 204
    assert api.call("PUT", "/teams/ops/members/carol", "root", "admin")[0] == 409
    assert api.get("/teams/ops")[2] == {"name": "ops", "members": ["carol"]}
    assert api.call("DELETE", "/teams/ops/members/carol", "root", "admin")[0] == 204
    assert api.call("DELETE", "/teams/ops", "root", "admin")[0] == 204


def test_users_for_site_admins(api):
    assert api.get("/users", "alice", "admin")[0] == 403
    assert api.get("/users", "root", "write")[0] == 403
    assert api.get("/users")[0] == 401
    status, headers, body = api.get("/users", "root", "admin")
    assert status == 200 and "root" in [u["name"] for u in body]
    status, headers, body = api.call("POST", "/users", "root", "admin", body={"name": "erin", "email": "e@x.org"})
    assert status == 201 and body["name"] == "erin" and headers["location"].endswith("/users/erin")
    status, _, body = api.call("POST", "/users", "root", "admin", body={"name": "erin"})
    assert status == 409
    status, _, body = api.call("POST", "/users", "root", "admin", body={"name": "api"})
    assert status == 422 and error_of(body)["field"] == "name"


def test_disable_and_enable_a_user(api):
    """PUT .../disabled: the user's password stops working at once (403); DELETE: it works again."""
    status, _, body = api.call("POST", "/users", "root", "admin",
                               body={"name": "frank", "password": "frank-api-pw-1"})
    assert status == 201 and body["disabled"] is False
    frank = {"Authorization": "Basic " + base64.b64encode(b"frank:frank-api-pw-1").decode()}
    assert request(api.daemon, "GET", "/api/v1/user", frank)[0] == 200
    assert api.call("PUT", "/users/frank/disabled", "alice", "admin")[0] == 403
    assert api.call("PUT", "/users/frank/disabled", "root", "write")[0] == 403
    assert api.call("PUT", "/users/frank/disabled", "root", "admin")[0] == 204
    status, _, body = request(api.daemon, "GET", "/api/v1/user", frank)
    assert status == 403 and json.loads(body)["error"]["message"] == "this account is disabled"
    assert [u["disabled"] for u in api.get("/users?per_page=100", "root", "admin")[2] if u["name"] == "frank"] == [True]
    assert api.call("PUT", "/users/frank/disabled", "root", "admin")[0] == 204  # idempotent
    assert api.call("PUT", "/users/nobody/disabled", "root", "admin")[0] == 404
    assert api.call("DELETE", "/users/frank/disabled", "root", "admin")[0] == 204
    assert request(api.daemon, "GET", "/api/v1/user", frank)[0] == 200


# -- the session cookie -----------------------------------------------------------------------------------------


def test_session_cookie_writes_need_the_csrf_header(api):
    cookie = session_cookie(api.daemon, "alice")
    status, _, body = api.get("/user", headers={"Cookie": cookie})
    assert status == 200 and body["name"] == "alice"
    before = repo_rows(api)
    status, _, body = api.call("PATCH", "/repos/alice/demo", body={"description": "x"}, headers={"Cookie": cookie})
    assert status == 403 and "X-CSRF-Token" in error_of(body)["message"]
    assert repo_rows(api) == before
    csrf = db_query(api.site, "SELECT csrf FROM session s JOIN owner o ON o.id = s.user_id"
                              " WHERE o.name = 'alice' ORDER BY s.id DESC LIMIT 1")[0][0]
    status, _, body = api.call("PATCH", "/repos/alice/demo", body={"description": "the demo"},
                               headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    assert status == 200


# -- token scopes on the wire protocol ----------------------------------------------------------------------------


def test_a_read_scoped_token_clones_but_cannot_push(api):
    url = api.daemon.url.replace("http://", f"http://bob:{api.tokens['bob']['read']}@") + "/alice/demo"
    wc = api.tmp / "scoped"
    api.site.hg("clone", "-q", url, str(wc))
    commit(api.site.hg, wc, "new.txt", "x\n", "refused")
    proc = api.site.hg("push", url, cwd=wc, check=False)
    assert proc.returncode != 0
    assert "read-scoped" in proc.stdout + proc.stderr
    assert len(api.get("/repos/alice/demo/pushes")[2]) == 2
    url = api.daemon.url.replace("http://", f"http://bob:{api.tokens['bob']['write']}@") + "/alice/demo"
    # the write-scoped token pushes (then the push is undone for the other tests: strip is local)
    assert api.site.hg("push", "-q", url, cwd=wc, check=False).returncode == 0


def test_docs_list_every_operation():
    """docs/api.md's table names every route of the table (and no other)."""
    from pathlib import Path

    from daemon.api import routes

    text = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    listed = set(re.findall(r"^\| `([A-Z]+)` \| `([^`]+)` \|", text, re.M))
    assert listed == {(r.method, r.path) for r in routes.ROUTES}


def test_hidden_changesets_do_not_exist_for_the_api(api):
    """A draft amended in a non-publishing repository: its predecessor is hidden, as for hgweb."""
    site = api.site
    site.cli("repo", "create", "alice/drafts", "--non-publishing")
    evolve = ["--config", "extensions.evolve=", "--config", "phases.publish=False"]
    path = str(site.repo_path("alice/drafts"))
    wc = api.tmp / "drafts"
    site.hg("clone", "-q", path, str(wc), *evolve)
    commit(lambda *a, **k: site.hg(*a, *evolve, **k), wc, "base.txt", "base\n", "base")
    old = commit(lambda *a, **k: site.hg(*a, *evolve, **k), wc, "d.txt", "one\n", "draft")
    site.hg("push", "-q", path, *evolve, cwd=wc, user="alice")
    (wc / "d.txt").write_text("two\n")
    site.hg("amend", "-q", "-d", "2020-01-01 00:00:00 +0000", *evolve, cwd=wc)
    new = site.hg("log", "-r", ".", "-T", "{node}", *evolve, cwd=wc).stdout
    site.hg("push", "-q", path, *evolve, cwd=wc, user="alice")
    status, _, body = api.get(f"/repos/alice/drafts/changesets/{new}")
    assert status == 200 and body["phase"] == "draft"
    for sub in (f"changesets/{old}", f"changesets/{old[:12]}", f"raw/{old}/d.txt"):
        status, _, body = api.get(f"/repos/alice/drafts/{sub}")
        assert status == 404 and error_of(body)["status"] == 404, sub
    assert [b["node"] for b in api.get("/repos/alice/drafts/branches")[2]] == [new]
