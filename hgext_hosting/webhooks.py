"""Webhooks and watches, the low-level pieces: checks of their values, their JSON, delivery bookkeeping.

No rule about *who* may lives here: every operation on hooks and watches, with
its permission check and its audit record, is
:mod:`hgext_hosting.service.hooks`'.  This module keeps what that layer and the
daemon share: the checks of a hook's URL, event kinds and secret (raising
:class:`~hgext_hosting.errors.Invalid` naming the field), a hook's row by id,
its JSON, and the queries over deliveries.  Delivery itself is the daemon's
(:mod:`hgext_hosting.outbox`, :mod:`daemon.deliveries`).

A webhook belongs to a repository (``OWNER/NAME``) or to an owner (``OWNER``, a
user or a team: every repository of theirs, present and future).  Its secret
signs every delivery (``X-HgHosting-Signature-256``); it is stored as given,
since the daemon needs it, and never shown again.
"""

from __future__ import annotations

import secrets
import time
import urllib.parse

from .errors import Invalid, NotFound
from .models import Delivery, DeliveryAttempt, Event, Owner, Repository, Watch, Webhook
from .outbox import KINDS

#: The longest URL a hook may have.
MAX_URL = 2000
#: The longest secret.
MAX_SECRET = 255
#: Deliveries kept and shown per hook.
DELIVERIES = 50


def check_url(url: str) -> str:
    """An ``http``/``https`` URL with a host, without spaces or control characters."""
    url = url.strip()
    if not url or len(url) > MAX_URL or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise Invalid("the webhook URL must be a non-empty http:// or https:// URL without spaces", "url")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"the webhook URL must start with http:// or https:// and name a host: {url!r}", "url")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise Invalid(f"the webhook URL has a malformed port: {url!r}", "url") from None
    try:  # what the resolver will do with it at delivery time: a label over 63 characters fails
        if len(parts.hostname.encode("idna")) > 253:
            raise UnicodeError("too long")
    except UnicodeError:
        raise Invalid(f"the webhook URL's host is not a valid host name: {parts.hostname[:80]!r}", "url") from None
    return url


def check_events(text: str) -> str:
    """A comma-separated subset of :data:`~hgext_hosting.outbox.KINDS`, normalized."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if not kinds or unknown:
        raise Invalid(f"unknown event kind {', '.join(unknown) or '(none)'}: use {', '.join(KINDS)}", "events")
    return ",".join(k for k in KINDS if k in kinds)


def check_secret(secret: str | None) -> str:
    """``secret``, or a random one when None: 1 to :data:`MAX_SECRET` printable characters."""
    if secret is None:
        return secrets.token_hex(20)
    if not secret or len(secret) > MAX_SECRET or any(ord(c) < 32 or ord(c) == 127 for c in secret):
        raise Invalid(f"the secret must be 1 to {MAX_SECRET} printable characters", "secret")
    return secret


def label(hook: Webhook) -> str:
    """The target of a hook: ``OWNER/NAME`` or ``OWNER``."""
    return hook.repository.full_name if hook.repository_id else hook.owner.name


def row(hook_id: int | str) -> Webhook:
    """The hook numbered ``hook_id``, whoever asks; NotFound when there is none."""
    try:
        number = int(hook_id)
    except (TypeError, ValueError):
        raise NotFound(f"no webhook {str(hook_id)[:32]!r} (webhooks are numbered: see 'webhook list')") from None
    hook = Webhook.get_or_none(Webhook.id == number) if 0 < number < 2**63 else None
    if hook is None:
        raise NotFound(f"no webhook {number}")
    return hook


def _date(seconds: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds)) if seconds else None


def as_json(hook: Webhook) -> dict:
    """A hook as the CLI's ``--json`` and the API show it: never its secret."""
    return {
        "id": hook.id, "target": label(hook),
        "type": "repository" if hook.repository_id else hook.owner.kind,
        "url": hook.url, "events": hook.events.split(","),
        "active": bool(hook.active), "disabled_reason": hook.disabled_reason or None,
        "failing_since": _date(hook.failing_since), "has_secret": bool(hook.secret),
        "created": hook.created.strftime("%Y-%m-%dT%H:%M:%SZ") if hook.created else None,
    }


def attempts_of(hook: Webhook, limit: int = DELIVERIES) -> list[dict]:
    """The last attempts of a hook, newest first, with their delivery and event."""
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


def delivery_row(guid: str) -> Delivery:
    """The webhook delivery ``guid``; NotFound when there is none."""
    delivery = Delivery.get_or_none((Delivery.guid == guid.strip()[:64]) & Delivery.webhook.is_null(False))
    if delivery is None:
        raise NotFound(f"no delivery {guid[:64]!r} (see 'webhook deliveries ID')")
    return delivery


def requeue(delivery: Delivery) -> None:
    """Make ``delivery`` due now with a fresh give-up clock (in the caller's transaction)."""
    Delivery.update(state="pending", next_try=0, first_try=None, claimed_by=None, claim_until=None,
                    attempts=0).where(Delivery.id == delivery.id).execute()


def watching(repo: Repository, user: Owner) -> bool:
    return Watch.select().where((Watch.user == user.id) & (Watch.repository == repo.id)).exists()


def watcher_names(repo: Repository) -> list[str]:
    return [n for (n,) in Watch.select(Owner.name).join(Owner, on=(Watch.user == Owner.id))
            .where(Watch.repository == repo.id).order_by(Owner.name_key).tuples()]


__all__ = ["KINDS", "MAX_URL", "as_json", "attempts_of", "check_events", "check_secret", "check_url",
           "delivery_row", "label", "pending_count", "requeue", "row", "watcher_names", "watching"]
