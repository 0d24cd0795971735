"""``hg-hosting db copy URL``: move a running site's database to another database.

The copy goes SQLite to PostgreSQL, PostgreSQL to SQLite (``sqlite:////abs/path``)
or PostgreSQL to PostgreSQL, while the site keeps serving.  In order:

1. The target is checked: a supported URL, not the source itself, reachable,
   and no hosting table holding a row (``error: ... not empty``).  Its schema
   is created by :func:`hgext_hosting.models.migrate`, as ``init`` does.
2. The source is locked against writers for the rest of the command, so that
   the copy is one consistent state and no push commits behind it: on SQLite
   one ``BEGIN IMMEDIATE`` transaction (readers go on, writers wait up to
   ``busy-timeout`` and then fail, which refuses their push); on PostgreSQL a
   ``REPEATABLE READ`` transaction that first takes ``EXCLUSIVE`` locks on every
   table (reads go on, writes wait) and ``ACCESS EXCLUSIVE`` on ``meta``.
3. Every table is copied in dependency order with its ids, so foreign keys and
   push ids stay; PostgreSQL sequences restart at ``max(id) + 1``.  Then every
   table is compared: row count and a digest of its ids and foreign keys.  The
   target commits in one transaction.
4. The site hgrc's ``[hosting] database`` line is rewritten (the one line; the
   administrator's other text stays; a temporary file renamed over it).  From
   here every new ``hg`` process (local and SSH pushes) and CLI command uses
   the target.
5. In the same source transaction, committed after the switch, the source is
   *retired*: its ``schema_version`` goes and ``meta.moved_to`` names the
   target (password hidden).  A writer that waited for the lock, or a daemon
   started before the switch, then finds no schema and refuses its push ("the
   site database has moved to ..."), rather than recording it where nobody looks.  The source is otherwise kept as it
   was; removing it is the administrator's call.

Running daemons keep the database they opened until restarted: reads show the
state at the copy, pushes through them are refused (step 5).  The command says
so; restart them right after.  It does not refuse while a daemon runs: the
site keeps no record of its daemons, and the retirement makes the window safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import peewee as pw

from . import faults, models
from .errors import UserError
from .site import Site, write_private_file

#: Rows fetched and inserted per batch.
BATCH = 2000

#: The ``meta`` key that marks a retired source database (its value: the new URL, redacted).
MOVED_TO = "moved_to"


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for output and error lines)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def check_url(url: str) -> str:
    """Refuse a URL this command cannot use; return it unchanged."""
    if not url or any(c.isspace() or ord(c) < 32 for c in url):
        raise UserError("the database URL is empty or holds whitespace or control characters")
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path.startswith("/"):
            raise UserError(f"{url}: a SQLite URL needs an absolute path (sqlite:////srv/site/hosting.db)")
        if not Path(path).parent.is_dir():
            raise UserError(f"{url}: the directory {Path(path).parent} does not exist")
        if Path(path).exists() and not Path(path).is_file():
            raise UserError(f"{url}: {path} is not a file")
        return url
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in ("postgresql", "postgres"):
        raise UserError(f"unsupported database URL {redact(url)!r}: use postgresql://USER:PASSWORD@HOST/DBNAME"
                        " or sqlite:////absolute/path.db")
    return url


def _same_database(a: str, b: str) -> bool:
    if a.startswith("sqlite:///") and b.startswith("sqlite:///"):
        pa, pb = a[len("sqlite:///"):], b[len("sqlite:///"):]
        return os.path.realpath(pa) == os.path.realpath(pb)
    return a == b


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


# -- the tables -------------------------------------------------------------------------------


def tables_in_order() -> list[type[models.BaseModel]]:
    """Every model, each after the models its foreign keys point to."""
    ordered: list[type[models.BaseModel]] = []
    pending = list(models.ALL_MODELS)
    while pending:
        ready = [m for m in pending
                 if all(fk.rel_model in ordered or fk.rel_model is m for fk in m._meta.refs)]
        if not ready:
            raise RuntimeError("the models' foreign keys form a cycle")
        ordered.extend(ready)
        pending = [m for m in pending if m not in ready]
    return ordered


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _count(database: pw.Database, model) -> int:
    return database.execute_sql(f"SELECT COUNT(*) FROM {_q(model._meta.table_name)}").fetchone()[0]


def _has_table(database: pw.Database, model) -> bool:
    return database.table_exists(model._meta.table_name)


def _digest(database: pw.Database, model) -> str:
    """A digest of every row's ids: primary key, foreign keys, and the push id of a push."""
    fields = [model._meta.primary_key, *model._meta.refs]
    if model is models.Push:
        fields.append(models.Push.push_id)
    columns = ", ".join(_q(f.column_name) for f in fields)
    rows = database.execute_sql(f"SELECT {columns} FROM {_q(model._meta.table_name)}").fetchall()
    h = hashlib.sha256()
    for row in sorted(tuple(str(v) for v in r) for r in rows):  # sorted here: collations differ
        h.update(repr(row).encode())
    return h.hexdigest()


#: Fields whose values both drivers read and write alike (ids and foreign keys, text, integers).
_AS_IS = (pw.IntegerField, pw.CharField, pw.TextField, pw.ForeignKeyField)


def _copy_table(src: pw.Database, dst: pw.Database, model) -> int:
    """Insert every row of ``model``'s table from ``src`` into ``dst``, values as the fields convert them."""
    fields = model._meta.sorted_fields
    table = _q(model._meta.table_name)
    columns = ", ".join(_q(f.column_name) for f in fields)
    cursor = src.execute_sql(f"SELECT {columns} FROM {table} ORDER BY {_q(model._meta.primary_key.column_name)}")
    insert = f"INSERT INTO {table} ({columns}) VALUES "
    if isinstance(dst, pw.PostgresqlDatabase):  # one statement per batch: executemany is a round trip a row
        from psycopg2.extras import execute_values

        def write(rows: list[tuple]) -> None:
            execute_values(dst.cursor(), insert + "%s", rows, page_size=BATCH)
    else:
        def write(rows: list[tuple]) -> None:
            dst.cursor().executemany(insert + f"({', '.join([dst.param] * len(fields))})", rows)
    convert = [i for i, f in enumerate(fields) if not isinstance(f, _AS_IS)]
    copied = 0
    while batch := cursor.fetchmany(BATCH):
        rows = [list(row) for row in batch]
        for row in rows:
            for i in convert:  # SQLite's 0/1 and date text become PostgreSQL's booleans and timestamps, and back
                row[i] = fields[i].db_value(fields[i].python_value(row[i]))
        write([tuple(row) for row in rows])
        copied += len(batch)
    return copied


def _reset_sequences(dst: pw.Database) -> None:
    """PostgreSQL: every ``id`` sequence restarts after the largest copied id."""
    if not isinstance(dst, pw.PostgresqlDatabase):
        return  # SQLite's INTEGER PRIMARY KEY continues from max(id) by itself
    for model in models.ALL_MODELS:
        pk = model._meta.primary_key
        if isinstance(pk, pw.AutoField):
            table, column = model._meta.table_name, pk.column_name
            dst.execute_sql(
                f"SELECT setval(pg_get_serial_sequence(%s, %s), COALESCE(MAX({_q(column)}), 0) + 1, false)"
                f" FROM {_q(table)}", (_q(table), column))


# -- the two databases ------------------------------------------------------------------------


def open_target(url: str, busy_timeout_ms: int) -> pw.Database:
    """The connected target database (a new SQLite file is created with mode 0600)."""
    if url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///"):]):
        write_private_file(Path(url[len("sqlite:///"):]), b"")
    dst = models.make_database(url, busy_timeout_ms)
    try:
        dst.connect(reuse_if_open=True)
    except Exception as e:  # noqa: BLE001 - a driver's failure, told in one line
        raise UserError(f"cannot connect to {redact(url)}: {_one_line(e)}") from None
    return dst


def refuse_non_empty(dst: pw.Database, url: str) -> None:
    """Refuse a target where some hosting table (``meta`` aside) holds a row."""
    full = [f"{m._meta.table_name} ({n} rows)" for m in models.ALL_MODELS
            if m is not models.Meta and _has_table(dst, m) and (n := _count(dst, m))]
    if full:
        raise UserError(f"the target database {redact(url)} is not empty: {', '.join(full[:3])}"
                        f"{' ...' if len(full) > 3 else ''}; db copy only fills an empty database")


@contextlib.contextmanager
def locked_source(src: pw.Database) -> Iterator[None]:
    """One transaction on the source that no writer can commit behind, for the whole block."""
    if isinstance(src, pw.SqliteDatabase):
        with src.atomic("IMMEDIATE"):
            yield
        return
    with src.atomic():
        src.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        # Before any query: the snapshot is taken after the locks, so it has every commit.
        src.execute_sql(f"LOCK TABLE {_q(models.Meta._meta.table_name)} IN ACCESS EXCLUSIVE MODE")
        others = ", ".join(_q(m._meta.table_name) for m in models.ALL_MODELS if m is not models.Meta)
        src.execute_sql(f"LOCK TABLE {others} IN EXCLUSIVE MODE")
        yield


def retire(src: pw.Database, target_url: str) -> None:
    """Mark the source moved: no schema version (writers refuse), ``meta.moved_to`` says where."""
    meta = _q(models.Meta._meta.table_name)
    p = src.param
    src.execute_sql(f"DELETE FROM {meta} WHERE {_q('key')} IN ({p}, {p})", ("schema_version", MOVED_TO))
    src.execute_sql(f"INSERT INTO {meta} ({_q('key')}, {_q('value')}) VALUES ({p}, {p})",
                    (MOVED_TO, redact(target_url)))


# -- the site hgrc ---------------------------------------------------------------------------

_SECTION = re.compile(rb"^\[([^\[]+)\]")
_CONTINUATION = re.compile(rb"^[ \t]+\S")


def _database_line(site: Site) -> int | None:
    """The 0-based line of the site hgrc setting ``[hosting] database``, None when it is set nowhere.

    Refuses when another file (an ``%include``) sets it: that file is the one to edit.
    """
    from mercurial import config as hgconfig

    cfg = hgconfig.config()
    cfg.read(os.fsencode(site.hgrc))
    source = os.fsdecode(cfg.source(b"hosting", b"database") or b"")
    if not source:
        return None
    path, _, line = source.rpartition(":")
    if not path or os.path.realpath(path) != os.path.realpath(site.hgrc) or not line.isdigit():
        raise UserError(f"[hosting] database is set in {source}, not in the site hgrc {site.hgrc};"
                        " set it there by hand, or remove it from that file first")
    return int(line) - 1


def switched_hgrc(text: bytes, line: int | None, url: str) -> bytes:
    """The site hgrc ``text`` with ``[hosting] database = url``: that one line replaced, or added."""
    new = b"database = " + url.encode("utf-8") + b"\n"
    lines = text.splitlines(keepends=True)
    if line is not None:
        while line > 0 and _CONTINUATION.match(lines[line]):
            line -= 1  # Mercurial names a continued value's last line; the key is above it
        end = line + 1
        while end < len(lines) and _CONTINUATION.match(lines[end]):
            end += 1
        return b"".join([*lines[:line], new, *lines[end:]])
    for i, current in enumerate(lines):
        match = _SECTION.match(current)
        if match and match.group(1).strip() == b"hosting":
            return b"".join([*lines[: i + 1], new, *lines[i + 1:]])
    return text + (b"" if not text or text.endswith(b"\n") else b"\n") + b"\n[hosting]\n" + new


def _replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` over ``path`` through a temporary file renamed over it (same mode)."""
    mode = path.stat().st_mode & 0o777
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def switch_hgrc(site: Site, line: int | None, url: str) -> None:
    """Point the site hgrc at ``url``; put the old text back if Mercurial does not then read ``url``."""
    from . import config

    old = site.hgrc.read_bytes()
    _replace_file(site.hgrc, switched_hgrc(old, line, url))
    read = config.read_site_ui(str(site.hgrc)).config(b"hosting", b"database").decode("utf-8").strip()
    if read != url:
        _replace_file(site.hgrc, old)
        raise UserError(f"the rewritten site hgrc did not read back as the new URL (got {redact(read)!r});"
                        " it was restored")


def set_site_database(site: Site, url: str) -> None:
    """Point the site hgrc's ``[hosting] database`` at ``url`` (empty: the site's SQLite file).

    The one place that edits that line (``db copy`` and ``restore``): the line
    replaced whole (continuation lines too) or added under ``[hosting]``, the file
    replaced atomically, and read back through Mercurial.
    """
    switch_hgrc(site, _database_line(site), url)


# -- the command ---------------------------------------------------------------------------------


def copy(site: Site, url: str, say: Callable[[str], None]) -> dict[str, int]:
    """Copy the site's database to ``url`` and switch the site to it; return rows per table."""
    url = check_url(url)
    source_url = site.database_url()
    if _same_database(source_url, url):
        raise UserError(f"refusing to copy the site database onto itself ({redact(url)})")
    line = _database_line(site)  # refuse an hgrc we could not switch before touching anything
    src = models.database()
    dst = open_target(url, site.busy_timeout_ms())
    try:
        refuse_non_empty(dst, url)
        with models.bound(dst):
            models.migrate()
        started = time.monotonic()
        with locked_source(src):
            pushes = _count(src, models.Push)  # the first read: from here the copy sees one state
            say(f"locked the source database {redact(source_url)} ({pushes} pushes):"
                " its writers wait until the switch")
            faults.point("dbcopy-locked")
            counts: dict[str, int] = {}
            with dst.atomic():
                dst.execute_sql(f"DELETE FROM {_q(models.Meta._meta.table_name)}")
                for model in tables_in_order():
                    counts[model._meta.table_name] = _copy_table(src, dst, model)
                _reset_sequences(dst)
                faults.point("dbcopy-copied")
                for model in models.ALL_MODELS:
                    name = model._meta.table_name
                    theirs, ours = (_count(src, model), _digest(src, model)), (_count(dst, model), _digest(dst, model))
                    if theirs != ours:
                        raise UserError(f"verification failed for table {name}: {theirs[0]} rows in the source,"
                                        f" {ours[0]} in the copy; nothing was switched")
            for name, n in counts.items():
                say(f"copied {n} rows of {name}")
            say("verified: every table has the same row count and ids in both databases")
            try:
                retire(src, url)  # not committed yet: undone with the lock if the switch fails
                switch_hgrc(site, line, url)
            except BaseException:
                _empty(dst)
                raise
            faults.point("dbcopy-switched")
        say(f"switched [hosting] database in {site.hgrc} to {redact(url)}"
            f" ({time.monotonic() - started:.2f} s with the source locked)")
        say(f"the old database {redact(source_url)} is retired (pushes to it are refused) and kept as it was")
        say("restart every running hg-hosting daemon now: until then they use the old database")
        return counts
    finally:
        dst.close()


def _empty(dst: pw.Database) -> None:
    """Best effort: delete what the copy put in the target, so that it can be run again."""
    with contextlib.suppress(Exception), dst.atomic():
        for model in reversed(tables_in_order()):
            if model is not models.Meta:
                dst.execute_sql(f"DELETE FROM {_q(model._meta.table_name)}")
