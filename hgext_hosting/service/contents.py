"""What a repository holds, read side: branches, bookmarks, tags, a changeset, a file.

For the API (:mod:`daemon.api`).  The caller finds the repository for the
actor first (:func:`hgext_hosting.service.repos.find`, read level) and passes
an open Mercurial repository; this module filters it to the ``served`` view,
as hgweb serves it: hidden (obsolete) and secret changesets do not exist here.
A revision is one symbol (a node or its prefix, a branch, bookmark or tag), never
a revset; a file is a path in that changeset's manifest, looked up there and
nowhere else, so no path can reach outside the repository's history.  A file
over :data:`MAX_RAW_BYTES` is refused (Invalid): clone the repository instead.
"""

from __future__ import annotations

import datetime

from mercurial import error, scmutil
from mercurial import node as hgnode

from ..errors import Invalid, NotFound

#: The largest file served by ``raw`` (10 MB).
MAX_RAW_BYTES = 10 * 1024 * 1024
#: The longest revision symbol accepted.
MAX_REV = 255


def served(repo):
    """The view of ``repo`` the site serves (hgweb's): no hidden, no secret changesets."""
    return repo.filtered(b"served")


def _hex(node: bytes) -> str:
    return hgnode.hex(node).decode("ascii")


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def branches(repo) -> list[dict]:
    """Every named branch: its tip head, and whether every head of it is closed."""
    repo = served(repo)
    result = []
    # (name, tip rev, active, open): the tip is the newest open head when there is one
    for name, tip, _active, is_open in repo.branchmap().branches_info(repo):
        result.append({"name": _text(name), "node": _hex(repo.changelog.node(tip)),
                       "closed": not is_open})
    return sorted(result, key=lambda b: b["name"])


def bookmarks(repo) -> list[dict]:
    repo = served(repo)
    return sorted(({"name": _text(n), "node": _hex(node)} for n, node in repo._bookmarks.items()
                   if node in repo), key=lambda b: b["name"])


def tags(repo) -> list[dict]:
    repo = served(repo)
    return sorted(({"name": _text(n), "node": _hex(node)} for n, node in repo.tags().items()
                   if n != b"tip" and node in repo), key=lambda t: t["name"])


def changectx(repo, rev: str):
    """The changeset ``rev`` names (one symbol), or NotFound; never a hidden or secret one."""
    if not rev or len(rev) > MAX_REV or any(ord(c) < 32 for c in rev):
        raise NotFound(f"no changeset {rev[:MAX_REV]!r}")
    repo = served(repo)
    try:
        ctx = scmutil.revsymbol(repo, rev.encode("utf-8"))
    except (error.RepoLookupError, error.FilteredRepoLookupError, error.LookupError, error.Abort,
            error.ParseError, ValueError, TypeError):
        raise NotFound(f"no changeset {rev!r}") from None
    if ctx.rev() is None or ctx.rev() < 0 or ctx.node() not in repo:
        raise NotFound(f"no changeset {rev!r}")
    return ctx


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def changeset(repo, rev: str) -> dict:
    """A changeset: node, author, date, branch, phase, description, parents, files, tags, bookmarks."""
    ctx = changectx(repo, rev)
    return {
        "node": ctx.hex().decode(),
        "author": _text(ctx.user()),
        "date": _iso(ctx.date()[0]),
        "branch": _text(ctx.branch()),
        "phase": ctx.phasestr().decode(),
        "description": _text(ctx.description()),
        "parents": [p.hex().decode() for p in ctx.parents() if p.rev() >= 0],
        "files": [_text(f) for f in ctx.files()],
        "tags": [_text(t) for t in ctx.tags() if t != b"tip"],
        "bookmarks": [_text(b) for b in ctx.bookmarks()],
    }


def raw(repo, rev: str, path: str) -> bytes:
    """The contents of ``path`` in changeset ``rev``; NotFound when it has no such file."""
    ctx = changectx(repo, rev)
    key = path.encode("utf-8")
    if not path or b"\0" in key or key not in ctx:
        raise NotFound(f"no file {path[:200]!r} in {ctx.hex().decode()[:12]}")
    fctx = ctx[key]
    if fctx.size() > MAX_RAW_BYTES:
        raise Invalid(f"the file is larger than {MAX_RAW_BYTES // (1024 * 1024)} MB; clone the repository",
                      "path")
    return fctx.data()
