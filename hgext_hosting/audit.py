"""The audit log: who changed what, when, from where; and every failed login.

:func:`record` adds one :class:`~hgext_hosting.models.AuditEntry` in the
caller's database transaction, so that the entry commits if and only if the
change does (call it inside the operation's ``write_transaction``).  Actors
are user names; the command line records ``cli:ACCOUNT`` (the system account
that ran ``hg-hosting``), with the address ``local``.
"""

from __future__ import annotations

import contextlib
import contextvars
import getpass
import json
from collections.abc import Iterator

from .models import AuditEntry

#: ``(actor, address)`` of the operation running in this context (:func:`acting`).
_acting: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("hosting_acting", default=None)


def cli_actor() -> str:
    """The actor of a change made with the ``hg-hosting`` command line."""
    try:
        return "cli:" + getpass.getuser()
    except Exception:  # noqa: BLE001 - no account name in this environment
        return "cli"


def who(actor) -> tuple[str, str]:
    """``(actor name, address)`` of a service :class:`~hgext_hosting.service.actors.Actor`."""
    if actor.console:
        return cli_actor(), "local"
    return actor.name, actor.address or ""


def record_for(actor, action: str, target: str = "", **details) -> None:
    """:func:`record` for a service Actor, in the caller's transaction."""
    name, address = who(actor)
    record(name, action, target, address, **details)


@contextlib.contextmanager
def acting(actor) -> Iterator[None]:
    """Name the actor of the operations below, whose transactions are opened deeper
    (:mod:`hgext_hosting.repositories`): they call :func:`record_acting` inside them."""
    token = _acting.set(who(actor))
    try:
        yield
    finally:
        _acting.reset(token)


def current() -> tuple[str, str]:
    """``(actor, address)`` set by :func:`acting`, else ``("", "")``."""
    return _acting.get() or ("", "")


def record_acting(action: str, target: str = "", **details) -> None:
    """:func:`record` with the actor of :func:`acting`, in the caller's transaction."""
    name, address = current()
    record(name, action, target, address, **details)


def record(actor: str, action: str, target: str = "", address: str = "", **details) -> None:
    """Record ``actor`` did ``action`` (``webhook.add``, ``login.failed``...) to ``target``.

    Runs in the caller's transaction; ``details``: a few JSON-able facts (never a secret).
    """
    AuditEntry.create(actor=actor[:64], action=action[:64], target=target[:255], address=address[:64],
                      details=json.dumps(details, sort_keys=True) if details else "")


def entries(limit: int = 50) -> list[dict]:
    """The newest ``limit`` entries, newest first, as the CLI's ``--json`` and the page show them."""
    rows = AuditEntry.select().order_by(AuditEntry.id.desc()).limit(limit)
    return [
        {"date": r.date.strftime("%Y-%m-%dT%H:%M:%SZ"), "actor": r.actor, "action": r.action,
         "target": r.target, "address": r.address, "details": json.loads(r.details) if r.details else {}}
        for r in rows
    ]
