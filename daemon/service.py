"""The daemon's Twisted services: HTTP (hgweb + pages), optional SSH, N workers.

:func:`make_service` builds, and starts nothing (the ``twistd`` convention).
Every service binds its listening socket in ``privilegedStartService``, before
any service starts a thread or a process, so that ``serve`` with a port taken
fails in one line and exits; ``startService`` then settles and serves.

- :func:`make_app` builds one process's WSGI application from its parts
  (authenticator, hgweb cache, pages) and passes them in.
- :class:`HTTPService` owns the WSGI thread pool, the resource tree and the
  listening port.  On start it settles every repository a crash left with an
  interrupted transaction or unsettled push records, then serves.  On stop it
  *drains* (:mod:`daemon.lifecycle`): ``/healthz`` answers 503 at once, the
  port keeps answering until no request was in flight for about 2 s (at most
  ``[hosting] drain-seconds``), so every request of a push in progress is
  served; then it stops listening, closes the connections and joins the pool.
- :class:`HostingChannel` gives each request line and its headers a deadline
  (``[hosting] http-header-seconds``; a slow body or a long download is not
  cut) and counts requests in flight; :class:`TrackingSite` caps the open
  connections per client address (``[hosting] http-max-per-address``).
- With ``--workers N`` (N > 1) the master binds the socket once and starts N
  worker processes that adopt it (``adoptStreamPort``): the kernel hands each
  connection to an idle worker, so concurrent clones use every core.  Workers
  run with ``python -I`` and the master's import path, never the current
  directory's.  The master serves SSH (whose work happens in ``hg serve
  --stdio`` children), forwards SIGTERM, restarts a worker that dies, and
  stops with an error if a worker dies before it serves.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
from dataclasses import dataclass

from mercurial import hg, initialization, templater
from twisted.application import service
from twisted.internet import defer, protocol, task, threads
from twisted.internet import reactor as default_reactor
from twisted.internet.error import CannotListenError
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    textFileLogObserver,
)
from twisted.python.threadpool import ThreadPool
from twisted.web import http, resource, server, static

from hgext_hosting import models, pushlog
from hgext_hosting.errors import UserError
from hgext_hosting.models import Owner, Repository

from .account_pages import redacted_log_formatter
from .app import HostingApp, setup_hgweb
from .auth import Authenticator, Limits, trusted_networks
from .bodylimit import BoundedRequest
from .eventpages import EventPages
from .hgwebs import HgwebCache
from .lifecycle import Abandonable, InFlight, exit_now, url_of
from .pages import Pages, templates_dir
from .streaming import StreamingWSGIResource
from .web import SECURITY_HEADERS, HTTPError, parse_path

log = Logger()


#: Twisted's own lines about ports ("TrackingSite starting on 8000", "(TCP Port 8000
#: Closed)"): the daemon logs the URLs it serves instead.
_PORT_CHATTER = re.compile(r"^(\S+ starting on \d+|\(\S+ Port \d+ Closed\))$")


def _not_port_chatter(event: dict) -> PredicateResult:
    if event.get("log_namespace") == "log_legacy" and _PORT_CHATTER.match(formatEvent(event)):
        return PredicateResult.no
    return PredicateResult.maybe


def info_observer(stream):
    """A log observer writing events of level info and above (Conch is chatty at debug)."""
    return FilteringLogObserver(textFileLogObserver(stream),
                                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info), _not_port_chatter])


class StaticFiles(resource.Resource):
    """``/-/static/NAME``: the files of ``templates/static``, nothing else.

    The raw request path is validated exactly as the application's
    (:func:`daemon.web.parse_path`: 400 for NUL, ``..``, encoded slashes, bad
    UTF-8), then only a regular file directly in the directory is served (404
    otherwise, no listings); every response carries :data:`daemon.web.SECURITY_HEADERS`.
    """

    isLeaf = True

    def __init__(self, directory: str):
        super().__init__()
        self._directory = directory

    def render(self, request):
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        try:
            segments = parse_path(request.uri.split(b"?", 1)[0].decode("latin-1"))
        except HTTPError as e:
            return self._error(request, e.status, e.reason)
        path = os.path.join(self._directory, segments[2]) if len(segments) == 3 else None
        if path is None or not os.path.isfile(path):
            return self._error(request, 404, "not found")
        return static.File(path).render(request)

    @staticmethod
    def _error(request, status: int, reason: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return reason.encode() + b"\n"


class Root(resource.Resource):
    """``/-/static/`` from disk; every other path to the WSGI application."""

    def __init__(self, wsgi: resource.Resource):
        super().__init__()
        self._wsgi = wsgi
        self._static = StaticFiles(os.path.join(templates_dir(), "static"))

    def getChild(self, path: bytes, request):
        if path == b"-" and request.postpath[:1] == [b"static"]:
            return self._static
        request.postpath.insert(0, request.prepath.pop())
        return self._wsgi

    def render(self, request):
        return self._wsgi.render(request)


@dataclass(frozen=True)
class Settings:
    """The daemon's ``[hosting]`` settings, read (and checked) once before anything starts."""

    drain_seconds: int
    header_seconds: int
    http_max_per_address: int
    max_request_bytes: int
    ssh_login_seconds: int
    ssh_max_per_address: int

    @classmethod
    def from_ui(cls, ui) -> Settings:
        """Read the keys; a malformed value raises Mercurial's ConfigError (one line)."""
        def number(key: bytes) -> int:
            value = ui.configint(b"hosting", key)
            if value is None or value < 0:
                raise UserError(f"[hosting] {key.decode()} must be a number of at least 0")
            return value

        # The login throttle's keys are the Authenticator's; checked here too so that a bad
        # value stops the master in one line instead of every worker at its start.
        Limits.from_ui(ui)
        trusted_networks([e.decode("utf-8", "replace") for e in ui.configlist(b"hosting", b"trusted-proxies")])
        return cls(drain_seconds=number(b"drain-seconds"), header_seconds=number(b"http-header-seconds"),
                   http_max_per_address=number(b"http-max-per-address"),
                   max_request_bytes=number(b"max-request-mb") * 1024 * 1024,
                   ssh_login_seconds=number(b"ssh-login-seconds"),
                   ssh_max_per_address=number(b"ssh-max-per-address"))


class HostingChannel(http.HTTPChannel):
    """An HTTP connection whose request line and headers must arrive within a deadline.

    The deadline (``header_seconds``, 0: none) runs from the connection's start,
    and again from the end of each response while the connection waits for the
    next request; it ends when the last header line of a request arrives, so a
    slow upload or a long download is never cut by it.  A connection past it is
    answered 408 (if part of a request came) and closed.  Each request whose
    headers are complete counts as in flight (``tracker``) until its response
    ends, except ``/healthz``, which load balancers poll.  While the site drains,
    responses carry ``Connection: close``.
    """

    header_seconds: float = 0
    tracker: InFlight | None = None
    _deadline = None

    def connectionMade(self):
        super().connectionMade()
        self._arm()

    def allHeadersReceived(self):
        self._disarm()
        request = self.requests[-1]
        tracker = self.tracker
        if tracker is not None and not self._path.startswith(b"/healthz"):
            tracker.started()
            request.notifyFinish().addBoth(lambda _: tracker.finished())
        super().allHeadersReceived()
        if getattr(self.site, "draining", False):
            self.persistent = False
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])

    def requestDone(self, request):
        if self.persistent:
            self._arm()  # before super(): it may parse a pipelined request's headers at once
        super().requestDone(request)

    def connectionLost(self, reason):
        self._disarm()
        super().connectionLost(reason)

    def _arm(self) -> None:
        if self.header_seconds and self._deadline is None:
            self._deadline = self.callLater(self.header_seconds, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if self.requests or self._buffer:
            body = b"request line and headers too slow\n"
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        self.timeoutConnection()  # closes; aborts if the client does not read within abortTimeout


class TrackingSite(server.Site):
    """A Site that knows its open connections (per client address too) and builds HostingChannels.

    Shutdown flushes and closes ``channels``; a connection from an address that
    already holds ``max_per_address`` (0: no cap) is closed at once.
    """

    noisy = False  # no "Starting factory <...>" lines

    def __init__(self, *args, tracker: InFlight | None = None, header_seconds: float = 0,
                 max_per_address: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.tracker = tracker
        self.header_seconds = header_seconds
        self.max_per_address = max_per_address
        self.draining = False
        self.channels: set = set()
        self.per_address: dict[str, int] = {}
        self._capped: set[str] = set()

    def protocol(self):
        return http._GenericHTTPChannelProtocol(HostingChannel())

    def buildProtocol(self, addr):
        host = getattr(addr, "host", "")
        if self.max_per_address and self.per_address.get(host, 0) >= self.max_per_address:
            if host not in self._capped:  # once until it drops below the cap: no log flood
                self._capped.add(host)
                log.warn("{host} holds {n} connections (http-max-per-address); closing more from it",
                         host=host, n=self.max_per_address)
            return None
        channel = super().buildProtocol(addr)
        inner = channel._channel
        inner.tracker = self.tracker
        inner.header_seconds = self.header_seconds
        self.channels.add(channel)
        self.per_address[host] = self.per_address.get(host, 0) + 1
        lost = channel.connectionLost

        def connection_lost(reason, channel=channel):
            self.channels.discard(channel)
            left = self.per_address.get(host, 1) - 1
            if left:
                self.per_address[host] = left
            else:
                self.per_address.pop(host, None)
            self._capped.discard(host)
            lost(reason)

        channel.connectionLost = connection_lost
        return channel


def settle_all(site) -> None:
    """Recover every repository a crash left half-way (run before serving)."""
    from hgext_hosting.repositories import finish_interrupted_moves

    for what in finish_interrupted_moves(site):
        log.info("recovered: {what}", what=what)
    ui = site.ui.copy()
    # Read the list first: a SQLite read cursor left open across settle()'s writes
    # would make them fail with 'database is locked' while pushes are running.
    for row in list(Repository.select(Repository, Owner).join(Owner)):
        path = site.repo_path(row.owner.name, row.name)
        if not path.is_dir():
            continue
        if (path / ".hg" / "store" / "journal").exists() or pushlog.has_pending(row.id):
            repo = hg.repository(ui.copy(), os.fsencode(path))
            for what in pushlog.settle(repo, row.id):
                log.info("{repo}: {what}", repo=row.full_name, what=what)


#: hgweb's Content-Security-Policy: the hosting pages' (daemon.web.PAGE_CSP), plus
#: paper's inline scripts (log scrolling, graph), which hgweb marks with the nonce.
#: Our stylesheet and paper's are same-origin ('self').
HGWEB_CSP = (b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
             b"script-src 'self' 'nonce-%nonce%'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


#: Archive types a site allows when its hgrc does not say (``init`` writes the same).
ARCHIVE_TYPES = b"zip gz bz2"
#: The settings by which a site hgrc chooses its archive types itself.
ARCHIVE_KEYS = (b"allow-archive", b"allowarchive", b"allowzip", b"allowgz", b"allowbz2")


def daemon_baseui(site):
    """The ui every hgweb application copies: the site hgrc plus daemon settings.

    hgweb's pages use our style (``templates/hgweb/hosting``: Mercurial's paper
    with the site's top bar and stylesheet) unless the site hgrc names its own
    ``web.templates``.  ``web.static`` keeps ``/OWNER/NAME/static/`` serving
    Mercurial's own files (paper's CSS, JavaScript, icons), which hgweb would
    otherwise look for next to our templates.  hgweb's pages get the same
    Content-Security-Policy as ours (:data:`HGWEB_CSP`) unless the site hgrc
    sets ``web.csp``.  Archives (:data:`ARCHIVE_TYPES`) are allowed for whoever
    may read, as ``init`` writes into new site hgrcs, unless the site hgrc
    sets ``web.allow-archive`` itself (even empty: no archives).
    """
    ui = site.ui.copy()
    settings = [
        (b"ui", b"nontty", b"true"),
        (b"ui", b"interactive", b"false"),
        (b"web", b"encoding", b"UTF-8"),
        (b"web", b"allow-push", b"*"),
        (b"web", b"push_ssl", b"false"),
        (b"server", b"streamunbundle", b"true"),
    ]
    if not any(ui.hasconfig(b"web", key) for key in ARCHIVE_KEYS):
        settings.append((b"web", b"allow-archive", ARCHIVE_TYPES))
    if not ui.config(b"web", b"csp"):
        settings.append((b"web", b"csp", HGWEB_CSP))
    if not ui.config(b"web", b"templates"):
        settings += [
            (b"web", b"templates", os.fsencode(os.path.join(templates_dir(), "hgweb"))),
            (b"web", b"style", b"hosting"),
        ]
        mercurial_templates = templater.templatedir()
        if mercurial_templates is not None and not ui.config(b"web", b"static"):
            settings.append((b"web", b"static", os.path.join(mercurial_templates, b"static")))
    for section, key, value in settings:
        ui.setconfig(section, key, value, b"hosting-daemon")
    return ui


#: Seconds a stopping HTTP service waits for its threads after the drain and the connections closed.
JOIN_GRACE = 10.0


class HTTPService(Abandonable, service.Service):
    """The HTTP side of one process: thread pool, resources, listening port, drain on stop."""

    def __init__(self, app: HostingApp, host: str, port: int, *, settings: Settings, fd: int | None = None,
                 threads: int = 32, settle: bool = True, reactor=None, label: str = ""):
        self.app = app
        self.site = app.site
        self.host, self.port = host, port
        self.fd = fd
        self.label = label  # "worker 1 (pid 123): " in a worker's log lines
        self.reactor = reactor or default_reactor
        self.settings = settings
        self.pool = ThreadPool(minthreads=2, maxthreads=threads, name="hosting-wsgi")
        self.drain_seconds = self.settings.drain_seconds
        self.settle = settle  # False in workers: their master settled the site already
        self.tracker = InFlight(self.reactor)
        auth = app.auth
        wsgi = StreamingWSGIResource(self.reactor, self.pool, self.app)
        self.site_factory = TrackingSite(Root(wsgi), requestFactory=BoundedRequest, reactor=self.reactor,
                                         logFormatter=redacted_log_formatter,
                                         tracker=self.tracker, header_seconds=self.settings.header_seconds,
                                         max_per_address=self.settings.http_max_per_address)
        self.site_factory.displayTracebacks = False
        self.site_factory.max_request_bytes = self.settings.max_request_bytes
        self.site_factory.authenticator = auth  # daemon.bodylimit: who may send a large body
        self.listening = None

    def privilegedStartService(self) -> None:
        """Bind (or adopt) the listening socket: CannotListenError before any thread starts."""
        super().privilegedStartService()
        if self.listening is not None:
            return
        if self.fd is not None:
            self.listening = self.reactor.adoptStreamPort(self.fd, socket.AF_INET, self.site_factory)
            os.close(self.fd)
        else:
            self.listening = self.reactor.listenTCP(self.port, self.site_factory, interface=self.host)

    def startService(self) -> None:
        if self.listening is None:
            self.privilegedStartService()
        super().startService()
        if self.settle:
            settle_all(self.site)
        self.pool.start()
        h = self.listening.getHost()
        log.info("{label}serving HTTP on {url}", label=self.label, url=url_of("http", h.host, h.port))

    @property
    def address(self) -> str:
        h = self.listening.getHost()
        return f"{h.host}:{h.port}"

    def force(self) -> int:
        """A second signal: stop waiting, cut every connection; how many requests were in flight."""
        in_flight = self.tracker.count
        self.tracker.force()
        for channel in list(self.site_factory.channels):
            transport = getattr(getattr(channel, "_channel", channel), "transport", None)
            if transport is not None:
                transport.abortConnection()
        return in_flight

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        # Draining: the port keeps answering (a push's next request must find it), but
        # /healthz says 503 so that a load balancer sends new work elsewhere.
        self.app.draining = True
        self.site_factory.draining = True
        if self.tracker.count:
            log.info("{label}waiting for {n} request(s) in flight", label=self.label, n=self.tracker.count)
        quiet = yield self.tracker.quiet(self.drain_seconds)
        if not quiet:
            log.warn("{label}{n} request(s) still in flight; closing", label=self.label, n=self.tracker.count)
        if self.listening is not None:
            yield self.listening.stopListening()
        # Responses are complete, but their last bytes may still sit in transport
        # buffers: loseConnection() flushes, then closes; wait for every close.
        try:
            log.info("{label}closing {n} connection(s)", label=self.label, n=len(self.site_factory.channels))
            for channel in list(self.site_factory.channels):
                # Site builds a protocol that wraps the HTTPChannel as ``_channel``.
                transport = getattr(getattr(channel, "_channel", channel), "transport", None)
                if transport is not None:
                    transport.loseConnection()
            deadline = self.reactor.seconds() + 10
            while self.site_factory.channels and self.reactor.seconds() < deadline:
                yield task.deferLater(self.reactor, 0.05, lambda: None)
            log.info("{label}connections closed ({n} left); stopping threads", label=self.label,
                     n=len(self.site_factory.channels))
        except Exception:  # noqa: BLE001 - never let shutdown stop before joining the threads
            log.failure("closing connections")
        # Joined in a thread: a WSGI thread may still need the reactor to finish.  A
        # thread still busy JOIN_GRACE seconds after the drain (a hook that never
        # returns) does not hold the process: it exits 1 without it.
        joined = threads.deferToThread(self.pool.stop)
        joined.addTimeout(JOIN_GRACE, self.reactor)
        try:
            yield joined
        except defer.TimeoutError:
            log.error("{label}a request still runs {s} s after the drain; exiting without it",
                      label=self.label, s=JOIN_GRACE)
            exit_now(1)


#: The worker's bootstrap: the master's import path, then daemon.worker.main.  With
#: ``python -I`` neither the current directory nor PYTHON* variables are on the path.
_WORKER_BOOT = ("import json, sys; sys.path[:] = json.loads(sys.argv.pop(1)); "
                "from daemon.worker import main; sys.exit(main(sys.argv[1:]))")

#: The worker writes one line on this descriptor once it serves.
_READY_FD = 4


def worker_import_path() -> list[str]:
    """The master's ``sys.path`` without the current directory (``''``, ``.``, or its absolute path)."""
    here = os.getcwd()
    return [p for p in sys.path if p and p != "." and os.path.abspath(p) != here]


class _Worker(protocol.ProcessProtocol):
    def __init__(self, master: WorkersService, index: int):
        self.master, self.index = master, index
        self.ready = False

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == _READY_FD and data:
            self.ready = True

    def processEnded(self, reason) -> None:
        self.master.worker_ended(self.index, self.ready, reason)


class WorkersService(service.Service):
    """The master of ``--workers N``: one listening socket, N worker processes."""

    def __init__(self, site, host: str, port: int, workers: int, ssh_address: str | None, reactor=None):
        self.site, self.host, self.port, self.workers = site, host, port, workers
        self.ssh_address = ssh_address
        self.reactor = reactor or default_reactor
        self.sock: socket.socket | None = None
        self.processes: dict[int, object] = {}
        self.stopping = False
        self.failed = False
        self._all_ended: defer.Deferred | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.sock is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(512)
        except OSError as e:
            sock.close()
            raise CannotListenError(self.host, self.port, e) from None
        sock.setblocking(False)
        self.sock = sock
        self.port = sock.getsockname()[1]

    def startService(self) -> None:
        if self.sock is None:
            self.privilegedStartService()
        super().startService()
        settle_all(self.site)
        log.info("serving HTTP on {url} with {n} workers", url=url_of("http", self.host, self.port), n=self.workers)
        for i in range(self.workers):
            self._spawn(i)

    def abandon(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _spawn(self, index: int) -> None:
        args = [sys.executable, "-I", "-c", _WORKER_BOOT, json.dumps(worker_import_path()),
                "--site", str(self.site.root), "--fd", "3", "--ready-fd", str(_READY_FD), "--index", str(index)]
        if self.ssh_address:
            args += ["--ssh-address", self.ssh_address]
        self.processes[index] = self.reactor.spawnProcess(
            _Worker(self, index), sys.executable, args, env=dict(os.environ),
            childFDs={0: 0, 1: 1, 2: 2, 3: self.sock.fileno(), _READY_FD: "r"},
        )

    def worker_ended(self, index: int, ready: bool, reason) -> None:
        self.processes.pop(index, None)
        if self.stopping:
            if not self.processes and self._all_ended is not None and not self._all_ended.called:
                self._all_ended.callback(None)
            return
        if not ready:
            # It failed before serving (its error is on stderr): starting it again would fail again.
            log.error("worker {i} could not start ({r}); stopping", i=index, r=reason.value)
            self.failed = True
            if self.reactor.running:
                self.reactor.stop()
            return
        log.warn("worker {i} ended ({r}); starting another", i=index, r=reason.value)
        self.reactor.callLater(0.5, self._spawn, index)

    def force(self) -> int:
        """A second signal: pass it on (each worker then stops at once)."""
        running = list(self.processes.values())
        for proc in running:
            with contextlib.suppress(Exception):  # already gone
                proc.signalProcess("TERM")
        return len(running)

    def stopService(self):
        super().stopService()
        self.stopping = True
        # The workers hold the listening socket; the master's copy is no longer needed.
        self.abandon()
        if not self.processes:
            return defer.succeed(None)
        self._all_ended = defer.Deferred()
        for proc in list(self.processes.values()):
            with contextlib.suppress(Exception):  # already gone
                proc.signalProcess("TERM")
        return self._all_ended


def make_app(site, ssh_address: str | None = None) -> HostingApp:
    """The WSGI application of one process, its parts built here and passed in.

    Also Mercurial's one-time setup for serving from threads: its registries
    (bundle2 parts, templates, web commands) filled here on the main thread,
    since filling them lazily in a pool thread races (docs/design.md §0.5), and
    the daemon's hgweb permission hook installed (:func:`daemon.app.setup_hgweb`).
    """
    initialization.init()
    setup_hgweb()
    auth = Authenticator.for_site(site)
    baseui = daemon_baseui(site)
    return HostingApp(site, auth, HgwebCache(baseui), baseui,
                      pages=lambda app: Pages(site, auth, app, ssh_address=ssh_address, events=EventPages))


def make_http_service(site, host: str, port: int, *, ssh_address: str | None = None,
                      settings: Settings | None = None, **options) -> HTTPService:
    """One process's HTTP service (``options``: :class:`HTTPService`'s: fd, settle, reactor, label).

    The models must be bound to the site's database for the process
    (``models.bind(site.database())``): :func:`make_service` and the workers do it.
    """
    return HTTPService(make_app(site, ssh_address), host, port,
                       settings=settings or Settings.from_ui(site.ui), **options)


def _base_url(http) -> str:
    """The daemon's own URL for links in payloads and mails (``[web] baseurl`` overrides it)."""
    if isinstance(http, HTTPService) and http.listening is not None:
        h = http.listening.getHost()
        return url_of("http", h.host, h.port).rstrip("/")
    if isinstance(http, WorkersService):
        return url_of("http", http.host, http.port).rstrip("/")
    return ""


def make_service(site, http_address: tuple[str, int] | None, ssh: tuple[str, int] | None = None,
                 workers: int = 1, reactor=None, settings: Settings | None = None) -> service.MultiService:
    """The whole daemon as one service (nothing starts until it is started).

    ``http_address`` None: SSH only.  The models are bound to the site's
    database for the rest of the process: it serves that site alone.
    """
    models.bind(site.database())
    top = service.MultiService()
    ssh_address = f"{ssh[0]}:{ssh[1]}" if ssh else None
    http = None
    if http_address is not None:
        if workers > 1:
            http = WorkersService(site, http_address[0], http_address[1], workers, ssh_address, reactor)
        else:
            http = make_http_service(site, http_address[0], http_address[1], ssh_address=ssh_address,
                                     reactor=reactor, settings=settings)
        http.setServiceParent(top)
    # Events (issue 14): one delivering service per daemon (the master with --workers N); the
    # outbox claims make it safe next to other daemons on the same database.
    from .deliveries import DeliveryService

    DeliveryService(site, base_url=lambda: _base_url(http), reactor=reactor).setServiceParent(top)
    if ssh:
        from .ssh import make_ssh_service

        make_ssh_service(site, ssh[0], ssh[1], reactor=reactor).setServiceParent(top)
    return top
