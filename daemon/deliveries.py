"""Delivering the outbox: webhooks over HTTP and watchers' mails, without blocking the daemon.

:class:`DeliveryService` (started by :func:`daemon.service.make_service`, one per
daemon, the master with ``--workers N``) polls the outbox every
:data:`POLL_SECONDS` and at once when a push in this process commits
(:data:`hgext_hosting.recorder.push_listeners`).  The database work of
:mod:`hgext_hosting.outbox` (fan-out, claiming, recording) runs in a small
thread pool of its own; requests go out on the reactor with Twisted's
``Agent``, :data:`Settings.timeout` seconds at most each, so a receiver that is
slow or never answers holds neither a thread nor a push nor a page.

Every request is signed: ``X-HgHosting-Signature-256: sha256=HEX``, the
HMAC-SHA256 of the body with the hook's secret; ``X-HgHosting-Event`` is the
event kind and ``X-HgHosting-Delivery`` the delivery's id, the same on every
retry and redelivery.

Server-side request forgery: the URL's host is resolved here, every address is
checked (:func:`refusal`: only global addresses, unless ``[hosting]
webhook-allow`` lists the host, the address or its network) and the connection
goes to the address checked (:class:`PinnedEndpoints`), with the original
``Host`` header and TLS server name.  A name that resolves to a public address
when checked and to ``127.0.0.1`` a moment later (DNS rebinding) still gets
the public one.

Mail (``[hosting] smtp``): one message per watcher and push, sent with
:mod:`smtplib` in the pool; a watcher who may not read the repository when the
mail is due gets none.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import ipaddress
import os
import smtplib
import socket
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from email.message import EmailMessage

from twisted.application import service
from twisted.internet import defer, endpoints, protocol, task, threads
from twisted.internet import reactor as default_reactor
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from hgext_hosting import models, outbox, recorder
from hgext_hosting.errors import UserError

log = Logger()

#: How often the outbox is polled (pushes over SSH and local ones are not heard otherwise).
POLL_SECONDS = 0.2
#: Deliveries in flight per process.
MAX_IN_FLIGHT = 16
#: How often events whose deliveries were all pruned are deleted.
PRUNE_SECONDS = 60.0
#: Bytes of a receiver's answer kept.
KEEP_RESPONSE = 1024


def _seconds(ui, key: bytes) -> float:
    raw = ui.config(b"hosting", key)
    try:
        value = float(raw.decode() if isinstance(raw, bytes) else raw)
    except (TypeError, ValueError):
        value = -1.0
    if value < 0:
        raise UserError(f"[hosting] {key.decode()} must be a number of seconds of at least 0")
    return value


@dataclass(frozen=True)
class Settings:
    """The ``[hosting]`` keys of events, read and checked once."""

    allow: tuple[str, ...]
    timeout: float
    retry: outbox.Retry
    smtp: str
    mail_from: str
    base_url: str

    @classmethod
    def from_ui(cls, ui) -> Settings:
        allow = tuple(e.decode("utf-8", "replace").strip().lower() for e in ui.configlist(b"hosting", b"webhook-allow"))
        for entry in allow:
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise UserError(f"[hosting] webhook-allow: {entry!r} is not a network") from None
        retry = outbox.Retry(first=_seconds(ui, b"webhook-retry-first"), maximum=_seconds(ui, b"webhook-retry-max"),
                             give_up=_seconds(ui, b"webhook-give-up"),
                             disable_after=_seconds(ui, b"webhook-disable-after"))
        return cls(allow=allow, timeout=_seconds(ui, b"webhook-timeout") or 10.0, retry=retry,
                   smtp=ui.config(b"hosting", b"smtp").decode().strip(),
                   mail_from=ui.config(b"hosting", b"mail-from").decode().strip(),
                   base_url=(ui.config(b"web", b"baseurl") or b"").decode().strip().rstrip("/"))

    @property
    def lease(self) -> float:
        """How long a claim holds: past any request's end."""
        return max(3 * self.timeout, 5.0)


# -- where a hook may connect ----------------------------------------------------------


def refusal(address: str, host: str, allow: tuple[str, ...]) -> str | None:
    """Why ``address`` (which ``host`` resolved to) may not be connected to, or None.

    Only global unicast addresses are allowed: loopback, private, link-local
    (cloud metadata at 169.254.169.254), shared, reserved, multicast and
    unspecified ones need ``webhook-allow`` to list the host, the address or a
    network holding it.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_global and not ip.is_multicast:
        return None
    for entry in allow:
        if entry == host.lower() or entry == str(ip):
            return None
        if "/" in entry and ip in ipaddress.ip_network(entry, strict=False):
            return None
    return (f"{host} resolves to {ip}, a loopback, private or link-local address"
            " (refused unless [hosting] webhook-allow lists it)")


def resolve(host: str, port: int) -> list[str]:
    """Every address of ``host`` (blocking: run it in a thread)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@implementer(IAgentEndpointFactory)
class PinnedEndpoints:
    """Connect to the address that was checked, whatever the URL's host resolves to now."""

    def __init__(self, reactor, address: str, timeout: float):
        self.reactor, self.address, self.timeout = reactor, address, timeout

    def endpointForURI(self, uri):
        cls = endpoints.TCP6ClientEndpoint if ":" in self.address else endpoints.TCP4ClientEndpoint
        endpoint = cls(self.reactor, self.address, uri.port, timeout=self.timeout)
        if uri.scheme == b"https":
            from twisted.internet.ssl import optionsForClientTLS

            endpoint = endpoints.wrapClientTLS(optionsForClientTLS(uri.host.decode("idna")), endpoint)
        return endpoint


class _FirstBytes(protocol.Protocol):
    """Keeps the first :data:`KEEP_RESPONSE` bytes of a body, drops the rest."""

    def __init__(self):
        self.data = b""
        self.done = defer.Deferred(self._cancel)

    def _cancel(self, _):
        with contextlib.suppress(Exception):
            self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if len(self.data) < KEEP_RESPONSE:
            self.data += data[: KEEP_RESPONSE - len(self.data)]

    def connectionLost(self, reason) -> None:
        if not self.done.called:
            self.done.callback(self.data)


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False  # no "Starting factory" / "Stopping factory" lines per delivery


class _QuietPool(HTTPConnectionPool):
    _factory = _QuietFactory


def signature(secret: str, body: bytes) -> str:
    """The ``X-HgHosting-Signature-256`` value of ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


# -- the service ---------------------------------------------------------------------


class DeliveryService(service.Service):
    """Fans out, claims and delivers the outbox's events (see the module docstring)."""

    def __init__(self, site, base_url=None, reactor=None, settings: Settings | None = None):
        from mercurial import initialization

        initialization.init()
        self.site = site
        self.reactor = reactor or default_reactor
        self.settings = settings or Settings.from_ui(site.ui)
        self._base_url = base_url  # a callable: the daemon's URL is known once it listens
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.pool = ThreadPool(minthreads=1, maxthreads=4, name="hosting-deliveries")
        self.http_pool = _QuietPool(self.reactor, persistent=False)
        self.in_flight: dict[int, defer.Deferred] = {}
        self._loop: task.LoopingCall | None = None
        self._ticking = False
        self._again = False
        self._pruned = 0.0

    # -- life --------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.pool.start()
        recorder.push_listeners.append(self._pushed)
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = self.reactor
        self._loop.start(POLL_SECONDS, now=True).addErrback(lambda f: log.failure("delivery loop", f))

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        with contextlib.suppress(ValueError):
            recorder.push_listeners.remove(self._pushed)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for d in list(self.in_flight.values()):
            d.cancel()
        if self.in_flight:
            yield defer.DeferredList(list(self.in_flight.values()), consumeErrors=True)
        yield threads.deferToThread(self.pool.stop)

    def base_url(self) -> str:
        if self.settings.base_url:
            return self.settings.base_url
        return self._base_url() if self._base_url is not None else ""

    def _pushed(self, repository_id: int, push_id: int) -> None:
        """A push committed in this process (a WSGI thread): look at the outbox now."""
        self.reactor.callFromThread(self.tick)

    def _db(self, f, *args):
        return threads.deferToThreadPool(self.reactor, self.pool, f, *args)

    # -- one round ------------------------------------------------------------------------

    def tick(self) -> None:
        """Fan out and claim what is due, then deliver it; one round at a time."""
        if self._ticking:
            self._again = True
            return
        if not self.running:
            return
        self._ticking = True
        d = self._db(self._round, set(self.in_flight))
        d.addCallback(self._start)
        d.addErrback(lambda f: log.failure("delivering events", f))

        def done(_):
            self._ticking = False
            if self._again and self.running:
                self._again = False
                self.reactor.callLater(0, self.tick)

        d.addBoth(done)

    def _round(self, busy: set[int]) -> list[outbox.Claimed]:
        """In a pool thread: fan out new events, claim due deliveries (and now and then prune)."""
        if outbox.fan_out(self._push_payload, bool(self.settings.smtp and self.settings.mail_from)):
            models.checkpoint()  # the payloads written: see _finish
        if time.monotonic() - self._pruned > PRUNE_SECONDS:
            self._pruned = time.monotonic()
            outbox.prune_events()
        room = MAX_IN_FLIGHT - len(busy)
        if room <= 0:
            return []
        return outbox.claim(self.holder, room, busy, self.settings.lease)

    def _finish(self, claimed: outbox.Claimed, outcome) -> None:
        """In a pool thread: record a delivery's outcome, then keep SQLite's log short.

        The checkpoint is here, in the background, so that the next push's
        commit does not pay for the pages the deliveries wrote
        (:func:`hgext_hosting.models.checkpoint`).
        """
        outbox.finish(claimed, self.holder, outcome, self.settings.retry)
        models.checkpoint()

    def _push_payload(self, event) -> dict:
        """The payload of a push event, read from the repository where it is now (renamed or not)."""
        from mercurial import hg

        from hgext_hosting.models import Owner, Repository

        repo = None
        row = Repository.select(Repository, Owner).join(Owner).where(Repository.id == event.repository_id).first()
        try:
            if row is not None:
                repo = hg.repository(self.site.ui.copy(), os.fsencode(self.site.repo_path(row.owner.name, row.name)))
        except Exception:  # noqa: BLE001 - told without the details rather than never
            log.failure("reading the pushed changesets of {repo}", repo=event.repository_name)
        return outbox.push_payload(event, repo, self.base_url())

    def _start(self, claimed: list[outbox.Claimed]) -> None:
        for c in claimed:
            d = self.deliver(c)
            self.in_flight[c.id] = d

            def recorded(outcome, c=c):
                return self._db(self._finish, c, outcome)

            def finished(result, c=c):
                self.in_flight.pop(c.id, None)
                if self.running:
                    self.tick()  # the next event of this repository may be due now
                return result

            d.addErrback(self._unexpected)
            d.addCallback(recorded)
            d.addErrback(lambda f: None if f.check(defer.CancelledError) else log.failure("delivery", f))
            d.addBoth(finished)

    @staticmethod
    def _unexpected(failure):
        """A bug or surprise while delivering: logged, and counted as a failed attempt (retried later)."""
        if failure.check(defer.CancelledError):
            return failure
        log.failure("delivering an event", failure)
        return outbox.Outcome(False, error=f"internal error: {_one_line(failure.value)}")

    def deliver(self, c: outbox.Claimed) -> defer.Deferred:
        """Send one claimed delivery; fires with an :class:`~hgext_hosting.outbox.Outcome`."""
        if c.url is not None:
            return self.post(c)
        return self._db(self.mail, c)

    # -- webhooks --------------------------------------------------------------------------

    @defer.inlineCallbacks
    def post(self, c: outbox.Claimed):
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        parts = urllib.parse.urlsplit(c.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = yield self._db(resolve, host, port)
        except (OSError, UnicodeError) as e:  # UnicodeError: a host IDNA cannot encode
            return outbox.Outcome(False, duration_ms=took(), error=f"cannot resolve {host}: {e}")
        refused = [r for r in (refusal(a, host, self.settings.allow) for a in addresses) if r]
        if refused or not addresses:
            return outbox.Outcome(False, duration_ms=took(), error=refused[0] if refused else f"{host}: no address")
        body = c.body()
        headers = Headers({
            b"Content-Type": [b"application/json"],
            b"User-Agent": [b"hg-hosting"],
            b"X-HgHosting-Event": [c.kind.encode()],
            b"X-HgHosting-Delivery": [c.guid.encode()],
            b"X-HgHosting-Signature-256": [signature(c.secret, body).encode()],
        })
        agent = Agent.usingEndpointFactory(self.reactor, PinnedEndpoints(self.reactor, addresses[0],
                                                                         self.settings.timeout),
                                           pool=self.http_pool)
        request = agent.request(b"POST", c.url.encode("ascii", "replace"), headers,
                                FileBodyProducer(io.BytesIO(body)))

        def read(response):
            reader = _FirstBytes()
            response.deliverBody(reader)
            return reader.done.addCallback(lambda data: (response.code, data))

        request.addCallback(read)
        request.addTimeout(self.settings.timeout, self.reactor)
        try:
            code, data = yield request
        except defer.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure to talk is a failed attempt
            if isinstance(e, defer.TimeoutError) or took() >= self.settings.timeout * 1000:
                # Cancelled by the timeout while connecting or waiting (Agent wraps it).
                return outbox.Outcome(False, duration_ms=took(),
                                      error=f"no answer within {self.settings.timeout:g} s")
            return outbox.Outcome(False, duration_ms=took(), error=_one_line(e))
        return outbox.Outcome(200 <= code < 300, status=code, duration_ms=took(),
                              response=data.decode("utf-8", "replace"))

    # -- mail ----------------------------------------------------------------------------

    def mail(self, c: outbox.Claimed) -> outbox.Outcome:
        """In a pool thread: mail a watcher about a push, if they may still read the repository."""
        from hgext_hosting import models, policy, pushdb
        from hgext_hosting.models import Owner, Repository
        from hgext_hosting.service.actors import repo_facts

        started = time.monotonic()
        repo = (Repository.select(Repository, Owner).join(Owner).where(Repository.id == c.repository_id).first()
                if c.repository_id is not None else None)
        subject = pushdb.load_subject(models.connection(), c.user) if c.user else None
        if repo is None or subject is None or not c.email or not policy.may(subject, "read", repo_facts(repo)):
            return outbox.Outcome(False, skipped=True)
        message = compose_mail(c.payload, repo.full_name, c.email, self.settings.mail_from, self.base_url())
        host, _, port = self.settings.smtp.rpartition(":") if ":" in self.settings.smtp else (self.settings.smtp, "", "25")
        try:
            with smtplib.SMTP(host, int(port), timeout=self.settings.timeout) as smtp:
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException, ValueError) as e:
            return outbox.Outcome(False, duration_ms=int((time.monotonic() - started) * 1000), error=_one_line(e))
        return outbox.Outcome(True, duration_ms=int((time.monotonic() - started) * 1000))


def compose_mail(payload: dict, full_name: str, to: str, sender: str, base_url: str) -> EmailMessage:
    """``[OWNER/NAME] N new changesets by USER``: the summaries, a diffstat and links."""
    count = payload.get("changeset_count", 0)
    pusher = payload.get("pusher", "")
    message = EmailMessage()
    message["Subject"] = f"[{full_name}] {count} new changeset{'s' if count != 1 else ''} by {pusher}"
    message["From"] = sender
    message["To"] = to
    lines = []
    for cs in payload.get("changesets", []):
        summary = (cs["description"].splitlines() or [""])[0]
        lines.append(f"{cs['node'][:12]}  {summary}")
        lines.append(f"    {cs['author']}, {cs['date']}, branch {cs['branch']}")
        width = max((len(f) for f, _, _ in cs.get("diffstat", [])), default=0)
        added = removed = 0
        for name, adds, removes in cs.get("diffstat", []):
            lines.append(f"    {name.ljust(width)} | {adds + removes:4} {'+' * min(adds, 30)}{'-' * min(removes, 30)}")
            added, removed = added + adds, removed + removes
        if cs.get("diffstat"):
            lines.append(f"    {len(cs['diffstat'])} files changed, {added} insertions(+), {removed} deletions(-)")
        if base_url:
            lines.append(f"    {base_url}/{full_name}/rev/{cs['node'][:12]}")
        lines.append("")
    if count > len(payload.get("changesets", [])):
        lines.append(f"... and {count - len(payload['changesets'])} more changesets")
    for bm in payload.get("bookmarks", []):
        lines.append(f"bookmark {bm['name']} -> {bm['new'][:12] if bm['new'] else '(deleted)'}")
    if base_url:
        lines += ["", f"Push log: {base_url}/{full_name}/pushlog",
                  f"Stop watching: {base_url}/{full_name}"]
    message.set_content("\n".join(lines) + "\n")
    return message


def _one_line(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:300]
