"""Every ``[hosting]`` configuration key, declared once with its default.

Mercurial reads these from the site ``hgrc`` (included by every repository's
``.hg/hgrc``); the CLI and the daemon read the same file through
:func:`read_site_ui`.  Defaults are the safe choice.
"""

from __future__ import annotations

from mercurial import configitems, registrar
from mercurial import ui as uimod

configtable: dict = {}
configitem = registrar.configitem(configtable)

#: Database URL; empty means the site's own SQLite file ``hosting.db``.
configitem(b"hosting", b"database", default=b"")
#: How long (milliseconds) a writer waits for the SQLite lock before failing.
configitem(b"hosting", b"busy-timeout", default=5000)
#: How long (seconds) a CLI repository operation waits for a repository's lock.
configitem(b"hosting", b"lock-timeout", default=60)
#: Recover an interrupted transaction when a reader opens a repository.
configitem(b"hosting", b"auto-recover", default=True)
#: The largest HTTP request body an authenticated push (``unbundle``) may send, in MB;
#: every other body is capped at ``daemon.bodylimit.SMALL_BODY_BYTES`` (4 MB, or this if lower).
configitem(b"hosting", b"max-request-mb", default=2048)
#: Proxies (addresses or networks) whose ``X-Forwarded-For`` names the client;
#: empty: the header is ignored and the peer address is the client's.
configitem(b"hosting", b"trusted-proxies", default=list)
#: Failed logins: the counting window (seconds) and the failures allowed in it for a
#: user name from one address, a user name, and an address; the most rows kept.
configitem(b"hosting", b"login-throttle-window", default=300)
configitem(b"hosting", b"login-throttle-pair", default=10)
configitem(b"hosting", b"login-throttle-user", default=50)
configitem(b"hosting", b"login-throttle-address", default=100)
configitem(b"hosting", b"login-throttle-rows", default=100000)
#: Sign-up attempts (``/-/register``, ``/-/join/TOKEN``) one address may make per
#: ``login-throttle-window``; then 429.
configitem(b"hosting", b"signup-throttle", default=10)
#: Who may make themselves an account: ``closed`` (only admins create users),
#: ``invite`` (with a site admin's single-use link) or ``open`` (anyone).
configitem(b"hosting", b"registration", default=b"closed")
#: Outgoing mail (password resets, address checks, watchers' push mails): ``HOST:PORT``
#: of an SMTP server (plain, no login; empty: no mail) and the ``From`` address.  Links
#: in mails, payloads and feeds start with Mercurial's ``[web] baseurl`` (the site's
#: public URL); account mail is off unless all three are set, watchers' mail unless
#: ``smtp`` and ``mail-from`` are (their links then fall back to the daemon's address).
configitem(b"hosting", b"smtp", default=b"")
configitem(b"hosting", b"mail-from", default=b"")
#: Seconds a stopping daemon waits for requests and SSH sessions in flight (it stops
#: earlier once none was in flight for about 2 s).
configitem(b"hosting", b"drain-seconds", default=30)
#: Seconds an HTTP client has to send a request line and its headers (0: no limit).
configitem(b"hosting", b"http-header-seconds", default=30)
#: Open HTTP connections one client address may hold, per daemon process (0: no limit).
configitem(b"hosting", b"http-max-per-address", default=128)
#: Seconds an SSH client has from connecting to being authenticated (0: no limit).
configitem(b"hosting", b"ssh-login-seconds", default=30)
#: Open SSH connections one client address may hold (0: no limit).
configitem(b"hosting", b"ssh-max-per-address", default=16)
#: Events (:mod:`hgext_hosting.outbox`, :mod:`daemon.deliveries`).  Webhook receivers at
#: loopback, private, link-local or metadata addresses are refused unless listed here
#: (host names as written in the URL, addresses, or networks such as 10.0.0.0/8).
configitem(b"hosting", b"webhook-allow", default=list)
#: Seconds a webhook request may take (connecting, sending, the answer).
configitem(b"hosting", b"webhook-timeout", default=10.0)
#: The first retry after a failure (seconds); each next one waits twice as long, at most
#: ``webhook-retry-max``; a delivery failing for ``webhook-give-up`` seconds is given up.
configitem(b"hosting", b"webhook-retry-first", default=5.0)
configitem(b"hosting", b"webhook-retry-max", default=3600.0)
configitem(b"hosting", b"webhook-give-up", default=86400.0)
#: A hook failing without a success for this long (seconds) is disabled.
configitem(b"hosting", b"webhook-disable-after", default=259200.0)

_registered = False


def register(ui: uimod.ui) -> None:
    """Make the keys known to a ui that did not load the extension (CLI, daemon)."""
    global _registered
    if not _registered:
        configitems.loadconfigtable(ui, b"hosting", configtable)
        _registered = True


def read_site_ui(hgrc_path: str) -> uimod.ui:
    """A ui holding the site hgrc (and the user's and system's usual config)."""
    ui = uimod.ui.load()
    register(ui)
    ui.setconfig(b"ui", b"interactive", b"false", b"hosting")
    ui.readconfig(hgrc_path.encode("utf-8"), trust=True)
    return ui
