"""Names of owners (users, teams) and repositories: the one validation rule of docs/spec.md.

A name matches ``[A-Za-z0-9][A-Za-z0-9._-]{0,63}``, is not ``.hg`` nor ends in
``.hg``, and is unique case-insensitively (compare :func:`key`).  A few owner
names are reserved because the daemon serves a fixed page at ``/NAME``.
"""

from __future__ import annotations

import re

from .errors import Invalid

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")

#: Owner names that would shadow a fixed URL of the daemon (``/healthz``...).
RESERVED_OWNER_NAMES = frozenset({"healthz", "favicon.ico", "robots.txt"})


class InvalidName(Invalid, ValueError):
    """A name that docs/spec.md does not allow; the message is fit for a user."""

    def __init__(self, message: str, field: str = "name"):
        super().__init__(message, field)


def key(name: str) -> str:
    """The case-insensitive key under which a name is unique."""
    return name.lower()


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a valid user, team or repository name, else raise."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidName(
            f"invalid {what} {name!r}: use 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    if key(name).endswith(".hg"):
        raise InvalidName(f"invalid {what} {name!r}: a name may not end in '.hg'")
    return name


def check_owner_name(name: str, what: str = "user name") -> str:
    """Like :func:`check_name`, also refusing the names reserved for fixed URLs."""
    check_name(name, what)
    if key(name) in RESERVED_OWNER_NAMES:
        raise InvalidName(f"invalid {what} {name!r}: the name is reserved")
    return name


def split_repo_name(full: str) -> tuple[str, str]:
    """Split ``OWNER/NAME`` into its two validated parts."""
    parts = full.split("/") if isinstance(full, str) else []
    if len(parts) != 2:
        raise InvalidName(f"invalid repository {full!r}: expected OWNER/NAME")
    return check_name(parts[0], "owner name"), check_name(parts[1], "repository name")
