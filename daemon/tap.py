"""``twistd hosting``: the daemon as a twistd plugin (``Options`` and ``makeService``)."""

from __future__ import annotations

from twisted.python import usage

from hgext_hosting.site import Site, resolve_site_dir

from .cli import parse_address
from .service import make_service


class Options(usage.Options):
    optParameters = [
        ["site", None, None, "site directory (default: $HG_HOSTING_SITE or ~/.local/share/hg-hosting)"],
        ["http", None, "127.0.0.1:8000", "HTTP address HOST:PORT"],
        ["ssh", None, None, "SSH address HOST:PORT (off unless given)"],
        ["workers", None, "1", "worker processes for HTTP"],
    ]


def makeService(options: Options):
    site = Site(resolve_site_dir(options["site"])).open()
    ssh = parse_address(options["ssh"], "--ssh") if options["ssh"] else None
    return make_service(site, parse_address(options["http"], "--http"), ssh, int(options["workers"]))
