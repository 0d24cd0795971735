"""The checks that decide every push and hand it to the push log.

Wired by :func:`hgext_hosting.reposetup` into every transaction of a
repository inside a site, with Mercurial's own transaction API
(``mercurial/transaction.py``) rather than ``[hooks]`` entries:

when the transaction opens (the repository's ``transaction()``, before its journal exists)
    :func:`require_write` refuses before anything is applied when nobody is
    authenticated, the user is unknown, lacks ``write``, or the database is
    unusable: what a ``pretxnopen`` hook would do.
validator ``000-hosting`` (:func:`validate`)
    Runs when the transaction closes, for every kind of push (changesets,
    bookmark-only, phase-only, markers), before the ``001-userhooks``
    validator that runs the administrators' ``pretxnclose`` hooks: refuses,
    per changeset, one on a protected named branch, and a move of a protected
    bookmark, by a user not on the allow-list; in a non-publishing repository,
    refuses a publication (:func:`check_publication`) by a user without
    ``publish``; then collects the push and attaches the recorder of
    :mod:`hgext_hosting.recorder`.

Publishing and non-publishing repositories (``Repository.publishing``, the
repository's ``.hg/hgrc`` says ``[phases] publish = False``): in a
non-publishing one a writer pushes drafts, amends and prunes them
(obsolescence markers, hg-evolve), and only ``publish`` makes a changeset
public: a new changeset that arrives public, or a draft turned public.  A draft
changeset with a topic is not on its named branch until it is published, so a
protected branch does not refuse it; its publication needs the allow-list.
The decision follows the database's flag, not hg's ``phases.publish``: a
repository whose ``.hg/hgrc`` lost the setting publishes every push, and a
writer's push is then refused rather than published.

Why not ``[hooks]`` entries (pretxnopen, pretxnchangegroup, pretxnclose):
Mercurial reads every configured hook's priority on every hook call, and a
push of N changesets calls the ``incoming`` hook N times.  Three in-process
hooks cost a 1,000-changeset push about 40 ms, one about 17 ms
(``bench/hook_cost.py``); a validator costs nothing per changeset.  The
validator sees every new changeset, so a local commit (no changegroup) is
checked like a push.

Identity never comes from the hook's ``url``.  Over HTTP, hgweb replaces the
repository ui's environment with the WSGI environ, in which only the daemon
can set ``REMOTE_USER`` (client headers become ``HTTP_*``).  Everywhere else
(SSH sessions, local pushes) ``ui.environ`` *is* the process environment, and
its ``HG_HOSTING_USER``, set by the daemon's SSH server or by the person
pushing locally, names the user.  Which case applies is decided by that
identity of objects, never by a variable: a process could set
``REQUEST_METHOD`` and ``REMOTE_USER`` in its own environment.

The database is asked through :mod:`hgext_hosting.pushdb` on the thread's own
connection, so that a push process never imports peewee.
"""

from __future__ import annotations

from dataclasses import dataclass

from mercurial import encoding, error, phases
from mercurial.node import short

from . import policy, pushdb, recorder
from .pushdb import SchemaError
from .site import Site

#: Sorted before ``001-userhooks``, the validator that runs the ``pretxnclose`` hooks.
VALIDATOR = b"000-hosting"


def pusher_name(ui) -> str | None:
    """The authenticated user pushing, as the daemon or the local pusher set it."""
    env = ui.environ
    if env is not encoding.environ:  # hgweb replaced it with the daemon's WSGI environ
        raw = env.get(b"REMOTE_USER")
    else:
        raw = env.get(b"HG_HOSTING_USER")
    if not raw:
        return None
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def abort(message: str, hint: str | None = None) -> error.Abort:
    return error.Abort(
        b"hosting: " + message.encode("utf-8"), hint=hint.encode("utf-8") if hint else None
    )


@dataclass
class PushContext:
    """Who is pushing to which repository, as the database says now."""

    conn: pushdb.Connection
    row: pushdb.RepoRow
    full_name: str
    subject: policy.Subject
    facts: policy.RepoFacts
    _refs: dict[str, frozenset[str]] | None = None

    @property
    def refs(self) -> dict[str, frozenset[str]]:
        """The repository's protected refs, read once per transaction."""
        if self._refs is None:
            self._refs = pushdb.load_protected_refs(self.conn, self.row.id)
        return self._refs


def locate(repo) -> tuple[Site, str, str] | None:
    return Site.for_repository(repo.root)


#: Set on the class of every repository that :func:`hgext_hosting.reposetup` wired.
ENFORCED = "_hosting_enforced"


def enforcement_problem(repo) -> str | None:
    """Why this repository object would let a write through unchecked, else None.

    The proof that the checks and the recorder run is on the object itself: its
    class went through the extension's ``reposetup`` (:data:`ENFORCED`) and its
    ui enables ``[extensions] hosting``.  And its ``.hg/hgrc`` includes the site
    hgrc: otherwise the hooks would run without the site's settings (its
    database URL, the administrators' hooks).  The daemon asks before every write.
    """
    from .site import EXTENSION, extension_enabled

    if not getattr(repo.unfiltered(), ENFORCED, False):
        return "the hg-hosting extension did not set this repository up"
    if not extension_enabled(repo.ui.config(b"extensions", EXTENSION)):
        return "the hg-hosting extension is not enabled in its configuration"
    located = locate(repo)
    if located is None or not located[0].included_by(repo.root):
        return "its .hg/hgrc does not include the site hgrc"
    return None


def require_write(ui, repo, row: pushdb.RepoRow | None = None) -> PushContext:
    """The push's context if the pusher may write, else raise Abort.

    ``row``: the repository's row when the caller has just read it.
    """
    located = locate(repo)
    if located is None:
        raise abort("this repository is not inside an hg-hosting site")
    site, owner, name = located
    display = f"{owner}/{name}"
    try:
        conn = site.push_connection(ui)
        pushdb.require_current_schema(conn)
        if row is None:
            row = pushdb.find_repository(conn, owner, name)
        user = pusher_name(ui)
        if user is None:
            raise abort(f"push to {display} refused: no authenticated user",
                        hint="log in, or set HG_HOSTING_USER for a local push")
        if row is None:
            raise abort(f"{display} is not a repository of this site",
                        hint="ask an administrator to run 'hg-hosting check'")
        subject = pushdb.load_subject(conn, user)
        disabled = subject is None and pushdb.is_disabled(conn, user)
        facts = pushdb.load_repo_facts(conn, row)
    except SchemaError as e:
        raise abort(f"push to {display} refused: {e}") from None
    except error.Abort:
        raise
    except Exception as e:  # noqa: BLE001 - a database failure refuses the push
        raise abort(f"push to {display} refused: the site database is unavailable ({e})") from None
    if subject is None:
        if disabled:
            raise abort(f"push to {display} refused: the account {user!r} is disabled")
        raise abort(f"push to {display} refused: unknown user {user!r}")
    decision = policy.may(subject, "write", facts)
    if not decision:
        raise abort(decision.reason)
    return PushContext(conn, row, facts.full_name, subject, facts)


def _is_topic_draft(unfi, rev: int) -> bool:
    """A draft (or secret) changeset with a topic: not on its branch until published."""
    return (unfi._phasecache.phase(unfi, rev) != phases.public
            and bool(unfi.changelog.changelogrevision(rev).extra.get(b"topic")))


def check_branches(repo, ctx: PushContext, first_rev: int, refs: dict[str, frozenset[str]]) -> None:
    """Refuse the first new changeset on a protected branch the pusher may not push.

    In a non-publishing repository a draft with a topic is let through: its
    publication is what :func:`check_publication` checks against the allow-list.
    """
    if not refs:
        return
    unfi = repo.unfiltered()
    cl = unfi.changelog
    for rev in range(first_rev, len(cl)):
        if not ctx.row.publishing and _is_topic_draft(unfi, rev):
            continue
        require_branch_allowed(ctx, cl, rev, refs, "push")


def require_branch_allowed(ctx: PushContext, cl, rev: int, refs: dict[str, frozenset[str]], verb: str) -> None:
    """Abort when changeset ``rev`` is on a protected branch whose allow-list lacks the pusher."""
    branch = cl.branchinfo(rev)[0].decode("utf-8", "replace")
    allow = refs.get(branch)
    if allow is not None and not policy.may_push_ref(ctx.subject, allow):
        raise abort(
            f"{ctx.subject.name} may not {verb} to protected branch {branch!r}"
            f" of {ctx.full_name} (changeset {short(cl.node(rev)).decode()})"
        )


def check_bookmarks(tr, ctx: PushContext, refs: dict[str, frozenset[str]]) -> None:
    """Refuse a move of a protected bookmark by someone not on its allow-list."""
    for raw, (old, new) in sorted(tr.changes[b"bookmarks"].items()):
        name = raw.decode("utf-8", "replace")
        allow = refs.get(name)
        if allow is None or old == new or policy.may_push_ref(ctx.subject, allow):
            continue
        target = f"to changeset {short(new).decode()}" if new else "deleting it"
        raise abort(
            f"{ctx.subject.name} may not move protected bookmark {name!r}"
            f" of {ctx.full_name} ({target})"
        )


def published_revs(repo, tr, first_rev: int) -> list[int]:
    """The revisions this transaction makes public: new public ones, and drafts turned public."""
    unfi = repo.unfiltered()
    public = {rev for rev in range(first_rev, len(unfi.changelog))
              if unfi._phasecache.phase(unfi, rev) == phases.public}
    for revs, (_old, new) in tr.changes[b"phases"]:
        if new == phases.public:
            public.update(rev for rev in revs if rev < first_rev)
    return sorted(public)


def check_publication(repo, tr, ctx: PushContext, first_rev: int, refs: dict[str, frozenset[str]]) -> None:
    """In a non-publishing repository, refuse a publication without ``publish`` (or the allow-list).

    The message names the user, the repository and the first changeset, as a
    protected branch's does; nothing of the push lands.
    """
    if ctx.row.publishing:
        return
    revs = published_revs(repo, tr, first_rev)
    if not revs:
        return
    cl = repo.unfiltered().changelog
    if not policy.may(ctx.subject, "publish", ctx.facts):
        raise abort(
            f"{ctx.subject.name} may not publish changesets in {ctx.full_name}"
            f" (changeset {short(cl.node(revs[0])).decode()} would become public)",
            hint="push drafts only (hg push --draft, or use a topic), or ask for the publish level",
        )
    for rev in revs:
        require_branch_allowed(ctx, cl, rev, refs, "publish")


# -- wiring ------------------------------------------------------------------------


def open_transaction(repo, row: pushdb.RepoRow | None, tr_factory):
    """Check the pusher, open the transaction, and add the validator to it.

    ``row`` is the repository's row if the caller has it; ``tr_factory`` opens
    the transaction (the repository's own ``transaction``).
    """
    ctx = require_write(repo.ui, repo, row)
    tr = tr_factory()
    tr.addvalidator(VALIDATOR, lambda tr: validate(repo, tr, ctx))
    return tr


def validate(repo, tr, ctx: PushContext) -> None:
    """The transaction is about to commit: check protected refs, attach the recorder."""
    refs = ctx.refs
    first_rev = tr.changes[b"origrepolen"]
    check_branches(repo, ctx, first_rev, refs)
    check_bookmarks(tr, ctx, refs)
    check_publication(repo, tr, ctx, first_rev, refs)
    txnid = tr.hookargs.get(b"txnid", b"")
    txn = txnid.decode("ascii", "replace") if isinstance(txnid, bytes) else str(txnid)
    pending = recorder.collect(repo, tr, ctx.conn, ctx.row.id, ctx.subject.name, txn)
    if not pending.is_empty():
        pending.attach(tr)
