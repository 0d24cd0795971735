"""The service layer through its faces: one rule, one refusal, the exact status on each face.

Each refusal is checked on the pages (its status and its message on the form)
and, where the CLI can reach it, on the command line (its one ``error:`` line),
and each leaves the database as it was.  The CLI acts as the console (a site
admin), so the rules about who may are checked on the pages.
"""

from __future__ import annotations

import re
import urllib.parse

import pytest
from conftest import Daemon, site_handle
from test_auth import PASSWORDS, add_users, db_query, request, session_cookie


class World:
    def __init__(self, site, daemon):
        self.site, self.daemon = site, daemon
        self.cookies: dict[str, str] = {}

    def cookie(self, user: str) -> str:
        if user not in self.cookies:
            self.cookies[user] = session_cookie(self.daemon, user)
        return self.cookies[user]

    def get(self, user: str | None, path: str) -> tuple[int, str]:
        headers = {"Cookie": self.cookie(user)} if user else {}
        status, _, body = request(self.daemon, "GET", path, headers)
        return status, body.decode()

    def post(self, user: str, path: str, **fields: str) -> tuple[int, str]:
        """POST a form with the CSRF token of the page at ``path``."""
        status, page = self.get(user, path)
        assert status == 200, (path, status)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        body = urllib.parse.urlencode({"csrf": csrf, **fields}).encode()
        status, _, answer = request(self.daemon, "POST", path, {
            "Cookie": self.cookie(user), "Content-Type": "application/x-www-form-urlencoded"}, body)
        return status, answer.decode()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    site = site_handle(tmp_path_factory.mktemp("service"))
    site.cli("init")
    add_users(site, {name: PASSWORDS[name] for name in ("alice", "bob", "carol")})
    site.cli("team", "add", "devs")
    site.cli("team", "member-add", "devs", "bob")
    site.cli("repo", "create", "alice/demo")
    site.cli("repo", "create", "alice/secret", "--private")
    site.cli("grant", "alice/demo", "carol", "read")
    daemon = Daemon(site)
    yield World(site, daemon)
    daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()[-3000:]


def repo_rows(world) -> list[tuple]:
    return db_query(world.site, "SELECT r.name, o.name, r.private, r.description FROM repository r"
                                " JOIN owner o ON o.id = r.owner_id ORDER BY o.name, r.name")


def grant_rows(world) -> list[tuple]:
    return db_query(world.site, 'SELECT repository_id, subject_id, level FROM "grant" ORDER BY 1, 2')


# -- creating for an owner: policy.may_create_for ------------------------------------------


def test_new_repository_for_an_owner_you_may_not_create_for_is_403(world):
    before = repo_rows(world)
    status, page = world.post("carol", "/-/new", owner="devs", name="x")
    assert status == 403
    assert "carol may not create repositories for devs" in page
    assert repo_rows(world) == before


def test_new_repository_for_your_team_is_created(world):
    status, _ = world.post("bob", "/-/new", owner="devs", name="team-made")
    assert status == 303
    assert ("team-made", "devs", 0, "") in repo_rows(world)


def test_new_repository_with_a_taken_name_is_400_conflict(world):
    before = repo_rows(world)
    status, page = world.post("alice", "/-/new", owner="alice", name="DEMO")
    assert status == 400
    assert "repository alice/demo already exists" in page
    assert repo_rows(world) == before


def test_new_repository_with_an_invalid_name_is_400(world):
    before = repo_rows(world)
    status, page = world.post("alice", "/-/new", owner="alice", name="no/slash")
    assert status == 400
    assert "name" in page and "error" in page
    assert repo_rows(world) == before


def test_fork_into_someone_elses_namespace_is_403(world):
    before = repo_rows(world)
    status, page = world.post("carol", "/alice/demo/fork", owner="alice", name="carols")
    assert status == 403
    assert "carol may not create repositories for alice" in page
    assert repo_rows(world) == before


# -- the settings page: admin level, typed refusals ----------------------------------------------


def test_settings_for_a_reader_is_403_and_for_a_stranger_of_a_private_repository_404(world):
    assert world.get("carol", "/alice/demo/settings")[0] == 403
    assert world.get("bob", "/alice/secret/settings")[0] == 404
    assert world.get("alice", "/alice/secret/settings")[0] == 200


def test_revoking_a_grant_that_does_not_exist_is_404_on_the_form(world):
    before = grant_rows(world)
    status, page = world.post("alice", "/alice/demo/settings", action="revoke", subject="bob")
    assert status == 404
    assert "bob has no grant on alice/demo" in page
    assert grant_rows(world) == before


def test_granting_to_an_unknown_subject_is_400_naming_it(world):
    before = grant_rows(world)
    status, page = world.post("alice", "/alice/demo/settings", action="grant", subject="nobody", level="read")
    assert status == 400
    assert "no user named &#39;nobody&#39;" in page
    assert grant_rows(world) == before


def test_revoke_and_unprotect_normalise_input_like_grant_and_protect(world):
    """Surrounding spaces are dropped by the service for every action, not by one form."""
    assert world.post("alice", "/alice/demo/settings", action="grant", subject=" bob ", level="write")[0] == 200
    assert world.post("alice", "/alice/demo/settings", action="revoke", subject=" bob ")[0] == 200
    assert world.post("alice", "/alice/demo/settings", action="protect", ref=" stable ",
                      allow="alice, @devs")[0] == 200
    assert db_query(world.site, "SELECT name FROM protected_ref") == [("stable",)]
    assert world.post("alice", "/alice/demo/settings", action="unprotect", ref=" stable ")[0] == 200
    assert db_query(world.site, "SELECT name FROM protected_ref") == []


# -- the CLI: the same operations as the console --------------------------------------------------


def test_cli_refusals_are_one_line_and_change_nothing(world):
    before = repo_rows(world), grant_rows(world)
    assert world.site.refuse("repo", "create", "alice/demo") == "error: repository alice/demo already exists"
    assert world.site.refuse("repo", "create", "ghost/x") == "error: no user or team named 'ghost'"
    assert world.site.refuse("revoke", "alice/demo", "bob") == "error: bob has no grant on alice/demo"
    assert world.site.refuse("grant", "alice/demo", "bob", "owner") == (
        "error: unknown level 'owner': use read, write, publish or admin")
    assert world.site.refuse("repo", "fork", "alice/demo", "devs/f") == (
        "error: a fork into a team needs --user: the user who forks")
    assert (repo_rows(world), grant_rows(world)) == before


def test_one_push_log_limit_rule_for_both_commands(world):
    """``hg-hosting pushlog --limit 0`` and ``hg pushlog -l 0`` give the same refusal."""
    assert world.site.refuse("pushlog", "alice/demo", "--limit", "0") == "error: --limit must be at least 1"
    proc = world.site.hg("-R", str(world.site.repo_path("alice/demo")), "pushlog", "-l", "0", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip() == "abort: hosting: --limit must be at least 1"
