"""The push path's questions to the site database, in plain SQL over DB-API.

Every push runs this: in a short-lived process (a local ``hg push``, an SSH
session's ``hg serve --stdio``) or in a daemon thread.  It asks the same few
questions each time: which repository is this, who is pushing, which grants
and protected refs apply, and then it writes one push record.  Importing
peewee and the models and building their queries cost a one-changeset push
about 40 ms, a quarter of the whole push (``bench/hook_cost.py``), so these
questions are asked here in SQL over a DB-API connection:

* on SQLite (the default), Python's own ``sqlite3``, opened with the pragmas
  of :func:`sqlite_pragmas` (which peewee's connections get too), one
  connection per thread;
* on any other database, the site's peewee database (its import does not
  matter on such a site), through :class:`PeeweeConnection`.

The same functions answer the daemon and the CLI (with
:func:`hgext_hosting.models.connection`, the database the models are bound
to), so every question has one SQL text.  This module imports neither the
models nor (at load time) peewee: the models import it.  Table and column
names are those the models create (peewee's ``legacy_table_names = False``);
the tests run every statement here against a database that
:func:`hgext_hosting.models.migrate` created.
"""

from __future__ import annotations

import contextlib
import datetime
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from . import names
from .policy import RepoFacts, Subject

#: Bumped with every change of the tables in models.py; models.MIGRATIONS gets a step.
SCHEMA_VERSION = 11


class SchemaError(RuntimeError):
    """The database is missing, or its schema is not the one this code knows."""


def utcnow() -> datetime.datetime:
    """The current UTC time as a naive datetime (how every date is stored)."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


# -- connections -----------------------------------------------------------------


class SqliteConnection:
    """A ``sqlite3`` connection in autocommit mode; :meth:`write` is BEGIN IMMEDIATE."""

    def __init__(self, path: str, busy_timeout_ms: int):
        self.conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000.0, isolation_level=None)
        for key, value in sqlite_pragmas(busy_timeout_ms).items():
            self.conn.execute(f"PRAGMA {key} = {value}")

    def query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    def execute(self, sql: str, params: Sequence = ()) -> None:
        self.conn.execute(sql, params)

    def execute_many(self, sql: str, rows: list[Sequence]) -> None:
        self.conn.executemany(sql, rows)

    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def is_sqlite(self) -> bool:
        return True

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """A transaction holding the write lock from its first statement."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")


def sqlite_pragmas(busy_timeout_ms: int) -> dict[str, object]:
    """The pragmas run on every new SQLite connection (peewee's too)."""
    return {
        "journal_mode": "wal",
        "busy_timeout": busy_timeout_ms,
        "foreign_keys": 1,
        # FULL: a push record must survive power loss once hg's commit follows it.
        "synchronous": "full",
    }


class PeeweeConnection:
    """A peewee database (a site's, :meth:`Site.database <hgext_hosting.site.Site.database>`)
    seen through the same methods."""

    def __init__(self, database):
        self.db = database

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self.db.param)

    def query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        return list(self.db.execute_sql(self._sql(sql), tuple(params)).fetchall())

    def execute(self, sql: str, params: Sequence = ()) -> None:
        self.db.execute_sql(self._sql(sql), tuple(params))

    def execute_many(self, sql: str, rows: list[Sequence]) -> None:
        cursor = self.db.cursor()
        cursor.executemany(self._sql(sql), [tuple(r) for r in rows])

    def in_transaction(self) -> bool:
        return self.db.in_transaction()

    def is_sqlite(self) -> bool:
        import peewee  # loaded already: whoever made self.db imported it

        return isinstance(self.db, peewee.SqliteDatabase)

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with write_transaction(self.db):
            yield


def write_transaction(database):
    """A transaction of a peewee ``database`` that takes the write lock at once
    (``BEGIN IMMEDIATE`` on SQLite)."""
    import peewee

    if isinstance(database, peewee.SqliteDatabase):
        return database.atomic("IMMEDIATE")
    return database.atomic()


Connection = SqliteConnection | PeeweeConnection

_local = threading.local()


def connect(url: str, busy_timeout_ms: int) -> SqliteConnection:
    """This thread's connection to the SQLite database at ``url`` (``sqlite:///PATH``)."""
    cache = getattr(_local, "connections", None)
    if cache is None:
        cache = _local.connections = {}
    conn = cache.get((url, busy_timeout_ms))
    if conn is None:
        conn = cache[(url, busy_timeout_ms)] = SqliteConnection(url[len("sqlite:///"):],
                                                               busy_timeout_ms)
    return conn


# -- the schema ---------------------------------------------------------------------


def schema_version(conn: Connection) -> int:
    """The version recorded in the database, 0 for an empty database.

    The table is looked up first rather than the failing query caught: on
    PostgreSQL a failed statement aborts the whole transaction around it.
    """
    if conn.is_sqlite():
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    else:
        sql = "SELECT 1 FROM information_schema.tables WHERE table_name = 'meta'"
    if not conn.query(sql):
        return 0
    rows = conn.query("SELECT value FROM meta WHERE key = ?", ("schema_version",))
    return int(rows[0][0]) if rows else 0


def moved_to(conn: Connection) -> str | None:
    """Where ``hg-hosting db copy`` moved this database (``meta.moved_to``), else None."""
    if conn.is_sqlite():
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    else:
        sql = "SELECT 1 FROM information_schema.tables WHERE table_name = 'meta'"
    if not conn.query(sql):
        return None
    rows = conn.query("SELECT value FROM meta WHERE key = ?", ("moved_to",))
    return rows[0][0] if rows else None


def require_current_schema(conn: Connection) -> None:
    """Raise SchemaError unless the database has exactly :data:`SCHEMA_VERSION`."""
    found = schema_version(conn)
    if found != SCHEMA_VERSION:
        if found == 0:
            moved = moved_to(conn)
            if moved:  # retired by `hg-hosting db copy` (hgext_hosting.dbcopy)
                raise SchemaError(f"the site database has moved to {moved}; try again"
                                  " (a daemon started before the move must be restarted)")
            raise SchemaError("the site database has no schema (run 'hg-hosting init')")
        raise SchemaError(
            f"the site database has schema version {found}, this code needs"
            f" {SCHEMA_VERSION} (run 'hg-hosting init' to migrate)"
        )


# -- who and what ------------------------------------------------------------------------


@dataclass(frozen=True)
class RepoRow:
    """A repository as the push path and the daemon's request routing need it."""

    id: int
    owner_name: str
    owner_key: str
    owner_is_team: bool
    name: str
    private: bool
    description: str
    settings_epoch: int
    has_pending: bool  # some push record is not settled (False when not asked: RepoRow.of)
    #: False: drafts stay drafts and only the ``publish`` level makes changesets public.
    publishing: bool = True

    @property
    def full_name(self) -> str:
        return f"{self.owner_name}/{self.name}"

    @classmethod
    def of(cls, repo) -> RepoRow:
        """The RepoRow of a peewee Repository row (its owner loaded)."""
        owner = repo.owner
        return cls(repo.id, owner.name, owner.name_key, owner.is_team, repo.name,
                   bool(repo.private), repo.description, repo.settings_epoch, False,
                   bool(repo.publishing))


#: The columns of a :class:`RepoRow`, in its order; ``{rid}`` names the repository id.
_REPO_COLUMNS = (
    "SELECT r.id, o.name, o.name_key, o.kind, r.name, r.private, r.description, r.settings_epoch,"
    " EXISTS (SELECT 1 FROM push p WHERE p.repository_id = {rid} AND p.state = 'pending'),"
    " r.publishing"
)


def find_repository(conn: Connection, owner: str, name: str) -> RepoRow | None:
    """The repository ``owner/name`` (any case), or None."""
    rows = conn.query(
        _REPO_COLUMNS.format(rid="r.id") + " FROM repository r JOIN owner o ON o.id = r.owner_id"
        " WHERE o.name_key = ? AND r.name_key = ?",
        (names.key(owner), names.key(name)),
    )
    if not rows:
        return None
    rid, oname, okey, kind, rname, private, description, epoch, pending, publishing = rows[0]
    return RepoRow(rid, oname, okey, kind == "team", rname, bool(private), description, epoch,
                   bool(pending), bool(publishing))


def find_repository_evenly(conn: Connection, owner: str, name: str) -> RepoRow:
    """The repository ``owner/name``; when missing, a private one with id 0 (never a row's).

    Unlike :func:`find_repository`, the same query, the same rows and the same
    Python work for a missing repository as for a private one, so that the time
    of the daemon's refusal does not tell them apart (``bench/private_vs_missing.py``).
    """
    rid, oname, okey, kind, rname, private, description, epoch, pending, publishing = conn.query(
        _REPO_COLUMNS.format(rid="COALESCE(r.id, 0)") + " FROM (SELECT 1) AS one"
        " LEFT JOIN owner o ON o.name_key = ? LEFT JOIN repository r ON r.owner_id = o.id AND r.name_key = ?",
        (names.key(owner), names.key(name)))[0]
    return RepoRow(rid or 0, oname or "", okey or "", kind == "team", rname or "",
                   True if rid is None else bool(private), description or "", epoch or 0,
                   bool(pending), True if publishing is None else bool(publishing))


def load_subject(conn: Connection, user_name: str | None) -> Subject | None:
    """The Subject for an existing, enabled user name (any case), or None.

    A disabled user is None, as if unknown: every caller (hooks, the daemon, SSH,
    the service layer's actors) then refuses them with no check of its own.
    """
    if not user_name:
        return None
    rows = conn.query(
        "SELECT id, name, is_admin FROM owner WHERE name_key = ? AND kind = 'user' AND disabled = ?",
        (names.key(user_name), False),
    )
    if not rows:
        return None
    uid, name, is_admin = rows[0]
    teams = conn.query(
        "SELECT t.name_key FROM membership m JOIN owner t ON t.id = m.team_id WHERE m.user_id = ?",
        (uid,),
    )
    return Subject(name, bool(is_admin), frozenset(t for (t,) in teams))


def is_disabled(conn: Connection, user_name: str) -> bool:
    """Is ``user_name`` a disabled user?  Asked only to word a refusal of :func:`load_subject`'s None."""
    return bool(conn.query(
        "SELECT 1 FROM owner WHERE name_key = ? AND kind = 'user' AND disabled = ?",
        (names.key(user_name), True),
    ))


def load_repo_facts(conn: Connection, repo: RepoRow) -> RepoFacts:
    """The RepoFacts of a repository: what it is, plus its grants."""
    user_grants: dict[str, str] = {}
    team_grants: dict[str, str] = {}
    for level, key, kind in conn.query(
        'SELECT g.level, o.name_key, o.kind FROM "grant" g JOIN owner o ON o.id = g.subject_id'
        " WHERE g.repository_id = ?",
        (repo.id,),
    ):
        (team_grants if kind == "team" else user_grants)[key] = level
    return RepoFacts(
        full_name=repo.full_name,
        owner=repo.owner_key,
        owner_is_team=repo.owner_is_team,
        private=repo.private,
        user_grants=user_grants,
        team_grants=team_grants,
    )


def load_protected_refs(conn: Connection, repo_id: int) -> dict[str, frozenset[str]]:
    """``{ref name: allow-list}`` of a repository, as ``policy.may_push_ref`` wants it."""
    refs: dict[str, set[str]] = {
        name: set()
        for (name,) in conn.query("SELECT name FROM protected_ref WHERE repository_id = ?", (repo_id,))
    }
    for ref_name, key, kind in conn.query(
        "SELECT r.name, o.name_key, o.kind FROM protected_ref_allow a"
        " JOIN protected_ref r ON r.id = a.ref_id JOIN owner o ON o.id = a.subject_id"
        " WHERE r.repository_id = ?",
        (repo_id,),
    ):
        refs[ref_name].add("@" + key if kind == "team" else key)
    return {name: frozenset(allow) for name, allow in refs.items()}


# -- the push record ------------------------------------------------------------------


def insert_push(conn: Connection, repository_id: int, user: str, txnid: str, details: str,
                nodes: list[str], bookmarks: list[tuple[str, str | None, str | None]],
                state: str = "pending") -> tuple[int, int]:
    """Insert a push with the repository's next id; return ``(row id, push id)``.

    The caller holds the write transaction (:meth:`write`).
    """
    (last,) = conn.query(
        "SELECT COALESCE(MAX(push_id), 0) FROM push WHERE repository_id = ?", (repository_id,)
    )[0]
    push_id = last + 1
    seq = None
    if nodes:  # the next number among the pushes with changesets (models.Push.cset_seq)
        # The numbers rise with push_id, so the newest numbered push holds the highest:
        # a walk back from the last push id (bookmark-only pushes are few), where
        # MAX(cset_seq) would read every index entry of the repository.
        found = conn.query(
            "SELECT cset_seq FROM push WHERE repository_id = ? AND cset_seq IS NOT NULL"
            " ORDER BY push_id DESC LIMIT 1", (repository_id,))
        seq = (found[0][0] if found else 0) + 1
    ((row_id,),) = conn.query(
        'INSERT INTO push (repository_id, push_id, "user", date, state, txnid, details, cset_seq)'
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (repository_id, push_id, user, str(utcnow()), state, txnid, details, seq),
    )
    insert_changesets(conn, row_id, nodes)
    if bookmarks:
        conn.execute_many(
            "INSERT INTO push_bookmark (push_id, name, old, new) VALUES (?, ?, ?, ?)",
            [(row_id, name, old, new) for name, old, new in bookmarks],
        )
    return row_id, push_id


def insert_changesets(conn: Connection, push_row_id: int, nodes: list[str], start: int = 0) -> None:
    """Append changesets to a push, in order, from position ``start``."""
    if nodes:
        conn.execute_many(
            "INSERT INTO push_changeset (push_id, position, node) VALUES (?, ?, ?)",
            [(push_row_id, start + i, node) for i, node in enumerate(nodes)],
        )


def number_changeset_pushes(conn: Connection, repository_id: int | None = None) -> None:
    """Number the pushes with changesets 1, 2... per repository in push order
    (``push.cset_seq``), the others NULL: of one repository, or of all (schema step 11).

    :func:`insert_push` keeps the numbering as pushes arrive; this restores it
    where changesets were taken from pushes (``check --repair``).  The caller
    holds the write transaction.
    """
    only = "" if repository_id is None else " AND p.repository_id = ?"
    params = () if repository_id is None else (repository_id,)
    conn.execute(
        "UPDATE push SET cset_seq = NULL WHERE cset_seq IS NOT NULL AND id IN (SELECT p.id FROM push p"
        " WHERE NOT EXISTS (SELECT 1 FROM push_changeset c WHERE c.push_id = p.id)" + only + ")", params)
    conn.execute(
        "UPDATE push SET cset_seq = numbered.n FROM (SELECT p.id AS id,"
        " ROW_NUMBER() OVER (PARTITION BY p.repository_id ORDER BY p.push_id) AS n FROM push p"
        " WHERE EXISTS (SELECT 1 FROM push_changeset c WHERE c.push_id = p.id)" + only + ") AS numbered"
        " WHERE push.id = numbered.id", params)


def delete_push(conn: Connection, row_id: int) -> None:
    conn.execute("DELETE FROM push WHERE id = ?", (row_id,))


def mark_done(conn: Connection, row_id: int) -> None:
    conn.execute("UPDATE push SET state = 'done' WHERE id = ?", (row_id,))


# -- the outbox -----------------------------------------------------------------------


def insert_push_event(conn: Connection, repository_id: int, push_row_id: int, user: str) -> None:
    """The outbox row of a push, in the caller's write transaction with the push record.

    It goes when the push record goes (``ON DELETE CASCADE``), and the daemon
    only delivers it once the push is ``done`` (:mod:`hgext_hosting.outbox`).
    """
    conn.execute(
        "INSERT INTO event (repository_id, repository_name, push_id, kind, action, actor, payload,"
        " created, fanned) SELECT r.id, o.name || '/' || r.name, ?, 'push', 'push', ?, '', ?, ?"
        " FROM repository r JOIN owner o ON o.id = r.owner_id WHERE r.id = ?",
        (push_row_id, user, str(utcnow()), False, repository_id),
    )
