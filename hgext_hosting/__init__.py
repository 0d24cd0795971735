"""check and record every push to an hg-hosting site

This extension is enabled by the site ``hgrc`` of an hg-hosting site, which
every repository of the site includes from its ``.hg/hgrc``.  Repositories
outside a site are left alone.
"""

from __future__ import annotations

from mercurial import registrar

from . import config

testedwith = b"7.2.4"
minimumhgversion = b"7.2"

configtable = config.configtable
cmdtable: dict = {}
command = registrar.command(cmdtable)
