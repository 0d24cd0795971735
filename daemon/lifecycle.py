"""How a daemon process stops: a drain on the first signal, at once on the second.

Read this first if you change how ``hg-hosting serve`` (or one of its
workers) starts or stops.

- :class:`InFlight` counts the HTTP requests in flight (from their last header
  line to their response's last byte) and remembers when the last one started
  or ended.  :meth:`InFlight.quiet` fires once none is in flight and none came
  for :data:`QUIET_SECONDS`, or when the drain's bound is reached, or when a
  second signal arrives: that is how long a stopping daemon keeps its listening
  sockets open, so that a client's *next* request of the same operation (the
  ``listkeys`` after a push's ``unbundle``) is still served.
- :class:`StopSignals` replaces Twisted's SIGTERM/SIGINT handlers once the
  reactor runs.  The first signal stops the reactor, which runs the services'
  ``stopService`` (the drain); a second one calls ``force`` (cut what is still
  running) and ends the process without waiting: Twisted's own handler would
  only log a ``ReactorNotRunning`` traceback.
- :func:`raise_open_file_limit` lifts the soft ``RLIMIT_NOFILE`` to the hard
  limit at start: every connection, SSH session and repository file is a file
  descriptor, and the common soft limit of 1024 is easily reached.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from collections.abc import Callable

from twisted.internet import defer, task
from twisted.logger import Logger

log = Logger()

#: A draining daemon stops once no request was in flight for this many seconds.
QUIET_SECONDS = 2.0


class InFlight:
    """The HTTP requests in flight, and when the last one started or ended."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.count = 0
        self.last_activity = reactor.seconds()
        self._forced = False
        self._waiters: list[defer.Deferred] = []

    def started(self) -> None:
        self.count += 1
        self.last_activity = self.reactor.seconds()

    def finished(self) -> None:
        self.count -= 1
        self.last_activity = self.reactor.seconds()

    def quiet(self, bound: float, quiet: float = QUIET_SECONDS) -> defer.Deferred:
        """Fire once nothing was in flight for ``quiet`` seconds (counted from now at the
        earliest), or after ``bound`` seconds, or on :meth:`force`; with True if quiet."""
        start = self.reactor.seconds()
        self.last_activity = max(self.last_activity, start)
        d = defer.Deferred()
        self._waiters.append(d)

        def check() -> None:
            now = self.reactor.seconds()
            if self._forced:
                done(False)
            elif self.count <= 0 and now - self.last_activity >= min(quiet, bound):
                done(True)
            elif now - start >= bound:
                done(False)

        def done(result: bool) -> None:
            if loop.running:
                loop.stop()
            if d in self._waiters:
                self._waiters.remove(d)
                d.callback(result)

        loop = task.LoopingCall(check)
        loop.clock = self.reactor
        loop.start(0.1, now=True)
        return d

    def force(self) -> None:
        """Stop waiting: :meth:`quiet` fires now."""
        self._forced = True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(False)


class StopSignals:
    """SIGTERM and SIGINT: the first stops the reactor (a drain), the second ends the process.

    ``force()`` returns how many requests or sessions it cut; the process then exits
    1 if it cut any, else 0.  Install with :meth:`install` once the reactor runs
    (``reactor.callWhenRunning``), after Twisted installed its own handlers.
    """

    def __init__(self, reactor, force: Callable[[], int], drain_seconds: float, *,
                 signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT), label: str = ""):
        self.reactor = reactor
        self.force = force
        self.drain_seconds = drain_seconds
        self.signals = signals
        self.label = label  # "worker 1 (pid 123): "
        self.received = 0

    def install(self) -> None:
        for number in self.signals:
            signal.signal(number, self._handler)

    def _handler(self, number: int, frame) -> None:
        # In the main thread, between two bytecodes: hand over to the reactor.
        self.received += 1
        self.reactor.callFromThread(self._on_signal, signal.Signals(number).name, self.received)

    def _on_signal(self, name: str, nth: int) -> None:
        if nth == 1:
            log.info("{label}{name}: draining for at most {s} s; send it again to stop now",
                     label=self.label, name=name, s=self.drain_seconds)
            if self.reactor.running:
                self.reactor.stop()
            return
        if nth > 2:
            return
        cut = 0
        try:
            cut = self.force()
        except Exception:  # noqa: BLE001 - stopping now matters more than this failure
            log.failure("stopping now")
        log.warn("{label}{name} again: stopping now; {n} request(s), session(s) or worker(s) cut",
                 label=self.label, name=name, n=cut)
        exit_now(1 if cut else 0)


class Abandonable:
    """For a service that owns a listening port (``listening``) and a thread pool (``pool``)."""

    listening = None
    pool = None

    def abandon(self) -> None:
        """Undo a start that failed half-way: close the socket, stop the threads."""
        if self.listening is not None:
            self.listening.stopListening()
            self.listening = None
        if self.pool.started:
            self.pool.stop()


def url_of(scheme: str, host: str, port: int) -> str:
    """``http://127.0.0.1:8000/``; IPv6 hosts in brackets."""
    return f"{scheme}://[{host}]:{port}/" if ":" in host else f"{scheme}://{host}:{port}/"


def exit_now(code: int) -> None:
    """End the process without waiting for threads (a WSGI thread may be inside a push)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - nothing left to report it to
            pass
    os._exit(code)


def raise_open_file_limit() -> int:
    """Lift the soft open-file limit to the hard one; return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if target == resource.RLIM_INFINITY:
        target = 1 << 20  # the kernel's usual nr_open; infinity itself is refused
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warn("cannot raise the open-file limit from {soft} to {target}: {e}", soft=soft, target=target, e=e)
    return soft
