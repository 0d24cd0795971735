"""Webhooks and watches: the operations behind ``hg-hosting webhook|watch`` and the pages.

Each operation validates, refuses with :class:`~hgext_hosting.errors.UserError`
(nothing changed) or commits one write transaction that also records the
change in the audit log (:mod:`hgext_hosting.audit`).  Delivery itself is the
daemon's (:mod:`hgext_hosting.outbox`, :mod:`daemon.deliveries`).

A webhook belongs to a repository (``OWNER/NAME``) or to an owner (``OWNER``, a
user or a team: every repository of theirs, present and future).  Its secret
signs every delivery (``X-HgHosting-Signature-256``); it is stored as given,
since the daemon needs it, and never shown again.
"""

from __future__ import annotations

import secrets
import time
import urllib.parse

from . import audit, names
from .accounts import get_owner, get_user
from .errors import UserError
from .models import Delivery, DeliveryAttempt, Event, Owner, Repository, Watch, Webhook, write_transaction
from .outbox import KINDS

#: The longest URL a hook may have.
MAX_URL = 2000


def parse_target(target: str) -> tuple[Owner, Repository | None]:
    """``OWNER`` or ``OWNER/NAME`` as the owner and (for the latter) the repository, or UserError."""
    if "/" in target:
        from .repositories import get_repo

        repo = get_repo(target)
        return repo.owner, repo
    return get_owner(target), None


def check_url(url: str) -> str:
    """An ``http``/``https`` URL with a host, without spaces or control characters."""
    url = url.strip()
    if not url or len(url) > MAX_URL or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise UserError("the webhook URL must be a non-empty http:// or https:// URL without spaces")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"the webhook URL must start with http:// or https:// and name a host: {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise UserError(f"the webhook URL has a malformed port: {url!r}") from None
    return url


def check_events(text: str) -> str:
    """A comma-separated subset of :data:`~hgext_hosting.outbox.KINDS`, normalized."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if not kinds or unknown:
        raise UserError(f"unknown event kind {', '.join(unknown) or '(none)'}: use {', '.join(KINDS)}")
    return ",".join(k for k in KINDS if k in kinds)


def label(hook: Webhook) -> str:
    """The target of a hook: ``OWNER/NAME`` or ``OWNER``."""
    return hook.repository.full_name if hook.repository_id else hook.owner.name


def add(target: str, url: str, secret: str | None = None, events: str = "push,repository",
        actor: str = "", address: str = "") -> tuple[Webhook, str]:
    """Add a hook; return it and its secret (made here when none is given)."""
    owner, repo = parse_target(target)
    url = check_url(url)
    events = check_events(events)
    if secret is None:
        secret = secrets.token_hex(20)
    if not secret or len(secret) > 255 or any(ord(c) < 32 for c in secret):
        raise UserError("the secret must be 1 to 255 printable characters")
    with write_transaction():
        hook = Webhook.create(owner=owner.id, repository=repo.id if repo else None, url=url,
                              secret=secret, events=events)
        audit.record(actor, "webhook.add", repo.full_name if repo else owner.name, address,
                     id=hook.id, url=url, events=events)
    return hook, secret


def get(hook_id: int | str) -> Webhook:
    try:
        number = int(hook_id)
    except (TypeError, ValueError):
        raise UserError(f"no webhook {hook_id!r} (webhooks are numbered: see 'webhook list')") from None
    hook = Webhook.get_or_none(Webhook.id == number)
    if hook is None:
        raise UserError(f"no webhook {number}")
    return hook


def hooks_of(target: str | None = None) -> list[Webhook]:
    """Every hook, or those of one owner (and its repositories) or one repository."""
    query = Webhook.select().order_by(Webhook.id)
    if target:
        owner, repo = parse_target(target)
        query = query.where(Webhook.repository == repo.id) if repo else query.where(Webhook.owner == owner.id)
    return list(query)


def as_json(hook: Webhook) -> dict:
    return {
        "id": hook.id, "target": label(hook), "url": hook.url, "events": hook.events.split(","),
        "active": bool(hook.active), "disabled_reason": hook.disabled_reason or None,
        "failing_since": (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(hook.failing_since))
                          if hook.failing_since else None),
    }


def remove(hook_id: int | str, actor: str = "", address: str = "", repository: Repository | None = None) -> None:
    """Remove a hook (``repository``: only if it is that repository's)."""
    hook = get(hook_id)
    if repository is not None and hook.repository_id != repository.id:
        raise UserError(f"no webhook {hook.id} on {repository.full_name}")
    with write_transaction():
        what = label(hook)
        hook.delete_instance()
        audit.record(actor, "webhook.remove", what, address, id=hook.id, url=hook.url)


def set_active(hook_id: int | str, active: bool, actor: str = "", address: str = "") -> None:
    """Enable (clears the daemon's reason and failure clock) or disable a hook."""
    hook = get(hook_id)
    with write_transaction():
        Webhook.update(active=active, disabled_reason="", failing_since=None).where(Webhook.id == hook.id).execute()
        audit.record(actor, "webhook.enable" if active else "webhook.disable", label(hook), address, id=hook.id)


def deliveries(hook_id: int | str, limit: int = 50) -> list[dict]:
    """The last attempts of a hook, newest first, with their delivery and event."""
    hook = get(hook_id)
    rows = (DeliveryAttempt.select(DeliveryAttempt, Delivery, Event)
            .join(Delivery).join(Event)
            .where(DeliveryAttempt.webhook == hook.id)
            .order_by(DeliveryAttempt.id.desc()).limit(limit))
    return [
        {"delivery": a.delivery.guid, "event": a.delivery.event.action if a.delivery.event.kind == "repository"
         else "push", "repository": a.delivery.event.repository_name, "state": a.delivery.state,
         "date": a.date.strftime("%Y-%m-%dT%H:%M:%SZ"), "status": a.status, "duration_ms": a.duration_ms,
         "error": a.error or None, "response": a.response}
        for a in rows
    ]


def pending_count(hook: Webhook) -> int:
    return Delivery.select().where((Delivery.webhook == hook.id) & (Delivery.state == "pending")).count()


def redeliver(guid: str, actor: str = "", address: str = "", repository: Repository | None = None) -> Delivery:
    """Send a delivery again (same ``X-HgHosting-Delivery``), now, with a fresh give-up clock."""
    delivery = Delivery.get_or_none((Delivery.guid == guid.strip()) & Delivery.webhook.is_null(False))
    if delivery is None or (repository is not None and delivery.repository_id != repository.id):
        raise UserError(f"no delivery {guid!r} (see 'webhook deliveries ID')")
    with write_transaction():
        Delivery.update(state="pending", next_try=0, first_try=None, claimed_by=None, claim_until=None,
                        attempts=0).where(Delivery.id == delivery.id).execute()
        audit.record(actor, "webhook.redeliver", label(delivery.webhook), address, delivery=delivery.guid)
    return delivery


# -- watching ------------------------------------------------------------------------


def watch(full_name: str, user_name: str, actor: str = "", address: str = "") -> bool:
    """``user`` watches the repository; False when they already did."""
    from .repositories import get_repo

    repo, user = get_repo(full_name), get_user(user_name)
    with write_transaction():
        if Watch.select().where((Watch.user == user.id) & (Watch.repository == repo.id)).exists():
            return False
        Watch.create(user=user.id, repository=repo.id)
        audit.record(actor or user.name, "watch", repo.full_name, address, user=user.name)
    return True


def unwatch(full_name: str, user_name: str, actor: str = "", address: str = "") -> bool:
    """``user`` no longer watches the repository; False when they did not."""
    from .repositories import get_repo

    repo, user = get_repo(full_name), get_user(user_name)
    with write_transaction():
        gone = Watch.delete().where((Watch.user == user.id) & (Watch.repository == repo.id)).execute()
        if gone:
            audit.record(actor or user.name, "unwatch", repo.full_name, address, user=user.name)
    return bool(gone)


def is_watching(repo: Repository, user_name: str) -> bool:
    return (Watch.select().join(Owner, on=(Watch.user == Owner.id))
            .where((Watch.repository == repo.id) & (Owner.name_key == names.key(user_name))).exists())


def watchers(full_name: str) -> list[str]:
    from .repositories import get_repo

    repo = get_repo(full_name)
    return [n for (n,) in Watch.select(Owner.name).join(Owner, on=(Watch.user == Owner.id))
            .where(Watch.repository == repo.id).order_by(Owner.name).tuples()]
