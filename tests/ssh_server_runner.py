"""Run the daemon's SSH service on its own, for the SSH tests and the SSH benchmark.

Usage::

    python tests/ssh_server_runner.py SITE [--host 127.0.0.1] [--port 0]
                                           [--max-sessions N] [--log FILE]

It opens the site (``Site(SITE).open()``, as the daemon does), starts
``make_ssh_service(site, host, port)``, prints the bound port alone on one
line of stdout once it listens, and serves until SIGTERM or SIGINT, which stop
the service gracefully (listening stops, running sessions finish).  Callers
read that line instead of guessing a free port.  The Twisted log goes to
``--log`` (default: stderr).
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver

from daemon import ssh
from hgext_hosting import models
from hgext_hosting.site import Site


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-sessions", type=int, default=None)
    parser.add_argument("--log", default=None)
    args = parser.parse_args(argv)

    log_file = open(args.log, "a", encoding="utf-8") if args.log else sys.stderr  # noqa: SIM115
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log_file)], redirectStandardIO=False)

    site = Site(args.site).open()
    models.bind(site.database())  # as make_service does: this process serves that site alone
    service = ssh.make_ssh_service(site, args.host, args.port)
    if args.max_sessions is not None:
        service.sessions.max_sessions = args.max_sessions
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    print(service.port, flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
