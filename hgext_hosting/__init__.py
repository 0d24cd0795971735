"""check and record every push to an hg-hosting site

This extension is the part of hg-hosting that runs inside Mercurial.  The site
``hgrc`` of an hg-hosting site enables it, and every repository of the site
includes that file from its ``.hg/hgrc``, so every process that opens a site
repository runs it: the daemon (HTTP), SSH sessions and local ``hg``
commands.  Repositories outside a site are left alone.

Who may push
------------

Every transaction that changes a site repository needs an authenticated user
with ``write`` on it (see ``hg-hosting grant``).  Over HTTP the daemon sets
the user; over SSH the daemon's SSH server or the ``hg-hosting ssh-serve``
forced command does.  A local push or commit names the user with the
environment variable ``HG_HOSTING_USER``; without it the push is refused::

  $ HG_HOSTING_USER=alice hg push /srv/hg-hosting/repos/alice/demo

A protected branch or bookmark (``hg-hosting protect``) refuses any new
changeset on that named branch and any move of that bookmark by a user who is
not on its allow-list (site admins always may).  A refusal names the user, the
repository and, for protected refs, the ref and the changeset.

Drafts, topics and evolve
-------------------------

A repository is publishing (every pushed changeset becomes public) unless it
was made non-publishing (``hg-hosting repo create --non-publishing``,
``hg-hosting repo set OWNER/NAME publishing=false``).  Then its ``.hg/hgrc``
enables hg-evolve's ``evolve`` and ``topic`` and sets ``[phases] publish =
False`` after the site include: ``write`` may push drafts, amend and prune
them (obsolescence markers are exchanged both ways), and only the ``publish``
level (admins and the owner hold it) may push a public changeset or turn a
draft public.  A draft with a topic may go to a protected branch; publishing
it there also needs the branch's allow-list.  The push log records the
markers of a push (predecessors and successors) and what they made obsolete.

The push log
------------

Each accepted push is recorded (user, UTC date, changesets in order, bookmark
moves, phase moves of existing changesets, obsolescence markers) in the site database, in the same
transaction as the push: the record commits if and only if the push does.  A
push that only moves a bookmark or a phase is recorded too.  Ids count 1, 2,
3... per repository without gaps.  ``hg pushlog`` shows the log of the current
repository; ``hg-hosting pushlog OWNER/NAME`` the same from anywhere.

If the database cannot be written (locked past ``busy-timeout``, disk full,
schema missing or of another version) the push fails and nothing lands.  If a
process dies in the middle of a push, the next push or pull of that
repository recovers the interrupted transaction and settles its record, with
no administrator needed; ``hg-hosting check`` reports and ``check --repair``
mends any difference between repositories and database.

Events
------

Each push record is written with an event in the same database transaction
(the outbox), so an event exists exactly for a push that landed.  The daemon
delivers events, once their push is confirmed, to webhooks (``hg-hosting
webhook add``: signed with HMAC-SHA256, retried with backoff, in order per
repository) and, with ``smtp`` set, as mail to the repository's watchers who
may read it (``hg-hosting watch``).  Pushes made while no daemon runs are
delivered when one runs; a push never waits for a delivery.

Configuration
-------------

In the site ``hgrc``::

  [hosting]
  # database URL; empty: the site's SQLite file hosting.db
  database =
  # milliseconds a push waits for the database write lock before failing
  busy-timeout = 5000
  # seconds a CLI repository operation waits for a repository's lock
  lock-timeout = 60
  # recover an interrupted transaction when a repository is opened
  auto-recover = True
  # the largest bundle an authenticated HTTP push may send, in MB; every
  # other request body (forms, the API, anonymous requests) is refused over 4 MB
  max-request-mb = 2048
  # proxies (addresses or networks, comma-separated) whose X-Forwarded-For
  # names the client; empty: the header is ignored
  trusted-proxies =
  # failed logins (wrong passwords and tokens) allowed per window (seconds) for a
  # user name from one address, a user name, and an address; then 429 for a while
  login-throttle-window = 300
  login-throttle-pair = 10
  login-throttle-user = 50
  login-throttle-address = 100
  # the most rows the shared login-throttle table keeps
  login-throttle-rows = 100000
  # seconds a stopping daemon (SIGTERM, SIGINT) waits for requests and SSH
  # sessions in flight; it stops earlier once none came for about 2 s
  drain-seconds = 30
  # seconds an HTTP client has to send a request line and its headers (0: no limit)
  http-header-seconds = 30
  # open HTTP connections per client address, per daemon process (0: no limit);
  # behind a reverse proxy every connection comes from the proxy's address
  http-max-per-address = 128
  # seconds an SSH client has from connecting to being authenticated (0: no limit)
  ssh-login-seconds = 30
  # open SSH connections per client address (0: no limit)
  ssh-max-per-address = 16
  # sign-up attempts (/-/register, /-/join, /-/forgot) per client address
  # per login-throttle-window; then 429
  signup-throttle = 10
  # who may make themselves an account: closed (site admins only),
  # invite (with a link from `hg-hosting invite create`) or open (anyone;
  # with mail set up the address is confirmed by a mailed link first)
  registration = closed
  # outgoing mail (password reset links, address checks, watchers' push mails):
  # an SMTP relay HOST:PORT that needs no login and the From address; links in
  # mails, webhook payloads and feeds start with [web] baseurl (the site's public
  # URL); account mail is off unless all three are set
  smtp =
  mail-from =
  # hosts, addresses or networks (10.0.0.0/8) webhooks may reach although they
  # are loopback, private or link-local (refused otherwise)
  webhook-allow =
  # seconds a webhook request may take
  webhook-timeout = 10
  # seconds before the first retry of a failed delivery (doubling up to the
  # maximum), before a delivery is given up, and before a hook failing without a
  # success is disabled
  webhook-retry-first = 5
  webhook-retry-max = 3600
  webhook-give-up = 86400
  webhook-disable-after = 259200

The site ``hgrc`` must keep ``[extensions] hosting =``, and every repository's
``.hg/hgrc`` must include the site ``hgrc``: a process that does not load the
extension would let pushes land unchecked and unrecorded.  ``hg-hosting init``
adds the line to a site ``hgrc`` that lacks it; the daemon (HTTP and SSH) and
``hg-hosting ssh-serve`` refuse every push to a repository whose ``hg`` would
not load it; ``hg-hosting check`` lists such repositories (a local ``hg push``
into one cannot be stopped, only found).

Pushed bundles may not name a URL for the server to fetch: bundle2's
``remote-changegroup`` part is neither advertised nor accepted.

Administrators' own hooks go in the site ``hgrc`` too.  The permission check
runs when the transaction opens, before any of them; this extension's checks
of protected refs run when it closes, before their ``pretxnclose`` hooks.  When one
of them refuses a push, neither the changesets nor the record remain.
"""

from __future__ import annotations

from mercurial import error, registrar

from . import config

# Everything else is imported when Mercurial calls us, so that the hg-hosting CLI,
# which imports this package, does not pay for the wire protocol and the hooks.

testedwith = b"7.2.4"
minimumhgversion = b"7.2"

configtable = config.configtable
cmdtable: dict = {}
command = registrar.command(cmdtable)


def reposetup(ui, repo) -> None:
    """Wire the checks, the recorder and crash recovery into every local repository of a site."""
    if not repo.local():
        return
    from . import hooks

    located = hooks.locate(repo)
    if located is None:
        return
    site, owner, name = located

    class hostingrepo(repo.__class__):
        def transaction(self, desc, report=None):
            if self.currenttransaction() is not None:
                return super().transaction(desc, report)
            row = _settle_before_transaction(self, site, owner, name)
            return hooks.open_transaction(self, row, lambda: super(hostingrepo, self).transaction(desc, report))

    setattr(hostingrepo, hooks.ENFORCED, True)  # what the daemon checks before a write
    repo.__class__ = hostingrepo
    if ui.configbool(b"hosting", b"auto-recover") and repo.svfs.exists(b"journal"):
        _recover_if_abandoned(repo, site, owner, name)


def _settle_before_transaction(repo, site, owner: str, name: str):
    """Under the lock the caller holds: recover a dead transaction, settle its record.

    Returns the repository's row (None when the database has none), which the
    permission check then reuses instead of asking again.
    """
    from . import hooks, pushdb

    try:
        row = pushdb.find_repository(site.push_connection(repo.ui), owner, name)
        if row is not None and (row.has_pending or repo.svfs.exists(b"journal")):
            from . import models, pushlog  # the rare path: peewee is fine here

            with models.bound(site.database(repo.ui)):
                pushlog.settle(repo, row.id)
        return row
    except error.Abort:
        raise
    except Exception as e:  # noqa: BLE001 - refuse the push rather than guess
        raise hooks.abort(f"cannot settle an earlier interrupted push: {e}") from None


def _recover_if_abandoned(repo, site, owner: str, name: str) -> None:
    """When a reader opens a repository left with a journal and no live writer, recover it."""
    try:
        lock = repo.lock(wait=False)
    except (error.LockError, OSError):
        return  # a push is in flight (or we may not write): nothing to do
    try:
        _settle_before_transaction(repo, site, owner, name)
    except error.Abort as e:
        repo.ui.warn(b"%s\n" % e.message)
    finally:
        lock.release()


def uisetup(ui) -> None:
    _wrap_ssh_unbundle()
    _refuse_remote_changegroup()
    _answer_committed_pushes()


#: Why a pushed ``remote-changegroup`` part is refused.
REMOTE_CHANGEGROUP_REFUSED = (
    b"hosting: remote-changegroup parts are not accepted by this server (it fetches no URL for a push)"
)


def _refuse_remote_changegroup() -> None:
    """Never fetch a URL named by a pushed bundle: no ``remote-changegroup`` (SSRF).

    Mercurial advertises ``remote-changegroup=http,https`` and, given such a
    bundle2 part, opens the URL from the server (``url.open`` in
    ``bundle2_part_handlers.py``) before the transaction, whoever pushes: a
    user with write access to any repository could make the server connect
    anywhere and tell an open port from a closed one.  The capability is
    dropped from what a server advertises, and the part is refused on every
    transport (HTTP, ``serve --stdio``, ``hg unbundle``) before any connection.
    """
    from mercurial import bundle2, bundle2_part_handlers, extensions  # noqa: F401 - registers the parts
    from mercurial.exchanges import bundle_caps

    handler = bundle2.parthandlermapping.get(b"remote-changegroup")
    if handler is not None and not getattr(handler, "_hosting", False):

        def refuse(op, inpart):
            raise error.Abort(REMOTE_CHANGEGROUP_REFUSED)

        refuse.params = handler.params
        refuse._hosting = True
        bundle2.parthandlermapping[b"remote-changegroup"] = refuse

    if not getattr(bundle_caps.get_repo_caps, "_hosting", False):

        def get_repo_caps(orig, repo, *args, **kwargs):
            caps = orig(repo, *args, **kwargs)
            if kwargs.get("role") == b"server" or (len(args) > 1 and args[1] == b"server"):
                caps.pop(b"remote-changegroup", None)
            return caps

        extensions.wrapfunction(bundle_caps, "get_repo_caps", get_repo_caps)
        bundle_caps.get_repo_caps._hosting = True


def _answer_committed_pushes() -> None:
    """Answer a committed bundle2 push that asked for no reply with an (empty) bundle2 reply.

    A client that sends no ``replycaps`` part gets ``op.reply`` None; the push is
    applied and committed, then Mercurial's wire layer fails formatting the
    answer (``'%d' % None``) and the client is told the request was malformed.
    Here such a push is answered like any other successful bundle2 push.
    """
    from mercurial import bundle2, exchange, extensions

    if getattr(exchange.unbundle, "_hosting", False):
        return

    def unbundle(orig, repo, cg, heads, source, url):
        result = orig(repo, cg, heads, source, url)
        if result is None and isinstance(cg, bundle2.unbundle20):
            result = bundle2.bundle20(repo.ui)  # committed: tr.close() returned
            result.newpart(b"output", data=b"hosting: push applied\n", mandatory=False)
        return result

    extensions.wrapfunction(exchange, "unbundle", unbundle)
    exchange.unbundle._hosting = True


def _wrap_ssh_unbundle() -> None:
    """Refuse an SSH push before its bundle is uploaded when the user may not write.

    The ssh wire protocol answers ``unbundle`` first with an empty reply meaning
    "send the bundle"; replying with an error instead makes the client abort
    at once.  (HTTP refuses in the daemon, before hgweb reads the body.)
    """
    from mercurial import wireprototypes, wireprotov1server

    from . import hooks

    entry = wireprotov1server.commands[b"unbundle"]
    if getattr(entry.func, "_hosting", False):
        return
    original = entry.func

    def unbundle(repo, proto, heads):
        if proto.name.startswith(b"ssh") and hooks.locate(repo) is not None:
            try:
                hooks.require_write(repo.ui, repo)
            except error.Abort as e:
                return wireprototypes.pusherr(e.message + b"\n", b"")
        return original(repo, proto, heads)

    unbundle._hosting = True
    entry.func = unbundle


@command(
    b"pushlog",
    [(b"l", b"limit", 10, b"show at most this many pushes", b"N"),
     (b"", b"json", False, b"print a JSON array")],
    b"[-l N] [--json]",
    helpcategory=command.CATEGORY_CHANGE_NAVIGATION,
)
def pushlog_command(ui, repo, limit=10, json=False):
    """show who pushed what to this repository, newest first

    The same records and limits as ``hg-hosting pushlog OWNER/NAME``; ``-l N``
    takes N of at least 1.
    """
    import json as jsonlib

    from . import hooks, pushlog
    from .errors import UserError
    from .service import pushes
    from .service.actors import Actor

    located = hooks.locate(repo)
    if located is None:
        raise error.Abort(b"hosting: this repository is not inside an hg-hosting site")
    site, owner, name = located
    from . import models

    try:  # whoever can run hg on the site's files acts as its administrator
        with models.bound(site.database(repo.ui)):
            rows = [p.as_json() for p in pushes.recent(Actor.of_console(), f"{owner}/{name}", limit)]
    except UserError as e:
        raise error.Abort(b"hosting: %s" % str(e).encode("utf-8")) from None
    if json:
        ui.write(jsonlib.dumps(rows, indent=2).encode("utf-8") + b"\n")
    else:
        for r in rows:
            ui.write(pushlog.format_push_line(r).encode("utf-8") + b"\n")
