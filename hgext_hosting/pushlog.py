"""The push log after the fact: settling what a crash left, and reading it.

:mod:`hgext_hosting.recorder` writes each push inside its Mercurial
transaction; its docstring has the ordering and the one window a crash can
leave (a ``pending`` row next to a journal).  :func:`settle` closes that
window under the repository lock; the readers (CLI, ``hg pushlog``, pages,
json-pushes) only ever show ``done`` rows.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from .models import Push, PushBookmark, PushChangeset, Repository, connection, push_details, write_transaction

#: User recorded on the push that ``check --repair`` creates for unrecorded changesets.
REPAIR_USER = "(repair)"


# -- settling after a crash -----------------------------------------------------


def settle(repo, repository_id: int) -> list[str]:
    """Recover an abandoned transaction and settle ``pending`` rows; return what was done.

    Takes the repository lock (waiting for a live push to finish first).  A
    push's outbox event (:mod:`hgext_hosting.outbox`) follows its record: kept
    (and then delivered) when the push is marked done, deleted with it
    (``ON DELETE CASCADE``) when it had been rolled back.
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
            **{key: self.details[key] for key in ("markers", "obsoleted", "topics") if key in self.details},
        }


def recent_pushes(repo: Repository | int, limit: int | None = None) -> list[PushView]:
    """The ``done`` pushes of a repository, newest first (``limit``: the newest ``limit``)."""
    return _read("repository_id = ? AND state = 'done'", (_id(repo),), "push_id DESC", limit)


def pushes_up_to(repo: Repository | int, highest: int, limit: int) -> list[PushView]:
    """The ``done`` pushes with ids from ``highest - limit + 1`` to ``highest``, newest first.

    A window of ids, not of rows: the push log's pages (ids are contiguous, so a
    window holds ``limit`` pushes; where ``check --repair`` dropped an emptied
    push, its page shows one fewer and no page repeats another's).
    """
    return _read("repository_id = ? AND state = 'done' AND push_id <= ? AND push_id > ?",
                 (_id(repo), highest, highest - limit), "push_id DESC", limit)


def views(query) -> list[PushView]:
    """The pushes a peewee query of :class:`Push` rows selects, in its order, as views."""
    rows = query.select(Push.id, Push.push_id, Push.user, Push.date, Push.details).tuples()
    return _attach(connection(), [(i, n, u, Push.date.python_value(d), x) for i, n, u, d, x in rows])


# The readers run on every page and API request: plain SQL and tuples, as pushdb does,
# since building peewee queries and model instances cost most of a 100-push page.

def _id(repo: Repository | int) -> int:
    return repo if isinstance(repo, int) else repo.id


def _read(where: str, params: tuple, order: str, limit: int | None) -> list[PushView]:
    """The pushes ``WHERE where ORDER BY order LIMIT limit``, with their changesets and bookmarks."""
    conn = connection()
    sql = f'SELECT id, push_id, "user", date, details FROM push WHERE {where} ORDER BY {order}'
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    to_date = Push.date.python_value  # text on SQLite, a datetime on PostgreSQL
    return _attach(conn, [(i, n, u, to_date(d), x) for i, n, u, d, x in conn.query(sql, params)])


#: Push rows per query in :func:`_attach`: SQLite builds bind from 32,766 parameters
#: a statement (the default) to 250,000 (Debian's), and the whole log may be longer.
_IN_CHUNK = 500


def _attach(conn, rows: list[tuple]) -> list[PushView]:
    """Push rows ``(row id, push id, user, date, details)`` with their changesets and
    bookmarks, read in one query each."""
    if not rows:
        return []
    nodes: dict[int, list[str]] = {row[0]: [] for row in rows}
    marks: dict[int, list] = {row[0]: [] for row in rows}
    every = tuple(nodes)
    for start in range(0, len(every), _IN_CHUNK):
        ids = every[start:start + _IN_CHUNK]
        among = ", ".join("?" * len(ids))
        for push, node in conn.query(
                f"SELECT push_id, node FROM push_changeset WHERE push_id IN ({among}) ORDER BY push_id, position",
                ids):
            nodes[push].append(node)
        for push, name, old, new in conn.query(
                f"SELECT push_id, name, old, new FROM push_bookmark WHERE push_id IN ({among})"
                " ORDER BY push_id, name", ids):
            marks[push].append((name, old, new))
    return [PushView(push_id, user, date, nodes[i], marks[i], push_details(details))
            for i, push_id, user, date, details in rows]


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
    if "markers" in row:
        parts.append(f"{len(row['markers'])} obsolescence marker(s)")
    return "\t".join(parts)



def last_push_id(repo: Repository | int) -> int:
    """The highest ``done`` push id of a repository, 0 without any (one index probe)."""
    ((last,),) = connection().query(
        "SELECT MAX(push_id) FROM push WHERE repository_id = ? AND state = 'done'", (_id(repo),))
    return last or 0
