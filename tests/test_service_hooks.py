"""Who may manage which webhooks, and watch what: hgext_hosting.service.hooks in-process, as a table.

One site for the module (set up in one CLI process), opened in the test's
process (:mod:`insite`); no daemon.  ``alice`` owns ``alice/demo`` (public) and
``alice/secret`` (private); ``bob`` holds ``admin`` on alice/demo and is a member
of ``devs``; ``carol`` holds ``read``; ``root`` is a site admin.  The faces
(CLI, pages, API) map these refusals to their statuses: tests/test_api_hooks.py.
"""

from __future__ import annotations

import dataclasses

import pytest
from clibatch import cli_batch
from conftest import site_handle
from insite import opened

from hgext_hosting import policy
from hgext_hosting.errors import Forbidden, Invalid, NotFound
from hgext_hosting.models import AuditEntry
from hgext_hosting.service import hooks
from hgext_hosting.service.actors import Actor


@pytest.fixture(scope="module")
def handle(tmp_path_factory):
    site = site_handle(tmp_path_factory.mktemp("svchooks"))
    site.cli("init")
    cli_batch(site, [(argv, None) for argv in (
        ["user", "add", "alice"], ["user", "add", "bob"], ["user", "add", "carol"], ["user", "add", "root", "--admin"],
        ["team", "add", "devs"], ["team", "member-add", "devs", "bob"], ["repo", "create", "alice/demo"],
        ["repo", "create", "alice/secret", "--private"], ["grant", "alice/demo", "bob", "admin"],
        ["grant", "alice/demo", "carol", "read"])])
    return site


@pytest.fixture
def site(handle, monkeypatch):
    with opened(handle, monkeypatch) as s:
        yield s


def actor(who: str, scope: str | None = None) -> Actor:
    if who == "console":
        return Actor.of_console()
    if who == "anonymous":
        return Actor.anonymous()
    a = Actor.of_user(who)
    return dataclasses.replace(a, subject=policy.with_scope(a.subject, scope)) if scope else a


OK = "ok"
#: (actor, token scope, target) -> what listing the target's hooks answers.
TABLE = [
    ("console", None, "alice/secret", OK), ("console", None, "devs", OK),
    ("alice", None, "alice/demo", OK), ("alice", None, "alice/secret", OK), ("alice", None, "alice", OK),
    ("alice", "write", "alice", OK), ("alice", "read", "alice/demo", Forbidden), ("alice", "read", "alice", Forbidden),
    ("alice", None, "devs", Forbidden), ("alice", None, "bob", Forbidden),
    ("bob", None, "alice/demo", OK), ("bob", None, "alice/secret", NotFound), ("bob", None, "alice", Forbidden),
    ("bob", None, "devs", Forbidden),  # a member is no team admin: teams have none
    ("carol", None, "alice/demo", Forbidden), ("carol", None, "alice/nothing", NotFound),
    ("root", None, "alice/secret", OK), ("root", None, "devs", OK), ("root", None, "alice", OK),
    ("root", "admin", "devs", OK), ("root", "write", "devs", Forbidden), ("root", "write", "alice/secret", NotFound),
    ("anonymous", None, "alice/demo", Forbidden), ("anonymous", None, "alice/secret", NotFound),
    ("anonymous", None, "alice", Forbidden), ("alice", None, "nobody", NotFound),
]


@pytest.mark.parametrize(("who", "scope", "target", "expected"), TABLE)
def test_who_may_manage_which_hooks(site, who, scope, target, expected):
    if expected is OK:
        assert hooks.hooks_of(actor(who, scope), target) == []
    else:
        with pytest.raises(expected):
            hooks.hooks_of(actor(who, scope), target)


def test_operations_check_audit_and_refuse_without_change(site):
    alice, bob, carol = actor("alice"), actor("bob"), actor("carol")
    before = AuditEntry.select().count()
    hook, secret = hooks.add(bob, "alice/demo", "https://ci.example.org/h", None, ["push"])
    assert len(secret) == 40 and hook.events == "push" and hook.secret == secret
    with pytest.raises(Forbidden):
        hooks.get(carol, hook.id)
    with pytest.raises(NotFound):
        hooks.get(alice, hook.id, "alice/secret")  # not that repository's
    with pytest.raises(Forbidden):
        hooks.get(actor("anonymous"), hook.id)  # a public repository: readable, not administrable
    for bad, field in ((dict(url="ftp://x/"), "url"), (dict(events="pull"), "events"), (dict(secret="\x01"), "secret")):
        with pytest.raises(Invalid) as refused:
            hooks.update(alice, hook.id, **bad)
        assert refused.value.field == field
    assert hooks.update(alice, hook.id, active=False).active is False
    assert hooks.update(alice, hook.id, url="https://ci.example.org/other").url == "https://ci.example.org/other"
    with pytest.raises(Forbidden):
        hooks.remove(carol, hook.id)
    hooks.remove(bob, hook.id, "alice/demo")
    actions = [(e.actor, e.action) for e in AuditEntry.select().where(AuditEntry.id > before).order_by(AuditEntry.id)]
    assert actions == [("bob", "webhook.add"), ("alice", "webhook.disable"), ("alice", "webhook.update"),
                       ("bob", "webhook.remove")]


def test_watching(site):
    carol, bob = actor("carol"), actor("bob")
    assert hooks.watch(carol, "alice/demo") is True
    assert hooks.watch(carol, "alice/demo") is False
    assert hooks.is_watching(carol, "alice/demo") is True
    assert hooks.watchers(bob, "alice/demo") == ["carol"]
    with pytest.raises(Forbidden):
        hooks.watch(bob, "alice/demo", "carol")  # another user's watches: their own or a site admin's
    with pytest.raises(NotFound):
        hooks.watch(carol, "alice/secret")
    with pytest.raises(Forbidden):
        hooks.watch(actor("carol", "read"), "alice/demo")
    assert hooks.watch(Actor.of_console(), "alice/secret", "carol") is True  # the console may
    assert hooks.unwatch(carol, "alice/demo") is True and hooks.unwatch(carol, "alice/demo") is False
    with pytest.raises(Invalid):
        hooks.watch(Actor.of_console(), "alice/demo")  # the console is no user: name one
