"""Repositories, their grants and protected refs: every operation, and the listings.

Finding a repository goes through :func:`find`, which answers a private
repository the actor may not read exactly as a missing one (:class:`NotFound`,
same message), and a readable one the actor may not change with
:class:`Forbidden`.  Writes need the ``admin`` level on the repository, and
creating, forking or moving a repository into an owner needs
:func:`hgext_hosting.policy.may_create_for`.  The disk-and-database mechanics
are :mod:`hgext_hosting.repositories`'.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from peewee import fn

from .. import audit, names, policy, repositories
from ..accounts import get_owner, get_subject, subject_label
from ..errors import Forbidden, Invalid, NotFound
from ..models import (
    Grant,
    Membership,
    Owner,
    ProtectedRef,
    ProtectedRefAllow,
    Push,
    Repository,
    database,
    from_joined,
    write_transaction,
)
from ..site import Site
from .actors import Actor, repo_facts

#: The most repositories one page of a listing holds.
MAX_PER_PAGE = 100
#: Longest search string considered (longer input is cut).
MAX_SEARCH = 100


# -- finding and listing ------------------------------------------------------------


def _missing(full_name: str) -> NotFound:
    return NotFound(f"no repository {full_name!r}")


def find(actor: Actor, full_name: str, level: str = "read") -> Repository:
    """The repository ``OWNER/NAME`` if ``actor`` holds ``level`` on it.

    NotFound when it is missing, malformed or not readable by the actor (one
    message for all three); Forbidden when readable but below ``level``.
    """
    return require(actor, _row(full_name), level)


def _row(full_name: str) -> Repository:
    """The row of ``OWNER/NAME`` whoever asks; NotFound when missing or malformed."""
    try:
        owner, name = names.split_repo_name(full_name)
    except names.InvalidName:
        raise _missing(full_name) from None
    repo = Repository.find(owner, name)
    if repo is None:
        raise _missing(full_name)
    return repo


def require(actor: Actor, repo: Repository, level: str) -> Repository:
    """``repo`` if ``actor`` holds ``level`` on it, else NotFound (unreadable) or Forbidden."""
    facts = repo_facts(repo)
    decision = policy.may(actor.subject, level, facts)
    if not decision:
        if policy.level_of(actor.subject, facts) is None:
            raise _missing(repo.full_name)
        raise Forbidden(decision.reason)
    return repo


@dataclass
class RepoView:
    """A repository as one reader sees it: the row, their level, its last push's date."""

    repo: Repository
    level: str
    last_push: object  # datetime or None


def view(actor: Actor, full_name: str) -> RepoView:
    """The repository ``OWNER/NAME`` for a reader (NotFound as :func:`find`), in three queries."""
    repo = _row(full_name)
    held = policy.level_of(actor.subject, repo_facts(repo))
    if held is None:
        raise _missing(repo.full_name)
    last = (Push.select(fn.MAX(Push.date))
            .where((Push.repository == repo.id) & (Push.state == "done")).scalar())
    return RepoView(repo, held, Push.date.python_value(last))


def level(actor: Actor, repo: Repository) -> str | None:
    """The level ``actor`` holds on ``repo`` (None: may not read it)."""
    return policy.level_of(actor.subject, repo_facts(repo))


def readable(actor: Actor):
    """A query of the repositories ``actor`` may read, their owners joined.

    The SQL form of "``policy.level_of`` is not None" (public; the owning user;
    a member of the owning team; a grant to the user or one of their teams;
    site admins everything), for listings of any size in one query;
    ``tests/test_policy.py`` checks that both forms agree.
    """
    subject = actor.subject
    query = Repository.select(Repository, Owner).join(Owner)
    if subject is not None and subject.is_admin:
        return query
    visible = Repository.private == False  # noqa: E712 - peewee expression
    if subject is not None:
        team_keys = list(subject.teams)
        subject_ids = Owner.select(Owner.id).where(
            (Owner.name_key == subject.key) | (Owner.name_key.in_(team_keys) & (Owner.kind == "team"))
        )
        granted = Grant.select(Grant.repository).where(Grant.subject.in_(subject_ids))
        visible |= (Owner.name_key == subject.key) & (Owner.kind == "user")
        if team_keys:
            visible |= (Owner.name_key.in_(team_keys)) & (Owner.kind == "team")
        visible |= Repository.id.in_(granted)
    return query.where(visible)


@dataclass
class Listing:
    """One page of a repository listing: rows with their last push date, and the paging."""

    repos: list[tuple[Repository, object]]  # (row, date of the last push or None)
    page: int
    pages: int
    total: int
    per_page: int
    search: str


def listing(actor: Actor, search: str = "", owner: str | Owner | None = None, page: int = 1,
            per_page: int = MAX_PER_PAGE) -> Listing:
    """Page ``page`` of the repositories ``actor`` may read, by owner then name.

    ``search`` matches the owner's or repository's name or the description (any
    case); ``owner`` keeps one owner's: a name (NotFound when there is no such
    owner) or the :class:`Owner` the caller found already (the owner's page).
    """
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise Invalid(f"per_page must be between 1 and {MAX_PER_PAGE}", "per_page")
    if page < 1:
        raise Invalid("page must be at least 1", "page")
    query = readable(actor)
    if owner is not None:
        query = query.where(Repository.owner == (owner if isinstance(owner, Owner) else find_owner(owner)).id)
    search = (search or "").strip()[:MAX_SEARCH]
    if search:
        lowered = search.lower()
        query = query.where(
            fn.LOWER(Repository.name).contains(lowered)
            | fn.LOWER(Owner.name).contains(lowered)
            | (fn.LOWER(Repository.description) ** f"%{lowered}%")
        )
    total = query.count()
    # The page's rows and their last push in one query, run as plain SQL and the instances
    # built from its tuples (models.from_joined): peewee's row processing was most of a page's
    # time.  One MAX per repository, each an index probe of (repository, state, date): a
    # GROUP BY over the pushes would walk every push of the page's repositories.
    newest = Push.alias()
    last_push = newest.select(fn.MAX(newest.date)).where(
        (newest.repository == Repository.id) & (newest.state == "done"))
    sql, params = (query.select(*Repository._meta.sorted_fields, *Owner._meta.sorted_fields, last_push)
                   .order_by(Owner.name_key, Repository.name_key)
                   .offset((page - 1) * per_page).limit(per_page).sql())
    owners: dict = {}  # one instance per owner of the page
    found = [(from_joined(values, Repository, Owner, "owner", owners),
              Push.date.python_value(values[-1]))  # as stored: text on SQLite
             for values in database().execute_sql(sql, params).fetchall()]
    return Listing(found, page, max(1, math.ceil(total / per_page)), total, per_page, search)


def find_owner(name: str) -> Owner:
    """The user or team ``name`` (any case); NotFound otherwise (a malformed name too)."""
    try:
        names.check_name(name)
    except names.InvalidName:
        raise NotFound(f"no user or team named {name!r}") from None
    return get_owner(name)


def team_members(team: Owner) -> list[str]:
    """The names of a team's members, by name."""
    return [m.user.name for m in Membership.select(Membership, Owner)
            .join(Owner, on=(Membership.user == Owner.id)).where(Membership.team == team.id)
            .order_by(Owner.name_key)]


def owner_choices(actor: Actor) -> list[str]:
    """The owners ``actor`` may create repositories for: themselves, then their teams."""
    if actor.user_id is None:
        return []
    teams = (Owner.select(Owner.name).join(Membership, on=(Membership.team == Owner.id))
             .where(Membership.user == actor.user_id).order_by(Owner.name_key))
    return [actor.name] + [t.name for t in teams]


def all_repositories() -> list[Repository]:
    """Every repository, by owner then name (the console's ``repo list``)."""
    return repositories.list_repos()


# -- creating, moving, removing --------------------------------------------------------


def _target_owner(actor: Actor, full_name: str) -> tuple[Owner, str]:
    """The owner and name of a new location ``OWNER/NAME``, if ``actor`` may create there."""
    owner_name, name = names.split_repo_name(full_name)
    owner = get_owner(owner_name)
    decision = policy.may_create_for(actor.subject, owner.name_key, owner.is_team)
    if not decision:
        raise Forbidden(f"{actor.name} may not create repositories for {owner.name}")
    return owner, name


def create(site: Site, actor: Actor, full_name: str, private: bool = False, description: str = "",
           publishing: bool = True) -> Repository:
    """Create an empty repository ``OWNER/NAME``."""
    _target_owner(actor, full_name)
    with audit.acting(actor):  # the event and audit entry are written in the move's transaction
        return repositories.create_repo(site, full_name, private=private, description=description or "",
                                        publishing=publishing)


def remove(site: Site, actor: Actor, full_name: str) -> None:
    """Remove a repository with its history, settings and push log (admin level)."""
    repo = find(actor, full_name, "admin")
    with audit.acting(actor):
        repositories.remove_repo(site, repo.full_name)


def rename(site: Site, actor: Actor, full_name: str, new_full_name: str) -> Repository:
    """Rename ``OWNER/NAME``, or transfer it to another owner the actor may create for."""
    repo = find(actor, full_name, "admin")
    owner, _ = names.split_repo_name(new_full_name)
    if names.key(owner) != repo.owner.name_key:
        _target_owner(actor, new_full_name)
    with audit.acting(actor):
        return repositories.rename_repo(site, repo.full_name, new_full_name)


def fork(site: Site, actor: Actor, full_name: str, new_full_name: str, private: bool | None = None,
         user: str | None = None) -> Repository:
    """Fork a repository the actor may read into an owner they may create for.

    The fork's first push is recorded as the actor's; the console names the
    user with ``user`` (by default the new owner, when that is a user).
    """
    source = find(actor, full_name, "read")
    owner, _ = _target_owner(actor, new_full_name)
    if not actor.console:
        user = actor.name
    elif user is None:
        if owner.is_team:
            raise Invalid("a fork into a team needs --user: the user who forks", "user")
        user = owner.name
    with audit.acting(actor):
        return repositories.fork_repo(site, source.full_name, new_full_name, user=user, private=private)


def update(site: Site, actor: Actor, full_name: str, private: bool | None = None,
           description: str | None = None, publishing: bool | None = None) -> Repository:
    """Change visibility, description and publishing (admin level); None leaves one as it is."""
    repo = find(actor, full_name, "admin")
    with audit.acting(actor):
        return repositories.set_repo_settings(repo.full_name, private=private, description=description,
                                              publishing=publishing, site=site)


# -- grants ---------------------------------------------------------------------------


def _subject_row(subject: str, field: str) -> Owner:
    """``USER`` or ``@TEAM`` named in an input field; Invalid (naming the field) when unknown."""
    try:
        return get_subject(subject)
    except NotFound as e:
        raise Invalid(str(e), field) from None


def grant(actor: Actor, full_name: str, subject: str, level: str) -> None:
    """Give ``subject`` (``USER`` or ``@TEAM``) ``level`` on a repository, replacing any grant."""
    repo = find(actor, full_name, "admin")
    subject = (subject or "").strip()
    try:
        policy.check_level(level)
    except ValueError as e:
        raise Invalid(str(e), "level") from None
    with write_transaction():
        who = _subject_row(subject, "subject")
        Grant.insert(repository=repo, subject=who, level=level).on_conflict(
            conflict_target=[Grant.repository, Grant.subject], update={Grant.level: level}
        ).execute()
        repositories.bump_settings(repo)
        audit.record_for(actor, "grant", repo.full_name, subject=subject, level=level)


def revoke(actor: Actor, full_name: str, subject: str) -> None:
    """Remove the grant of ``subject``; NotFound when it has none."""
    repo = find(actor, full_name, "admin")
    subject = (subject or "").strip()
    with write_transaction():
        who = _subject_row(subject, "subject")
        deleted = Grant.delete().where((Grant.repository == repo) & (Grant.subject == who)).execute()
        if not deleted:
            raise NotFound(f"{subject} has no grant on {repo.full_name}")
        repositories.bump_settings(repo)
        audit.record_for(actor, "revoke", repo.full_name, subject=subject)


def grants(actor: Actor, full_name: str) -> list[tuple[str, str]]:
    """``[(subject label, level)]`` of a repository (admin level)."""
    repo = find(actor, full_name, "admin")
    rows = Grant.select(Grant, Owner).join(Owner).where(Grant.repository == repo.id)
    return sorted((subject_label(g.subject), g.level) for g in rows)


# -- protected refs -----------------------------------------------------------------------


def check_ref_name(ref: str) -> str:
    """A branch or bookmark name as Mercurial allows it (Invalid naming ``ref`` otherwise)."""
    if (not ref or ref != ref.strip() or len(ref.encode("utf-8")) > 255
            or any(c in ref for c in ":\0\r\n") or ref.isdigit() or ref in (".", "null", "tip")):
        raise Invalid(f"invalid branch or bookmark name {ref!r}", "ref")
    return ref


def parse_allow(allow: str | Iterable[str]) -> list[str]:
    """An allow-list as typed: ``"alice, @core bob"`` or ``["alice", "@core"]`` -> names."""
    items = [allow] if isinstance(allow, str) else list(allow)
    return [s for item in items for s in item.replace(",", " ").split() if s]


def protect(actor: Actor, full_name: str, ref: str, allow: str | Iterable[str]) -> list[str]:
    """Protect a branch or bookmark; the allow-list replaces any previous one.  Returns it."""
    repo = find(actor, full_name, "admin")
    ref = check_ref_name((ref or "").strip())
    subjects = parse_allow(allow)
    if not subjects:
        raise Invalid("protect needs at least one allowed user or @team", "allow")
    with write_transaction():
        rows = {row.id: row for row in (_subject_row(s, "allow") for s in subjects)}
        ref_row, _ = ProtectedRef.get_or_create(repository=repo, name=ref)
        ProtectedRefAllow.delete().where(ProtectedRefAllow.ref == ref_row).execute()
        for who in rows.values():
            ProtectedRefAllow.create(ref=ref_row, subject=who)
        repositories.bump_settings(repo)
        audit.record_for(actor, "protect", repo.full_name, ref=ref, allow=subjects)
    return subjects


def unprotect(actor: Actor, full_name: str, ref: str) -> None:
    """Lift the protection of a ref; NotFound when it is not protected."""
    repo = find(actor, full_name, "admin")
    ref = (ref or "").strip()
    with write_transaction():
        deleted = ProtectedRef.delete().where(
            (ProtectedRef.repository == repo) & (ProtectedRef.name == ref)
        ).execute()
        if not deleted:
            raise NotFound(f"{ref!r} is not protected in {repo.full_name}")
        repositories.bump_settings(repo)
        audit.record_for(actor, "unprotect", repo.full_name, ref=ref)


def protected(actor: Actor, full_name: str) -> list[tuple[str, list[str]]]:
    """``[(ref, [subject labels])]`` of a repository (admin level)."""
    repo = find(actor, full_name, "admin")
    result = []
    for ref in ProtectedRef.select().where(ProtectedRef.repository == repo.id).order_by(ProtectedRef.name):
        allowed = ProtectedRefAllow.select(ProtectedRefAllow, Owner).join(Owner).where(ProtectedRefAllow.ref == ref)
        result.append((ref.name, sorted(subject_label(a.subject) for a in allowed)))
    return result
