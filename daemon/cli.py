"""``hg-hosting serve``: run the daemon in the foreground."""

from __future__ import annotations

from hgext_hosting.errors import UserError


def serve(site, args) -> int:
    raise UserError("the daemon is not built yet")
