"""One cached hgweb application per repository (not ``hgwebdir``), in the site's look.

``hgwebdir`` opens a repository and builds an hgweb per request and runs a full
garbage collection each time (22 ms against 0.2 ms, docs/design.md §3).  This keeps
up to ``capacity`` hgweb applications, least recently used evicted, keyed by
the repository's id and checked against its path and ``settings_epoch``, which
every change of its settings bumps: a renamed repository or a new description
gets a fresh application on the next request.

The site's permissions are applied by :mod:`daemon.app` before hgweb runs;
hgweb's own ``[web]`` settings can only restrict further.

hgweb's pages carry the hosting pages' top bar: the daemon puts a function
under :data:`TOPBAR_KEY` in the WSGI environ, and :func:`install` gives hgweb's
templater a ``{hostingbar}`` keyword that calls it (only pages that show the bar
pay for it: raw files, static files and the wire protocol never do), and a
``{hostingtopic}`` keyword, a changeset's topic (hg-evolve's), which our map
badges on the log, graph and changeset pages (obsolete changesets are hidden by
hgweb's ``served`` view once the repository's hgrc loads evolve).  File
views are syntax-highlighted by Mercurial's ``highlight`` extension (Pygments),
enabled unless the site hgrc says otherwise, on files under 256 KB
(:data:`HIGHLIGHT_FILES`, ``web.highlightfiles``); its stylesheet is a same-origin
``highlightcss`` page, so the pages' CSP stays ``style-src 'self'``.

Speed: hgweb builds a templater per request, reading and parsing its map files
(ours and paper's) and every template file it renders.  Those are files of the
installation, so :func:`install` keeps what was read and parsed: the map file
by path and modification time, template files by path and modification time,
parse trees by text.  Each request still gets its own templater (the
``highlight`` extension edits a request's template cache).
"""

from __future__ import annotations

import collections
import functools
import os
import threading
from pathlib import Path

from mercurial import hgweb, phases, templater
from mercurial.hgweb import hgweb_mod

#: The files hgweb highlights unless the site hgrc sets ``web.highlightfiles`` (a fileset).
HIGHLIGHT_FILES = b"size('<256K')"
#: The WSGI environ key of the function that renders the top bar of hgweb's pages (bytes).
TOPBAR_KEY = "hosting.topbar"
_TOPBAR_RAWKEY = TOPBAR_KEY.encode("latin-1")


def _requestcontext_class():
    """hgweb's per-request context class (``hgweb_mod`` re-exports it from its inner module)."""
    inner = getattr(hgweb_mod, "hgweb_mod_inner", None)
    if inner is None:
        import importlib

        try:
            inner = importlib.import_module("mercurial.hgweb.hgweb_mod_inner")
        except ImportError:
            inner = hgweb_mod
    return inner.requestcontext


def _hostingbar(render):
    """A templater keyword calling ``render`` (the daemon's top bar) once per page."""
    def keyword(context, mapping):
        return render() if render is not None else b""

    keyword._requires = ()
    return keyword


def _hostingtopic(context, mapping) -> bytes:
    """The ``{hostingtopic}`` keyword: a changeset's topic, as hg-evolve's ``{topic}`` shows it.

    A topic lives in the changeset's extra and means something only while the
    changeset is not public (evolve's rule), so this needs no topic extension
    loaded: a publishing repository's public changesets show none.
    """
    ctx = context.resource(mapping, b"ctx")  # ResourceUnavailable: hgweb renders it empty
    topic = ctx.extra().get(b"topic", b"")
    return topic if topic and ctx.phase() != phases.public else b""


_hostingtopic._requires = {b"ctx"}


def _templater_with_keywords(orig, self, req):
    tmpl = orig(self, req)
    tmpl._proc._defaults[b"hostingbar"] = _hostingbar(req.rawenv.get(_TOPBAR_RAWKEY))
    tmpl._proc._defaults[b"hostingtopic"] = _hostingtopic
    return tmpl


def _mtime(path: bytes) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


_read_lock = threading.Lock()
_mapfiles: dict[tuple[bytes, int], tuple] = {}
_template_files: dict[tuple[bytes, int], bytes] = {}


def _cached_readmapfile(orig, fp, mapfile):
    """``templater._readmapfile`` once per map file and modification time."""
    key = (mapfile, _mtime(mapfile))
    found = _mapfiles.get(key)
    if found is None:
        found = orig(fp, mapfile)
        with _read_lock:
            _mapfiles[key] = found
    else:
        close = getattr(fp, "close", None)
        if close is not None:
            close()
    cache, tmap, aliases = found
    return dict(cache), tmap, list(aliases)


class _ReadFile:
    def __init__(self, data: bytes):
        self._data = data

    def read(self) -> bytes:
        return self._data


def _cached_open_template(orig, name, templatepath=None):
    """``templater.open_template`` of a template file: read once per modification time."""
    if templatepath is not None or not os.path.isabs(name):
        return orig(name, templatepath)
    key = (name, _mtime(name))
    data = _template_files.get(key)
    if data is None:
        path, fp = orig(name, templatepath)
        try:
            data = fp.read()
        finally:
            fp.close()
        with _read_lock:
            _template_files[key] = data
        return path, _ReadFile(data)
    return name, _ReadFile(data)


_installed = False


def install() -> None:
    """Give hgweb the ``{hostingbar}`` and ``{hostingtopic}`` keywords and cache its template files and parses (once)."""
    global _installed
    if _installed:
        return
    _installed = True
    from mercurial import extensions

    extensions.wrapfunction(_requestcontext_class(), "templater", _templater_with_keywords)
    extensions.wrapfunction(templater, "_readmapfile", _cached_readmapfile)
    extensions.wrapfunction(templater, "open_template", _cached_open_template)
    templater.parse = functools.lru_cache(maxsize=4096)(templater.parse)


class HgwebCache:
    def __init__(self, baseui, capacity: int = 128):
        install()
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
        if ui.config(b"extensions", b"highlight") is None and ui.config(b"extensions", b"hgext.highlight") is None:
            ui.setconfig(b"extensions", b"highlight", b"", b"hosting")
        if not ui.hasconfig(b"web", b"highlightfiles"):
            # Pygments runs in a request thread: not on megabytes (highlight's own default is 5 MB).
            ui.setconfig(b"web", b"highlightfiles", HIGHLIGHT_FILES, b"hosting")
        app = hgweb.hgweb(os.fsencode(path), name=full_name.encode("utf-8"), baseui=ui)
        with self._lock:
            self._apps[repo_id] = (key, app)
            self._apps.move_to_end(repo_id)
            while len(self._apps) > self._capacity:
                self._apps.popitem(last=False)
        return app

    def __len__(self) -> int:
        return len(self._apps)
