"""A ``WSGIResource`` with back-pressure: a client that stops reading stops the app.

Twisted's ``WSGIResource`` writes every chunk the application yields into the
transport's buffer at once, so a clone by a client that stalls makes the
daemon buffer the whole bundle (docs/design.md §4.2).  :class:`StreamingWSGIResource`
registers each response as a streaming producer on its request; the transport
pauses it when its buffer is full, and the WSGI thread then waits before
handing over the next chunk.  The app iterator is wrapped so that the producer
is unregistered before Twisted finishes the request.

Each hand-over to the reactor costs a round trip between threads, and hgweb's
templates yield hundreds of small strings per page, so the chunks are
coalesced up to :data:`COALESCE_BYTES` first: a page is one hand-over, a
bundle one per 64 KB.

This subclasses Twisted's private ``_WSGIResponse``; Twisted is pinned to 26.x
and ``tests/test_daemon_memory.py`` checks the behaviour.
"""

from __future__ import annotations

import threading

from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import blockingCallFromThread
from twisted.web import wsgi
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

#: Chunks the application yields are joined up to this size before each write.
COALESCE_BYTES = 64 * 1024


def coalesced(chunks, limit: int = COALESCE_BYTES):
    """The same bytes as ``chunks``, in pieces of at least ``limit`` bytes but the last."""
    pending: list[bytes] = []
    size = 0
    for chunk in chunks:
        if not chunk:
            continue
        pending.append(chunk)
        size += len(chunk)
        if size >= limit:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


@implementer(IPushProducer)
class _StreamingResponse(wsgi._WSGIResponse):
    """One WSGI response, written only while the client keeps reading."""

    def __init__(self, reactor, threadpool, application, request):
        super().__init__(reactor, threadpool, self._guarded(application), request)
        # The raw request target, still percent-encoded: daemon.web validates it.
        self.environ["REQUEST_URI"] = request.uri.decode("latin-1")
        self._writable = threading.Event()
        self._writable.set()
        self._registered = False

    # -- IPushProducer (called on the reactor thread) --------------------------

    def pauseProducing(self) -> None:
        self._writable.clear()

    def resumeProducing(self) -> None:
        self._writable.set()

    def stopProducing(self) -> None:
        self._requestFinished = True
        self._writable.set()

    # -- the WSGI side (called in a pool thread) --------------------------------

    def write(self, data: bytes) -> None:
        while not self._writable.wait(5.0):
            if self._requestFinished:
                return
        if self._requestFinished:
            return

        def write_in_reactor(started: bool) -> None:
            if self._requestFinished:
                return
            if not started:
                self._sendResponseHeaders()
            if not self._registered:
                self.request.registerProducer(self, True)
                self._registered = True
            self.request.write(data)

        try:
            blockingCallFromThread(self.reactor, write_in_reactor, self.started)
        finally:
            self.started = True

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            if not self._requestFinished:
                self.request.unregisterProducer()

    def _guarded(self, application):
        def app(environ, start_response):
            result = application(environ, start_response)
            try:
                yield from coalesced(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                # Queued before Twisted's own wsgiFinish, so it runs first; no need to wait.
                self.reactor.callFromThread(self._unregister)

        return app


class StreamingWSGIResource(wsgi.WSGIResource):
    """``WSGIResource`` whose responses respect the client's reading pace."""

    def render(self, request):
        response = _StreamingResponse(self._reactor, self._threadpool, self._application, request)
        response.start()
        return NOT_DONE_YET
