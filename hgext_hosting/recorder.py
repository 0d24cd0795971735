"""Recording a push inside the Mercurial transaction.

A push is in the repository if and only if its record is in the database.  The
record is tied to the hg transaction (``mercurial/transaction.py``) like this:

1. The validator ``000-hosting`` (:mod:`hgext_hosting.hooks`) has already
   refused anything not allowed.  It collects the push in memory: the new
   changesets ``range(tr.changes['origrepolen'], len(repo))``,
   ``tr.changes['bookmarks']``, phase moves of existing changesets and new
   obsolescence markers (details ``obsmarkers``: their count; ``markers``:
   ``[predecessor, [successors]]`` each; ``obsoleted``: the changesets they
   made obsolete here; ``topics``: the topics of the new changesets).  Nothing is written yet, so a ``pretxnclose`` hook
   (validator ``001-userhooks``) that refuses the push leaves nothing behind.
2. Finalizer ``txn-hosting`` (sorted after ``000-cl-*`` and the revlog
   finalizers, before ``txnclose-hook``): one short ``BEGIN IMMEDIATE``
   transaction inserts the row with ``state='pending'`` and its outbox event
   (the ``event`` table, which the daemon delivers to webhooks and watchers
   once the push is ``done``: :mod:`hgext_hosting.outbox`) and commits.  Any
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
start, ``check``) calls :func:`hgext_hosting.pushlog.settle`: it runs ``hg recover`` if the journal
is there, then every ``pending`` row whose changesets and bookmark values are
all in the repository becomes ``done`` and every other is deleted.  Holding the
lock means no transaction of that repository is in flight, so no live push is
mistaken for a dead one.  Readers and the push log only show ``done`` rows.

The statements are those of :mod:`hgext_hosting.pushdb`, on the thread's own
connection: recording a push does not import peewee.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from mercurial import error, obsolete

from . import faults, pushdb

#: Callables ``f(repository_id, push_id)`` run once a push is known to have committed.
push_listeners: list[Callable[[int, int], None]] = []


@dataclass
class PendingPush:
    """A push collected by the validator, written by the transaction's callbacks."""

    conn: pushdb.Connection
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
        conn = self.conn
        try:
            if conn.in_transaction():
                raise RuntimeError("a database transaction is already open in this thread")
            with conn.write():
                pushdb.require_current_schema(conn)
                row_id, self.push_id = pushdb.insert_push(
                    conn, self.repository_id, self.user, self.txnid,
                    json.dumps(self.details, sort_keys=True), self.nodes, self.bookmarks,
                )
                pushdb.insert_push_event(conn, self.repository_id, row_id, self.user)
                faults.point("pushlog-before-db-commit")
            self.row_id = row_id
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
            with self.conn.write():
                pushdb.delete_push(self.conn, self.row_id)
            self.row_id = None

    def postclose(self, tr) -> None:
        if self.row_id is None:
            return
        faults.point("pushlog-before-done")
        try:
            with self.conn.write():
                pushdb.mark_done(self.conn, self.row_id)
        except Exception:  # noqa: BLE001 - hg committed; settle() marks it later
            return
        for listener in list(push_listeners):
            with contextlib.suppress(Exception):
                listener(self.repository_id, self.push_id)


def _describe(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]


def describe_markers(unfi, markers) -> tuple[list[list], list[str]]:
    """``(markers, obsoleted)`` of a push's new obsolescence markers.

    ``markers``: ``[predecessor, [successors]]`` per marker, in hex, sorted (no
    successor: a prune).  ``obsoleted``: the predecessors in this repository
    that are obsolete now (hg hides them); markers may also name changesets the
    server never had.
    """
    described = sorted([prec.hex(), [s.hex() for s in succs]] for prec, succs, *_ in markers)
    obsolete_revs = obsolete.getrevs(unfi, b"obsolete")
    index = unfi.changelog.index
    obsoleted = sorted({
        prec for prec, _ in described
        if (rev := index.get_rev(bytes.fromhex(prec))) is not None and rev in obsolete_revs
    })
    return described, obsoleted


def collect(repo, tr, conn: pushdb.Connection, repository_id: int, user: str, txnid: str) -> PendingPush:
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
    topics: set = set()
    if unfi.ui.config(b"extensions", b"topic") is not None:  # only there do topics mean anything
        topics = {cl.changelogrevision(rev).extra.get(b"topic") for rev in range(origlen, len(cl))}
        topics -= {None, b""}
    if topics:
        details["topics"] = sorted(t.decode("utf-8", "replace") for t in topics)
    markers = tr.changes.get(b"obsmarkers") or ()
    if markers:
        details["obsmarkers"] = len(markers)
        details["markers"], details["obsoleted"] = describe_markers(unfi, markers)
    return PendingPush(conn, repository_id, user, txnid, nodes, bookmarks, details)
