"""``hg-hosting backup DEST`` and ``restore SRC DIR``: a consistent copy of a live site.

Why the copy is consistent
--------------------------

A push holds its repository's store lock (``repo.lock()``) from before its hg
transaction opens until after its record is ``done`` (:mod:`hgext_hosting.recorder`,
docs/design.md §1): while a process holds a repository's lock, no push to it
is in flight, and its changelog and its push records agree (every ``done``
record's changesets are in the repository and every changeset has a record;
a ``pending`` record is a crash leftover that :func:`hgext_hosting.pushlog.settle`
resolves).  So the backup:

1. takes the ``wlock`` and ``lock`` of every repository the database lists,
   in sorted path order, each waiting at most ``[hosting] lock-timeout``
   seconds (a push takes the locks of one repository only, so nothing waits
   in a cycle);
2. settles, under those locks, a repository left with a journal or
   ``pending`` records by a crash, exactly as the next push would;
3. snapshots the database: SQLite's online backup API (one step, inside one
   read transaction, so WAL writers are not stopped), or ``pg_dump
   --snapshot`` of a ``REPEATABLE READ`` transaction for PostgreSQL.  The
   repository list is read from that same snapshot; if it names a repository
   not yet locked (created meanwhile), that one is locked too and the
   snapshot is taken again;
4. copies the ``.hg`` of every repository in the snapshot, still under the
   locks, then releases them.

Pushes to any repository wait (hg prints ``waiting for lock``) from step 1 to
step 4; reads never wait.  The pause is printed.  With hardlinks it is a few
file links per revlog: milliseconds for the 3,000-changeset corpus.

Hardlinks
---------

Files under ``.hg/store`` are hardlinked when DEST is on the same filesystem
(``--copy`` copies them instead).  That is what ``hg clone`` of a local
repository does, and it stays correct because Mercurial never writes a file
in place while it has more than one link: its vfs opens every file it writes
either as a new file (``w``: unlinked first; ``atomictemp``: renamed over) or,
to append or to truncate on rollback, after replacing it with a private copy
when ``nlink > 1`` (``mercurial/vfs.py``, ``vfs.__call__``).  Everything
else (the database, ``.hg/hgrc``, ``requires``, the site hgrc, the secret and
the host key) is copied byte for byte: SQLite and editors write in place.
A hardlinked backup shares disk blocks with the site, so it protects against
mistakes and lost repositories, not against the loss of that disk: copy it
elsewhere (``rsync -H``, ``tar``) or back up with ``--copy`` onto another disk.

What is left out: ``tmp/``, ``lost+found/``, lock files and ``.hg/cache``
(rebuilt by hg on demand), and directories under ``repos/`` without a row.
``restore`` copies the backup into an empty directory (the SQLite file is
copied, never linked; PostgreSQL needs ``--database URL`` of an empty
database, restored with ``pg_restore``), points the restored site hgrc at that
database and runs ``check``.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .site import Site, SiteError, write_private_file

#: The file that makes a directory a complete backup; written last.
MANIFEST = "hg-hosting-backup.json"
#: Where the database goes in a backup.
SQLITE_FILE = "hosting.db"
PG_DUMP_FILE = "hosting.pgdump"
#: Site files copied byte for byte (restored with their modes).
SITE_FILES = ("hgrc", "secret", "ssh_host_ed25519_key")
FORMAT = 1

#: Names under a repository's ``.hg`` never copied: locks, caches, an open transaction.
_SKIP = re.compile(r"^(wlock|store/lock|cache(/.*)?|store/journal.*|journal.*)$")


@dataclass
class CopyStats:
    """What copying a tree did."""

    files: int = 0
    linked: int = 0
    copied_bytes: int = 0
    can_link: bool = True

    def add(self, other: CopyStats) -> None:
        self.files += other.files
        self.linked += other.linked
        self.copied_bytes += other.copied_bytes


@dataclass
class BackupResult:
    """What ``backup`` did, for its report."""

    dest: Path
    database: str  # "sqlite" or "postgresql"
    repositories: list[str]
    stats: CopyStats
    pause_seconds: float
    settled: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        s = self.stats
        return [
            *(f"settled: {what}" for what in self.settled),
            f"backed up the {self.database} database and {len(self.repositories)}"
            f" {'repository' if len(self.repositories) == 1 else 'repositories'}"
            f" ({s.files} files: {s.linked} hardlinked, {s.copied_bytes / 1e6:.1f} MB copied) to {self.dest}",
            f"pushes waited {self.pause_seconds:.2f} s",
        ]


# -- destination and copying -------------------------------------------------------------


def _require_empty_target(path: Path, what: str) -> None:
    """Refuse ``path`` if it is something other than a missing path or an empty directory."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise UserError(f"{what} {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise UserError(f"{what} {path} exists and is not empty")


def _inside(path: Path, other: Path) -> bool:
    path, other = Path(os.path.realpath(path)), Path(os.path.realpath(other))
    return path == other or other in path.parents


@contextlib.contextmanager
def _new_directory(path: Path, what: str) -> Iterator[Path]:
    """Create ``path`` (mode 0700) or use it if empty; on failure leave it as it was found."""
    _require_empty_target(path, what)
    existed = path.is_dir()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {path}: {e.strerror}") from None
    try:
        yield path
    except BaseException as e:
        if existed:
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"no space left on the device of {path}; nothing was kept") from None
        raise


def _copy_file(src: Path, dst: Path, link: bool, stats: CopyStats) -> None:
    """Hardlink ``src`` to ``dst`` when asked and possible, else copy it (mode and times kept)."""
    stats.files += 1
    if link and stats.can_link:
        try:
            os.link(src, dst)
            stats.linked += 1
            return
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            stats.can_link = False  # another filesystem, or links refused: copy from now on
    shutil.copy2(src, dst)
    stats.copied_bytes += dst.stat().st_size


def copy_hg_dir(src_repo: Path, dst_repo: Path, hardlink: bool) -> CopyStats:
    """Copy a repository's ``.hg`` (locks, caches and journals left out); link store files if asked.

    The caller holds the repository's locks.
    """
    stats = CopyStats()
    src_hg = src_repo / ".hg"
    dst_hg = dst_repo / ".hg"
    dst_hg.mkdir(parents=True)
    for dirpath, dirnames, filenames in os.walk(src_hg):
        here = Path(dirpath)
        rel_dir = here.relative_to(src_hg)
        dirnames[:] = sorted(d for d in dirnames if not _SKIP.match(str(rel_dir / d)))
        for d in dirnames:
            (dst_hg / rel_dir / d).mkdir(mode=(here / d).stat().st_mode & 0o7777)
        for name in sorted(filenames):
            rel = rel_dir / name
            if _SKIP.match(str(rel)) or (here / name).is_symlink():
                continue
            in_store = rel.parts[0] == "store" if rel.parts else False
            _copy_file(here / name, dst_hg / rel, hardlink and in_store, stats)
    return stats


# -- locking every repository ---------------------------------------------------------------


class _Locks:
    """The wlock and lock of repositories, taken one by one and released together."""

    def __init__(self, site: Site):
        from .repositories import _hg_ui

        self.site = site
        self.ui = _hg_ui(site)
        self.ui.setconfig(b"hosting", b"auto-recover", b"false", b"backup")
        self.timeout = self.ui.configint(b"hosting", b"lock-timeout")
        # hg's own "waiting for lock ..." would make a refusal two lines; the pause is printed at the end.
        self.ui.setconfig(b"ui", b"timeout.warn", b"%d" % (self.timeout + 1), b"backup")
        self.stack = contextlib.ExitStack()
        self.held: dict[Path, object] = {}  # path -> the locked repository
        self.started: float | None = None

    def take(self, path: Path, full_name: str):
        """Lock the repository at ``path``; None when there is none there (removed, renamed)."""
        from mercurial import error as hgerror
        from mercurial import hg

        if path in self.held:
            return self.held[path]
        try:
            repo = hg.repository(self.ui, os.fsencode(path))
        except hgerror.RepoError:
            return None
        if self.started is None:
            self.started = time.monotonic()
        try:
            self.stack.enter_context(repo.wlock())
            self.stack.enter_context(repo.lock())
        except hgerror.LockHeld:
            raise UserError(f"{full_name} stayed locked for more than {self.timeout} s"
                            " ([hosting] lock-timeout); no backup was made") from None
        self.held[path] = repo
        return repo

    def release(self) -> float:
        """Release every lock; return how long the first one was held (seconds)."""
        self.stack.close()
        return 0.0 if self.started is None else time.monotonic() - self.started


def _settle(repo, repository_id: int, full_name: str) -> list[str]:
    """Under the held lock, settle what a crash left in a repository (as the next push would)."""
    from . import pushlog

    if not (repo.svfs.exists(b"journal") or pushlog.has_pending(repository_id)):
        return []
    return [f"{full_name}: {what}" for what in pushlog.settle(repo, repository_id)]


# -- the database snapshot ---------------------------------------------------------------------

#: ``(owner, name, repository id)`` of every repository, as a snapshot holds them.
_REPOS_SQL = ("SELECT o.name, r.name, r.id FROM repository r JOIN owner o ON o.id = r.owner_id"
              " ORDER BY o.name, r.name")


def _sqlite_snapshot(site: Site, dest: Path) -> list[tuple[str, str, int]]:
    """Copy the live SQLite database to ``dest`` (online backup API); return its repositories."""
    dest.unlink(missing_ok=True)
    write_private_file(dest, b"")
    timeout = site.busy_timeout_ms() / 1000.0
    try:
        live = sqlite3.connect(site.db_path, timeout=timeout)
        try:
            copy = sqlite3.connect(dest)
            try:
                live.backup(copy)  # pages=-1: one step, one read transaction
                copy.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file
                return [tuple(row) for row in copy.execute(_REPOS_SQL)]
            finally:
                copy.close()
        finally:
            live.close()
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            raise UserError("the site database stayed locked past [hosting] busy-timeout;"
                            " no backup was made") from None
        raise UserError(f"cannot copy the site database: {e}") from None


def _libpq_url(url: str) -> str:
    """A peewee database URL as libpq (``pg_dump``, ``psycopg2``) reads it."""
    return re.sub(r"^postgres(ql)?(\+[a-z_]+)?://", "postgresql://", url)


def _pg_tool(name: str) -> str:
    """The path of a PostgreSQL client program (``pg_dump``, ``pg_restore``)."""
    import glob

    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                                                   reverse=True)), None)
    if not found:
        raise UserError(f"{name} is not installed (PostgreSQL's client programs are needed)")
    return found


def _pg_snapshot(url: str, dest: Path) -> list[tuple[str, str, int]]:
    """``pg_dump`` the database into ``dest`` from a snapshot that lists its repositories too."""
    import psycopg2

    pg_dump = _pg_tool("pg_dump")
    dest.unlink(missing_ok=True)
    try:
        conn = psycopg2.connect(_libpq_url(url))
    except psycopg2.Error as e:
        raise UserError(f"cannot connect to the site database: {str(e).strip().splitlines()[0]}") from None
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_export_snapshot()")
            (snapshot,) = cur.fetchone()
            cur.execute(_REPOS_SQL)
            rows = [tuple(r) for r in cur.fetchall()]
        proc = subprocess.run(
            [pg_dump, "--format=custom", "--no-owner", "--no-privileges", f"--snapshot={snapshot}",
             f"--file={dest}", f"--dbname={_libpq_url(url)}"],
            capture_output=True, text=True, timeout=3600,
        )
        if proc.returncode != 0:
            raise UserError("pg_dump failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1])
        os.chmod(dest, 0o600)
        return rows
    finally:
        conn.close()


# -- backup ---------------------------------------------------------------------------------------


def backup(site: Site, dest: Path, hardlink: bool = True) -> BackupResult:
    """Write a consistent copy of the live ``site`` into ``dest`` (missing or empty)."""
    from . import repositories

    dest = Path(dest).absolute()
    if _inside(dest, site.root) or _inside(site.root, dest):
        raise UserError(f"{dest} is inside the site (or holds it); choose a directory outside {site.root}")
    url = site.database_url()
    kind = "sqlite" if url.startswith("sqlite:///") else "postgresql"
    db_file = dest / (SQLITE_FILE if kind == "sqlite" else PG_DUMP_FILE)
    with _new_directory(dest, "the backup directory"):
        for name in SITE_FILES:
            if (site.root / name).is_file():
                shutil.copy2(site.root / name, dest / name)
        (dest / "repos").mkdir(mode=0o755)

        locks = _Locks(site)
        settled: list[str] = []
        stats = CopyStats()
        try:
            for repo in sorted(repositories.list_repos(), key=lambda r: str(repositories.repo_dir(site, r))):
                locked = locks.take(repositories.repo_dir(site, repo), repo.full_name)
                if locked is not None:
                    settled += _settle(locked, repo.id, repo.full_name)
            while True:
                rows = _sqlite_snapshot(site, db_file) if kind == "sqlite" else _pg_snapshot(url, db_file)
                missing = [(o, n, i) for o, n, i in rows if site.repo_path(o, n) not in locks.held]
                if not missing:
                    break
                for owner, name, rid in missing:  # created or renamed since the listing: lock, retry
                    locked = locks.take(site.repo_path(owner, name), f"{owner}/{name}")
                    if locked is None:
                        raise UserError(f"{owner}/{name} is in the database but has no repository"
                                        f" {site.repo_path(owner, name)} (see 'hg-hosting check')")
                    settled += _settle(locked, rid, f"{owner}/{name}")
            names = []
            for owner, name, _rid in rows:
                target = dest / "repos" / owner / name
                target.parent.mkdir(mode=0o755, exist_ok=True)
                stats.add(copy_hg_dir(site.repo_path(owner, name), target, hardlink))
                names.append(f"{owner}/{name}")
        finally:
            pause = locks.release()
        _write_manifest(dest, site, kind, db_file.name, names)
    return BackupResult(dest, kind, names, stats, pause, settled)


def _write_manifest(dest: Path, site: Site, kind: str, db_name: str, names: list[str]) -> None:
    from . import models

    manifest = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "site": str(site.root),
        "database": kind,
        "database_file": db_name,
        "schema_version": models.SCHEMA_VERSION,
        "repositories": names,
    }
    write_private_file(dest / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))


def read_manifest(src: Path) -> dict:
    """The manifest of the backup in ``src``; UserError if it is not a complete backup."""
    try:
        manifest = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{src} is not a complete hg-hosting backup (no {MANIFEST})") from None
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {src / MANIFEST}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{src / MANIFEST} is not a backup format this version reads")
    if manifest.get("database") not in ("sqlite", "postgresql"):
        raise UserError(f"{src / MANIFEST} names no known database")
    return manifest


# -- restore ----------------------------------------------------------------------------------------


def set_database_url(hgrc: Path, value: str) -> None:
    """Set ``[hosting] database = VALUE`` in a site hgrc (the line replaced, or added)."""
    lines = hgrc.read_text(encoding="utf-8", errors="surrogateescape").splitlines(keepends=True)
    out: list[str] = []
    section = None
    done = False
    skipping = False
    for line in lines:
        if skipping and line[:1] in (" ", "\t") and line.strip():
            continue  # a continuation line of the old value
        skipping = False
        header = re.match(r"^\[([^\]]+)\]", line)
        if header:
            if section == "hosting" and not done:
                out.append(f"database = {value}\n")
                done = True
            section = header.group(1).strip()
        elif section == "hosting" and re.match(r"^database\s*[=:]", line):
            if not done:
                out.append(f"database = {value}\n")
                done = True
            skipping = True
            continue
        out.append(line)
    if not done:
        if section != "hosting":
            out.append(("" if not out or out[-1].endswith("\n") else "\n") + "\n[hosting]\n")
        out.append(f"database = {value}\n")
    hgrc.write_text("".join(out), encoding="utf-8", errors="surrogateescape")


def _pg_restore(dump: Path, url: str) -> None:
    """Load a backup's dump into the empty PostgreSQL database at ``url``."""
    import psycopg2

    pg_restore = _pg_tool("pg_restore")
    try:
        conn = psycopg2.connect(_libpq_url(url))
    except psycopg2.Error as e:
        raise UserError(f"cannot connect to {url}: {str(e).strip().splitlines()[0]}") from None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            (tables,) = cur.fetchone()
    finally:
        conn.close()
    if tables:
        raise UserError(f"the database {url} is not empty ({tables} tables); restore needs an empty one")
    proc = subprocess.run(
        [pg_restore, "--no-owner", "--no-privileges", "--exit-on-error", f"--dbname={_libpq_url(url)}", str(dump)],
        capture_output=True, text=True, timeout=3600,
    )
    if proc.returncode != 0:
        raise UserError("pg_restore failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1])


def restore(src: Path, target: Path, database_url: str | None = None, hardlink: bool = True) -> Site:
    """Make a working site in ``target`` (missing or empty) from the backup in ``src``."""
    src, target = Path(src).absolute(), Path(target).absolute()
    manifest = read_manifest(src)
    if _inside(target, src) or _inside(src, target):
        raise UserError(f"{target} and the backup {src} must not contain each other")
    kind = manifest["database"]
    if kind == "postgresql" and not database_url:
        raise UserError("this backup holds a PostgreSQL dump: give --database URL of an empty database"
                        " (see docs/backup.md)")
    if kind == "sqlite" and database_url:
        raise UserError("this backup holds a SQLite database; --database is for PostgreSQL backups")
    db_file = src / str(manifest.get("database_file", ""))
    if not db_file.is_file() or db_file.parent != src:
        raise UserError(f"the backup {src} has no database file {db_file.name}")
    with _new_directory(target, "the restore directory"):
        for name in SITE_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, target / name)
        if not (target / "hgrc").is_file():
            raise UserError(f"the backup {src} has no site hgrc")
        stats = CopyStats()
        (target / "repos").mkdir(mode=0o755)
        for full in manifest.get("repositories", []):
            owner, name = full.split("/")
            if not (src / "repos" / owner / name / ".hg").is_dir():
                raise UserError(f"the backup {src} lacks the repository {full}")
            (target / "repos" / owner).mkdir(mode=0o755, exist_ok=True)
            stats.add(copy_hg_dir(src / "repos" / owner / name, target / "repos" / owner / name, hardlink))
        (target / "tmp").mkdir(mode=0o700)
        site = Site(target)
        if kind == "sqlite":
            shutil.copyfile(db_file, target / SQLITE_FILE)  # copied, never linked: SQLite writes in place
            os.chmod(target / SQLITE_FILE, 0o600)
            set_database_url(site.hgrc, "")
        else:
            _pg_restore(db_file, database_url)
            set_database_url(site.hgrc, database_url)
        expected = f"sqlite:///{site.db_path}" if kind == "sqlite" else database_url
        try:
            found = site.database_url()
        except Exception as e:  # noqa: BLE001 - a hgrc hg cannot read
            raise SiteError(f"cannot read the restored site hgrc: {e}") from None
        if found != expected:
            raise UserError(f"the restored site hgrc still names the database {found} (an %include?);"
                            f" set [hosting] database in {site.hgrc} by hand")
        site.open()
    return site


__all__ = ["backup", "restore", "read_manifest", "BackupResult", "MANIFEST"]
