"""``hg-hosting serve``: run the daemon in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import sys

from hgext_hosting.errors import UserError


def parse_address(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a (host, port) pair, or UserError."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"invalid {what} address {text!r}: expected HOST:PORT")
    return host, int(port)


def serve(site, args) -> int:
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from .service import info_observer, make_service

    http = parse_address(args.http, "--http")
    ssh = parse_address(args.ssh, "--ssh") if args.ssh else None
    if args.workers < 1 or args.workers > 64:
        raise UserError("--workers must be between 1 and 64")
    globalLogBeginner.beginLoggingTo([info_observer(sys.stderr)], redirectStandardIO=False)
    top = make_service(site, http, ssh, args.workers, reactor=reactor)
    try:
        top.startService()
    except OSError as e:
        raise UserError(f"cannot listen: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - e.g. CannotListenError
        raise UserError(f"cannot start the daemon: {e}") from None
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()
    return 0
