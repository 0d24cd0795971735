"""Who may do what: the one answer to "may SUBJECT do LEVEL on REPO?".

The rules (docs/spec.md, *Accounts and permissions*), as :func:`level_of` applies them:

- levels are ordered ``read`` < ``write`` < ``publish`` < ``admin``;
- ``publish`` matters in a non-publishing repository only: there ``write`` may
  push drafts, amend and prune them (obsolescence markers), and only ``publish``
  may push public changesets or turn drafts public (:mod:`hgext_hosting.hooks`);
- a site admin and the repository's owning user hold ``admin``;
- members of an owning team hold ``write``;
- grants to the user, and to every team the user is a member of, add their level;
- anyone, anonymous included, may ``read`` a public repository;
- a protected ref may be pushed only by the subjects on its allow-list (users,
  or ``@team`` meaning its members) and site admins.

The decision functions are pure: they take :class:`Subject` and :class:`RepoFacts`
snapshots, so that every caller (CLI, hooks, daemon, SSH) shares them and the
table-driven tests need no database.  :func:`load_subject` and
:func:`load_repo_facts` build the snapshots from the database the models are
bound to, with the SQL of :mod:`hgext_hosting.pushdb` (which the hooks run on
their own connection).  This module imports neither peewee nor the models at
load time, so that a push process does not pay for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import names

if TYPE_CHECKING:
    from .models import Repository

LEVELS = ("read", "write", "publish", "admin")
_RANK = {level: rank for rank, level in enumerate(LEVELS, start=1)}


def check_level(level: str) -> str:
    """Return ``level`` if it is one of read/write/publish/admin, else raise ValueError."""
    if level not in _RANK:
        raise ValueError(f"unknown level {level!r}: use read, write, publish or admin")
    return level


@dataclass(frozen=True)
class Subject:
    """An authenticated user as the policy sees it."""

    name: str
    is_admin: bool = False
    teams: frozenset[str] = frozenset()  # team name keys

    @property
    def key(self) -> str:
        return names.key(self.name)


@dataclass(frozen=True)
class RepoFacts:
    """What the policy needs to know about one repository."""

    full_name: str
    owner: str  # owner name key
    owner_is_team: bool
    private: bool
    user_grants: dict[str, str] = field(default_factory=dict)  # user key -> level
    team_grants: dict[str, str] = field(default_factory=dict)  # team key -> level


@dataclass(frozen=True)
class Decision:
    """A yes or no, with the one-line reason a user is shown on no."""

    allowed: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.allowed


def level_of(subject: Subject | None, repo: RepoFacts) -> str | None:
    """The highest level ``subject`` (None: anonymous) holds on ``repo``, or None."""
    held: list[str] = []
    if not repo.private:
        held.append("read")
    if subject is not None:
        if subject.is_admin:
            return "admin"
        if not repo.owner_is_team and repo.owner == subject.key:
            return "admin"
        if repo.owner_is_team and repo.owner in subject.teams:
            held.append("write")
        if subject.key in repo.user_grants:
            held.append(repo.user_grants[subject.key])
        held.extend(level for team, level in repo.team_grants.items() if team in subject.teams)
    return max(held, key=_RANK.__getitem__) if held else None


def may(subject: Subject | None, level: str, repo: RepoFacts) -> Decision:
    """May ``subject`` (None: anonymous) do ``level`` on ``repo``?"""
    check_level(level)
    held = level_of(subject, repo)
    if held is not None and _RANK[held] >= _RANK[level]:
        return Decision(True)
    who = subject.name if subject else "anonymous"
    if held is None:
        return Decision(False, f"{who} may not read {repo.full_name}")
    if level in ("write", "publish"):
        return Decision(False, f"{who} may not {level} to {repo.full_name}")
    return Decision(False, f"{who} is not an admin of {repo.full_name}")


def may_push_ref(subject: Subject, allow: frozenset[str]) -> bool:
    """May ``subject`` push to a protected ref whose allow-list is ``allow``?

    ``allow`` holds user name keys and ``@team`` keys.
    """
    if subject.is_admin or subject.key in allow:
        return True
    return any("@" + team in allow for team in subject.teams)


# -- snapshots from the database ---------------------------------------------


def load_subject(user_name: str | None) -> Subject | None:
    """The Subject for an existing user name (any case), or None."""
    from . import models, pushdb

    return pushdb.load_subject(models.connection(), user_name)


def load_repo_facts(repo: Repository) -> RepoFacts:
    """The RepoFacts of a repository row (its owner loaded)."""
    from . import models, pushdb

    return pushdb.load_repo_facts(models.connection(), pushdb.RepoRow.of(repo))


def load_protected_refs(repo: Repository) -> dict[str, frozenset[str]]:
    """``{ref name: allow-list}`` for a repository (allow-list as :func:`may_push_ref` wants)."""
    from . import models, pushdb

    return pushdb.load_protected_refs(models.connection(), repo.id)


def readable_repositories(subject: Subject | None):
    """A query of the repositories ``subject`` may read (same rules as :func:`level_of`).

    One query, whatever the number of repositories: the index and owner pages use it.
    """
    from .models import Grant, Owner, Repository
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
