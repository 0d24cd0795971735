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
table-driven tests need no database.  :mod:`hgext_hosting.pushdb` builds the
snapshots (the push path on its own connection, the service layer on the
models'); this module is a leaf: it imports only :mod:`names`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import names

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


# -- owners and accounts ------------------------------------------------------


def may_create_for(subject: Subject | None, owner_key: str, owner_is_team: bool) -> Decision:
    """May ``subject`` create (or fork, or move) a repository owned by the owner ``owner_key``?

    Site admins for anyone; a user for themselves and for the teams they belong to.
    """
    if subject is not None and (
        subject.is_admin
        or (owner_is_team and owner_key in subject.teams)
        or (not owner_is_team and owner_key == subject.key)
    ):
        return Decision(True)
    who = subject.name if subject else "anonymous"
    return Decision(False, f"{who} may not create repositories for {owner_key}")


def may_manage_user(subject: Subject | None, user_key: str) -> Decision:
    """May ``subject`` manage the account ``user_key`` (its tokens, keys, password)?"""
    if subject is not None and (subject.is_admin or subject.key == user_key):
        return Decision(True)
    who = subject.name if subject else "anonymous"
    return Decision(False, f"{who} may not manage the account {user_key}")


def may_administer_site(subject: Subject | None) -> Decision:
    """May ``subject`` manage users and teams?  Site admins only."""
    if subject is not None and subject.is_admin:
        return Decision(True)
    who = subject.name if subject else "anonymous"
    return Decision(False, f"{who} is not a site admin")
