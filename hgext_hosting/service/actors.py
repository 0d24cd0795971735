"""Who performs an operation: a user, anonymous, or the console.

An :class:`Actor` carries the :class:`~hgext_hosting.policy.Subject` the policy
decides on, the user's row id (None for anonymous and the console) and the
client address (for the audit log and throttles).  The console is the site
administrator at the ``hg-hosting`` command line: a site admin that is no user.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import names, policy, pushdb
from ..errors import NotFound
from ..models import Owner, Repository

#: How the console's actions are named (in messages and, later, the audit log).
CONSOLE_NAME = "(console)"


@dataclass(frozen=True)
class Actor:
    """The one who acts; ``subject`` None is anonymous."""

    subject: policy.Subject | None
    user_id: int | None = None
    address: str | None = None
    console: bool = False

    @classmethod
    def of_console(cls) -> Actor:
        """The site administrator at the command line: allowed everything."""
        return cls(policy.Subject(CONSOLE_NAME, is_admin=True), console=True)

    @classmethod
    def anonymous(cls, address: str | None = None) -> Actor:
        return cls(None, address=address)

    @classmethod
    def of_user(cls, user: Owner | str, address: str | None = None) -> Actor:
        """The actor for a user (a row or a name); NotFound for no such user."""
        name = user if isinstance(user, str) else user.name
        subject = pushdb.load_subject(pushdb.models_connection(), name)
        if subject is None:
            raise NotFound(f"no user named {name!r}")
        row_id = user.id if isinstance(user, Owner) else Owner.get(
            (Owner.name_key == names.key(name)) & (Owner.kind == "user")).id
        return cls(subject, row_id, address)

    @property
    def name(self) -> str:
        return self.subject.name if self.subject is not None else "anonymous"

    @property
    def is_admin(self) -> bool:
        return self.subject is not None and self.subject.is_admin

    def is_user(self, user: Owner) -> bool:
        """Is this actor the user ``user``?"""
        return self.user_id is not None and self.user_id == user.id


def repo_facts(repo: Repository) -> policy.RepoFacts:
    """The policy's snapshot of a repository row (its owner loaded)."""
    return pushdb.load_repo_facts(pushdb.models_connection(), pushdb.RepoRow.of(repo))
