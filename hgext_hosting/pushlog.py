"""Recording a push inside the Mercurial transaction, and settling what a crash left.

A push is in the repository if and only if its record is in the database.  The
record is tied to the hg transaction (``mercurial/transaction.py``) like this:

1. ``pretxnclose`` (a validator; :mod:`hgext_hosting.hooks`) has already refused
   anything not allowed.  It collects the push in memory: the new changesets
   ``range(tr.changes['origrepolen'], len(repo))``, ``tr.changes['bookmarks']``,
   phase moves of existing changesets and new obsolescence markers.  Nothing is
   written yet, so a later hook that refuses the push leaves nothing behind.
2. Finalizer ``txn-hosting`` (sorted after ``000-cl-*`` and the revlog
   finalizers, before ``txnclose-hook``): one short ``BEGIN IMMEDIATE``
   transaction inserts the row with ``state='pending'`` and commits.  Any
   failure (lock held past the busy timeout, disk full, missing or foreign
   schema) raises ``Abort``, and hg rolls the push back: nothing landed.
   The SQLite write lock is held for milliseconds, never during the upload.
3. Abort callback: if the row committed and a later finalizer or hg itself then
   aborts, the row is deleted again, so the next push reuses its id (no gap,
   no stale-row constraint failure).
4. Postclose callback ``+hosting`` runs after hg's commit point (the journal is
   gone): the row becomes ``done`` and only then are the listeners of
   :data:`push_listeners` told.  ``txnclose`` is never used for that, because
   hg also runs it after a late abort.

The window a crash can leave is step 2's COMMIT until hg unlinks its journal
(a few milliseconds): the row is ``pending`` and the journal exists.  Whoever
next takes the repository lock (the next push, the next reader, the daemon at
start, ``check``) calls :func:`settle`: it runs ``hg recover`` if the journal
is there, then every ``pending`` row whose changesets and bookmark values are
all in the repository becomes ``done`` and every other is deleted.  Holding the
lock means no transaction of that repository is in flight, so no live push is
mistaken for a dead one.  Readers and the push log only show ``done`` rows.
"""

from __future__ import annotations

import contextlib
import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from mercurial import error

from . import faults
from .models import (
    Push,
    PushBookmark,
    PushChangeset,
    Repository,
    db,
    require_current_schema,
    write_transaction,
)

#: Callables ``f(repository_id, push_id)`` run once a push is known to have committed.
push_listeners: list[Callable[[int, int], None]] = []

#: User recorded on the push that ``check --repair`` creates for unrecorded changesets.
REPAIR_USER = "(repair)"


@dataclass
class PendingPush:
    """A push collected in ``pretxnclose``, written by the transaction's callbacks."""

    repository_id: int
    user: str
    txnid: str
    nodes: list[str]
    bookmarks: list[tuple[str, str | None, str | None]]
    details: dict = field(default_factory=dict)
    row_id: int | None = None  # primary key once the finalizer committed
    push_id: int | None = None

    def is_empty(self) -> bool:
        return not (self.nodes or self.bookmarks or self.details)

    # -- the three transaction callbacks --------------------------------------

    def attach(self, tr) -> None:
        tr.addfinalize(b"txn-hosting", self.finalize)
        tr.addabort(b"hosting", self.abort)
        tr.addpostclose(b"+hosting", self.postclose)

    def finalize(self, tr) -> None:
        faults.point("pushlog-before-commit")
        try:
            if db.in_transaction():
                raise RuntimeError("a database transaction is already open in this thread")
            with write_transaction():
                require_current_schema()
                last = Push.select(Push.push_id).where(
                    Push.repository == self.repository_id
                ).order_by(Push.push_id.desc()).scalar()
                self.push_id = (last or 0) + 1
                row = Push.create(
                    repository=self.repository_id,
                    push_id=self.push_id,
                    user=self.user,
                    state="pending",
                    txnid=self.txnid,
                    details=json.dumps(self.details, sort_keys=True),
                )
                insert_changesets(row.id, self.nodes)
                for name, old, new in self.bookmarks:
                    PushBookmark.create(push=row.id, name=name, old=old, new=new)
                faults.point("pushlog-before-db-commit")
            self.row_id = row.id
        except Exception as e:  # noqa: BLE001 - every failure must abort the push
            raise error.Abort(
                b"hosting: cannot record the push in the site database: %s"
                % _describe(e).encode("utf-8"),
                hint=b"the push was not applied; try again or ask an administrator",
            ) from e
        faults.point("pushlog-after-commit")

    def abort(self, tr) -> None:
        if self.row_id is None:
            return
        with contextlib.suppress(Exception):  # check --repair mends it otherwise
            with write_transaction():
                Push.delete().where(Push.id == self.row_id).execute()
            self.row_id = None

    def postclose(self, tr) -> None:
        if self.row_id is None:
            return
        faults.point("pushlog-before-done")
        try:
            with write_transaction():
                Push.update(state="done").where(Push.id == self.row_id).execute()
        except Exception:  # noqa: BLE001 - hg committed; settle() marks it later
            return
        for listener in list(push_listeners):
            with contextlib.suppress(Exception):
                listener(self.repository_id, self.push_id)


def _describe(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]


def insert_changesets(push_row_id: int, nodes: list[str]) -> None:
    """Insert a push's changesets in order, in batches."""
    for start in range(0, len(nodes), 500):
        PushChangeset.insert_many(
            [{"push": push_row_id, "position": start + i, "node": n}
             for i, n in enumerate(nodes[start : start + 500])]
        ).execute()


def collect(repo, tr, repository_id: int, user: str, txnid: str) -> PendingPush:
    """What this transaction adds: changesets, bookmark moves, phase moves, markers."""
    unfi = repo.unfiltered()
    cl = unfi.changelog
    origlen = tr.changes[b"origrepolen"]
    nodes = [cl.node(rev).hex() for rev in range(origlen, len(cl))]
    bookmarks = []
    for name, (old, new) in sorted(tr.changes[b"bookmarks"].items()):
        if old != new:
            bookmarks.append(
                (name.decode("utf-8", "replace"),
                 old.hex() if old else None, new.hex() if new else None)
            )
    details: dict = {}
    phases = []
    for revs, (old, new) in tr.changes[b"phases"]:
        phases.extend([cl.node(rev).hex(), old, new] for rev in revs if rev < origlen)
    if phases:
        details["phases"] = phases
    markers = tr.changes.get(b"obsmarkers") or ()
    if markers:
        details["obsmarkers"] = len(markers)
    return PendingPush(repository_id, user, txnid, nodes, bookmarks, details)


# -- settling after a crash -----------------------------------------------------


def settle(repo, repository_id: int) -> list[str]:
    """Recover an abandoned transaction and settle ``pending`` rows; return what was done.

    Takes the repository lock (waiting for a live push to finish first).
    """
    done: list[str] = []
    with repo.lock():
        if repo.svfs.exists(b"journal"):
            repo.ui.status(b"hosting: recovering an interrupted transaction\n")
            repo.recover()
            done.append("rolled back an interrupted transaction")
        with write_transaction():
            done.extend(_settle_rows(repository_id, repo.unfiltered()))
    return done


def has_pending(repository_id: int) -> bool:
    """True when some push of the repository is not settled (cheap, indexed)."""
    return Push.select().where(
        (Push.repository == repository_id) & (Push.state == "pending")
    ).exists()


def _settle_rows(repository_id: int, unfi) -> list[str]:
    """Settle the ``pending`` rows of a repository whose lock the caller holds."""
    said = []
    pending = Push.select().where((Push.repository == repository_id) & (Push.state == "pending"))
    for push in list(pending):
        if _landed(unfi, push):
            Push.update(state="done").where(Push.id == push.id).execute()
            said.append(f"push {push.push_id} had committed: marked done")
        else:
            push.delete_instance()
            said.append(f"push {push.push_id} had been rolled back: record removed")
    return said


def _landed(unfi, push: Push) -> bool:
    """True when every changeset and bookmark value of ``push`` is in the repository."""
    index = unfi.changelog.index
    for (node,) in PushChangeset.select(PushChangeset.node).where(PushChangeset.push == push.id).tuples():
        if not index.has_node(bytes.fromhex(node)):
            return False
    marks = unfi._bookmarks
    for name, new in PushBookmark.select(PushBookmark.name, PushBookmark.new).where(
        PushBookmark.push == push.id
    ).tuples():
        current = marks.get(name.encode("utf-8"))
        if (current.hex() if current else None) != new:
            return False
    return True


# -- reading ---------------------------------------------------------------------


@dataclass
class PushView:
    """A push as readers see it (CLI, ``hg pushlog``, pages, json-pushes)."""

    push_id: int
    user: str
    date: datetime.datetime
    changesets: list[str]
    bookmarks: list[tuple[str, str | None, str | None]]
    details: dict

    def as_json(self) -> dict:
        return {
            "id": self.push_id,
            "user": self.user,
            "date": self.date.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "changesets": self.changesets,
            "bookmarks": [{"name": n, "old": o, "new": w} for n, o, w in self.bookmarks],
            **({"phases": self.details["phases"]} if "phases" in self.details else {}),
        }


def recent_pushes(repo: Repository | int, limit: int | None = None, offset: int = 0) -> list[PushView]:
    """The ``done`` pushes of a repository, newest first."""
    query = (
        Push.select()
        .where((Push.repository == repo) & (Push.state == "done"))
        .order_by(Push.push_id.desc())
        .offset(offset)
    )
    if limit is not None:
        query = query.limit(limit)
    return views(list(query))


def views(pushes: list[Push]) -> list[PushView]:
    """Attach changesets and bookmarks to push rows, in two queries."""
    ids = [p.id for p in pushes]
    nodes: dict[int, list[str]] = {i: [] for i in ids}
    marks: dict[int, list] = {i: [] for i in ids}
    if ids:
        for push_id, node in (
            PushChangeset.select(PushChangeset.push, PushChangeset.node)
            .where(PushChangeset.push.in_(ids))
            .order_by(PushChangeset.push, PushChangeset.position)
            .tuples()
        ):
            nodes[push_id].append(node)
        for push_id, name, old, new in (
            PushBookmark.select(PushBookmark.push, PushBookmark.name, PushBookmark.old, PushBookmark.new)
            .where(PushBookmark.push.in_(ids))
            .order_by(PushBookmark.push, PushBookmark.name)
            .tuples()
        ):
            marks[push_id].append((name, old, new))
    return [
        PushView(p.push_id, p.user, p.date, nodes[p.id], marks[p.id], p.extra) for p in pushes
    ]


def format_push_line(row: dict) -> str:
    """One human line for a push (CLI and ``hg pushlog``)."""
    parts = [f"{row['id']}\t{row['date']}\t{row['user']}"]
    csets = row["changesets"]
    if csets:
        parts.append(f"{len(csets)} changeset{'s' if len(csets) != 1 else ''}"
                     f" {csets[0][:12]}" + (f"..{csets[-1][:12]}" if len(csets) > 1 else ""))
    for bm in row["bookmarks"]:
        new = bm["new"][:12] if bm["new"] else "(deleted)"
        parts.append(f"bookmark {bm['name']} -> {new}")
    if "phases" in row:
        parts.append(f"{len(row['phases'])} phase change(s)")
    return "\t".join(parts)

