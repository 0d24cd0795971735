"""``hg-hosting serve``: run the daemon in the foreground until SIGTERM or SIGINT.

The ``hg-hosting`` program starts here (:func:`main`): it is the admin CLI
(:mod:`hgext_hosting.admin`) with this ``serve`` command added, so that the
extension's package never imports the daemon.

Start: the ``[hosting]`` settings are read and checked, the soft open-file
limit is raised to the hard one, every listening socket is bound
(``privilegedStartService``) and only then are threads and workers started, so
a port that is taken gives one ``error:`` line and a non-zero exit at once.
Stop (:mod:`daemon.lifecycle`): the first SIGTERM or SIGINT drains, a second
one stops at once (exit 1 if it cut a request or session).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from hgext_hosting import admin
from hgext_hosting.errors import UserError

#: What ``serve`` listens on when neither ``--http`` nor ``--ssh`` is given.
DEFAULT_HTTP = "127.0.0.1:8000"


def parse_address(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a (host, port) pair, or UserError."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"invalid {what} address {text!r}: expected HOST:PORT")
    return host, int(port)


def _describe(e: BaseException) -> str:
    """One line for an exception, Mercurial's bytes messages included."""
    message = getattr(e, "message", None)
    if isinstance(message, bytes):
        text = message.decode("utf-8", "replace")
    else:
        text = str(e) or type(e).__name__
    return text.splitlines()[0] if text else type(e).__name__


def serve(site, args) -> int:
    from twisted.internet import reactor
    from twisted.logger import Logger, globalLogBeginner

    from .lifecycle import StopSignals, raise_open_file_limit
    from .service import Settings, info_observer, make_service

    if args.http is None and args.ssh is None:
        args.http = DEFAULT_HTTP
    http = parse_address(args.http, "--http") if args.http else None
    ssh = parse_address(args.ssh, "--ssh") if args.ssh else None
    if args.workers < 1 or args.workers > 64:
        raise UserError("--workers must be between 1 and 64")
    if http is None and args.workers != 1:
        raise UserError("--workers applies to HTTP: give --http HOST:PORT too")
    try:
        settings = Settings.from_ui(site.ui)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - Mercurial's ConfigError
        raise UserError(f"cannot start the daemon: {_describe(e)}") from None

    globalLogBeginner.beginLoggingTo([info_observer(sys.stderr)], redirectStandardIO=False)
    log = Logger("hg-hosting serve")
    files = raise_open_file_limit()
    top = make_service(site, http, ssh, args.workers, reactor=reactor, settings=settings)
    try:
        top.privilegedStartService()
        top.startService()
    except Exception as e:  # noqa: BLE001 - e.g. CannotListenError: one line, then exit
        for child in top:
            abandon = getattr(child, "abandon", None)
            if abandon is not None:
                abandon()
        if isinstance(e, OSError) and not isinstance(e, UserError):
            raise UserError(f"cannot start the daemon: {e.strerror or e}") from None
        raise UserError(f"cannot start the daemon: {_describe(e)}") from None
    log.info("site {root}; {workers}; open-file limit {files}; a stop drains for at most {drain} s",
             root=str(site.root), files=files, drain=settings.drain_seconds,
             workers=f"{args.workers} workers" if args.workers > 1 else "1 process")

    def force() -> int:
        return sum(child.force() for child in top if hasattr(child, "force"))

    signals = StopSignals(reactor, force, settings.drain_seconds)
    reactor.callWhenRunning(signals.install)
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()
    return 1 if any(getattr(child, "failed", False) for child in top) else 0


def add_serve(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``serve`` with :func:`hgext_hosting.admin.build_parser`'s ``command(name, func, help)``."""
    p = command("serve", lambda args, site: serve(site, args),
                "run the daemon in the foreground (SIGTERM or SIGINT: drain and stop; a second one: stop now)")
    p.add_argument("--http", default=None, metavar="HOST:PORT",
                   help="serve HTTP here (default: 127.0.0.1:8000 unless --ssh is given)")
    p.add_argument("--ssh", default=None, metavar="HOST:PORT", help="serve SSH here (off unless given)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="HTTP worker processes (default 1)")


def build_parser() -> argparse.ArgumentParser:
    """The ``hg-hosting`` program's parser: every admin command and ``serve``."""
    return admin.build_parser(serve=add_serve)


def main(argv: list[str] | None = None) -> int:
    """The ``hg-hosting`` program (setup.py's console script)."""
    return admin.main(argv, build_parser())
