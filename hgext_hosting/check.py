"""``hg-hosting check``: compare every repository with the database, and mend.

For each repository it takes the repository lock (so that no push is in
flight and the push log and the changelog can be compared), then reports:

- an interrupted transaction (a journal): ``--repair`` runs ``hg recover``;
- ``pending`` push records: settled as the next push would (see
  :func:`hgext_hosting.pushlog.settle`);
- changesets without a push record: ``--repair`` records them as one push by
  ``(repair)``;
- records of changesets that are not in the repository (a strip, a crash
  before recovery): ``--repair`` drops those entries, and a push left with
  nothing at all;
- changesets recorded by more than one push: ``--repair`` keeps the first;
- directories under ``repos/`` without a row: ``--repair`` registers them
  (private, so nothing becomes visible by accident) when their owner exists and
  the name is valid, else moves them to ``lost+found/``;
- rows without a directory: ``--repair`` removes the row;
- a repository whose ``hg`` would not run the extension (its ``.hg/hgrc``
  does not include the site hgrc, or the configuration does not enable
  ``[extensions] hosting``): pushes to it would be neither checked nor
  recorded.  ``--repair`` adds ``[extensions] hosting =`` to a site hgrc
  without it, as ``init`` does (not to one that says ``hosting = !``); a
  repository's own ``.hg/hgrc`` is the administrator's to fix.

Exit status: 0 when everything agrees (or ``--repair`` mended all of it), 1
otherwise.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from mercurial import error as hgerror
from mercurial import hg

from . import models, names, pushdb, pushlog, repositories
from .errors import UserError
from .models import Owner, Push, PushBookmark, PushChangeset, Repository, write_transaction
from .site import Site


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    unrepaired: int = 0

    def lines(self) -> list[str]:
        if not self.problems:
            return ["ok: the database and the repositories agree"]
        out = [f"problem: {p}" for p in self.problems]
        out += [f"repaired: {r}" for r in self.repairs]
        return out

    def exit_status(self) -> int:
        if not self.problems:
            return 0
        return 1 if (not self.repairs or self.unrepaired) else 0


def run(site: Site, repair: bool = False) -> Report:
    report = Report()
    _check_site_hgrc(site, report, repair)
    rows = {
        (r.owner.name, r.name): r
        for r in Repository.select(Repository, Owner).join(Owner)
    }
    on_disk = set(_directories(site))
    for key, row in sorted(rows.items()):
        full = f"{key[0]}/{key[1]}"
        if key not in on_disk:
            report.problems.append(f"{full}: in the database but no directory {site.repo_path(*key)}")
            if repair:
                with write_transaction():
                    row.delete_instance()
                report.repairs.append(f"{full}: removed the row")
            continue
        _check_repository(site, row, full, report, repair)
    for key in sorted(on_disk - set(rows)):
        _check_orphan_directory(site, key, report, repair)
    return report


def _check_site_hgrc(site: Site, report: Report, repair: bool) -> None:
    """The site hgrc must enable the extension; ``--repair`` adds it as ``init`` does."""
    from .site import SiteError, extension_enabled

    try:
        value, source = site.hgrc_extension()
    except SiteError as e:
        report.problems.append(str(e))
        report.unrepaired += 1
        return
    if extension_enabled(value):
        return
    report.problems.append(f"{source or site.hgrc}: the site hgrc does not enable the hg-hosting extension")
    if not repair:
        return
    try:
        for what in site.ensure_hgrc():
            report.repairs.append(f"added {what}")
    except SiteError as e:  # 'hosting = !': an explicit choice, left to the administrator
        report.repairs.append(f"not repaired: {e}")
        report.unrepaired += 1


def _directories(site: Site):
    if not site.repos.is_dir():
        return
    for owner_dir in sorted(site.repos.iterdir()):
        if not owner_dir.is_dir():
            continue
        for repo_dir in sorted(owner_dir.iterdir()):
            if (repo_dir / ".hg").is_dir():
                yield owner_dir.name, repo_dir.name


def _open(site: Site, path: Path):
    ui = site.ui.copy()
    ui.setconfig(b"hosting", b"auto-recover", b"false", b"check")
    ui.setconfig(b"ui", b"quiet", b"true", b"check")
    return hg.repository(ui, os.fsencode(path))


def _check_repository(site: Site, row: Repository, full: str, report: Report, repair: bool) -> None:
    for problem in site.enforcement_problems(site.repo_path(row.owner.name, row.name)):
        # Pushes to it are refused by the daemon and ssh-serve, but a local hg push
        # would land unchecked and unrecorded: an administrator must look.
        report.problems.append(f"{full}: {problem}; pushes are neither checked nor recorded")
        report.unrepaired += 1
    try:
        repo = _open(site, site.repo_path(row.owner.name, row.name))
    except hgerror.RepoError as e:
        report.problems.append(f"{full}: cannot open the repository: {e}")
        report.unrepaired += 1
        return
    with repo.lock():
        _check_publishing(site, repo, row, full, report, repair)
        if repo.svfs.exists(b"journal"):
            report.problems.append(f"{full}: an interrupted transaction was left behind")
        if pushlog.has_pending(row.id):
            report.problems.append(f"{full}: push records not settled after a crash")
        if repair and (repo.svfs.exists(b"journal") or pushlog.has_pending(row.id)):
            report.repairs.extend(f"{full}: {what}" for what in pushlog.settle(repo, row.id))
        _compare_changesets(repo.unfiltered(), row, full, report, repair)


def _publishing_word(publishing: bool) -> str:
    return "publishing" if publishing else "non-publishing"


def _check_publishing(site: Site, repo, row: Repository, full: str, report: Report, repair: bool) -> None:
    """``[phases] publish`` as Mercurial reads it for ``repo`` must be the database's ``publishing``."""
    actual = repo.ui.configbool(b"phases", b"publish")
    if actual == bool(row.publishing):
        return
    report.problems.append(f"{full}: the database says {_publishing_word(row.publishing)} but its"
                           f" .hg/hgrc makes it {_publishing_word(actual)}")
    if not repair:
        return
    repositories.write_repo_hgrc(site.repo_path(row.owner.name, row.name), bool(row.publishing))
    report.repairs.append(f"{full}: rewrote .hg/hgrc as {_publishing_word(row.publishing)}")


def _compare_changesets(unfi, row: Repository, full: str, report: Report, repair: bool) -> None:
    cl = unfi.changelog
    in_repo = [cl.node(rev).hex() for rev in cl]
    present = set(in_repo)
    recorded: dict[str, int] = {}
    duplicates: list[int] = []
    missing: list[int] = []
    for entry_id, node, push_row in (
        PushChangeset.select(PushChangeset.id, PushChangeset.node, PushChangeset.push)
        .join(Push)
        .where(Push.repository == row.id)
        .order_by(Push.push_id, PushChangeset.position)
        .tuples()
    ):
        if node not in present:
            missing.append(entry_id)
        elif node in recorded:
            duplicates.append(entry_id)
        else:
            recorded[node] = push_row
    unrecorded = [n for n in in_repo if n not in recorded]
    if unrecorded:
        report.problems.append(
            f"{full}: {len(unrecorded)} changeset(s) without a push record (first {unrecorded[0][:12]})"
        )
    if missing:
        report.problems.append(f"{full}: {len(missing)} recorded changeset(s) missing from the repository")
    if duplicates:
        report.problems.append(f"{full}: {len(duplicates)} changeset(s) recorded by more than one push")
    if not repair or not (unrecorded or missing or duplicates):
        return
    with write_transaction():
        if missing or duplicates:
            stale = missing + duplicates
            for start in range(0, len(stale), 500):
                PushChangeset.delete().where(PushChangeset.id.in_(stale[start : start + 500])).execute()
            emptied = _drop_empty_pushes(row)
            pushdb.number_changeset_pushes(models.connection(), row.id)  # json-pushes' pages
            report.repairs.append(
                f"{full}: dropped {len(stale)} stale changeset entries"
                + (f" and {emptied} empty push record(s)" if emptied else "")
            )
        if unrecorded:
            _, push_id = pushdb.insert_push(models.connection(), row.id, pushlog.REPAIR_USER,
                                            "repair", "{}", unrecorded, [], state="done")
            report.repairs.append(
                f"{full}: recorded {len(unrecorded)} changeset(s) as push {push_id} by {pushlog.REPAIR_USER}"
            )


def _drop_empty_pushes(row: Repository) -> int:
    dropped = 0
    for push in Push.select().where(Push.repository == row.id):
        has_nodes = PushChangeset.select().where(PushChangeset.push == push.id).exists()
        has_marks = PushBookmark.select().where(PushBookmark.push == push.id).exists()
        if not (has_nodes or has_marks or push.extra):
            push.delete_instance()
            dropped += 1
    return dropped


def _check_orphan_directory(site: Site, key: tuple[str, str], report: Report, repair: bool) -> None:
    owner_name, name = key
    path = site.repo_path(owner_name, name)
    report.problems.append(f"{owner_name}/{name}: directory {path} has no row in the database")
    if not repair:
        return
    owner = Owner.get_or_none(Owner.name_key == names.key(owner_name))
    valid = True
    try:
        names.check_name(name, "repository name")
    except UserError:
        valid = False
    taken = owner is not None and Repository.select().where(
        (Repository.owner == owner.id) & (Repository.name_key == names.key(name))).exists()
    if owner is not None and owner.name == owner_name and valid and not taken:
        with write_transaction():
            row = Repository.create(owner=owner, name=name, name_key=names.key(name), private=True)
        report.repairs.append(f"{owner_name}/{name}: registered the directory as a private repository")
        _check_repository(site, row, f"{owner_name}/{name}", report, repair=True)
        return
    site.lost_found.mkdir(mode=0o700, exist_ok=True)
    target = site.lost_found / f"{owner_name}-{name}-{secrets.token_hex(4)}"
    os.rename(path, target)
    report.repairs.append(f"{owner_name}/{name}: no such owner or name; moved to {target}")
