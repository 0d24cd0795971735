"""One cached hgweb application per repository (not ``hgwebdir``).

``hgwebdir`` opens a repository and builds an hgweb per request and runs a full
garbage collection each time (22 ms against 0.2 ms, docs/design.md §3).  This keeps
up to ``capacity`` hgweb applications, least recently used evicted, keyed by
the repository's id and checked against its path and ``settings_epoch``, which
every change of its settings bumps: a renamed repository or a new description
gets a fresh application on the next request.

The site's permissions are applied by :mod:`daemon.app` before hgweb runs;
hgweb's own ``[web]`` settings can only restrict further.
"""

from __future__ import annotations

import collections
import os
import threading
from pathlib import Path

from mercurial import hgweb


class HgwebCache:
    def __init__(self, baseui, capacity: int = 128):
        self._baseui = baseui
        self._capacity = capacity
        self._apps: collections.OrderedDict[int, tuple[tuple, object]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, repo_id: int, path: Path, full_name: str, description: str, epoch: int):
        key = (str(path), full_name, epoch)
        with self._lock:
            entry = self._apps.get(repo_id)
            if entry is not None and entry[0] == key:
                self._apps.move_to_end(repo_id)
                return entry[1]
        ui = self._baseui.copy()
        ui.setconfig(b"web", b"name", full_name.encode("utf-8"), b"hosting")
        ui.setconfig(b"web", b"description", description.encode("utf-8"), b"hosting")
        ui.setconfig(b"web", b"contact", full_name.split("/")[0].encode("utf-8"), b"hosting")
        app = hgweb.hgweb(os.fsencode(path), name=full_name.encode("utf-8"), baseui=ui)
        with self._lock:
            self._apps[repo_id] = (key, app)
            self._apps.move_to_end(repo_id)
            while len(self._apps) > self._capacity:
                self._apps.popitem(last=False)
        return app

    def __len__(self) -> int:
        return len(self._apps)
