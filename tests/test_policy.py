"""The permission policy: a table of who holds which level, then the same answers from a real site.

The pure functions of :mod:`hgext_hosting.policy` take :class:`Subject` and
:class:`RepoFacts` snapshots, so most of this file needs no database.  The last
test builds a site with the real CLI and checks, in a separate interpreter (the
models' database binding is process-global), that the snapshots loaded from the
database give the answers of the table.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hgext_hosting import policy
from hgext_hosting.policy import LEVELS, RepoFacts, Subject

RANK = {"read": 1, "write": 2, "publish": 3, "admin": 4}


def user(name: str, admin: bool = False, teams: tuple[str, ...] = ()) -> Subject:
    return Subject(name, admin, frozenset(t.lower() for t in teams))


def repo(owner: str = "alice", *, team_owned: bool = False, private: bool = False,
         users: dict[str, str] | None = None, teams: dict[str, str] | None = None) -> RepoFacts:
    return RepoFacts(
        full_name=f"{owner}/demo",
        owner=owner.lower(),
        owner_is_team=team_owned,
        private=private,
        user_grants=dict(users or {}),
        team_grants=dict(teams or {}),
    )


LEVEL_TABLE = [
    # anonymous
    pytest.param(None, repo(), "read", id="anonymous-public-read"),
    pytest.param(None, repo(private=True), None, id="anonymous-private-nothing"),
    pytest.param(None, repo(private=True, users={"bob": "admin"}, teams={"devs": "write"}), None,
                 id="anonymous-grants-to-others-give-nothing"),
    # the owning user
    pytest.param(user("alice"), repo(), "admin", id="owner-public-admin"),
    pytest.param(user("alice"), repo(private=True), "admin", id="owner-private-admin"),
    pytest.param(user("Alice"), repo("alice", private=True), "admin", id="owner-any-case-admin"),
    pytest.param(user("alice"), repo(private=True, users={"alice": "read"}), "admin",
                 id="owner-read-grant-still-admin"),
    # other users without a grant
    pytest.param(user("bob"), repo(), "read", id="other-public-read"),
    pytest.param(user("bob"), repo(private=True), None, id="other-private-nothing"),
    pytest.param(user("bob", teams=("devs",)), repo(private=True, teams={"qa": "write"}), None,
                 id="other-private-grant-to-other-team-nothing"),
    # site admins
    pytest.param(user("root", admin=True), repo(private=True), "admin", id="site-admin-private-admin"),
    pytest.param(user("root", admin=True), repo("devs", team_owned=True, private=True), "admin",
                 id="site-admin-team-repo-admin"),
    pytest.param(user("root", admin=True), repo(), "admin", id="site-admin-public-admin"),
    # team-owned repositories
    pytest.param(user("bob", teams=("devs",)), repo("devs", team_owned=True, private=True), "write",
                 id="owning-team-member-write"),
    pytest.param(user("bob", teams=("Devs",)), repo("DEVS", team_owned=True, private=True), "write",
                 id="owning-team-member-any-case-write"),
    pytest.param(user("carol"), repo("devs", team_owned=True, private=True), None,
                 id="owning-team-non-member-private-nothing"),
    pytest.param(user("carol", teams=("qa",)), repo("devs", team_owned=True), "read",
                 id="owning-team-non-member-public-read"),
    pytest.param(user("devs"), repo("devs", team_owned=True, private=True), None,
                 id="user-named-like-owning-team-nothing"),
    pytest.param(user("bob", teams=("devs",)), repo("devs", team_owned=True, private=True,
                                                     users={"bob": "admin"}), "admin",
                 id="owning-team-member-admin-grant-admin"),
    pytest.param(user("bob", teams=("devs",)), repo("devs", team_owned=True, private=True,
                                                     users={"bob": "read"}), "write",
                 id="owning-team-member-read-grant-still-write"),
    # user grants
    pytest.param(user("bob"), repo(private=True, users={"bob": "read"}), "read", id="user-grant-read"),
    pytest.param(user("bob"), repo(private=True, users={"bob": "write"}), "write", id="user-grant-write"),
    pytest.param(user("bob"), repo(private=True, users={"bob": "admin"}), "admin", id="user-grant-admin"),
    pytest.param(user("bob"), repo(private=True, users={"bob": "publish"}), "publish", id="user-grant-publish"),
    pytest.param(user("bob", teams=("devs",)), repo("devs", team_owned=True, teams={"devs": "publish"}),
                 "publish", id="owning-team-publish-grant-publish"),
    pytest.param(user("Bob"), repo(private=True, users={"bob": "write"}), "write",
                 id="user-grant-any-case"),
    pytest.param(user("bob"), repo(private=True, users={"carol": "admin"}), None,
                 id="user-grant-to-someone-else"),
    # team grants
    pytest.param(user("bob", teams=("devs",)), repo(private=True, teams={"devs": "write"}), "write",
                 id="team-grant-member-write"),
    pytest.param(user("bob", teams=("devs",)), repo(private=True, teams={"devs": "admin"}), "admin",
                 id="team-grant-member-admin"),
    pytest.param(user("bob", teams=("qa",)), repo(private=True, teams={"devs": "write"}), None,
                 id="team-grant-non-member-nothing"),
    pytest.param(user("devs"), repo(private=True, teams={"devs": "admin"}), None,
                 id="team-grant-not-to-user-of-same-name"),
    # several grants: the highest wins
    pytest.param(user("bob", teams=("devs", "qa")),
                 repo(private=True, users={"bob": "read"}, teams={"devs": "admin", "qa": "write"}),
                 "admin", id="max-user-read-team-admin"),
    pytest.param(user("bob", teams=("devs", "qa")),
                 repo(private=True, users={"bob": "admin"}, teams={"devs": "read"}),
                 "admin", id="max-user-admin-team-read"),
    pytest.param(user("bob", teams=("devs", "qa")),
                 repo(private=True, teams={"devs": "read", "qa": "write"}),
                 "write", id="max-of-two-team-grants"),
    # public repositories and grants
    pytest.param(user("bob"), repo(users={"bob": "write"}), "write", id="public-plus-write-grant"),
    pytest.param(user("bob"), repo(users={"bob": "read"}), "read", id="public-plus-read-grant"),
    pytest.param(user("bob", teams=("devs",)), repo(teams={"devs": "admin"}), "admin",
                 id="public-plus-team-admin-grant"),
]


@pytest.mark.parametrize("subject, facts, expected", LEVEL_TABLE)
def test_level_and_may(subject, facts, expected):
    """level_of gives the expected level and may() allows exactly the levels at or below it."""
    assert policy.level_of(subject, facts) == expected
    for level in LEVELS:
        decision = policy.may(subject, level, facts)
        allowed = expected is not None and RANK[expected] >= RANK[level]
        assert decision.allowed is allowed, level
        assert bool(decision) is allowed
        if allowed:
            assert decision.reason == ""
        else:
            who = subject.name if subject is not None else "anonymous"
            assert decision.reason
            assert "\n" not in decision.reason and "\r" not in decision.reason
            assert who in decision.reason and facts.full_name in decision.reason


def test_refusal_reasons_read_naturally():
    """Each refusal reason says what was refused, for whom, on which repository."""
    private = repo(private=True)
    assert policy.may(None, "read", private).reason == "anonymous may not read alice/demo"
    assert policy.may(user("bob"), "read", private).reason == "bob may not read alice/demo"
    reader = repo(private=True, users={"bob": "read"})
    assert "bob" in policy.may(user("bob"), "write", reader).reason
    assert "write" in policy.may(user("bob"), "write", reader).reason
    assert "admin" in policy.may(user("bob"), "admin", reader).reason


@pytest.mark.parametrize("level", ["read", "write", "admin"])
def test_check_level_accepts_the_three_levels(level):
    """check_level returns each known level unchanged."""
    assert policy.check_level(level) == level


@pytest.mark.parametrize("level", ["", "owner", "READ", "Admin", "none", " read", "read "])
def test_check_level_refuses_unknown_levels(level):
    """check_level refuses anything but read, write and admin, and so does may()."""
    with pytest.raises(ValueError, match="unknown level"):
        policy.check_level(level)
    with pytest.raises(ValueError, match="unknown level"):
        policy.may(user("alice"), level, repo())


def test_may_refuses_unknown_level_even_without_access():
    """may() refuses an unknown level even for a subject who holds nothing."""
    with pytest.raises(ValueError, match="unknown level"):
        policy.may(None, "owner", repo(private=True))


PUSH_REF_TABLE = [
    pytest.param(user("alice"), {"alice"}, True, id="allowed-user"),
    pytest.param(user("Alice"), {"alice"}, True, id="allowed-user-any-case"),
    pytest.param(user("bob", teams=("devs",)), {"alice", "@devs"}, True, id="allowed-via-team"),
    pytest.param(user("bob", teams=("qa", "devs")), {"@devs"}, True, id="allowed-via-second-team"),
    pytest.param(user("root", admin=True), set(), True, id="site-admin-empty-list"),
    pytest.param(user("root", admin=True), {"alice"}, True, id="site-admin-not-listed"),
    pytest.param(user("bob"), {"alice"}, False, id="other-user-refused"),
    pytest.param(user("bob", teams=("qa",)), {"alice", "@devs"}, False, id="other-team-refused"),
    pytest.param(user("bob"), set(), False, id="empty-list-refused"),
    pytest.param(user("devs"), {"@devs"}, False, id="user-named-like-team-refused"),
    pytest.param(user("bob", teams=("alice",)), {"alice"}, False, id="team-named-like-user-refused"),
]


@pytest.mark.parametrize("subject, allow, expected", PUSH_REF_TABLE)
def test_may_push_ref(subject, allow, expected):
    """Only users on the allow-list, members of a listed @team and site admins push a protected ref."""
    assert policy.may_push_ref(subject, frozenset(allow)) is expected


# -- the same answers from a real site -------------------------------------------------

_LOAD_SCRIPT = r"""
import json, sys
from hgext_hosting import policy, pushdb, repositories
from hgext_hosting.service import repos
from hgext_hosting.service.actors import Actor, repo_facts
from hgext_hosting.site import Site

site = Site(sys.argv[1]).open()
hook_conn = site.push_connection(site.ui)  # the hooks' own sqlite3 connection
out = []
for user_name, repo_name in json.loads(sys.argv[2]):
    subject = pushdb.load_subject(pushdb.models_connection(), user_name)
    repo = repositories.get_repo(repo_name)
    facts = repo_facts(repo)
    # the listings' SQL form of the read rule agrees with level_of
    listed = repos.readable(Actor(subject)).where(repositories.Repository.id == repo.id).exists()
    assert listed == (policy.level_of(subject, facts) is not None), (user_name, repo_name)
    row = pushdb.find_repository(hook_conn, *repo_name.split("/"))
    assert isinstance(hook_conn, pushdb.SqliteConnection)
    assert pushdb.load_subject(hook_conn, user_name) == subject, (user_name, repo_name)
    assert pushdb.load_repo_facts(hook_conn, row) == facts, (user_name, repo_name)
    out.append({
        "subject": None if subject is None else
            [subject.name, subject.is_admin, sorted(subject.teams)],
        "facts": [facts.full_name, facts.owner, facts.owner_is_team, facts.private,
                  facts.user_grants, facts.team_grants],
        "level": policy.level_of(subject, facts),
    })
print(json.dumps(out))
"""


def test_database_snapshots_agree_with_the_table(site):
    """Subjects and repository facts loaded from a site built by the CLI give the table's answers.

    Loaded twice: through the models' connection (CLI, daemon) and through the
    hooks' own sqlite3 connection, which must agree.
    """
    site.add_user("alice")
    site.add_user("Bob")
    site.add_user("root", admin=True)
    site.cli("team", "add", "Devs")
    site.cli("team", "member-add", "devs", "bob")
    site.cli("repo", "create", "alice/pub")
    site.cli("repo", "create", "alice/priv", "--private")
    site.cli("repo", "create", "devs/tp", "--private")
    site.cli("grant", "alice/priv", "@devs", "write")
    site.cli("grant", "devs/tp", "alice", "read")

    bob = user("Bob", teams=("devs",))
    facts = {
        "alice/pub": RepoFacts("alice/pub", "alice", False, False, {}, {}),
        "alice/priv": RepoFacts("alice/priv", "alice", False, True, {}, {"devs": "write"}),
        "devs/tp": RepoFacts("Devs/tp", "devs", True, True, {"alice": "read"}, {}),
    }
    subjects = {None: None, "alice": user("alice"), "BOB": bob, "root": user("root", admin=True),
                "nobody": None}
    cases = [(u, r) for u in subjects for r in facts]

    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, str(site.root), json.dumps(cases)],
        env=site.env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    assert len(loaded) == len(cases)

    for (user_name, repo_name), got in zip(cases, loaded, strict=True):
        subject, expected_facts = subjects[user_name], facts[repo_name]
        where = f"{user_name} on {repo_name}"
        assert got["subject"] == (
            None if subject is None else [subject.name, subject.is_admin, sorted(subject.teams)]
        ), where
        assert got["facts"] == [
            expected_facts.full_name, expected_facts.owner, expected_facts.owner_is_team,
            expected_facts.private, expected_facts.user_grants, expected_facts.team_grants,
        ], where
        assert got["level"] == policy.level_of(subject, expected_facts), where

    levels = {(u, r): got["level"] for (u, r), got in zip(cases, loaded, strict=True)}
    assert levels[(None, "alice/pub")] == "read"
    assert levels[(None, "alice/priv")] is None
    assert levels[("alice", "alice/priv")] == "admin"
    assert levels[("BOB", "alice/priv")] == "write"
    assert levels[("BOB", "alice/pub")] == "read"
    assert levels[("BOB", "devs/tp")] == "write"
    assert levels[("alice", "devs/tp")] == "read"
    assert levels[("root", "devs/tp")] == "admin"
    assert levels[("nobody", "devs/tp")] is None
