"""The API's webhooks (``.../hooks``) and watching (``.../subscription``), issues 13 and 14.

One site and one daemon for the module.  The cast:

- ``alice`` owns ``alice/demo`` (public) and ``alice/secret`` (private);
- ``bob`` holds ``admin`` on alice/demo (a repository admin who is not the owner)
  and is a member of the team ``devs``; ``carol`` holds ``read``; ``dave`` nothing;
- ``root`` is a site admin.

Tokens: ``TOKENS[user][scope]``.  A hook made through the API hears a real push
(a receiver on a loopback port) and its deliveries and redelivery are read and
driven through the API too.
"""

from __future__ import annotations

import json

import pytest
from conftest import HG_HOSTING, commit
from eventsite import FAST_RETRIES, make_site, push_local, receiver_fixture, running  # noqa: F401 - a fixture
from hookreceiver import verify, wait_until
from pushhelpers import run_all
from test_auth import request

GRANTS = {"alice": ("read", "write"), "bob": ("read", "write"), "carol": ("read", "write"),
          "dave": ("write",), "root": ("write", "admin")}


class Api:
    def __init__(self, site, daemon, tokens, tmp):
        self.site, self.daemon, self.tokens, self.tmp = site, daemon, tokens, tmp

    def call(self, method: str, path: str, who: str | None = None, scope: str = "write", body=None):
        """``(status, lower-cased headers, parsed body)``; ``who`` None is anonymous."""
        headers = {"Authorization": f"Bearer {self.tokens[who][scope]}"} if who else {}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        status, hdrs, payload = request(self.daemon, method, "/api/v1" + path, headers, data)
        return status, {k.lower(): v for k, v in hdrs}, json.loads(payload) if payload else None


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("apihooks")
    site = make_site(tmp, FAST_RETRIES, dict.fromkeys(GRANTS), admins=("root",), then=(
        ["team", "add", "devs"], ["repo", "create", "alice/demo"], ["repo", "create", "alice/secret", "--private"],
        ["team", "member-add", "devs", "bob"], ["grant", "alice/demo", "bob", "admin"],
        ["grant", "alice/demo", "carol", "read"]))
    wanted = [(user, scope) for user, scopes in GRANTS.items() for scope in scopes]
    outputs = run_all([[HG_HOSTING, "--site", str(site.root), "token", "create", user, "--scope", scope,
                        "--label", scope] for user, scope in wanted], site.env)
    tokens: dict[str, dict[str, str]] = {}
    for (user, scope), out in zip(wanted, outputs, strict=True):
        tokens.setdefault(user, {})[scope] = out.strip()
    with running(site) as daemon:
        yield Api(site, daemon, tokens, tmp)


def error_of(body) -> dict:
    assert set(body) == {"error"}, body
    return body["error"]


HOOK = {"url": "https://ci.example.org/hook", "secret": "s3cret", "events": ["push"]}


def test_anonymous_callers_are_asked_to_authenticate(api):
    for method, path in [("GET", "/repos/alice/demo/hooks"), ("POST", "/repos/alice/demo/hooks"),
                         ("GET", "/repos/alice/secret/hooks/1"), ("GET", "/users/alice/hooks"),
                         ("GET", "/repos/alice/demo/subscription"), ("PUT", "/repos/alice/demo/subscription")]:
        status, headers, body = api.call(method, path, body=HOOK if method == "POST" else None)
        assert status == 401 and "www-authenticate" in headers, (method, path, status)


def test_privacy_and_levels(api):
    # A private repository dave may not read: 404, exactly as a missing one.
    hidden = api.call("GET", "/repos/alice/secret/hooks", "dave")
    missing = api.call("GET", "/repos/alice/nothing/hooks", "dave")
    assert hidden[0] == missing[0] == 404
    assert error_of(hidden[2])["message"] == "no repository 'alice/secret'"
    # A reader may see the repository, not its hooks.
    status, _, body = api.call("GET", "/repos/alice/demo/hooks", "carol")
    assert status == 403 and error_of(body)["message"] == "carol is not an admin of alice/demo"
    assert api.call("POST", "/repos/alice/demo/hooks", "carol", body=HOOK)[0] == 403
    # A read-scoped token: the route needs write.
    status, _, body = api.call("GET", "/repos/alice/demo/hooks", "alice", "read")
    assert status == 403 and "write-scoped token" in error_of(body)["message"]
    assert api.call("GET", "/repos/alice/demo/hooks", "alice")[0] == 200
    # A site admin: through an admin-scoped token only.
    assert api.call("GET", "/repos/alice/secret/hooks", "root", "admin")[0] == 200
    assert api.call("GET", "/repos/alice/secret/hooks", "root", "write")[0] == 404


def test_a_hook_made_through_the_api_hears_a_push(api, receiver, tmp_path):
    site = api.site
    status, headers, hook = api.call("POST", "/repos/alice/demo/hooks", "bob",
                                     body={"url": receiver.url, "secret": "api-s3cret", "events": ["push"]})
    assert status == 201, hook
    assert headers["location"] == f"http://127.0.0.1:{api.daemon.port}/api/v1/repos/alice/demo/hooks/{hook['id']}"
    assert hook["url"] == receiver.url and hook["events"] == ["push"] and hook["active"] is True
    assert hook["has_secret"] is True and "secret" not in hook and "api-s3cret" not in json.dumps(hook)
    assert hook["type"] == "repository" and hook["target"] == "alice/demo" and hook["disabled_reason"] is None
    assert hook["created"].endswith("Z")
    one = f"/repos/alice/demo/hooks/{hook['id']}"
    assert api.call("GET", one, "bob")[2] == hook
    assert [h["id"] for h in api.call("GET", "/repos/alice/demo/hooks", "alice")[2]] == [hook["id"]]
    # A real push is delivered, signed with the secret given.
    wc = tmp_path / "wc"
    site.hg("clone", "-q", str(site.repo_path("alice/demo")), str(wc))
    node = commit(site.hg, wc, "a.txt", "a\n", "through the api")
    push_local(site, wc, "alice/demo")
    (hit,) = receiver.wait(1)
    assert verify("api-s3cret", hit) and hit.json["changesets"][0]["node"] == node
    rows = wait_until(lambda: api.call("GET", one + "/deliveries", "bob")[2])
    assert rows[0]["delivery"] == hit.delivery and rows[0]["status"] == 200 and rows[0]["state"] == "delivered"
    # Redelivered through the API: the same delivery id.
    status, _, body = api.call("POST", f"{one}/deliveries/{hit.delivery}/redeliver", "bob")
    assert status == 202 and body == {"delivery": hit.delivery, "state": "pending"}
    assert receiver.wait(2)[1].delivery == hit.delivery
    assert api.call("POST", f"{one}/deliveries/nope/redeliver", "bob")[0] == 404
    # Changed, then removed; each change audited as bob's, never with the secret.
    status, _, changed = api.call("PATCH", one, "bob", body={"events": ["push", "repository"], "active": False,
                                                              "secret": "new-s3cret"})
    assert status == 200 and changed["events"] == ["push", "repository"] and changed["active"] is False
    assert api.call("DELETE", one, "bob")[0] == 204
    assert api.call("GET", one, "bob")[0] == 404
    audit = site.cli_json("audit", "--limit", "4")
    assert [(e["actor"], e["action"]) for e in reversed(audit)] == [
        ("bob", "webhook.add"), ("bob", "webhook.redeliver"), ("bob", "webhook.update"), ("bob", "webhook.remove")]
    assert "s3cret" not in json.dumps(audit)


def test_bad_input_is_422_naming_the_field(api):
    cases = [({"url": "ftp://x/", "secret": "k"}, "url"), ({"url": "http://x/", "secret": "k", "events": ["pull"]},
                                                          "events[0]"),
             ({"url": "http://x/"}, "secret"), ({"url": "http://x/", "secret": "k", "colour": 1}, "colour"),
             ({"url": "http://x:port/", "secret": "k"}, "url"),
             # a host the resolver cannot encode (a label over 63 characters): the fuzzer's find
             ({"url": f"http://{'a' * 64}.example.org/", "secret": "k"}, "url")]
    for body, field in cases:
        status, _, answer = api.call("POST", "/repos/alice/demo/hooks", "alice", body=body)
        assert status == 422 and error_of(answer)["field"] == field, (body, answer)
    status, _, answer = api.call("PATCH", "/repos/alice/demo/hooks/1", "alice", body={"url": "gopher://x/"})
    assert status in (404, 422)
    assert api.call("GET", "/repos/alice/demo/hooks/x", "alice")[0] == 404


def test_a_hook_is_reached_only_through_its_own_target(api):
    status, _, hook = api.call("POST", "/repos/alice/demo/hooks", "alice", body=HOOK)
    assert status == 201
    assert api.call("GET", f"/repos/alice/secret/hooks/{hook['id']}", "alice")[0] == 404
    assert api.call("GET", f"/users/alice/hooks/{hook['id']}", "alice")[0] == 404
    assert api.call("DELETE", f"/repos/alice/demo/hooks/{hook['id']}", "alice")[0] == 204


def test_owner_hooks(api):
    # A user's hooks: the user and site admins (admin-scoped).
    status, headers, hook = api.call("POST", "/users/alice/hooks", "alice", body=HOOK)
    assert status == 201 and hook["type"] == "user" and hook["target"] == "alice"
    assert headers["location"].endswith(f"/api/v1/users/alice/hooks/{hook['id']}")
    assert [h["id"] for h in api.call("GET", "/users/alice/hooks", "alice")[2]] == [hook["id"]]
    assert api.call("GET", "/users/alice/hooks", "bob")[0] == 403
    assert api.call("GET", "/users/alice/hooks", "root", "write")[0] == 403
    assert api.call("GET", "/users/alice/hooks", "root", "admin")[0] == 200
    assert api.call("GET", "/users/devs/hooks", "root", "admin")[0] == 404  # a team is no user
    assert api.call("DELETE", f"/users/alice/hooks/{hook['id']}", "alice")[0] == 204
    # A team's hooks: site admins only, not its members.
    assert api.call("POST", "/teams/devs/hooks", "bob", body=HOOK)[0] == 403
    status, _, team_hook = api.call("POST", "/teams/devs/hooks", "root", "admin", body=HOOK)
    assert status == 201 and team_hook["type"] == "team" and team_hook["target"] == "devs"
    assert api.call("GET", "/teams/alice/hooks", "root", "admin")[0] == 404
    assert api.call("GET", "/teams/nobody/hooks", "root", "admin")[0] == 404
    assert api.call("PATCH", f"/teams/devs/hooks/{team_hook['id']}", "root", "admin",
                    body={"url": "https://other.example.org/"})[2]["url"] == "https://other.example.org/"


def test_subscription(api):
    path = "/repos/alice/demo/subscription"
    assert api.call("GET", path, "carol", "read")[0] == 404  # not watching (Gitea's answer)
    status, _, body = api.call("PUT", path, "carol", "read")
    assert status == 403 and "write-scoped token" in error_of(body)["message"]
    status, _, info = api.call("PUT", path, "carol")
    assert status == 200 and info["subscribed"] is True and info["ignored"] is False
    assert info["url"].endswith("/api/v1/repos/alice/demo/subscription")
    assert api.call("GET", path, "carol", "read")[2] == info
    assert api.call("PUT", path, "carol")[0] == 200  # again: still watching, one row
    assert "carol" in api.site.cli("audit", "--limit", "1").stdout
    assert api.call("DELETE", path, "carol")[0] == 204
    assert api.call("GET", path, "carol", "read")[0] == 404
    assert api.call("PUT", "/repos/alice/secret/subscription", "dave")[0] == 404
    assert api.call("PUT", "/repos/alice/secret/subscription", "alice")[0] == 200
