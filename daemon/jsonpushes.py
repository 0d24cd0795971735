"""``/OWNER/NAME/json-pushes``: the push log in hg.mozilla.org's format.

Query parameters, as Mozilla's pushlog (``hgext/pushlog/feed.py``) reads them:

- range start, exclusive: ``startdate`` | ``fromchange`` (after the push that
  holds it; a revision no push holds starts at 0) | ``startID``; range end,
  inclusive for ids and changesets: ``enddate`` (exclusive) | ``tochange`` |
  ``endID``.  Without a start (and without ``user``/``changeset``): the last
  10 pushes, page N as ``json-pushes/N`` or ``?node=N``.
- ``user`` (repeatable), ``changeset`` (repeatable: pushes holding it),
  ``tipsonly=1`` (only the last changeset of each push), ``full`` (changeset
  details), ``version=1`` (default: ``{id: push}``) or ``2``
  (``{"lastpushid": N, "pushes": {id: push}}``).
- A revision (``changeset``, ``fromchange``, ``tochange``) is anything
  Mercurial resolves: a hex prefix, ``tip``, a tag, a branch, a bookmark, a
  number.  Unknown: 404 ``{"error": "unknown revision 'X'"}``.
- Dates: ``YYYY-MM-DD[ HH[:MM[:SS]]]`` (an hour alone is HH:00), then every
  format of Mercurial's ``hg help dates``; both in the server's local time
  unless the date names its zone.

A push is ``{"changesets": [...], "date": UNIX_SECONDS, "user": NAME}``;
bookmark moves are added as ``"bookmarks"`` (an extension; Mozilla's tools
ignore unknown keys).  Pushes without changesets (bookmark-only) are left out
as Mozilla never records them: its clients read ``changesets[-1]``; they stay
in our pages, CLI and API, and ``lastpushid`` is still the highest push id.
Evolution, as Mozilla: changesets of a push that are obsolete now (hidden)
are listed as ``"obsoletechangesets"`` and left out of ``"changesets"`` (a
push with only hidden ones stays, ``"changesets": []``); with ``full`` a
changeset with predecessors in the obsstore has ``"precursors": [nodes]``.
The repository is opened only for ``full`` or where its obsstore exists
(non-publishing now or once).
Errors are JSON too, ``{"error": MESSAGE}`` with the status, since clients
call ``.json()`` before looking at the status.

Every query walks an index ((repository, state, push_id), (repository,
state, date), (repository, state, cset_seq) for the pages, the changeset
node): the cost does not grow with the history, nor with the page's depth.
"""

from __future__ import annotations

import calendar
import datetime
import json
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import peewee as pw
from mercurial import error as hgerror
from mercurial import obsolete, phases, repoview
from mercurial.node import hex as hexnode
from mercurial.utils import dateutil

from hgext_hosting import pushlog
from hgext_hosting.models import Push, PushChangeset

from .web import MAX_PAGE, HTTPError, Request, respond, respond_json

PAGE_SIZE = 10
#: Longer revisions are refused before Mercurial sees them.
MAX_REVISION = 200
_MOZILLA_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?: (\d{2})(?::(\d{2})(?::(\d{2}))?)?)?\Z")


def unix(dt: datetime.datetime) -> int:
    return calendar.timegm(dt.timetuple())


def parse_date(text: str) -> datetime.datetime:
    """A UTC datetime (naive, as stored) for a ``startdate``/``enddate``, or HTTPError 400."""
    text = text.strip()
    match = _MOZILLA_DATE.match(text)
    try:
        if match:
            parts = [int(p or 0) for p in match.groups()]
            when = time.mktime((*parts, 0, 0, -1))
            datetime.datetime(*parts)  # validates the month, day, hour...
        else:
            when, _offset = dateutil.parsedate(text.encode("utf-8"))
        return datetime.datetime.fromtimestamp(when, datetime.UTC).replace(tzinfo=None)
    except (hgerror.ParseError, hgerror.Abort, ValueError, OverflowError, OSError):
        raise HTTPError(400, f"cannot parse date {text[:40]!r}") from None


class Revisions:
    """Resolves revisions in the repository, opened on the first need."""

    def __init__(self, open_repo: Callable[[], object]):
        self._open = open_repo
        self._repo = None

    @property
    def repo(self):
        if self._repo is None:
            self._repo = self._open()
        return self._repo

    def node(self, rev: str) -> str:
        """The hex node of ``rev``, or HTTPError 404 ``unknown revision``."""
        unknown = HTTPError(404, f"unknown revision {rev[:MAX_REVISION]!r}")
        if not rev or len(rev) > MAX_REVISION or any(ord(c) < 32 for c in rev):
            raise unknown
        symbol = rev.encode("utf-8")
        try:
            return hexnode(self.repo.filtered(b"served").lookup(symbol)).decode("ascii")
        except (hgerror.RepoLookupError, hgerror.LookupError, hgerror.Abort, ValueError, TypeError):
            pass
        node = self._hidden_node(symbol)
        if node is None:
            raise unknown
        return node

    def _hidden_node(self, symbol: bytes) -> str | None:
        """The node of a changeset hg hides as obsolete, as Mozilla's pushlog finds it.

        An amended or pruned changeset stays in the push log that recorded it, so
        ``changeset=``, ``fromchange=`` and ``tochange=`` accept it.  A secret
        changeset stays unknown: the served view hides it from everyone.
        """
        unfi = self.repo.unfiltered()
        try:
            ctx = unfi[unfi.lookup(symbol)]
        except (hgerror.RepoLookupError, hgerror.LookupError, hgerror.Abort, ValueError, TypeError):
            return None
        if ctx.phase() >= phases.secret or ctx.rev() not in repoview.filterrevs(unfi, b"visible"):
            return None
        return ctx.hex().decode("ascii")


def push_holding(repository_id: int, node: str) -> int | None:
    """The id of the done push that added ``node`` (a full hex node), None if none did."""
    row = (
        Push.select(Push.push_id)
        .join(PushChangeset)
        .where((PushChangeset.node == node) & (Push.repository == repository_id) & (Push.state == "done"))
        .order_by(Push.push_id)
        .first()
    )
    return None if row is None else row.push_id


def has_changesets() -> pw.Expression:
    """True for a push that added changesets: it has a number among them (``Push.cset_seq``)."""
    return Push.cset_seq.is_null(False)


def last_page_rows(repository_id: int, page: int) -> pw.ModelSelect:
    """Page ``page`` of the last pushes with changesets, ten a page, newest first.

    Those pushes are numbered 1, 2... (``Push.cset_seq``, no gaps), so page N
    holds the numbers from the highest done one minus (N-1) pages down: an
    index probe and a range of the (repository, state, cset_seq) index,
    whatever the page and the history's length, where an OFFSET would walk
    every push above the page.  (A push still pending is the newest and
    numbered above every done one; ``check --repair`` renumbers what it changes.)
    """
    done = (Push.repository == repository_id) & (Push.state == "done")
    top = Push.select(pw.fn.MAX(Push.cset_seq)).where(done).scalar() or 0
    high = top - (page - 1) * PAGE_SIZE
    return (Push.select().where(done & (Push.cset_seq > high - PAGE_SIZE) & (Push.cset_seq <= high))
            .order_by(Push.cset_seq.desc()))


def range_filter(req: Request, repository_id: int, revisions: Revisions) -> tuple[pw.Expression, bool]:
    """The ``WHERE`` of a request's range, user and changeset parameters, and whether it
    selects (a start bound, ``user`` or ``changeset``) rather than pages the last pushes.

    Shared with the ``pushloghtml`` page (:mod:`daemon.pages`).
    """
    where = (Push.repository == repository_id) & (Push.state == "done")
    selects = True
    if req.arg("startdate") is not None:
        where &= Push.date > parse_date(req.arg("startdate"))
    elif req.arg("fromchange") is not None:
        start = push_holding(repository_id, revisions.node(req.arg("fromchange")))
        where &= Push.push_id > (start or 0)
    elif req.arg("startID") is not None:
        where &= Push.push_id > req.int_arg("startID")
    else:
        selects = False
    if req.arg("enddate") is not None:
        where &= Push.date < parse_date(req.arg("enddate"))
    elif req.arg("tochange") is not None:
        rev = req.arg("tochange")
        end = push_holding(repository_id, revisions.node(rev))
        if end is None:
            raise HTTPError(404, f"revision {rev[:MAX_REVISION]!r} is not in the push log")
        where &= Push.push_id <= end
    elif req.arg("endID") is not None:
        where &= Push.push_id <= req.int_arg("endID")
    users = req.args("user")
    if users:
        where &= Push.user.in_(users)
        selects = True
    changesets = req.args("changeset")
    if changesets:
        ids = [push_holding(repository_id, revisions.node(c)) for c in changesets]
        where &= Push.push_id.in_([i for i in ids if i is not None])
        selects = True
    return where, selects


def serve(req: Request, start_response, repository_id: int, open_repo: Callable[[], object],
          rest: list[str], obsstore: Path | None = None) -> Iterable[bytes]:
    """Answer ``json-pushes[/PAGE]``; errors as ``{"error": ...}`` with their status.

    ``obsstore``: the repository's ``.hg/store/obsstore``; where it exists,
    changesets may be obsolete and hidden (see :func:`query`).
    """
    try:
        return respond_json(start_response, query(req, repository_id, Revisions(open_repo), rest, obsstore))
    except HTTPError as e:
        body = json.dumps({"error": e.reason}) + "\n"  # one line, as the other errors
        return respond(start_response, e.status, body, "application/json",
                       headers=[("Access-Control-Allow-Origin", "*")])


def query(req: Request, repository_id: int, revisions: Revisions, rest: list[str] = (),
          obsstore: Path | None = None) -> dict:
    """The JSON document for a request (``rest``: the path after ``json-pushes``).

    Without an ``obsstore`` file no changeset is hidden and, unless ``full``
    asks for details, the repository is not opened.
    """
    version = req.arg("version", "1")
    if version not in ("1", "2"):
        raise HTTPError(400, "version parameter must be 1 or 2")
    if len(rest) > 1 or (rest and not rest[0].isdigit()):
        raise HTTPError(404, "not found")
    where, selects = range_filter(req, repository_id, revisions)
    if selects:
        rows = Push.select().where(where & has_changesets()).order_by(Push.push_id)
    else:
        # As Mozilla: without a start bound, the last pushes by page; the end bound is ignored.
        page = int(rest[0]) if rest else req.page_arg("node")
        if not 1 <= page <= MAX_PAGE:
            raise HTTPError(400, f"the page must be an integer from 1 to {MAX_PAGE}")
        rows = last_page_rows(repository_id, page)
    views = sorted(pushlog.views(rows), key=lambda v: v.push_id)
    full = "full" in req.query
    tipsonly = req.arg("tipsonly") == "1"
    # Opening the repository costs: only for details or where changesets may be hidden,
    # i.e. the repository has obsolescence markers (non-publishing now or once).
    opens = bool(views) and (full or (obsstore is not None and obsstore.exists()))
    unfi = revisions.repo.unfiltered() if opens else None
    hidden = _hidden(unfi) if unfi is not None else None
    pushes = {}
    for view in views:
        visible, obsolete = view.changesets, []
        if hidden is not None:
            visible = [n for n in view.changesets if not hidden(n)]
            obsolete = [n for n in view.changesets if hidden(n)]
        nodes = visible[-1:] if tipsonly else visible
        entry = {
            "changesets": [_full(unfi, n) for n in nodes] if full else nodes,
            "date": unix(view.date),
            "user": view.user,
        }
        if obsolete:
            entry["obsoletechangesets"] = [_full(unfi, n) for n in obsolete] if full else obsolete
        if view.bookmarks:
            entry["bookmarks"] = {name: new for name, _old, new in view.bookmarks}
        pushes[str(view.push_id)] = entry
    if version == "1":
        return pushes
    return {"lastpushid": pushlog.last_push_id(repository_id), "pushes": pushes}


def _hidden(unfi) -> Callable[[str], bool]:
    """Whether a hex node is hidden now (obsolete, as hg hides it), per node.

    The set of hidden revisions is hg's own (``repoview``, cached with the
    repository); its cost follows the obsolescence markers, not the push log.
    A node no longer in the repository (stripped) is not hidden.
    """
    hidden_revs = repoview.filterrevs(unfi, b"visible")
    get_rev = unfi.changelog.index.get_rev

    def hidden(node: str) -> bool:
        rev = get_rev(bytes.fromhex(node))
        return rev is not None and rev in hidden_revs

    return hidden


def _full(unfi, node: str) -> dict:
    try:
        ctx = unfi[bytes.fromhex(node)]
    except (hgerror.RepoLookupError, hgerror.LookupError, ValueError):
        return {"node": node}
    text = lambda b: b.decode("utf-8", "replace")  # noqa: E731
    entry = {
        "node": node,
        "author": text(ctx.user()),
        "desc": text(ctx.description()),
        "branch": text(ctx.branch()),
        "parents": [text(p.hex()) for p in ctx.parents()],
        "tags": [text(t) for t in ctx.tags()],
        "files": [text(f) for f in ctx.files()],
    }
    # As Mozilla: the predecessors the obsstore names for it (markers whose successor it is).
    if not obsolete.isenabled(unfi, obsolete.createmarkersopt):
        return entry
    precursors = [text(hexnode(m[0])) for m in unfi.obsstore.predecessors.get(ctx.node(), ())]
    if precursors:
        entry["precursors"] = sorted(set(precursors))
    return entry
