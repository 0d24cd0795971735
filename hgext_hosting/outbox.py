"""The outbox: from committed events to claimed deliveries, in the database.

Events are written in the transaction of what they tell (a push record:
:func:`hgext_hosting.pushdb.insert_push_event`; a repository change:
:func:`record_event`).  The daemon (:mod:`daemon.deliveries`) then runs three
steps here, each its own short write transaction, any number of processes at
once on one database:

:func:`fan_out`
    Every event not yet fanned out whose push is ``done`` (a push still
    ``pending`` waits for :func:`hgext_hosting.pushlog.settle`, which keeps or
    deletes it with its event) gets one :class:`~hgext_hosting.models.Delivery`
    per matching active webhook (the repository's and its owner's) and per
    watcher (push events, when ``[hosting] smtp`` is set), and its payload.  The
    event is taken by ``UPDATE ... SET fanned = TRUE WHERE fanned = FALSE``:
    one process does it.  Events of one repository are fanned out in order;
    one whose push is pending holds back the later ones.
:func:`claim`
    Takes due deliveries: ``claimed_by`` and a lease ``claim_until``, written by
    an ``UPDATE ... RETURNING`` that only matches an unclaimed or expired row,
    so that exactly one process holds each.  A delivery is due only when no
    earlier event's delivery to the same hook (or watcher) for the same
    repository is still pending: a repository's events arrive in order.
:func:`finish`
    Records the attempt (the last :data:`KEEP_ATTEMPTS` per hook are kept),
    then: delivered; or retried after a doubling delay (``webhook-retry-first``
    up to ``webhook-retry-max``); or, after ``webhook-give-up`` seconds of
    failing, given up.  A hook failing with no success for
    ``webhook-disable-after`` seconds is disabled and says why.

A process that dies holding a claim loses it when the lease ends; the
delivery is then tried again with the same ``guid`` (at least once).
"""

from __future__ import annotations

import datetime
import json
import time
import uuid
from dataclasses import dataclass

from . import faults
from .models import (
    Delivery,
    DeliveryAttempt,
    Event,
    Owner,
    Repository,
    Watch,
    Webhook,
    database,
    write_transaction,
)

#: Event kinds a webhook may ask for.
KINDS = ("push", "repository")
#: Attempts kept per hook (and finished deliveries).
KEEP_ATTEMPTS = 50
#: Changesets a push payload carries; ``changeset_count`` says how many there were.
MAX_CHANGESETS = 100
#: Seconds a claim holds (longer than any request: the timeout is 10 s).
LEASE_SECONDS = 120.0


@dataclass(frozen=True)
class Retry:
    """When to try again and when to stop (the ``[hosting] webhook-*`` keys)."""

    first: float = 5.0
    maximum: float = 3600.0
    give_up: float = 86400.0
    disable_after: float = 259200.0

    def delay(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1`` (``attempts`` >= 1 have failed)."""
        return min(self.first * (2 ** (attempts - 1)), self.maximum)


def iso(dt: datetime.datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- writing events -----------------------------------------------------------


def record_event(action: str, repository: Repository, actor: str = "", **extra) -> None:
    """A repository event (created, renamed, transferred, deleted, forked), in the caller's transaction.

    Also its audit entry (``repo.ACTION``), by the actor of :func:`hgext_hosting.audit.acting`.
    """
    from . import audit

    audit.record_acting(f"repo.{action}", repository.full_name, **extra)
    actor = actor or audit.current()[0]
    payload = {"event": "repository", "action": action, "repository": _repository_facts(repository),
               "sender": actor, **extra}
    Event.create(repository_id=repository.id, repository_name=repository.full_name, kind="repository",
                 action=action, actor=actor, payload=json.dumps(payload, sort_keys=True))


def _repository_facts(repo: Repository, base_url: str = "") -> dict:
    facts = {"name": repo.name, "owner": repo.owner.name, "full_name": repo.full_name,
             "private": bool(repo.private)}
    if base_url:
        facts["url"] = f"{base_url}/{repo.full_name}"
        facts["clone_url"] = f"{base_url}/{repo.full_name}"
    return facts


# -- fan-out --------------------------------------------------------------------


def fan_out(build_push_payload, smtp: bool, limit: int = 100) -> int:
    """Make the deliveries of up to ``limit`` events ready to go; return how many were fanned out.

    ``build_push_payload(event) -> dict`` reads the push from its repository
    (:func:`push_payload`); it runs outside any write transaction.
    """
    held: set[int | None] = set()
    fanned = 0
    rows = list(
        Event.select(Event.id, Event.repository_id, Event.push)
        .where(Event.fanned == False)  # noqa: E712 - SQL
        .order_by(Event.id).limit(limit).tuples()
    )
    for event_id, repository_id, push_row in rows:
        if repository_id in held:
            continue
        if push_row is not None:
            state = database().execute_sql(f"SELECT state FROM push WHERE id = {database().param}", (push_row,)).fetchone()
            if state is None:  # deleted meanwhile (settle): its event went with it
                continue
            if state[0] != "done":
                held.add(repository_id)  # the later events of this repository wait for it
                continue
        event = Event.get_or_none(Event.id == event_id)
        if event is None:
            continue
        hooks, watchers = _targets(event, smtp)
        payload = event.payload
        if (hooks or watchers) and not payload and event.kind == "push":
            payload = json.dumps(build_push_payload(event), sort_keys=True)
        with write_transaction():
            taken = database().execute_sql(
                "UPDATE event SET fanned = %s, payload = %s WHERE id = %s AND fanned = %s RETURNING id"
                .replace("%s", database().param), (True, payload, event_id, False)).fetchall()
            if not taken:
                continue
            now = time.time()
            rows_to_insert = [
                {"event": event_id, "webhook": hook_id, "recipient": None, "repository_id": repository_id,
                 "guid": str(uuid.uuid4()), "next_try": now} for hook_id in hooks
            ] + [
                {"event": event_id, "webhook": None, "recipient": user_id, "repository_id": repository_id,
                 "guid": str(uuid.uuid4()), "next_try": now} for user_id in watchers
            ]
            if rows_to_insert:
                Delivery.insert_many(rows_to_insert).execute()
            else:  # nobody to tell: the event has done its work
                Event.delete().where(Event.id == event_id).execute()
        faults.point("outbox-after-fan-out")
        fanned += 1
    return fanned


def _targets(event: Event, smtp: bool) -> tuple[list[int], list[int]]:
    """The ids of the active hooks that want ``event`` (and existed then), and of its watchers (push events)."""
    current = Repository.get_or_none(Repository.id == event.repository_id)
    if current is not None:  # its owner now (a transfer moves the owner's hooks' attention)
        owner = Owner.get_or_none(Owner.id == current.owner_id)
    else:  # deleted: the owner it had
        owner = Owner.get_or_none(Owner.name == event.repository_name.split("/", 1)[0])
    condition = Webhook.repository == event.repository_id
    if owner is not None:
        condition |= (Webhook.owner == owner.id) & Webhook.repository.is_null()
    condition &= (Webhook.active == True) & (Webhook.created <= event.created)  # noqa: E712 - SQL
    hooks = [h.id for h in Webhook.select(Webhook.id, Webhook.events).where(condition)
             if event.kind in h.events.split(",")]
    watchers: list[int] = []
    if smtp and event.kind == "push":
        watchers = [w for (w,) in Watch.select(Watch.user).where(Watch.repository == event.repository_id).tuples()]
    return hooks, watchers


def push_payload(event: Event, repo, base_url: str = "") -> dict:
    """The ``push`` payload of an event: repository, pusher, push, changesets, bookmarks, compare link.

    ``repo``: the repository, opened (Mercurial), or None when it cannot be
    (then the changesets carry their node alone).  At most
    :data:`MAX_CHANGESETS` changesets, ``changeset_count`` all of them.
    """
    from mercurial import patch, util

    from .models import Push
    from .pushlog import views

    found = views(Push.select().where(Push.id == event.push_id))
    if not found:
        raise Push.DoesNotExist(f"push row {event.push_id} is gone")
    view = found[0]
    repository = Repository.select(Repository, Owner).join(Owner).where(Repository.id == event.repository_id).get()
    unfi = repo.unfiltered() if repo is not None else None
    changesets: list[dict] = []
    for node in view.changesets[:MAX_CHANGESETS]:
        if unfi is None or not unfi.changelog.index.has_node(bytes.fromhex(node)):
            changesets.append({"node": node})
            continue
        ctx = unfi[bytes.fromhex(node)]
        stat = patch.diffstatdata(util.iterlines(ctx.diff(opts=patch.diffallopts(repo.ui, {"git": True}))))
        changesets.append({
            "node": node,
            "author": ctx.user().decode("utf-8", "replace"),
            "date": iso(datetime.datetime.fromtimestamp(ctx.date()[0], datetime.UTC)),
            "branch": ctx.branch().decode("utf-8", "replace"),
            "phase": ctx.phasestr().decode(),
            "description": ctx.description().decode("utf-8", "replace"),
            "files": [f.decode("utf-8", "replace") for f in ctx.files()],
            "parents": [p.hex().decode() for p in ctx.parents() if p.rev() >= 0],
            "tags": [t.decode("utf-8", "replace") for t in ctx.tags() if t != b"tip"],
            "diffstat": [[f.decode("utf-8", "replace"), adds, removes] for f, adds, removes, _ in stat],
        })
    facts = _repository_facts(repository, base_url)
    payload = {
        "event": "push",
        "repository": facts,
        "pusher": view.user,
        "push": {"id": view.push_id, "date": iso(view.date)},
        "changesets": changesets,
        "changeset_count": len(view.changesets),
        "bookmarks": [{"name": n, "old": o, "new": w} for n, o, w in view.bookmarks],
    }
    if view.changesets and base_url and unfi is not None and "author" in changesets[0]:
        first = unfi[bytes.fromhex(view.changesets[0])]
        base = first.p1().hex().decode() if first.p1().rev() >= 0 else "null"
        payload["compare"] = f"{base_url}/{repository.full_name}/log?rev={base}::{view.changesets[-1]}"
    return payload


# -- claiming and finishing -------------------------------------------------------------


@dataclass
class Claimed:
    """A delivery this process holds: what to send and where."""

    id: int
    guid: str
    kind: str  # the event's kind: push, repository
    payload: dict
    repository_id: int | None
    url: str | None = None  # a webhook's
    secret: str = ""
    email: str | None = None  # a watcher's
    user: str | None = None

    def body(self) -> bytes:
        return json.dumps({**self.payload, "delivery": self.guid}, sort_keys=True).encode("utf-8")


_DUE = (
    "SELECT d.id FROM delivery d LEFT JOIN webhook w ON w.id = d.webhook_id"
    " WHERE d.state = 'pending' AND d.next_try <= {p}"
    " AND (d.claim_until IS NULL OR d.claim_until < {p})"
    " AND (d.webhook_id IS NULL OR w.active = {p})"
    " AND NOT EXISTS (SELECT 1 FROM delivery e WHERE e.repository_id = d.repository_id"
    "   AND e.state = 'pending' AND e.event_id < d.event_id"
    "   AND ((d.webhook_id IS NOT NULL AND e.webhook_id = d.webhook_id)"
    "     OR (d.recipient_id IS NOT NULL AND e.recipient_id = d.recipient_id)))"
    " ORDER BY d.event_id, d.id LIMIT {p}"
)


def claim(holder: str, limit: int, skip: set[int] = frozenset(), lease: float = LEASE_SECONDS) -> list[Claimed]:
    """Take up to ``limit`` due deliveries for ``holder`` (exactly one process gets each)."""
    p = database().param
    now = time.time()
    due = [i for (i,) in database().execute_sql(_DUE.format(p=p), (now, now, True, limit + len(skip))).fetchall()
           if i not in skip][:limit]
    taken: list[int] = []
    for delivery_id in due:
        with write_transaction():
            rows = database().execute_sql(
                f"UPDATE delivery SET claimed_by = {p}, claim_until = {p} WHERE id = {p} AND state = 'pending'"
                f" AND (claim_until IS NULL OR claim_until < {p}) RETURNING id",
                (holder, now + lease, delivery_id, now)).fetchall()
        if rows:
            taken.append(delivery_id)
            faults.point("delivery-after-claim")
    return [c for c in (_load(i) for i in taken) if c is not None]


def _load(delivery_id: int) -> Claimed | None:
    d = Delivery.get_or_none(Delivery.id == delivery_id)
    if d is None:
        return None
    event = Event.get_by_id(d.event_id)
    claimed = Claimed(d.id, d.guid, event.kind, json.loads(event.payload or "{}"), d.repository_id)
    if d.webhook_id is not None:
        hook = Webhook.get_by_id(d.webhook_id)
        claimed.url, claimed.secret = hook.url, hook.secret
    else:
        user = Owner.get_by_id(d.recipient_id)
        claimed.email, claimed.user = user.email, user.name
    return claimed


@dataclass
class Outcome:
    """What one attempt came to."""

    ok: bool
    status: int | None = None
    duration_ms: int = 0
    response: str = ""
    error: str = ""
    skipped: bool = False  # not sent, and never will be (a watcher who may no longer read)


def finish(claimed: Claimed, holder: str, outcome: Outcome, retry: Retry) -> str:
    """Record an attempt and decide what follows; return the delivery's new state."""
    faults.point("delivery-before-record")
    now = time.time()
    with write_transaction():
        d = Delivery.get_or_none(Delivery.id == claimed.id)
        if d is None:
            return "gone"
        hook_id = d.webhook_id
        if hook_id is not None and not outcome.skipped:
            DeliveryAttempt.create(delivery=d.id, webhook=hook_id, status=outcome.status,
                                   duration_ms=outcome.duration_ms, response=outcome.response[:1024],
                                   error=outcome.error[:500])
        first = d.first_try or now
        attempts = d.attempts + (0 if outcome.skipped else 1)
        if outcome.ok or outcome.skipped:
            state, next_try = ("delivered" if outcome.ok else "skipped"), d.next_try
        elif now - first >= retry.give_up:
            state, next_try = "failed", d.next_try
        else:
            state, next_try = "pending", now + retry.delay(attempts)
        Delivery.update(state=state, attempts=attempts, first_try=first, next_try=next_try,
                        claimed_by=None, claim_until=None).where(Delivery.id == d.id).execute()
        if hook_id is not None and not outcome.skipped:
            _hook_health(hook_id, outcome, now, retry)
            _prune(hook_id)
        elif hook_id is None and state != "pending":  # a mail: nothing to show or redeliver
            Delivery.delete().where(Delivery.id == d.id).execute()
    return state


def _hook_health(hook_id: int, outcome: Outcome, now: float, retry: Retry) -> None:
    hook = Webhook.get_by_id(hook_id)
    if outcome.ok:
        if hook.failing_since is not None:
            Webhook.update(failing_since=None).where(Webhook.id == hook_id).execute()
        return
    since = hook.failing_since or now
    update: dict = {"failing_since": since}
    if now - since >= retry.disable_after and hook.active:
        started = datetime.datetime.fromtimestamp(since, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        last = f"HTTP {outcome.status}" if outcome.status else (outcome.error or "no answer")
        update.update(active=False, disabled_reason=f"disabled: failing since {started} (last: {last})")
    Webhook.update(**update).where(Webhook.id == hook_id).execute()


def _prune(hook_id: int) -> None:
    """Keep the newest :data:`KEEP_ATTEMPTS` attempts and finished deliveries of a hook."""
    p = database().param
    database().execute_sql(
        f"DELETE FROM delivery_attempt WHERE webhook_id = {p} AND id NOT IN"
        f" (SELECT id FROM delivery_attempt WHERE webhook_id = {p} ORDER BY id DESC LIMIT {KEEP_ATTEMPTS})",
        (hook_id, hook_id))
    database().execute_sql(
        f"DELETE FROM delivery WHERE webhook_id = {p} AND state <> 'pending' AND id NOT IN"
        f" (SELECT id FROM delivery WHERE webhook_id = {p} ORDER BY id DESC LIMIT {KEEP_ATTEMPTS})",
        (hook_id, hook_id))


def prune_events() -> None:
    """Delete fanned-out events none of whose deliveries is left (they were pruned)."""
    with write_transaction():
        database().execute_sql("DELETE FROM event WHERE fanned = %s AND NOT EXISTS"
                       " (SELECT 1 FROM delivery d WHERE d.event_id = event.id)".replace("%s", database().param), (True,))
