"""Operations on repositories, grants and protected refs, on disk and in the database.

Disk and database change together or not at all.  Every operation that touches
the disk prepares what it can outside (a new repository is built in
``SITE/tmp``), then, inside one write transaction, changes the rows and makes
a single ``rename(2)`` of a directory.  If anything fails before the COMMIT
returns, including the COMMIT itself, the directory is renamed back and the
transaction rolls back.  Moving or removing a repository first takes its
Mercurial locks, so that no push is in flight while its directory moves.

A process killed between the rename and the COMMIT cannot rename back, so the
move is announced first in an intent file ``SITE/tmp/move-*.json`` (pid,
repository uuid, source, destination; fsynced) and the file is removed once
the transaction has committed or rolled back.  :func:`finish_interrupted_moves`
(run by every ``hg-hosting`` command and by the daemon at start) finds the
intents of dead processes and puts each directory where the database says the
repository is, or, when the database has no such repository, out of
``repos/``: the database decides, as for a push.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from mercurial import error as hgerror

from . import audit, faults, models, names, outbox, pushdb
from .accounts import get_owner, get_user
from .errors import Conflict, Invalid, NotFound, UserError
from .models import (
    Owner,
    Repository,
    write_transaction,
)
from .site import REPO_HGRC, Site

T = TypeVar("T")


def get_repo(full_name: str) -> Repository:
    """The repository ``OWNER/NAME`` (any case), or NotFound."""
    repo = Repository.find(*names.split_repo_name(full_name))
    if repo is None:
        raise NotFound(f"no repository {full_name!r}")
    return repo


def list_repos() -> list[Repository]:
    return list(
        Repository.select(Repository, Owner)
        .join(Owner)
        .order_by(Owner.name_key, Repository.name_key)
    )


def repo_dir(site: Site, repo: Repository) -> Path:
    return site.repo_path(repo.owner.name, repo.name)


# -- helpers: staging, locking, moving ------------------------------------


def _hg_ui(site: Site):
    ui = site.ui.copy()
    ui.setconfig(b"ui", b"timeout", b"%d" % ui.configint(b"hosting", b"lock-timeout"), b"hosting")
    ui.setconfig(b"ui", b"quiet", b"true", b"hosting")
    return ui


@contextlib.contextmanager
def _staging(site: Site, name: str) -> Iterator[Path]:
    """A fresh directory ``SITE/tmp/stage-XXXX/NAME`` removed on the way out."""
    site.tmp.mkdir(mode=0o700, exist_ok=True)
    stage = site.tmp / f"stage-{secrets.token_hex(6)}"
    stage.mkdir(mode=0o700)
    try:
        yield stage / name
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def _repo_locked(site: Site, path: Path) -> Iterator[object]:
    """Hold a repository's wlock and lock (waits for pushes in flight)."""
    from mercurial import hg  # here, not at the top: the CLI's database-only commands skip it

    try:
        repo = hg.repository(_hg_ui(site), os.fsencode(path))
    except hgerror.RepoError as e:
        raise UserError(f"cannot open {path}: {e}") from None
    try:
        with repo.wlock(), repo.lock():
            yield repo
    except hgerror.LockHeld:
        raise Conflict(f"{path.name} is busy (locked by another process); try again") from None


@contextlib.contextmanager
def _move_intent(site: Site, repo_uuid: str, src: Path, dst: Path) -> Iterator[None]:
    """Announce a directory move durably for as long as its transaction is open."""
    site.tmp.mkdir(mode=0o700, exist_ok=True)
    intent = site.tmp / f"move-{secrets.token_hex(6)}.json"
    record = {"pid": os.getpid(), "host": socket.gethostname(), "uuid": repo_uuid,
              "src": str(src), "dst": str(dst)}
    fd = os.open(intent, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    try:
        yield
    finally:
        intent.unlink(missing_ok=True)


def _move_in_transaction(site: Site, repo_uuid: str, src: Path, dst: Path,
                         change: Callable[[], T], fault: str) -> T:
    """Apply ``change()`` and ``rename(src, dst)`` atomically together."""
    moved = False
    made_parent = not dst.parent.exists()
    with _move_intent(site, repo_uuid, src, dst):
        try:
            with write_transaction():
                result = change()
                dst.parent.mkdir(mode=0o755, exist_ok=True)
                os.rename(src, dst)
                moved = True
                faults.point(fault)
        except BaseException:
            if moved:
                os.rename(dst, src)
            if made_parent:
                with contextlib.suppress(OSError):
                    dst.parent.rmdir()  # only if still empty
            raise
    return result


def _alive(record: dict) -> bool:
    if record.get("host") != socket.gethostname():
        return True  # another machine's operation: not ours to judge
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, KeyError):
        return True
    return True


def finish_interrupted_moves(site: Site) -> list[str]:
    """Settle the moves of processes that died mid-operation; return what was done."""
    done: list[str] = []
    if not site.tmp.is_dir():
        return done
    for intent in sorted(site.tmp.glob("move-*.json")):
        try:
            record = json.loads(intent.read_text())
            src, dst = Path(record["src"]), Path(record["dst"])
        except (OSError, ValueError, KeyError):
            continue
        if _alive(record):
            continue
        row = (Repository.select(Repository, Owner).join(Owner)
               .where(Repository.uuid == record["uuid"]).first())
        where = next((p for p in (dst, src) if (p / ".hg").is_dir()), None)
        if row is not None:
            expected = repo_dir(site, row)
            if where is not None and where != expected and not expected.exists():
                expected.parent.mkdir(mode=0o755, exist_ok=True)
                os.rename(where, expected)
                _drop_lock_files(expected)
                done.append(f"{row.full_name}: an interrupted operation had moved it to {where}; moved back")
        elif where is not None and site.repos in where.parents:
            site.lost_found.mkdir(mode=0o700, exist_ok=True)
            target = site.lost_found / f"{where.parent.name}-{where.name}-{secrets.token_hex(4)}"
            os.rename(where, target)
            done.append(f"{where}: left by an interrupted operation the database never saw; moved to {target}")
        intent.unlink(missing_ok=True)
    return done


def _drop_lock_files(path: Path) -> None:
    """Remove the lock files we held when the directory moved under them."""
    for lock in (path / ".hg" / "wlock", path / ".hg" / "store" / "lock"):
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def _check_free(owner: Owner, name: str, site: Site, ignore: Repository | None = None) -> Path:
    names.check_name(name, "repository name")
    clash = Repository.get_or_none(
        (Repository.owner == owner.id) & (Repository.name_key == names.key(name))
    )
    if clash is not None and (ignore is None or clash.id != ignore.id):
        raise Conflict(f"repository {owner.name}/{clash.name} already exists")
    path = site.repo_path(owner.name, name)
    if os.path.lexists(path) and not (ignore and path == repo_dir(site, ignore)):
        raise Conflict(f"{path} already exists on disk (see 'hg-hosting check')")
    return path


#: Appended to the ``.hg/hgrc`` of a repository that exchanges drafts: after the
#: ``%include`` of the site hgrc, so that the repository's choice wins.
EVOLVE_HGRC = """
# Managed by hg-hosting: drafts, topics and obsolescence markers (hg-evolve).
[extensions]
evolve =
topic =
"""

#: Appended after :data:`EVOLVE_HGRC` in a non-publishing repository.
NON_PUBLISHING_HGRC = """
# Managed by hg-hosting: a non-publishing repository (hg-hosting repo set OWNER/NAME publishing=true).
[phases]
publish = False
"""


def repo_hgrc(publishing: bool, evolve: bool) -> str:
    """The ``.hg/hgrc`` of a repository: the site hgrc, then what the repository chose.

    Evolve and topic are enabled per repository, not site-wide: a publishing
    repository holds only public changesets, which no marker can hide, and its
    pushes do not pay for loading the extensions (~55 ms a process).  A
    repository that was non-publishing once keeps them (``evolve``): its
    markers and drafts stay readable.
    """
    text = REPO_HGRC
    if evolve or not publishing:
        text += EVOLVE_HGRC
    if not publishing:
        text += NON_PUBLISHING_HGRC
    return text


def write_repo_hgrc(path: Path, publishing: bool = True) -> None:
    """Write the repository's ``.hg/hgrc`` atomically (a reader never sees half of it)."""
    hgdir = path / ".hg"
    evolve = (hgdir / "store" / "obsstore").exists()
    tmp = hgdir / f"hgrc.{secrets.token_hex(4)}.tmp"
    tmp.write_text(repo_hgrc(publishing, evolve))
    os.replace(tmp, hgdir / "hgrc")


# -- repositories -----------------------------------------------------------


def create_repo(site: Site, full_name: str, private: bool = False, description: str = "",
                publishing: bool = True) -> Repository:
    """Create ``OWNER/NAME``: an empty Mercurial repository and its row.

    ``publishing=False``: drafts stay drafts (evolve and topic enabled, see :func:`repo_hgrc`).
    """
    owner_name, name = names.split_repo_name(full_name)
    owner = get_owner(owner_name)
    _check_description(description)
    _check_free(owner, name, site)
    from mercurial import hg

    with _staging(site, name) as stage:
        hg.repository(_hg_ui(site), os.fsencode(stage), create=True)
        write_repo_hgrc(stage, publishing)

        new_uuid = uuid.uuid4().hex

        def insert() -> Repository:
            _check_free(owner, name, site)
            repo = Repository.create(
                owner=owner, name=name, name_key=names.key(name),
                private=private, description=description, uuid=new_uuid, publishing=publishing,
            )
            outbox.record_event("created", repo)  # in this transaction (issue 14)
            return repo

        return _move_in_transaction(site, new_uuid, stage, site.repo_path(owner.name, name), insert,
                                    "repo-create-after-move")


def remove_repo(site: Site, full_name: str) -> None:
    """Remove a repository, its directory and every row that belongs to it."""
    repo = get_repo(full_name)
    path = repo_dir(site, repo)
    if not path.is_dir():
        with write_transaction():
            outbox.record_event("deleted", repo)
            repo.delete_instance()
        return
    site.tmp.mkdir(mode=0o700, exist_ok=True)
    trash = site.tmp / f"removed-{secrets.token_hex(6)}"
    with _repo_locked(site, path):
        _move_in_transaction(site, repo.uuid, path, trash, lambda: _delete_row(full_name),
                             "repo-remove-after-move")
    shutil.rmtree(trash, ignore_errors=True)


def _delete_row(full_name: str) -> None:
    repo = get_repo(full_name)
    outbox.record_event("deleted", repo)
    repo.delete_instance()


def rename_repo(site: Site, src_name: str, dst_name: str) -> Repository:
    """Rename (or move to another owner) a repository with its history and settings."""
    repo = get_repo(src_name)
    dst_owner_name, dst_name_only = names.split_repo_name(dst_name)
    dst_owner = get_owner(dst_owner_name)
    if dst_owner.id == repo.owner.id and dst_name_only == repo.name:
        raise Conflict(f"{src_name} is already called {dst_name}")
    src = repo_dir(site, repo)
    dst = _check_free(dst_owner, dst_name_only, site, ignore=repo)

    def update() -> Repository:
        current = get_repo(src_name)
        _check_free(dst_owner, dst_name_only, site, ignore=current)
        old_name, old_owner = current.full_name, current.owner_id
        current.owner = dst_owner
        current.name = dst_name_only
        current.name_key = names.key(dst_name_only)
        current.settings_epoch += 1
        current.save()
        outbox.record_event("transferred" if old_owner != dst_owner.id else "renamed", current,
                            old_name=old_name)
        return current

    with _repo_locked(site, src):
        result = _move_in_transaction(site, repo.uuid, src, dst, update, "repo-rename-after-move")
        _drop_lock_files(dst)
    return result


def fork_repo(
    site: Site, src_name: str, dst_name: str, user: str | None = None, private: bool | None = None
) -> Repository:
    """Copy a repository; the copy starts with one push, by ``user``, of all it holds."""
    src_repo = get_repo(src_name)
    dst_owner_name, name = names.split_repo_name(dst_name)
    dst_owner = get_owner(dst_owner_name)
    if user is None:
        if dst_owner.is_team:
            raise Invalid("a fork into a team needs --user: the user who forks", "user")
        user = dst_owner.name
    forker = get_user(user)
    _check_free(dst_owner, name, site)
    private = src_repo.private if private is None else private
    from mercurial import hg

    with _staging(site, name) as stage:
        hg.clone(_hg_ui(site), {}, os.fsencode(repo_dir(site, src_repo)), os.fsencode(stage),
                 pull=False, update=False)
        write_repo_hgrc(stage, bool(src_repo.publishing))
        copy = hg.repository(_hg_ui(site), os.fsencode(stage)).unfiltered()
        nodes = [copy.changelog.node(rev).hex() for rev in copy]
        bookmarks = {name.decode("utf-8", "replace"): node.hex() for name, node in copy._bookmarks.items()}
        del copy

        new_uuid = uuid.uuid4().hex

        def insert() -> Repository:
            _check_free(dst_owner, name, site)
            fork = Repository.create(
                owner=dst_owner, name=name, name_key=names.key(name),
                private=private, description=src_repo.description, uuid=new_uuid,
                publishing=src_repo.publishing, forked_from=src_repo.id,
            )
            if nodes or bookmarks:
                pushdb.insert_push(models.connection(), fork.id, forker.name, "fork", "{}",
                                   nodes, [(bm, None, node) for bm, node in sorted(bookmarks.items())],
                                   state="done")
            outbox.record_event("forked", fork, forker.name, source=src_repo.full_name)
            faults.point("repo-fork-before-move")
            return fork

        return _move_in_transaction(site, new_uuid, stage, site.repo_path(dst_owner.name, name), insert,
                                    "repo-fork-after-move")


def _check_description(description: str) -> None:
    if len(description) > 2000 or "\0" in description:
        raise Invalid("the description is too long or contains NUL characters", "description")


def set_repo_settings(full_name: str, private: bool | None = None, description: str | None = None,
                      publishing: bool | None = None, site: Site | None = None) -> Repository:
    """Change visibility, description and publishing (the settings page, ``repo set``).

    Changing ``publishing`` rewrites the repository's ``.hg/hgrc`` (``site``
    is needed then) inside the database transaction: if the file cannot be
    written, the row is not changed.  The bumped ``settings_epoch`` makes the
    daemon drop its cached hgweb, which read the old configuration.
    """
    with write_transaction():
        audit.record_acting("repo.update", full_name, **{k: v for k, v in (
            ("private", private), ("description", description), ("publishing", publishing)) if v is not None})
        repo = get_repo(full_name)
        if private is not None:
            repo.private = private
        if description is not None:
            _check_description(description)
            repo.description = description
        if publishing is not None and publishing != repo.publishing:
            if site is None:
                raise UserError("changing publishing needs the site")
            repo.publishing = publishing
            path = repo_dir(site, repo)
            if not (path / ".hg").is_dir():
                raise UserError(f"{path} is missing (see 'hg-hosting check')")
            write_repo_hgrc(path, publishing)
        repo.settings_epoch += 1
        repo.save()
        return repo


def bump_settings(repo: Repository) -> None:
    """Make every daemon drop what it cached about ``repo`` (its hgweb, its facts)."""
    Repository.update(settings_epoch=Repository.settings_epoch + 1).where(
        Repository.id == repo.id
    ).execute()
