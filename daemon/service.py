"""The daemon's Twisted services: HTTP (hgweb + pages), optional SSH, N workers.

:func:`make_service` builds, and starts nothing (the ``twistd`` convention):

- :class:`HTTPService` owns the WSGI thread pool, the resource tree and the
  listening port.  On start it settles every repository a crash left with an
  interrupted transaction or unsettled push records, then listens.  On stop it
  stops listening, waits (up to ``drain_seconds``) for requests in flight and
  then joins the thread pool, so a push in progress finishes.
- With ``--workers N`` (N > 1) the master binds the socket once and starts N
  worker processes that adopt it (``adoptStreamPort``): the kernel hands each
  connection to an idle worker, so concurrent clones use every core.  The
  master serves SSH (whose work happens in ``hg serve --stdio`` children),
  forwards SIGTERM and restarts a worker that dies.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys

from mercurial import hg, initialization, templater
from twisted.application import service
from twisted.internet import defer, protocol, task
from twisted.internet import reactor as default_reactor
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    textFileLogObserver,
)
from twisted.python.threadpool import ThreadPool
from twisted.web import resource, server, static

from hgext_hosting import pushlog
from hgext_hosting.models import Owner, Repository

from .app import HostingApp
from .auth import Authenticator
from .bodylimit import BoundedRequest
from .hgwebs import HgwebCache
from .pages import Pages, templates_dir
from .streaming import StreamingWSGIResource
from .web import SECURITY_HEADERS, HTTPError, parse_path

log = Logger()


def info_observer(stream):
    """A log observer writing events of level info and above (Conch is chatty at debug)."""
    return FilteringLogObserver(textFileLogObserver(stream),
                                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)])


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

    def __init__(self, wsgi: resource.Resource, tracker: InFlight):
        super().__init__()
        self._wsgi = wsgi
        self._tracker = tracker
        self._static = StaticFiles(os.path.join(templates_dir(), "static"))

    def getChild(self, path: bytes, request):
        if path == b"-" and request.postpath[:1] == [b"static"]:
            return self._static
        request.postpath.insert(0, request.prepath.pop())
        return self._tracked()

    def render(self, request):
        return self._tracked().render(request)

    def _tracked(self):
        self._tracker.started()
        return _Tracked(self._wsgi, self._tracker)


class _Tracked(resource.Resource):
    isLeaf = True

    def __init__(self, wsgi, tracker):
        super().__init__()
        self._wsgi, self._tracker = wsgi, tracker

    def render(self, request):
        request.notifyFinish().addBoth(lambda _: self._tracker.finished())
        return self._wsgi.render(request)


class TrackingSite(server.Site):
    """A Site that knows its open connections, so that shutdown can flush and close them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.channels: set = set()

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        self.channels.add(channel)
        lost = channel.connectionLost

        def connection_lost(reason, channel=channel):
            self.channels.discard(channel)
            lost(reason)

        channel.connectionLost = connection_lost
        return channel


class InFlight:
    """Counts requests in flight so that shutdown can wait for them."""

    def __init__(self):
        self.count = 0
        self._waiters: list[defer.Deferred] = []

    def started(self) -> None:
        self.count += 1

    def finished(self) -> None:
        self.count -= 1
        if self.count <= 0:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

    def drained(self) -> defer.Deferred:
        if self.count <= 0:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append(d)
        return d


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


class HTTPService(service.Service):
    """The HTTP side of one process: thread pool, resources, listening port."""

    def __init__(self, site, host: str, port: int, *, fd: int | None = None, ssh_address: str | None = None,
                 threads: int = 32, drain_seconds: float = 30.0, settle: bool = True, reactor=None):
        # Register Mercurial's bundle2 parts, templates and web commands once, here on
        # the main thread: doing it lazily in a pool thread races (DESIGN.md §0.5).
        initialization.init()
        self.site = site
        self.host, self.port = host, port
        self.fd = fd
        self.reactor = reactor or default_reactor
        self.pool = ThreadPool(minthreads=2, maxthreads=threads, name="hosting-wsgi")
        self.drain_seconds = drain_seconds
        self.settle = settle  # False in workers: their master settled the site already
        self.tracker = InFlight()
        auth = Authenticator.for_site(site)
        pages = Pages(site, auth, ssh_address=ssh_address)
        baseui = daemon_baseui(site)
        self.app = HostingApp(site, auth, HgwebCache(baseui), pages, baseui)
        pages.app = self.app
        wsgi = StreamingWSGIResource(self.reactor, self.pool, self.app)
        self.site_factory = TrackingSite(Root(wsgi, self.tracker), requestFactory=BoundedRequest)
        self.site_factory.displayTracebacks = False
        self.site_factory.max_request_bytes = site.ui.configint(b"hosting", b"max-request-mb") * 1024 * 1024
        self.site_factory.authenticator = auth  # daemon.bodylimit: who may send a large body
        self.listening = None

    def startService(self) -> None:
        super().startService()
        if self.settle:
            settle_all(self.site)
        self.pool.start()
        if self.fd is not None:
            self.listening = self.reactor.adoptStreamPort(self.fd, socket.AF_INET, self.site_factory)
            os.close(self.fd)
        else:
            self.listening = self.reactor.listenTCP(self.port, self.site_factory, interface=self.host)
        log.info("serving HTTP on {addr}", addr=self.address)

    @property
    def address(self) -> str:
        h = self.listening.getHost()
        return f"{h.host}:{h.port}"

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self.listening is not None:
            yield self.listening.stopListening()
        if self.tracker.count:
            log.info("waiting for {n} request(s) in flight", n=self.tracker.count)
            drained = self.tracker.drained()
            timeout = self.reactor.callLater(self.drain_seconds, lambda: drained.called or drained.callback(None))
            yield drained
            if timeout.active():
                timeout.cancel()
        # Responses are complete, but their last bytes may still sit in transport
        # buffers: loseConnection() flushes, then closes; wait for every close.
        try:
            log.info("closing {n} connection(s)", n=len(self.site_factory.channels))
            for channel in list(self.site_factory.channels):
                # Site builds a protocol that wraps the HTTPChannel as ``_channel``.
                transport = getattr(getattr(channel, "_channel", channel), "transport", None)
                if transport is not None:
                    transport.loseConnection()
            deadline = self.reactor.seconds() + 10
            while self.site_factory.channels and self.reactor.seconds() < deadline:
                yield task.deferLater(self.reactor, 0.05, lambda: None)
            log.info("connections closed ({n} left); stopping threads", n=len(self.site_factory.channels))
        except Exception:  # noqa: BLE001 - never let shutdown stop before joining the threads
            log.failure("closing connections")
        self.pool.stop()


class _Worker(protocol.ProcessProtocol):
    def __init__(self, master: WorkersService, index: int):
        self.master, self.index = master, index

    def processEnded(self, reason) -> None:
        self.master.worker_ended(self.index, reason)


class WorkersService(service.Service):
    """The master of ``--workers N``: one listening socket, N worker processes."""

    def __init__(self, site, host: str, port: int, workers: int, ssh_address: str | None, reactor=None):
        self.site, self.host, self.port, self.workers = site, host, port, workers
        self.ssh_address = ssh_address
        self.reactor = reactor or default_reactor
        self.sock: socket.socket | None = None
        self.processes: dict[int, object] = {}
        self.stopping = False

    def startService(self) -> None:
        super().startService()
        settle_all(self.site)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, self.port))
        self.sock.listen(512)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        log.info("serving HTTP on {host}:{port} with {n} workers", host=self.host, port=self.port, n=self.workers)
        for i in range(self.workers):
            self._spawn(i)

    def _spawn(self, index: int) -> None:
        args = [sys.executable, "-m", "daemon.worker", "--site", str(self.site.root), "--fd", "3"]
        if self.ssh_address:
            args += ["--ssh-address", self.ssh_address]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.processes[index] = self.reactor.spawnProcess(
            _Worker(self, index), sys.executable, args, env=env,
            childFDs={0: 0, 1: 1, 2: 2, 3: self.sock.fileno()},
        )

    def worker_ended(self, index: int, reason) -> None:
        self.processes.pop(index, None)
        if self.stopping:
            if not self.processes and getattr(self, "_all_ended", None):
                self._all_ended.callback(None)
            return
        log.warn("worker {i} ended ({r}); starting another", i=index, r=reason.value)
        self.reactor.callLater(0.5, self._spawn, index)

    def stopService(self):
        super().stopService()
        self.stopping = True
        if not self.processes:
            return defer.succeed(None)
        self._all_ended = defer.Deferred()
        for proc in list(self.processes.values()):
            with contextlib.suppress(Exception):  # already gone
                proc.signalProcess("TERM")
        return self._all_ended


def make_service(site, http: tuple[str, int], ssh: tuple[str, int] | None = None, workers: int = 1,
                 reactor=None) -> service.MultiService:
    """The whole daemon as one service (nothing starts until it is started)."""
    top = service.MultiService()
    ssh_address = f"{ssh[0]}:{ssh[1]}" if ssh else None
    if workers > 1:
        WorkersService(site, http[0], http[1], workers, ssh_address, reactor).setServiceParent(top)
    else:
        HTTPService(site, http[0], http[1], ssh_address=ssh_address, reactor=reactor).setServiceParent(top)
    if ssh:
        from .ssh import make_ssh_service

        make_ssh_service(site, ssh[0], ssh[1], reactor=reactor).setServiceParent(top)
    return top

