"""A test's site opened in the test's own process, the models bound to its database for a block.

The database is passed in (``models.bound(site.database())``), not bound once per
process: a test may open one site, then another, without a subprocess.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from hgext_hosting import models
from hgext_hosting.site import Site


@contextlib.contextmanager
def opened(handle, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """The site of ``handle`` (a conftest ``SiteHandle``), open, the models bound to it.

    The process reads the handle's hg configuration (``HGRCPATH``: an empty file), as
    its ``hg`` and ``hg-hosting`` subprocesses do.
    """
    monkeypatch.setenv("HGRCPATH", handle.env["HGRCPATH"])
    site = Site(handle.root).open()
    with models.bound(site.database()):
        yield site
