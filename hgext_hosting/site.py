"""A site: one directory holding the database, the repositories and the site hgrc.

Layout (``hg-hosting init`` creates it; running it again changes nothing that
exists, except that a site hgrc without ``[extensions] hosting =`` gets that
line appended, and one that disables it is refused)::

    SITE/hgrc                  site hgrc: enables the extension; administrators' hooks
    SITE/hosting.db            SQLite database (mode 0600), unless [hosting] database
    SITE/secret                random key for cookies and caches (mode 0600)
    SITE/ssh_host_ed25519_key  the SSH server's host key (mode 0600)
    SITE/repos/OWNER/NAME/     ordinary Mercurial repositories
    SITE/tmp/                  staging area for repository operations (same filesystem)
    SITE/lost+found/           what ``check --repair`` moved aside

Every repository's ``.hg/hgrc`` includes ``SITE/hgrc`` by a relative path, so the
site can be moved as a whole and any ``hg`` process opening a repository runs
the hooks.  :meth:`Site.enforcement_problems` says why a given ``hg`` would
not (the include or the extension is missing): the SSH front ends ask it before
starting ``hg serve --stdio``, and ``check`` for every repository.

The site directory is, in order: ``--site``, ``$HG_HOSTING_SITE``,
``$XDG_DATA_HOME/hg-hosting`` (``~/.local/share/hg-hosting``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from . import config
from .errors import UserError

ENV_SITE = "HG_HOSTING_SITE"

#: The site hgrc written by ``init``; ``hgrc.example`` is this text, byte for byte
#: (tests/test_extension.py::test_hgrc_example_is_what_init_writes).
SITE_HGRC_TEMPLATE = """\
# hg-hosting site configuration (Mercurial hgrc syntax).
#
# Every repository of the site includes this file from its .hg/hgrc, so whatever
# is set here applies to the daemon, to SSH sessions and to local `hg` commands
# run inside a repository.  `hg help hosting` documents the extension.
# `hg-hosting init` never overwrites this file once it exists.

[extensions]
# The extension that checks and records every push (`hg help hosting`).  Do not remove it.
hosting =

[hosting]
# Database URL.  Empty: the SQLite file hosting.db in the site directory.
# For several daemons on shared storage: postgresql://user:pass@host/dbname
database =
# Milliseconds a writer waits for the database lock before a push fails.
busy-timeout = 5000

[phases]
# Pushed changesets become public, as on hg.mozilla.org and Bitbucket.
publish = True

[server]
# Legacy bundle1 pushes apply changesets and bookmarks in separate transactions;
# every client since Mercurial 3.x speaks bundle2, which makes a push atomic.
bundle1.push = False
# Full clones copy the store files as they are (a "stream clone") instead of
# building a compressed bundle: several times cheaper for the server and the
# client on a LAN, more bytes on the wire.  Set to False for sites reached over
# slow links.  Mercurial never streams a repository that has secret changesets.
preferuncompressed = True

[web]
encoding = UTF-8
# The daemon decides who may read and push; these keep hgweb from adding rules.
allow-push = *
push_ssl = False
# Whoever may read a repository may download it as .zip, .tar.gz or .tar.bz2
# (/OWNER/NAME/archive/REV.zip).  Empty: no downloads.
allow-archive = zip gz bz2

[hooks]
# Your own hooks go here; they run after the hosting checks.  Example:
# pretxnchangegroup.nomerges = python:mymodule.refuse_merges
"""

REPO_HGRC = """\
# Managed by hg-hosting: settings come from the site hgrc.
%include ../../../../hgrc
"""


#: The peewee databases opened in this process, by (URL, busy timeout): :meth:`Site.database`.
_DATABASES: dict[tuple[str, int], object] = {}


class SiteError(UserError):
    """The site is missing or unusable; the message is fit for a user."""


# -- the extension must be on: what the site hgrc and every repository need ---------------

#: The ``[extensions]`` key that loads this package's extension (``hgext3rd/hosting.py``).
EXTENSION = b"hosting"

#: What ``init`` appends to a site hgrc that does not load the extension.
EXTENSION_LINES = """
# Added by hg-hosting init: the extension that checks and records every push.
# Without it pushes are neither checked nor recorded; the daemon and ssh-serve
# then refuse every push.
[extensions]
hosting =
"""


def extension_enabled(value: bytes | None) -> bool:
    """Does an ``[extensions] hosting`` value load the extension (set, and not ``!``)?"""
    return value is not None and not value.strip().startswith(b"!")


def _included_files(path: Path) -> set[str]:
    """The real paths of ``path`` and every file it ``%include``s, recursively, as hg reads them."""
    from mercurial import config as hgconfig
    from mercurial import error, util

    seen: set[str] = set()

    def read(file: bytes) -> None:
        real = os.path.realpath(os.fsdecode(file))
        if real in seen:
            return
        try:
            with open(real, "rb") as f:
                data = f.read()
        except OSError:
            return
        seen.add(real)

        def include(rel: bytes, remap=None, sections=None) -> None:
            read(os.path.normpath(os.path.join(os.path.dirname(file), util.expandpath(rel))))

        try:
            hgconfig.config().parse(file, data, include=include)
        except (error.ConfigError, error.ParseError):
            return  # what hg could not read includes nothing (and hg itself would fail)

    read(os.fsencode(path))
    return seen


def _rc_files(environ: Mapping[str, str]) -> list[bytes]:
    """The config files an ``hg`` started with ``environ`` reads, in order (``rcutil.rccomponents``)."""
    from mercurial.configuration import rcutil

    hgrcpath = environ.get("HGRCPATH")
    if hgrcpath is not None:
        files: list[bytes] = []
        for p in hgrcpath.split(os.pathsep):
            if p:
                files.extend(rcutil._expandrcpath(os.fsencode(p)))
        return files
    return [os.path.normpath(p) for p in (*rcutil.systemrcpath(), *rcutil.userrcpath())]


def default_site_dir() -> Path:
    """Where the site lives when neither ``--site`` nor ``$HG_HOSTING_SITE`` is given."""
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data_home) / "hg-hosting"


def resolve_site_dir(arg: str | None) -> Path:
    """The site directory chosen by ``--site``, the environment or the default."""
    chosen = arg or os.environ.get(ENV_SITE) or default_site_dir()
    return Path(chosen).expanduser().absolute()


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically, never over an existing file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if path appeared meanwhile: never overwrite
    finally:
        tmp.unlink(missing_ok=True)


class Site:
    """Paths and settings of one site directory."""

    def __init__(self, root: Path | str):
        self.root = Path(root).absolute()
        self.hgrc = self.root / "hgrc"
        self.db_path = self.root / "hosting.db"
        self.secret_path = self.root / "secret"
        self.host_key_path = self.root / "ssh_host_ed25519_key"
        self.repos = self.root / "repos"
        self.tmp = self.root / "tmp"
        self.lost_found = self.root / "lost+found"
        self._ui = None

    # -- locating ----------------------------------------------------------

    @classmethod
    def for_repository(cls, repo_root: bytes | str) -> tuple[Site, str, str] | None:
        """``(site, owner, name)`` for a repository inside a site, else None."""
        root = Path(os.fsdecode(repo_root)).absolute()
        site_root = root.parent.parent.parent
        if root.parent.parent.name != "repos" or not (site_root / "hgrc").is_file():
            return None
        return cls(site_root), root.parent.name, root.name

    def repo_path(self, owner: str, name: str) -> Path:
        return self.repos / owner / name

    def exists(self) -> bool:
        return self.hgrc.is_file() and self.repos.is_dir()

    # -- configuration -----------------------------------------------------

    @property
    def ui(self):
        """A Mercurial ui with the site hgrc loaded (cached once the hgrc exists: ``init`` writes it)."""
        if self._ui is not None:
            return self._ui
        from mercurial import error

        try:
            ui = config.read_site_ui(str(self.hgrc))
        except (error.ConfigError, error.ParseError) as e:
            raise SiteError(f"cannot read the site hgrc: {_one_line(e)}") from None
        if self.hgrc.is_file():
            self._ui = ui
        return ui

    def database_url(self, ui=None) -> str:
        """The database URL, from ``ui`` (a repository's, which includes the site hgrc) or the site's."""
        url = (ui or self.ui).config(b"hosting", b"database").decode("utf-8").strip()
        return url or f"sqlite:///{self.db_path}"

    def busy_timeout_ms(self, ui=None) -> int:
        return (ui or self.ui).configint(b"hosting", b"busy-timeout")

    def secret(self) -> bytes:
        return self.secret_path.read_bytes()

    # -- the database --------------------------------------------------------

    def database(self, ui=None):
        """This site's peewee database (``ui``: a repository's, which includes the site hgrc).

        Opened lazily (no connection until first used) and one per URL in a
        process, so that the daemon, the hooks it runs and the CLI share it.
        Nothing is bound: ``models.bound(site.database())`` binds the models to it.
        """
        from . import models

        key = (self.database_url(ui), self.busy_timeout_ms(ui))
        database = _DATABASES.get(key)
        if database is None:
            database = _DATABASES.setdefault(key, models.make_database(*key))
        return database

    def push_connection(self, ui):
        """This thread's plain connection for the push path (:mod:`hgext_hosting.pushdb`).

        SQLite: ``sqlite3``, without peewee.  Any other database: :meth:`database`.
        """
        from . import pushdb

        url = self.database_url(ui)
        if not url.startswith("sqlite:///"):
            return pushdb.PeeweeConnection(self.database(ui))
        return pushdb.connect(url, self.busy_timeout_ms(ui))

    def open(self) -> Site:
        """Check the site exists and its database has the current schema; binds nothing."""
        from . import pushdb

        if not self.exists():
            raise SiteError(f"no site at {self.root} (run 'hg-hosting --site DIR init')")
        try:
            pushdb.require_current_schema(pushdb.PeeweeConnection(self.database()))
        except pushdb.SchemaError as e:
            raise SiteError(str(e)) from None
        return self

    # -- the extension -------------------------------------------------------

    def hgrc_extension(self) -> tuple[bytes | None, str]:
        """The site hgrc's ``[extensions] hosting`` value (includes followed) and where it is set."""
        from mercurial import config as hgconfig
        from mercurial import error

        cfg = hgconfig.config()
        try:
            cfg.read(os.fsencode(self.hgrc))
        except (error.ConfigError, error.ParseError, OSError) as e:
            raise SiteError(f"cannot read the site hgrc: {_one_line(e)}") from None
        source = cfg.source(b"extensions", EXTENSION) or b""
        return cfg.get(b"extensions", EXTENSION), os.fsdecode(source)

    def ensure_hgrc(self) -> list[str]:
        """Make the existing site hgrc load the extension; return what was added.

        A hgrc without the key (an administrator wrote ``[hosting] database``
        first, or removed the line) gets :data:`EXTENSION_LINES` appended, the
        rest untouched.  One that disables it (``hosting = !``) is refused,
        naming the file and the line: that is an explicit choice to undo by hand.
        """
        value, source = self.hgrc_extension()
        if extension_enabled(value):
            return []
        if value is not None:
            raise SiteError(
                f"{source or self.hgrc} disables the hg-hosting extension ('hosting = {os.fsdecode(value)}');"
                " pushes would be neither checked nor recorded: set 'hosting =' under [extensions]"
            )
        text = self.hgrc.read_text(encoding="utf-8", errors="surrogateescape")
        with open(self.hgrc, "a", encoding="utf-8", errors="surrogateescape") as f:
            f.write(("" if not text or text.endswith("\n") else "\n") + EXTENSION_LINES)
        return [f"[extensions] hosting = in {self.hgrc}"]

    def included_by(self, repo_path: Path | str) -> bool:
        """Does the repository's ``.hg/hgrc`` include this site's hgrc (directly or not)?"""
        return os.path.realpath(self.hgrc) in _included_files(Path(os.fsdecode(repo_path)) / ".hg" / "hgrc")

    def enforcement_problems(self, repo_path: Path | str, environ: Mapping[str, str] | None = None) -> list[str]:
        """Why an ``hg`` started with ``environ`` in ``repo_path`` would not run the extension.

        An empty list when it would: the repository's ``.hg/hgrc`` includes the
        site hgrc, and the configuration such an ``hg`` reads (the files of
        ``HGRCPATH``, or the system's and the user's, then the repository's,
        with Mercurial's own reader and trust rules) enables
        ``[extensions] hosting``.  ``environ`` defaults to this process's.
        """
        from mercurial import error
        from mercurial import ui as uimod

        environ = os.environ if environ is None else environ
        repo_hgrc = Path(repo_path) / ".hg" / "hgrc"
        problems = []
        if "HGRCSKIPREPO" in environ:
            problems.append("HGRCSKIPREPO is set, so hg would not read the repository's .hg/hgrc")
        if not self.included_by(repo_path):
            problems.append(f".hg/hgrc does not include the site hgrc {self.hgrc}"
                            f" (add '%include {os.path.relpath(self.hgrc, repo_hgrc.parent)}' to it)")
        ui = uimod.ui()
        ui.setconfig(b"ui", b"report_untrusted", b"false", b"hosting")
        try:
            for f in _rc_files(environ):
                ui.readconfig(f, trust=True)
            ui.readconfig(os.fsencode(repo_hgrc), root=os.fsencode(repo_path))
        except (error.ConfigError, error.ParseError) as e:
            return [*problems, f"cannot read its configuration: {_one_line(e)}"]
        if not extension_enabled(ui.config(b"extensions", EXTENSION)):
            problems.append("the hg-hosting extension is not enabled"
                            " ('hg-hosting init' adds '[extensions] hosting =' to the site hgrc)")
        return problems

    # -- creating ----------------------------------------------------------

    def init(self) -> list[str]:
        """Create whatever part of the site is missing; return what was created."""
        from . import models

        created: list[str] = []
        if self.hgrc.exists():
            created += self.ensure_hgrc()  # refuses before anything is created
        for directory in (self.root, self.repos, self.tmp):
            if not directory.is_dir():
                directory.mkdir(mode=0o755 if directory != self.tmp else 0o700, parents=True)
                created.append(f"{directory}/")
        if not self.hgrc.exists():
            self.hgrc.write_text(SITE_HGRC_TEMPLATE)
            created.append(str(self.hgrc))
        if not self.secret_path.exists():
            write_private_file(self.secret_path, secrets.token_bytes(32))
            created.append(str(self.secret_path))
        if not self.host_key_path.exists():
            write_private_file(self.host_key_path, _new_host_key())
            created.append(str(self.host_key_path))
        new_db = self.database_url().startswith("sqlite") and not self.db_path.exists()
        if new_db:
            write_private_file(self.db_path, b"")
        with models.bound(self.database()):
            if models.migrate() and new_db:
                created.append(str(self.db_path))
        return created


def _one_line(e: Exception) -> str:
    """The first line of a Mercurial or OS error, for a one-line message."""
    from mercurial.utils import stringutil

    text = e.format() if hasattr(e, "format") else stringutil.forcebytestr(e)  # hg's: "... at FILE:LINE: ..."
    lines = os.fsdecode(text).splitlines()
    return lines[0][:200] if lines else type(e).__name__


def _new_host_key() -> bytes:
    """A new ed25519 private key in OpenSSH format, for the SSH server."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
