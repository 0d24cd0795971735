"""Webhooks and watching: every operation, for the CLI, the pages and the API.

Who may manage which hooks (:func:`target`, :func:`get`):

- a repository's hooks (``OWNER/NAME``): its admins (``admin`` level, as
  :func:`hgext_hosting.service.repos.find`: a repository the actor may not
  read is NotFound, a readable one below ``admin`` Forbidden);
- a user's hooks (``USER``: every repository of theirs): the user themself and
  site admins (:func:`hgext_hosting.policy.may_manage_user`, a change);
- a team's hooks (``TEAM``): site admins (teams have no admins of their own,
  :func:`hgext_hosting.policy.may_administer_site`);
- the console (``hg-hosting``) may do everything: it is a site admin.

An API token's scope caps all of it (a read-scoped token holds ``read`` at
most, and a site admin acts as one only through an admin-scoped token).

Watching: a user watches a repository they may read (a mail after each push,
:mod:`hgext_hosting.outbox`); changing whom another user watches is managing
their account (themself, site admins, the console).

Each change is one write transaction with its audit record
(:mod:`hgext_hosting.audit`); a refusal is a typed error and changes nothing.
The value checks, a hook's JSON and the delivery queries are
:mod:`hgext_hosting.webhooks`'.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .. import audit, policy, webhooks
from ..errors import Forbidden, Invalid, NotFound
from ..models import Delivery, Owner, Repository, Watch, Webhook, write_transaction
from . import repos
from .actors import Actor

DEFAULT_EVENTS = "push,repository"
#: The most delivery attempts one listing shows.
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Target:
    """Whose hooks: an owner's (``repo`` None) or one repository's."""

    owner: Owner
    repo: Repository | None = None

    @property
    def label(self) -> str:
        return self.repo.full_name if self.repo is not None else self.owner.name

    def holds(self, hook: Webhook) -> bool:
        if self.repo is not None:
            return hook.repository_id == self.repo.id
        return hook.repository_id is None and hook.owner_id == self.owner.id


def _require_owner(actor: Actor, owner: Owner) -> None:
    """May ``actor`` manage the hooks of ``owner`` (a user or a team)?  Forbidden if not."""
    if owner.kind == "team":
        decision = policy.may_administer_site(actor.subject)
        if not decision:
            raise Forbidden(f"{actor.name} may not manage the webhooks of the team {owner.name}"
                            " (site admins only)")
        return
    decision = policy.may_manage_user(actor.subject, owner.name_key, write=True)
    if not decision:
        raise Forbidden(decision.reason)


def target(actor: Actor, name: str) -> Target:
    """``OWNER/NAME`` or ``OWNER`` as a :class:`Target` whose hooks ``actor`` may manage."""
    if "/" in name:
        repo = repos.find(actor, name, "admin")
        return Target(repo.owner, repo)
    owner = repos.find_owner(name)
    _require_owner(actor, owner)
    return Target(owner)


def _authorize(actor: Actor, hook: Webhook) -> None:
    """May ``actor`` manage ``hook``?  A hook of a repository they may not read is NotFound."""
    if hook.repository_id is not None:
        try:
            repos.require(actor, hook.repository, "admin")
        except NotFound:
            raise NotFound(f"no webhook {hook.id}") from None
    else:
        _require_owner(actor, hook.owner)


def get(actor: Actor, hook_id: int | str, where: str | None = None) -> Webhook:
    """The hook ``hook_id`` if ``actor`` may manage it (``where``: and it is that target's)."""
    if where is not None:
        place = target(actor, where)
        hook = webhooks.row(hook_id)
        if not place.holds(hook):
            raise NotFound(f"no webhook {hook.id} on {place.label}")
        return hook
    hook = webhooks.row(hook_id)
    _authorize(actor, hook)
    return hook


def _events(events: str | Iterable[str]) -> str:
    return webhooks.check_events(events if isinstance(events, str) else ",".join(events))


def add(actor: Actor, where: str, url: str, secret: str | None = None,
        events: str | Iterable[str] = DEFAULT_EVENTS, active: bool = True) -> tuple[Webhook, str]:
    """Add a hook to ``where``; return it and its secret (a random one when none is given)."""
    place = target(actor, where)
    url = webhooks.check_url(url)
    kinds = _events(events)
    secret = webhooks.check_secret(secret)
    with write_transaction():
        hook = Webhook.create(owner=place.owner.id, repository=place.repo.id if place.repo else None,
                              url=url, secret=secret, events=kinds, active=active)
        audit.record_for(actor, "webhook.add", place.label, id=hook.id, url=url, events=kinds)
    return Webhook.get_by_id(hook.id), secret


def hooks_of(actor: Actor, where: str | None = None, with_repositories: bool = False) -> list[Webhook]:
    """The hooks of a repository or an owner (``with_repositories``: and those of its
    repositories); every hook of the site when ``where`` is None (site admins)."""
    query = Webhook.select().order_by(Webhook.id)
    if where is None:
        decision = policy.may_administer_site(actor.subject)
        if not decision:
            raise Forbidden(decision.reason)
        return list(query)
    place = target(actor, where)
    if place.repo is not None:
        return list(query.where(Webhook.repository == place.repo.id))
    if with_repositories:
        return list(query.where(Webhook.owner == place.owner.id))
    return list(query.where((Webhook.owner == place.owner.id) & Webhook.repository.is_null()))


def inherited(actor: Actor, where: str) -> list[Webhook]:
    """The owner's hooks that also hear the repository ``where`` (shown to its admins)."""
    place = target(actor, where)
    if place.repo is None:
        raise Invalid("inherited hooks are a repository's: name OWNER/NAME", "target")
    return list(Webhook.select().where((Webhook.owner == place.owner.id) & Webhook.repository.is_null())
                .order_by(Webhook.id))


def update(actor: Actor, hook_id: int | str, where: str | None = None, *, url: str | None = None,
           events: str | Iterable[str] | None = None, active: bool | None = None,
           secret: str | None = None) -> Webhook:
    """Change a hook's URL, event kinds, active flag or secret (None: unchanged).

    Enabling (``active=True``) also clears the daemon's reason and failure clock.
    Only the active flag given: audited as ``webhook.enable``/``webhook.disable``,
    else ``webhook.update`` with the names of the fields changed.
    """
    hook = get(actor, hook_id, where)
    changes: dict = {}
    if url is not None:
        changes["url"] = webhooks.check_url(url)
    if events is not None:
        changes["events"] = _events(events)
    if secret is not None:
        if not secret:
            raise Invalid("the secret must be 1 to 255 printable characters", "secret")
        changes["secret"] = webhooks.check_secret(secret)
    if active is not None:
        changes.update(active=bool(active), disabled_reason="", failing_since=None)
    if not changes:
        return hook
    if set(changes) <= {"active", "disabled_reason", "failing_since"}:
        action, details = ("webhook.enable" if active else "webhook.disable"), {}
    else:
        action = "webhook.update"
        details = {k: v for k, v in changes.items() if k in ("url", "events", "active")}
        if "secret" in changes:
            details["secret"] = "changed"
    with write_transaction():
        Webhook.update(**changes).where(Webhook.id == hook.id).execute()
        audit.record_for(actor, action, webhooks.label(hook), id=hook.id, **details)
    return Webhook.get_by_id(hook.id)


def remove(actor: Actor, hook_id: int | str, where: str | None = None) -> None:
    """Remove a hook (its pending deliveries go with it)."""
    hook = get(actor, hook_id, where)
    with write_transaction():
        what = webhooks.label(hook)
        hook.delete_instance()
        audit.record_for(actor, "webhook.remove", what, id=hook.id, url=hook.url)


def deliveries(actor: Actor, hook_id: int | str, where: str | None = None,
               limit: int = webhooks.DELIVERIES) -> list[dict]:
    """The last ``limit`` (1 to :data:`MAX_LIMIT`) attempts of a hook, newest first."""
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"the limit must be between 1 and {MAX_LIMIT}", "limit")
    return webhooks.attempts_of(get(actor, hook_id, where), limit)


def redeliver(actor: Actor, guid: str, hook_id: int | str | None = None, where: str | None = None) -> Delivery:
    """Send a delivery again (same ``X-HgHosting-Delivery``), now, with a fresh give-up clock.

    ``hook_id``/``where``: the delivery must be that hook's, that target's
    (NotFound otherwise, as a missing one).
    """
    delivery = webhooks.delivery_row(guid)
    if hook_id is not None and str(delivery.webhook_id) != str(hook_id).strip():
        raise NotFound(f"no delivery {guid[:64]!r} for webhook {str(hook_id)[:32]}")
    try:
        hook = get(actor, delivery.webhook_id, where)
    except NotFound:
        raise NotFound(f"no delivery {guid[:64]!r} (see 'webhook deliveries ID')") from None
    with write_transaction():
        webhooks.requeue(delivery)
        audit.record_for(actor, "webhook.redeliver", webhooks.label(hook), delivery=delivery.guid)
    return Delivery.get_by_id(delivery.id)


# -- watching ------------------------------------------------------------------------


def _watcher(actor: Actor, user: str | None) -> Owner:
    """The user whose watches change: ``user``, or the actor themself; Forbidden for another's."""
    if user is None:
        if actor.user_id is None:
            raise Invalid("name the user who watches", "user")
        owner = Owner.get_by_id(actor.user_id)
    else:
        try:
            owner = repos.find_owner(user)
        except NotFound:
            raise NotFound(f"no user named {user!r}") from None
        if owner.kind != "user":
            raise NotFound(f"no user named {user!r}")
    decision = policy.may_manage_user(actor.subject, owner.name_key, write=True)
    if not decision:
        raise Forbidden(decision.reason)
    return owner


def watch(actor: Actor, full_name: str, user: str | None = None) -> bool:
    """``user`` (default: the actor) watches the repository; False when they already did."""
    repo = repos.find(actor, full_name, "read")
    owner = _watcher(actor, user)
    with write_transaction():
        if webhooks.watching(repo, owner):
            return False
        Watch.create(user=owner.id, repository=repo.id)
        audit.record_for(actor, "watch", repo.full_name, user=owner.name)
    return True


def unwatch(actor: Actor, full_name: str, user: str | None = None) -> bool:
    """``user`` (default: the actor) no longer watches the repository; False when they did not."""
    repo = repos.find(actor, full_name, "read")
    owner = _watcher(actor, user)
    with write_transaction():
        gone = Watch.delete().where((Watch.user == owner.id) & (Watch.repository == repo.id)).execute()
        if gone:
            audit.record_for(actor, "unwatch", repo.full_name, user=owner.name)
    return bool(gone)


def is_watching(actor: Actor, full_name: str, user: str | None = None) -> bool:
    """Does ``user`` (default: the actor) watch the repository?  Asking about another user
    is managing their account (themself, site admins)."""
    repo = repos.find(actor, full_name, "read")
    if user is None and actor.user_id is None:
        return False
    if user is None:
        return webhooks.watching(repo, Owner.get_by_id(actor.user_id))
    owner = repos.find_owner(user)
    decision = policy.may_manage_user(actor.subject, owner.name_key)
    if not decision:
        raise Forbidden(decision.reason)
    return webhooks.watching(repo, owner)


def watchers(actor: Actor, full_name: str) -> list[str]:
    """The names of the users watching a repository the actor may read."""
    return webhooks.watcher_names(repos.find(actor, full_name, "read"))
