"""One worker process of ``hg-hosting serve --workers N``: serves HTTP on an inherited socket."""

from __future__ import annotations

import argparse
import sys

from twisted.internet import reactor
from twisted.logger import globalLogBeginner

from hgext_hosting.site import Site

from .service import HTTPService, info_observer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hg-hosting-worker")
    parser.add_argument("--site", required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--ssh-address", default=None)
    args = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo([info_observer(sys.stderr)], redirectStandardIO=False)
    site = Site(args.site).open()
    http = HTTPService(site, "", 0, fd=args.fd, ssh_address=args.ssh_address, settle=False)
    http.startService()
    reactor.addSystemEventTrigger("before", "shutdown", http.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
