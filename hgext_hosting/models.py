"""The site database: peewee models, bound to a database passed in, with a recorded schema version.

The models belong to no database until one is bound: :meth:`Site.database
<hgext_hosting.site.Site.database>` opens a site's (SQLite by default,
PostgreSQL when ``[hosting] database`` says so, see :func:`make_database`),
:func:`bound` binds the models to it for a block (the CLI, for one command)
and :func:`bind` for the rest of the process (the daemon's ``make_service``).
Two sites can thus be used one after the other in one process.  SQLite runs in
WAL mode with a busy timeout and foreign keys on, so the daemon and hooks in
other processes share it.  Writers use :func:`write_transaction`, which on SQLite is
``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes fails at
once with ``database is locked`` when another process committed meanwhile.

The schema version lives in the ``meta`` table; :func:`migrate` brings a
database up to :data:`SCHEMA_VERSION` and :func:`require_current_schema` is
what hooks call, so that a push never writes into a schema it does not know.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator

import peewee as pw

from . import names, pushdb

# Defined in pushdb, which the push path imports without peewee; re-exported here.
SCHEMA_VERSION = pushdb.SCHEMA_VERSION
SchemaError = pushdb.SchemaError
sqlite_pragmas = pushdb.sqlite_pragmas
utcnow = pushdb.utcnow

#: What the models use while no database is bound: any query fails ("uninitialized Proxy").
UNBOUND = pw.DatabaseProxy()


class BaseModel(pw.Model):
    class Meta:
        database = UNBOUND
        legacy_table_names = False


def columns(model: type[BaseModel], alias: str) -> str:
    """Every column of ``model``'s table under ``alias``, in :func:`from_row`'s order."""
    return ", ".join(f'{alias}."{f.column_name}"' for f in model._meta.sorted_fields)


def from_row(model: type[BaseModel], values) -> BaseModel:
    """A ``model`` instance from the values of its :func:`columns`, as peewee builds one
    from a query's row (each value through its field's ``python_value``, nothing dirty)."""
    instance = model(__no_default__=1)
    instance.__data__ = {f.name: f.python_value(v)
                         for f, v in zip(model._meta.sorted_fields, values, strict=True)}
    return instance


def from_joined(values, model: type[BaseModel], parent: type[BaseModel], via: str,
                parents: dict | None = None) -> BaseModel:
    """A ``model`` instance with its ``via`` foreign key's ``parent`` instance loaded, from a
    row of ``columns(model), columns(parent)`` (extra values after them are ignored), as
    peewee's ``select(model, parent).join(parent)`` builds them.  ``parents``: a dict by
    parent id to share one parent instance among the rows of one query.
    """
    width = len(model._meta.sorted_fields)
    end = width + len(parent._meta.sorted_fields)
    child = from_row(model, values[:width])
    above = parents.get(values[width]) if parents is not None else None
    if above is None:
        above = from_row(parent, values[width:end])
        if parents is not None:
            parents[values[width]] = above
    setattr(child, via, above)
    child._dirty.clear()  # loading the relation is not a change
    return child


class Meta(BaseModel):
    """Key/value facts about the database itself (``schema_version``)."""

    key = pw.CharField(primary_key=True, max_length=64)
    value = pw.TextField()


class Owner(BaseModel):
    """A user or a team: users and teams share one namespace of owners."""

    name = pw.CharField(max_length=64)
    name_key = pw.CharField(max_length=64, unique=True)
    kind = pw.CharField(max_length=8)  # "user" or "team"
    email = pw.CharField(max_length=254, default="")
    password_hash = pw.CharField(max_length=255, null=True)
    is_admin = pw.BooleanField(default=False)
    created = pw.DateTimeField(default=utcnow)
    #: Bumped whenever a credential changes, so that caches of verified logins expire.
    credentials_epoch = pw.IntegerField(default=0)
    #: Bumped when the password changes or the account is reset, disabled or removed:
    #: every browser session carries the value it was made with and dies with it.
    login_epoch = pw.IntegerField(default=0)
    #: A disabled user cannot log in, use a token or a key, pull or push, from the next
    #: request on; nothing of theirs is deleted (``hg-hosting user disable|enable``).
    disabled = pw.BooleanField(default=False)

    @property
    def is_team(self) -> bool:
        return self.kind == "team"


class Membership(BaseModel):
    """A user's membership in a team."""

    team = pw.ForeignKeyField(Owner, on_delete="CASCADE", backref="memberships")
    user = pw.ForeignKeyField(Owner, on_delete="CASCADE", backref="teams")

    class Meta:
        indexes = ((("team", "user"), True),)


class Repository(BaseModel):
    """A hosted repository, ``OWNER/NAME``, stored at ``repos/OWNER/NAME``."""

    owner = pw.ForeignKeyField(Owner, on_delete="RESTRICT", backref="repositories")
    name = pw.CharField(max_length=64)
    name_key = pw.CharField(max_length=64)
    private = pw.BooleanField(default=False)
    description = pw.TextField(default="")
    created = pw.DateTimeField(default=utcnow)
    #: Bumped whenever grants, protected refs or visibility change (cache invalidation).
    settings_epoch = pw.IntegerField(default=0)
    #: Identity that survives renames; move intents (repositories.py) refer to it.
    uuid = pw.CharField(max_length=32, unique=True, default=lambda: uuid.uuid4().hex)
    #: Publishing (the default): every pushed changeset becomes public.  Non-publishing:
    #: drafts stay drafts, topics and obsolescence markers are exchanged, and only the
    #: ``publish`` level may make a changeset public (hooks.check_publication).
    publishing = pw.BooleanField(default=True)
    #: The repository this one was forked from; NULL when it was not, or once the source is removed.
    forked_from = pw.ForeignKeyField("self", null=True, on_delete="SET NULL", backref="forks")

    class Meta:
        indexes = ((("owner", "name_key"), True),)

    @property
    def owner_name(self) -> str:
        return self.owner.name

    @property
    def full_name(self) -> str:
        return f"{self.owner.name}/{self.name}"

    @classmethod
    def find(cls, owner: str, name: str) -> Repository | None:
        """The repository ``owner/name`` (any case), its owner loaded, or None.

        Every request for a repository asks this: plain SQL (:func:`columns`,
        :func:`from_row`), as building the joined peewee query costs more than running it.
        """
        found = connection().query(
            f"SELECT {columns(cls, 'r')}, {columns(Owner, 'o')} FROM repository r"
            " JOIN owner o ON o.id = r.owner_id WHERE o.name_key = ? AND r.name_key = ?",
            (names.key(owner), names.key(name)))
        return from_joined(found[0], cls, Owner, "owner") if found else None


class Grant(BaseModel):
    """A permission level on a repository for a user or a team."""

    repository = pw.ForeignKeyField(Repository, on_delete="CASCADE", backref="grants")
    subject = pw.ForeignKeyField(Owner, on_delete="CASCADE", backref="grants")
    level = pw.CharField(max_length=8)

    class Meta:
        indexes = ((("repository", "subject"), True),)


class ProtectedRef(BaseModel):
    """A named branch and bookmark of that name that only its allow-list may push."""

    repository = pw.ForeignKeyField(Repository, on_delete="CASCADE", backref="protected_refs")
    name = pw.CharField(max_length=255)

    class Meta:
        indexes = ((("repository", "name"), True),)


class ProtectedRefAllow(BaseModel):
    """One subject (user or team) on a protected ref's allow-list."""

    ref = pw.ForeignKeyField(ProtectedRef, on_delete="CASCADE", backref="allowed")
    subject = pw.ForeignKeyField(Owner, on_delete="CASCADE")

    class Meta:
        indexes = ((("ref", "subject"), True),)


class ApiToken(BaseModel):
    """An API token, stored only as its SHA-256 digest."""

    user = pw.ForeignKeyField(Owner, on_delete="CASCADE", backref="tokens")
    label = pw.CharField(max_length=64)
    digest = pw.CharField(max_length=64, unique=True)
    created = pw.DateTimeField(default=utcnow)
    last_used = pw.DateTimeField(null=True)
    #: When the token stops working (UTC); None: never.
    expires = pw.DateTimeField(null=True)
    #: ``read``, ``write`` or ``admin`` (:data:`hgext_hosting.policy.SCOPES`): what the
    #: token may do of what its user may (:func:`hgext_hosting.policy.with_scope`).
    scope = pw.CharField(max_length=8, default="write")

    class Meta:
        indexes = ((("user", "label"), True),)


class SshKey(BaseModel):
    """A user's SSH public key; the fingerprint identifies one user site-wide."""

    user = pw.ForeignKeyField(Owner, on_delete="CASCADE", backref="ssh_keys")
    fingerprint = pw.CharField(max_length=64, unique=True)
    key_type = pw.CharField(max_length=64)
    blob = pw.TextField()
    comment = pw.CharField(max_length=255, default="")
    created = pw.DateTimeField(default=utcnow)


class Push(BaseModel):
    """One push to a repository: numbered from 1 per repository, without gaps.

    ``state`` is ``pending`` from the moment the row commits inside the hg
    transaction's finalizer until the transaction's postclose callback marks it
    ``done`` (see :mod:`hgext_hosting.pushlog`).  ``user`` is kept as text so
    that the log survives the removal of the user.
    """

    repository = pw.ForeignKeyField(Repository, on_delete="CASCADE", backref="pushes")
    push_id = pw.IntegerField()
    user = pw.CharField(max_length=64)
    date = pw.DateTimeField(default=utcnow)
    state = pw.CharField(max_length=8, default="done")
    txnid = pw.CharField(max_length=128, default="")
    #: JSON: phase moves of existing changesets, obsolescence marker count.
    details = pw.TextField(default="{}")
    #: The push's number among its repository's pushes that added changesets (1, 2, ...
    #: in push order, set by :func:`pushdb.insert_push`); NULL for a push without any
    #: (bookmark-only, phases or markers only).  json-pushes leaves those out, so its
    #: page N is a window of these numbers rather than an OFFSET (schema step 11).
    cset_seq = pw.IntegerField(null=True)

    class Meta:
        indexes = (
            (("repository", "push_id"), True),
            # The readers' paths (schema step 3): the newest done pushes, ranges of
            # ids and dates, the highest done id, without walking the history.
            (("repository", "state", "push_id"), False),
            (("repository", "state", "date"), False),
            # json-pushes' pages and the highest numbered done push (schema step 11).
            (("repository", "state", "cset_seq"), False),
        )

    @property
    def extra(self) -> dict:
        return push_details(self.details)


def push_details(text: str | None) -> dict:
    """A push's ``details`` column as a dict (most pushes have none: no JSON parse for them)."""
    return {} if text in ("{}", "", None) else json.loads(text)


class PushChangeset(BaseModel):
    """A changeset of a push, in the order it was added to the repository."""

    push = pw.ForeignKeyField(Push, on_delete="CASCADE", backref="changesets")
    position = pw.IntegerField()
    node = pw.CharField(max_length=64, index=True)

    class Meta:
        indexes = ((("push", "position"), True),)


class PushBookmark(BaseModel):
    """A bookmark move of a push: ``old``/``new`` are hex nodes, None when absent."""

    push = pw.ForeignKeyField(Push, on_delete="CASCADE", backref="bookmarks")
    name = pw.CharField(max_length=255)
    old = pw.CharField(max_length=64, null=True)
    new = pw.CharField(max_length=64, null=True)


class Session(BaseModel):
    """A browser login: the cookie carries the id, the database only its digest."""

    digest = pw.CharField(max_length=64, unique=True)
    user = pw.ForeignKeyField(Owner, on_delete="CASCADE", backref="sessions")
    csrf = pw.CharField(max_length=64)
    created = pw.DateTimeField(default=utcnow)
    expires = pw.DateTimeField(index=True)
    #: The user's ``login_epoch`` when the session was made; a session is live only
    #: while they are equal (:meth:`daemon.auth.Authenticator.session`).
    epoch = pw.IntegerField(default=0)
    #: The last request seen (refreshed at most once a minute) and the client address it came from.
    last_seen = pw.DateTimeField(null=True)
    address = pw.CharField(max_length=64, default="")


class SignupToken(BaseModel):
    """A single-use sign-up link, stored only as its SHA-256 digest.

    ``kind`` is ``invite`` (a site admin's invitation, ``/-/join/TOKEN``;
    ``email`` the address it was meant for, may be empty) or ``verify`` (an
    open registration waiting for its address to be confirmed: the account
    ``name``, ``email`` and ``password_hash`` are created from it when the
    mailed link is followed).  ``used`` is set when the link is spent.
    """

    kind = pw.CharField(max_length=8)
    digest = pw.CharField(max_length=64, unique=True)
    email = pw.CharField(max_length=254, default="")
    name = pw.CharField(max_length=64, default="")
    password_hash = pw.CharField(max_length=255, null=True)
    created_by = pw.CharField(max_length=64, default="")
    created = pw.DateTimeField(default=utcnow)
    expires = pw.DateTimeField(index=True)
    used = pw.DateTimeField(null=True)


class PasswordReset(BaseModel):
    """A single-use password reset link: only the SHA-256 digest of its token is kept.

    :func:`hgext_hosting.service.accounts.use_reset_link` deletes it when used;
    an expired one is never accepted and goes with the user's next link.
    """

    user = pw.ForeignKeyField(Owner, on_delete="CASCADE", backref="password_resets")
    digest = pw.CharField(max_length=64, unique=True)
    created = pw.DateTimeField(default=utcnow)
    expires = pw.DateTimeField()


class LoginThrottle(BaseModel):
    """Failed logins counted per key, shared by every daemon process on the database.

    ``digest`` is an HMAC of the key (a user name, an address, or both), so the
    table holds no names; ``expires`` (Unix seconds) ends the counting window.
    See :mod:`daemon.auth`.
    """

    digest = pw.CharField(max_length=64, primary_key=True)
    failures = pw.IntegerField(default=0)
    expires = pw.BigIntegerField(index=True)


class Event(BaseModel):
    """The outbox: something that happened, to be told to webhooks and watchers.

    A push event is written by the push path (:func:`hgext_hosting.pushdb.insert_event`)
    in the database transaction of its push record, and goes with it: deleted with the
    push (a push that did not land has no event), deliverable only once the push is
    ``done``.  Repository events (created, renamed, ...) are written in the transaction
    of the change.  ``repository_id`` is no foreign key: a deleted repository's event
    outlives it.  ``fanned``: the daemon has made its :class:`Delivery` rows
    (:mod:`hgext_hosting.outbox`); ``payload`` is the JSON it built then.
    """

    repository_id = pw.IntegerField(null=True)
    repository_name = pw.CharField(max_length=130, default="")
    push = pw.ForeignKeyField(Push, null=True, on_delete="CASCADE", backref="events")
    kind = pw.CharField(max_length=16)  # "push" or "repository"
    action = pw.CharField(max_length=16)  # "push", "created", "renamed", ...
    actor = pw.CharField(max_length=64, default="")
    payload = pw.TextField(default="")
    created = pw.DateTimeField(default=utcnow)
    fanned = pw.BooleanField(default=False)

    class Meta:
        indexes = ((("fanned", "id"), False),)


class Webhook(BaseModel):
    """A URL told about the events of one repository, or of every repository of an owner."""

    owner = pw.ForeignKeyField(Owner, on_delete="CASCADE", backref="webhooks")
    repository = pw.ForeignKeyField(Repository, null=True, on_delete="CASCADE", backref="webhooks")
    url = pw.TextField()
    secret = pw.CharField(max_length=255)
    events = pw.CharField(max_length=64, default="push,repository")
    active = pw.BooleanField(default=True)
    created = pw.DateTimeField(default=utcnow)
    #: Unix time of the first failure since the last success (None: not failing).
    failing_since = pw.DoubleField(null=True)
    #: Why the daemon disabled it (empty: it did not).
    disabled_reason = pw.TextField(default="")


class Watch(BaseModel):
    """A user watching a repository: a mail after each push they may read."""

    user = pw.ForeignKeyField(Owner, on_delete="CASCADE", backref="watching")
    repository = pw.ForeignKeyField(Repository, on_delete="CASCADE", backref="watchers")

    class Meta:
        indexes = ((("user", "repository"), True),)


class Delivery(BaseModel):
    """One event for one webhook (or one watcher's mail): claimed, tried, retried, given up.

    ``guid`` is the ``X-HgHosting-Delivery`` header, the same for every attempt.
    A process claims a row by writing ``claimed_by`` and a lease ``claim_until``
    (Unix time): another process takes it only once the lease has run out.  The
    rows of one repository and one hook go out in event order (:mod:`hgext_hosting.outbox`).
    """

    event = pw.ForeignKeyField(Event, on_delete="CASCADE", backref="deliveries")
    webhook = pw.ForeignKeyField(Webhook, null=True, on_delete="CASCADE", backref="deliveries")
    recipient = pw.ForeignKeyField(Owner, null=True, on_delete="CASCADE")
    repository_id = pw.IntegerField(null=True)
    guid = pw.CharField(max_length=36, unique=True)
    state = pw.CharField(max_length=10, default="pending")  # pending, delivered, failed
    attempts = pw.IntegerField(default=0)
    first_try = pw.DoubleField(null=True)
    next_try = pw.DoubleField(default=0)
    claimed_by = pw.CharField(max_length=64, null=True)
    claim_until = pw.DoubleField(null=True)

    class Meta:
        indexes = (
            (("state", "next_try"), False),
            (("webhook", "repository_id", "state", "event"), False),
        )


class DeliveryAttempt(BaseModel):
    """One try of a delivery: what the receiver said.  The last 50 per hook are kept."""

    delivery = pw.ForeignKeyField(Delivery, on_delete="CASCADE", backref="tries")
    webhook = pw.ForeignKeyField(Webhook, null=True, on_delete="CASCADE")
    date = pw.DateTimeField(default=utcnow)
    status = pw.IntegerField(null=True)
    duration_ms = pw.IntegerField(default=0)
    response = pw.TextField(default="")  # the first KiB of the body
    error = pw.TextField(default="")

    class Meta:
        indexes = ((("webhook", "id"), False),)


class AuditEntry(BaseModel):
    """An administrative change or a failed login: who, what, on what, when, from where."""

    date = pw.DateTimeField(default=utcnow, index=True)
    actor = pw.CharField(max_length=64, default="")
    action = pw.CharField(max_length=64)
    target = pw.CharField(max_length=255, default="")
    address = pw.CharField(max_length=64, default="")
    details = pw.TextField(default="")


ALL_MODELS = [
    Meta,
    Owner,
    Membership,
    Repository,
    Grant,
    ProtectedRef,
    ProtectedRefAllow,
    ApiToken,
    SshKey,
    Push,
    PushChangeset,
    PushBookmark,
    Session,
    LoginThrottle,
    PasswordReset,
    SignupToken,
    Event,
    Webhook,
    Watch,
    Delivery,
    DeliveryAttempt,
    AuditEntry,
]


def make_database(url: str, busy_timeout_ms: int = 5000) -> pw.Database:
    """A peewee Database for ``url`` (``sqlite:///path`` or ``postgresql://...``).

    SQLite is opened directly: every push process opens the database, and
    ``playhouse.db_url`` would import and probe a dozen drivers first (~8 ms).
    """
    if url.startswith("sqlite:///"):
        return pw.SqliteDatabase(
            url[len("sqlite:///") :],  # sqlite:////abs/path -> /abs/path
            pragmas=sqlite_pragmas(busy_timeout_ms),
            timeout=busy_timeout_ms / 1000.0,
        )
    from playhouse.db_url import connect

    return connect(url)


@contextlib.contextmanager
def bound(database: pw.Database) -> Iterator[pw.Database]:
    """The models bound to ``database`` for the block, then to what they were bound to before.

    Binding changes the model classes, which every thread shares: a
    multi-threaded process (the daemon) binds once, with :func:`bind`.
    """
    with database.bind_ctx(ALL_MODELS):
        yield database


def bind(database: pw.Database) -> None:
    """Bind the models to ``database`` for the rest of the process (the daemon's)."""
    for model in ALL_MODELS:
        model.bind(database)


def database() -> pw.Database:
    """The database the models are bound to; RuntimeError when none is."""
    current = Meta._meta.database
    if current is UNBOUND:
        raise RuntimeError("no site database is bound (models.bound(site.database()))")
    return current


def connection() -> pushdb.PeeweeConnection:
    """The bound database as :mod:`hgext_hosting.pushdb`'s functions take it (CLI, daemon).

    Safe to share between threads: peewee keeps a connection per thread behind it.
    """
    return pushdb.PeeweeConnection(database())


def is_sqlite() -> bool:
    """True when the bound database is SQLite."""
    return isinstance(database(), pw.SqliteDatabase)


def checkpoint() -> None:
    """Copy SQLite's write-ahead log into the database file now, waiting for nobody.

    A ``PASSIVE`` checkpoint: it copies what no reader still needs and never
    blocks a writer.  The daemon runs it after its background writes (the
    outbox's deliveries write ~90 pages a push) so that the log stays short and
    a push's commit does not cross SQLite's auto-checkpoint threshold and pay
    for copying the daemon's pages (measured: 1.13x the cost of a push with
    three webhooks and five watchers, 1.00x with the log kept short).  Nothing
    to do on PostgreSQL.
    """
    if is_sqlite():
        database().execute_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def write_transaction():
    """A transaction that takes the write lock at once (``BEGIN IMMEDIATE`` on SQLite)."""
    return pushdb.write_transaction(database())


def schema_version() -> int:
    """The version recorded in the database, 0 for an empty database."""
    return pushdb.schema_version(connection())


def require_current_schema() -> None:
    """Raise SchemaError unless the database has exactly :data:`SCHEMA_VERSION`."""
    pushdb.require_current_schema(connection())


def _v2_session_epochs_and_login_throttle() -> None:
    """Sessions die with a password change (``login_epoch``); failed logins are counted
    in the database, so that every worker and daemon shares the counts."""
    for table, column in (("owner", "login_epoch"), ("session", "epoch")):
        database().execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column}" INTEGER NOT NULL DEFAULT 0')
    database().create_tables([LoginThrottle], safe=True)


def _v3_push_reader_indexes() -> None:
    """Indexes for the push log's readers (json-pushes, pages): their cost no longer
    grows with the number of pushes of a repository."""
    Push._schema.create_indexes(safe=True)


def _v4_publishing() -> None:
    """Repositories are publishing (the default) or not (evolve, topics, the ``publish`` level)."""
    if "publishing" in {c.name for c in database().get_columns("repository")}:
        return  # a database made by today's models and marked older (the upgrade tests do that)
    true = "1" if is_sqlite() else "TRUE"
    database().execute_sql(f'ALTER TABLE "repository" ADD COLUMN "publishing" BOOLEAN NOT NULL DEFAULT {true}')


def _v5_disabled_users() -> None:
    """Users can be disabled (and enabled again) without deleting anything of theirs."""
    if "disabled" in {c.name for c in database().get_columns("owner")}:
        return  # a database made by today's models and marked older (the upgrade tests do that)
    false = "0" if is_sqlite() else "FALSE"
    database().execute_sql(f'ALTER TABLE "owner" ADD COLUMN "disabled" BOOLEAN NOT NULL DEFAULT {false}')


def _v6_password_resets() -> None:
    """Single-use password reset links (``hg-hosting user reset-link``, ``/-/reset/TOKEN``)."""
    database().create_tables([PasswordReset], safe=True)


def _v7_self_service() -> None:
    """Self-service (issue 12): tokens expire, sessions show when and where they were
    last seen, and single-use sign-up links (invitations, address checks)."""
    for table, column, kind in (("api_token", "expires", "TIMESTAMP NULL"),
                                ("session", "last_seen", "TIMESTAMP NULL"),
                                ("session", "address", "VARCHAR(64) NOT NULL DEFAULT ''")):
        if column not in {c.name for c in database().get_columns(table)}:
            database().execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {kind}')
    database().create_tables([SignupToken], safe=True)


def _v8_forked_from() -> None:
    """A fork remembers its source (``Repository.forked_from``; NULL once the source is removed)."""
    if "forked_from_id" in {c.name for c in database().get_columns("repository")}:
        return
    database().execute_sql('ALTER TABLE "repository" ADD COLUMN "forked_from_id" INTEGER'
                   ' REFERENCES "repository" ("id") ON DELETE SET NULL')


def _v9_token_scopes() -> None:
    """API tokens get a scope (read, write, admin); existing tokens become ``write``,
    so they keep doing what they did, except site administration."""
    if "scope" in {c.name for c in database().get_columns("api_token")}:
        return
    database().execute_sql("ALTER TABLE \"api_token\" ADD COLUMN \"scope\" VARCHAR(8) NOT NULL DEFAULT 'write'")


def _v10_events() -> None:
    """The outbox of events, webhooks, watchers, deliveries and the audit log (issue 14)."""
    database().create_tables([Event, Webhook, Watch, Delivery, DeliveryAttempt, AuditEntry], safe=True)


def _v11_numbered_changeset_pushes() -> None:
    """``push.cset_seq`` numbers the pushes with changesets, so that a deep page of
    json-pushes (which leaves the others out) is an index range, not an OFFSET."""
    if "cset_seq" not in {c.name for c in database().get_columns("push")}:
        database().execute_sql('ALTER TABLE "push" ADD COLUMN "cset_seq" INTEGER')
    Push._schema.create_indexes(safe=True)
    pushdb.number_changeset_pushes(connection())


#: Step N brings a database from version N-1 to N.  A new database gets every table
#: as the models define them today, without replaying the steps.
MIGRATIONS: dict[int, Callable[[], None]] = {
    2: _v2_session_epochs_and_login_throttle,
    3: _v3_push_reader_indexes,
    4: _v4_publishing,
    5: _v5_disabled_users,
    6: _v6_password_resets,
    7: _v7_self_service,
    8: _v8_forked_from,
    9: _v9_token_scopes,
    10: _v10_events,
    11: _v11_numbered_changeset_pushes,
}


def migrate() -> list[int]:
    """Apply every missing migration step in order; return the steps applied."""
    applied = []
    with write_transaction():
        current = schema_version()
        if current > SCHEMA_VERSION:
            raise SchemaError(
                f"the site database has schema version {current}, newer than this"
                f" code's {SCHEMA_VERSION}; upgrade hg-hosting"
            )
        if current == 0:
            database().create_tables(ALL_MODELS, safe=True)
            applied = list(range(1, SCHEMA_VERSION + 1))
        else:
            for step in range(current + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[step]()
                applied.append(step)
        if applied:
            Meta.insert(key="schema_version", value=str(SCHEMA_VERSION)).on_conflict(
                conflict_target=[Meta.key], update={Meta.value: str(SCHEMA_VERSION)}
            ).execute()
    return applied
