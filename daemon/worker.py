"""One worker process of ``hg-hosting serve --workers N``: serves HTTP on an inherited socket.

The master starts it as ``python -I -c BOOT PATH-JSON --site ... --fd 3
--ready-fd 4 --index I`` (see ``daemon.service.WorkersService``): ``-I`` keeps
the current directory and ``PYTHON*`` variables off the import path, BOOT sets
the master's path.  The worker adopts the listening socket (fd 3), writes one
line on the ready descriptor once it serves (a worker that ends before that
stops the whole daemon), and drains on SIGTERM like the master; a second
SIGTERM stops it at once.  SIGINT is ignored: a Ctrl-C in the terminal reaches
the master, which passes it on as SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from twisted.internet import reactor
from twisted.logger import globalLogBeginner

from hgext_hosting import models
from hgext_hosting.site import Site

from .lifecycle import StopSignals
from .service import info_observer, make_http_service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hg-hosting-worker")
    parser.add_argument("--site", required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, default=None)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--ssh-address", default=None)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    globalLogBeginner.beginLoggingTo([info_observer(sys.stderr)], redirectStandardIO=False)
    label = f"worker {args.index} (pid {os.getpid()}): "
    try:
        site = Site(args.site).open()
        models.bind(site.database())  # this process serves that site alone
        http = make_http_service(site, "", 0, fd=args.fd, ssh_address=args.ssh_address, settle=False,
                                 label=label)
        http.privilegedStartService()
        http.startService()
    except Exception as e:  # noqa: BLE001 - one line; the master stops the daemon
        from .cli import _describe

        print(f"error: {label}cannot start: {_describe(e)}", file=sys.stderr, flush=True)
        return 1
    if args.ready_fd is not None:
        os.write(args.ready_fd, b"ready\n")
        os.close(args.ready_fd)
    signals = StopSignals(reactor, http.force, http.drain_seconds, signals=(signal.SIGTERM,), label=label)
    reactor.callWhenRunning(signals.install)
    reactor.addSystemEventTrigger("before", "shutdown", http.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
