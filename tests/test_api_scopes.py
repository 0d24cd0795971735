"""Token scopes: the pure rules (policy.with_scope and friends), the CLI, the schema step.

The flows over HTTP (a read-scoped token clones but cannot push, a write-scoped
admin token is no site admin) are in ``tests/test_api.py``.
"""

from __future__ import annotations

import sqlite3

import pytest
from conftest import site_handle

from hgext_hosting import policy
from hgext_hosting.policy import RepoFacts, Subject, with_scope
from hgext_hosting.pushdb import SCHEMA_VERSION

OWNED = RepoFacts("alice/demo", "alice", False, False)
PRIVATE = RepoFacts("bob/secret", "bob", False, True, user_grants={"alice": "write"})
ALICE = Subject("alice")
ROOT = Subject("root", is_admin=True)


def test_a_read_scope_caps_every_level_at_read():
    read = with_scope(ALICE, "read")
    assert policy.level_of(read, OWNED) == "read" and policy.level_of(read, PRIVATE) == "read"
    decision = policy.may(read, "write", OWNED)
    assert not decision and "read-scoped" in decision.reason
    assert not policy.may_create_for(read, "alice", False)
    assert not policy.may_manage_user(read, "alice", write=True)
    assert policy.may_manage_user(read, "alice")


def test_a_write_scope_keeps_repository_levels():
    write = with_scope(ALICE, "write")
    assert policy.level_of(write, OWNED) == "admin" and policy.level_of(write, PRIVATE) == "write"
    assert policy.may_create_for(write, "alice", False)


@pytest.mark.parametrize("scope, admin", [("read", False), ("write", False), ("admin", True)])
def test_only_an_admin_scope_makes_a_site_admin_one(scope, admin):
    subject = with_scope(ROOT, scope)
    assert bool(policy.may_administer_site(subject)) is admin
    assert (policy.level_of(subject, PRIVATE) is not None) is admin
    # and an admin scope makes no one else a site admin
    assert not policy.may_administer_site(with_scope(ALICE, "admin"))


def test_scope_allows():
    assert policy.scope_allows(None, "admin") and policy.scope_allows(ALICE, "admin")  # no token: no cap
    assert policy.scope_allows(with_scope(ALICE, "write"), "write")
    decision = policy.scope_allows(with_scope(ALICE, "read"), "write")
    assert not decision and "read" in decision.reason
    with pytest.raises(ValueError):
        with_scope(ALICE, "everything")


def test_cli_token_scopes(tmp_path):
    site = site_handle(tmp_path)
    site.cli("init")
    site.add_user("alice")
    site.cli("token", "create", "alice", "--label", "plain")
    site.cli("token", "create", "alice", "--label", "ro", "--scope", "read")
    listing = site.cli_json("token", "list", "alice")
    assert [(t["label"], t["scope"]) for t in listing] == [("plain", "write"), ("ro", "read")]
    assert "SCOPE" in site.cli("token", "list", "alice").stdout.splitlines()[0]
    proc = site.cli("token", "create", "alice", "--scope", "root", check=False)
    assert proc.returncode != 0 and "invalid choice" in proc.stderr and "Traceback" not in proc.stderr

    # a database of schema 4 (tokens without a scope) migrates: its tokens become write
    db = sqlite3.connect(site.root / "hosting.db")
    db.execute("ALTER TABLE api_token DROP COLUMN scope")
    db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    db.commit()
    assert "schema version 4" in site.refuse("token", "list", "alice")
    site.cli("init")
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [(str(SCHEMA_VERSION),)]
    assert db.execute("SELECT label, scope FROM api_token ORDER BY label").fetchall() == [("plain", "write"),
                                                                                          ("ro", "write")]
    db.close()
