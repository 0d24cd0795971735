"""``/OWNER/NAME/json-pushes``: the push log in hg.mozilla.org's format.

Query parameters, as Mozilla's pushlog reads them:

- range start, exclusive: ``startdate`` | ``fromchange`` (after the push that
  holds it) | ``startID``; range end, inclusive for ids and changesets:
  ``enddate`` (exclusive) | ``tochange`` | ``endID``.  Without a range: the
  last 10 pushes (``node=PAGE`` pages them).
- ``user`` (repeatable), ``changeset`` (repeatable: pushes holding it),
  ``tipsonly=1`` (only the last changeset of each push), ``full`` (changeset
  details), ``version=1`` (default: ``{id: push}``) or ``2``
  (``{"lastpushid": N, "pushes": {id: push}}``).

A push is ``{"changesets": [...], "date": UNIX_SECONDS, "user": NAME}``;
bookmark moves are added as ``"bookmarks"`` (an extension; Mozilla's tools
ignore unknown keys).
"""

from __future__ import annotations

import calendar
import datetime
import re

from mercurial import error as hgerror
from mercurial.utils import dateutil

from hgext_hosting import pushlog
from hgext_hosting.models import Push, PushChangeset

from .web import HTTPError

PAGE_SIZE = 10
_NODE = re.compile(r"[0-9a-fA-F]{4,40}\Z")


def unix(dt: datetime.datetime) -> int:
    return calendar.timegm(dt.timetuple())


def _parse_date(text: str) -> datetime.datetime:
    try:
        when, _offset = dateutil.parsedate(text.encode("utf-8"))
    except (hgerror.ParseError, hgerror.Abort, ValueError, OverflowError):
        raise HTTPError(400, f"cannot parse date {text[:40]!r}") from None
    return datetime.datetime.fromtimestamp(when, datetime.UTC).replace(tzinfo=None)


def _push_holding(repository_id: int, node: str) -> int:
    if not _NODE.match(node):
        raise HTTPError(400, f"invalid changeset {node[:40]!r}")
    row = (
        Push.select(Push.push_id)
        .join(PushChangeset)
        .where((Push.repository == repository_id) & (Push.state == "done")
               & (PushChangeset.node.startswith(node.lower())))
        .order_by(Push.push_id)
        .first()
    )
    if row is None:
        raise HTTPError(404, f"unknown changeset {node[:40]!r}")
    return row.push_id


def query(req, repository_id: int, unfi) -> dict:
    """The JSON document for a request (``unfi``: the repository, for ``full``)."""
    version = req.arg("version", "1")
    if version not in ("1", "2"):
        raise HTTPError(400, "version parameter must be 1 or 2")
    where = (Push.repository == repository_id) & (Push.state == "done")
    ranged = False
    if req.arg("startdate") is not None:
        where &= Push.date > _parse_date(req.arg("startdate"))
        ranged = True
    elif req.arg("fromchange") is not None:
        where &= Push.push_id > _push_holding(repository_id, req.arg("fromchange"))
        ranged = True
    elif req.arg("startID") is not None:
        where &= Push.push_id > req.int_arg("startID")
        ranged = True
    if req.arg("enddate") is not None:
        where &= Push.date < _parse_date(req.arg("enddate"))
        ranged = True
    elif req.arg("tochange") is not None:
        where &= Push.push_id <= _push_holding(repository_id, req.arg("tochange"))
        ranged = True
    elif req.arg("endID") is not None:
        where &= Push.push_id <= req.int_arg("endID")
        ranged = True
    users = req.args("user")
    if users:
        where &= Push.user.in_(users)
    changesets = req.args("changeset")
    if changesets:
        ids = [_push_holding(repository_id, c) for c in changesets]
        where &= Push.push_id.in_(ids)
    rows = Push.select().where(where)
    if ranged or users or changesets:
        rows = rows.order_by(Push.push_id)
    else:
        page = req.page_arg("node")
        rows = rows.order_by(Push.push_id.desc()).offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)
    views = sorted(pushlog.views(list(rows)), key=lambda v: v.push_id)
    full = "full" in req.query
    tipsonly = req.arg("tipsonly") == "1"
    pushes = {}
    for view in views:
        nodes = view.changesets[-1:] if tipsonly else view.changesets
        entry = {
            "changesets": [_full(unfi, n) for n in nodes] if full else nodes,
            "date": unix(view.date),
            "user": view.user,
        }
        if view.bookmarks:
            entry["bookmarks"] = {name: new for name, _old, new in view.bookmarks}
        pushes[str(view.push_id)] = entry
    if version == "1":
        return pushes
    last = (Push.select(Push.push_id).where((Push.repository == repository_id) & (Push.state == "done"))
            .order_by(Push.push_id.desc()).scalar()) or 0
    return {"lastpushid": last, "pushes": pushes}


def _full(unfi, node: str) -> dict:
    try:
        ctx = unfi[bytes.fromhex(node)]
    except (hgerror.RepoLookupError, hgerror.LookupError, ValueError):
        return {"node": node}
    text = lambda b: b.decode("utf-8", "replace")  # noqa: E731
    return {
        "node": node,
        "author": text(ctx.user()),
        "desc": text(ctx.description()),
        "branch": text(ctx.branch()),
        "parents": [text(p.hex()) for p in ctx.parents()],
        "tags": [text(t) for t in ctx.tags()],
        "files": [text(f) for f in ctx.files()],
    }
