"""The hosting pages: each handler queries the models, then renders one template.

Pages: ``/`` (repositories the visitor may read, with search), ``/OWNER``,
``/OWNER/NAME`` (overview: description, clone URLs, recent pushes, README),
``/OWNER/NAME/pushlog`` (paged), ``/OWNER/NAME/pushloghtml`` (a range of
it, with json-pushes' parameters: the links Mozilla's tools print), ``/OWNER/NAME/settings`` (grants, protected
refs, visibility, description; repository admins only), ``/OWNER/NAME/fork``
and ``/-/new`` (logged-in users), ``/-/login`` and ``/-/logout``.

Every form that changes state carries the session's CSRF token (the login
form a double-submit cookie) and is refused without it.  Session cookies are
HttpOnly and SameSite=Lax.  Templates autoescape; the README is rendered by
:mod:`daemon.readme` (markdown-it with raw HTML disabled, under a size cap and
a CPU budget; other README names as escaped text).
"""

from __future__ import annotations

import collections
import hmac
import os
import secrets
import threading
import unicodedata
import urllib.parse
from importlib import resources

import jinja2
from mercurial.hgweb import webutil

from hgext_hosting import pushlog
from hgext_hosting.errors import Invalid, NotFound, UserError
from hgext_hosting.models import Owner, Push, Repository
from hgext_hosting.service import pushes as service_pushes
from hgext_hosting.service import repos

from . import jsonpushes
from . import readme as readmes
from .auth import SESSION_COOKIE, Refusal
from .web import STATUS_TEXT, HTTPError, Request, page_status, redirect, respond

LOGIN_CSRF_COOKIE = "hgh_login_csrf"
PUSHES_PER_PAGE = 20
#: The most pushes ``pushloghtml`` shows of a range.
RANGE_PUSHES = 500
REPOS_PER_PAGE = repos.MAX_PER_PAGE
#: Rendered READMEs kept in memory (one per repository and tip).
README_CACHE_SIZE = 256
README_NAMES = readmes.README_NAMES
#: Changesets a push log row lists ("and N more" after them); a one-push range lists up to
#: :data:`RANGE_CHANGESETS`.
CHANGESETS_PER_PUSH = 10
RANGE_CHANGESETS = 500
#: hgweb's pages (the first path segment after the repository) -> the tab they belong to.
HGWEB_TABS = {"log": "log", "shortlog": "log", "changelog": "log", "graph": "graph", "file": "file"}
#: Rendered top bars of hgweb's pages kept in memory.
TOPBAR_CACHE_SIZE = 2048
#: Changesets' summaries, authors and branches kept in memory (they never change).
CHANGESET_CACHE_SIZE = 20_000


def templates_dir() -> str:
    return str(resources.files("hg_hosting_templates"))


def make_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        auto_reload=False,  # installed files: no stat() per include (a restart picks up an upgrade)
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short"] = lambda node: (node or "")[:12]
    env.filters["datetime"] = lambda dt: dt.strftime("%Y-%m-%d %H:%M UTC") if dt else ""
    env.filters["isodate"] = lambda dt: dt.strftime("%Y-%m-%dT%H:%M:%SZ") if dt else ""
    return env


def _cookie(name: str, value: str, *, secure: bool, max_age: int | None = None) -> tuple[str, str]:
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Lax"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return ("Set-Cookie", "; ".join(parts))


#: Characters a redirect target keeps as they are (RFC 3986 path, query and fragment
#: characters, and ``%`` of an existing escape); anything else is percent-encoded.
_NEXT_KEEPS = "/?#[]@!$&'()*+,;=:-._~%"


def safe_next(target: str | None) -> str:
    """A local path to go back to after logging in (never another site), else ``/``.

    Browsers drop TABs and newlines from a URL and read a backslash as a slash,
    so ``/<TAB>/evil.example`` or ``/\\evil.example`` would leave the site: a
    target with any control, format or whitespace character (Unicode's too) or a
    backslash is refused, as is anything but a path starting with exactly one
    slash.  What remains is percent-encoded to ASCII, so that it fits the
    ``Location`` header (a non-Latin-1 character there used to drop the
    connection).
    """
    if not target or len(target) > 2048 or not target.startswith("/") or target.startswith("//"):
        return "/"
    if any(c == "\\" or c.isspace() or unicodedata.category(c).startswith("C") for c in target):
        return "/"
    encoded = urllib.parse.quote(target, safe=_NEXT_KEEPS)
    parts = urllib.parse.urlsplit(encoded)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or parts.path.startswith("//"):
        return "/"
    return encoded


def open_topics(repo) -> list[dict]:
    """The open topics of a repository: its visible drafts that carry a topic.

    ``[{"name", "heads": [{"node", "user", "summary"}], "authors": [...]}]``
    sorted by name; obsolete changesets are not visible, as in hg.  A topic
    is in the changeset's extra, so this needs no topic extension.
    """
    by_topic: dict[bytes, list[int]] = collections.defaultdict(list)
    for rev in repo.revs(b"draft()"):
        topic = repo[rev].extra().get(b"topic")
        if topic:
            by_topic[topic].append(rev)
    topics = []
    for name, revs in sorted(by_topic.items()):
        heads = [repo[r] for r in repo.revs(b"heads(%ld)", revs)]
        topics.append({
            "name": name.decode("utf-8", "replace"),
            "heads": [{"node": ctx.hex().decode()[:12], "user": ctx.user().decode("utf-8", "replace"),
                       "summary": ctx.description().decode("utf-8", "replace").split("\n")[0]}
                      for ctx in heads],
            "authors": sorted({repo[r].user().decode("utf-8", "replace") for r in revs}),
        })
    return topics


class Pages:
    """Page handlers; ``app`` is the :class:`daemon.app.HostingApp` they serve under."""

    def __init__(self, site, auth, app, ssh_address: str | None = None, events=None):
        """``app``: the :class:`daemon.app.HostingApp` these pages serve under (the requester's
        subject, repository paths, opened repositories); ``events(pages)``: builds the event
        pages (:class:`daemon.eventpages.EventPages`), whose repository pages and template
        globals are added here."""
        self.site = site
        self.auth = auth
        self.ssh_address = ssh_address
        self.env = make_environment()
        self._hgwebbar = self.env.get_template("_hgwebbar.html")
        self._topbars: collections.OrderedDict[tuple, bytes] = collections.OrderedDict()
        self._topbars_lock = threading.Lock()
        self.app = app
        self._readmes: collections.OrderedDict[tuple, tuple[str, str] | None] = collections.OrderedDict()
        self._readmes_lock = threading.Lock()
        self._changesets: collections.OrderedDict[tuple[int, str], dict] = collections.OrderedDict()
        self._changesets_lock = threading.Lock()
        self.repo_pages = {
            "overview": self.overview,
            "pushlog": self.pushlog,
            "settings": self.settings,
            "fork": self.fork,
            "json-pushes": None,  # served by daemon.jsonpushes through the app
            "pushloghtml": self.pushloghtml,
        }
        self.events = events(self) if events is not None else None
        if self.events is not None:
            self.repo_pages.update(self.events.repo_pages)
            self.env.globals.update(self.events.template_globals())

    # -- rendering ---------------------------------------------------------------

    def render(self, req: Request, start_response, template: str, status: int = 200,
               headers: list[tuple[str, str]] | None = None, **context) -> list[bytes]:
        context.setdefault("title", "hg-hosting")
        # ``path``: where "Log in" comes back to; a page whose URL holds a secret passes "/".
        context.setdefault("path", urllib.parse.quote("/" + "/".join(req.segments)))
        body = self.env.get_template(template).render(
            user=req.user,
            csrf=req.session.csrf if req.session is not None else "",
            **context,
        )
        return respond(start_response, status, body, "text/html; charset=utf-8", headers=headers)

    def hgweb_topbar(self, req: Request, row, level: str) -> bytes:
        """The top bar and the repository's heading and tabs on hgweb's pages (``{hostingbar}``).

        ``row`` is the daemon's :class:`pushdb.RepoRow`: no query is made here.  A
        bar depends only on the visitor, the repository, the level and the tab
        (and, for an anonymous visitor, the page the "Log in" link returns to), so
        rendered bars are kept (:data:`TOPBAR_CACHE_SIZE`): hgweb's pages pay a
        dictionary look-up, not a template rendering (``bench/pages_speed.py``).
        """
        path = urllib.parse.quote("/" + "/".join(req.segments))
        base = urllib.parse.quote(f"/{row.owner_name}/{row.name}")
        page = req.segments[2] if len(req.segments) > 2 else ""
        tab = HGWEB_TABS.get(page)
        csrf = req.session.csrf if req.session is not None else ""
        user = req.user
        key = (user.name if user is not None else None, csrf, row.owner_name, row.name, row.private, level,
               tab, path if user is None else None)
        with self._topbars_lock:
            bar = self._topbars.get(key)
        if bar is not None:
            return bar
        repo = {"owner": {"name": row.owner_name}, "name": row.name, "private": row.private}
        bar = self._hgwebbar.render(user=user, csrf=csrf, path=f"{base}/{tab}" if tab else path, login_next=path,
                                    repo=repo, level=level, hgweb=True).encode("utf-8")
        with self._topbars_lock:
            self._topbars[key] = bar
            while len(self._topbars) > TOPBAR_CACHE_SIZE:
                self._topbars.popitem(last=False)
        return bar

    def error_page(self, req: Request, error: HTTPError) -> str:
        """The HTML of an error for a browser: the site's look, the reason, a way back."""
        return self.env.get_template("error.html").render(
            user=req.user, csrf=req.session.csrf if req.session is not None else "",
            path=urllib.parse.quote("/" + "/".join(req.segments)), status=error.status,
            status_text=STATUS_TEXT.get(error.status, "Error"), reason=error.reason,
            title=f"{error.status} {STATUS_TEXT.get(error.status, 'Error')}",
            owner=req.segments[0] if req.segments and req.segments[0] != "-" else None,
        )

    def _secure(self, req: Request) -> bool:
        return req.environ.get("wsgi.url_scheme") == "https"

    def require_login(self, req: Request) -> None:
        if req.user is None:
            raise HTTPError(401, "log in first")

    def check_csrf(self, req: Request) -> None:
        """Refuse a state-changing POST without the session's CSRF token."""
        if req.method != "POST":
            raise HTTPError(405, "use the form")
        if req.session is None:
            raise HTTPError(403, "log in with the login form to change anything")
        token = req.field("csrf")
        if not token or not hmac.compare_digest(token.encode(), req.session.csrf.encode()):
            raise HTTPError(403, "the form has expired (CSRF token mismatch); reload and try again")

    # -- index and owners --------------------------------------------------------------

    def _listing(self, req: Request, owner: Owner | None = None) -> dict:
        """One page of the repositories the visitor may read (search ``q``, page ``page``) for a template."""
        found = repos.listing(self.app.actor(req), search=req.arg("q") or "", owner=owner,
                              page=req.page_arg(), per_page=REPOS_PER_PAGE)
        return {
            "repos": [{"row": row, "last_push": last} for row, last in found.repos],
            "page": found.page, "pages": found.pages, "total": found.total, "q": found.search,
            "query_prefix": "?" + (urllib.parse.urlencode({"q": found.search}) + "&" if found.search else ""),
        }

    def index(self, req: Request, start_response):
        return self.render(req, start_response, "index.html", title="Repositories", **self._listing(req))

    def owner(self, req: Request, start_response, owner_name: str):
        try:
            owner = repos.find_owner(owner_name)
        except NotFound:
            raise HTTPError(404, "not found") from None
        members = repos.team_members(owner) if owner.is_team else []
        return self.render(req, start_response, "owner.html", owner=owner, members=members,
                           title=owner.name, **self._listing(req, owner=owner))

    # -- a repository ------------------------------------------------------------------

    def clone_urls(self, req: Request, row: Repository) -> dict[str, str]:
        urls = {"HTTP": f"{req.host_url}/{row.owner.name}/{row.name}"}
        if self.ssh_address:
            host, _, port = self.ssh_address.rpartition(":")
            if host in ("0.0.0.0", "::", ""):
                host = urllib.parse.urlsplit(req.host_url).hostname or "localhost"
            urls["SSH"] = f"ssh://hg@{host}:{port}/{row.owner.name}/{row.name}"
        return urls

    def _readme(self, row: Repository) -> tuple[str, str] | None:
        """The tip's README as ``(file name, HTML)``, rendered once per tip.

        Cached by the changelog's size and mtime (every new changeset appends to
        it), so an overview neither opens the repository nor renders Markdown
        again until something is pushed.
        """
        try:
            st = os.stat(self.app.repo_path(row) / ".hg" / "store" / "00changelog.i")
        except OSError:
            return None
        key = (row.id, st.st_size, st.st_mtime_ns)
        with self._readmes_lock:
            if key in self._readmes:
                self._readmes.move_to_end(key)
                return self._readmes[key]
        readme = self._render_readme(row)
        with self._readmes_lock:
            self._readmes[key] = readme
            while len(self._readmes) > README_CACHE_SIZE:
                self._readmes.popitem(last=False)
        return readme

    def _render_readme(self, row: Repository) -> tuple[str, str] | None:
        repo = self.app._open(row)
        try:
            ctx = repo[b"tip"]
        except Exception:  # noqa: BLE001 - an empty or odd repository has no README
            return None
        if ctx.rev() < 0:
            return None
        files = {f.lower(): f for f in ctx.manifest().keys() if b"/" not in f}
        for candidate in README_NAMES:
            actual = files.get(candidate.lower())
            if actual is None:
                continue
            return actual.decode("utf-8", "replace"), readmes.render(actual, ctx[actual].data())
        return None

    def archive_suffixes(self) -> list[str]:
        """The archive file suffixes (``.zip``...) hgweb serves, by the rule hgweb applies."""
        ui = self.app.baseui
        allowed = ui.configlist(b"web", b"allow-archive")
        return [spec[2].decode() for kind, spec in webutil.archivespecs.items()
                if kind in allowed or ui.configbool(b"web", b"allow" + kind)]

    def _changeset_info(self, row, pushes: list, per_push: int) -> dict[str, dict]:
        """``{node: {"summary", "user", "branch"}}`` of the first ``per_push`` changesets of each push.

        A changeset never changes, so what was read once is kept (:data:`CHANGESET_CACHE_SIZE`
        entries); the repository is opened once per page, and only when some
        changeset was not read before.  A node the repository no longer has
        (stripped) is left out: the row shows its hash alone.
        """
        wanted = [node for push in pushes for node in push.changesets[:per_push]]
        found: dict[str, dict] = {}
        missing = []
        with self._changesets_lock:
            for node in wanted:
                info = self._changesets.get((row.id, node))
                if info is None:
                    missing.append(node)
                elif info:  # {}: known to be missing from the repository
                    found[node] = info
        if not missing:
            return found
        repo = self.app._open(row).unfiltered()
        read: dict[str, dict] = {}
        for node in missing:
            try:
                ctx = repo[bytes.fromhex(node)]
            except Exception:  # noqa: BLE001 - a stripped or malformed node: the hash alone
                read[node] = {}  # remembered, so that a page does not open the repository each time
                continue
            read[node] = {
                "summary": ctx.description().decode("utf-8", "replace").split("\n")[0][:200],
                "user": ctx.user().decode("utf-8", "replace").split(" <")[0][:80],
                "branch": ctx.branch().decode("utf-8", "replace"),
            }
        found.update((node, info) for node, info in read.items() if info)
        with self._changesets_lock:
            for node, info in read.items():
                self._changesets[(row.id, node)] = info
            while len(self._changesets) > CHANGESET_CACHE_SIZE:
                self._changesets.popitem(last=False)
        return found

    def _fork_source(self, req: Request, row: Repository) -> Repository | None:
        """The repository ``row`` was forked from, if the visitor may read it."""
        if row.forked_from_id is None:
            return None
        source = (Repository.select(Repository, Owner).join(Owner)
                  .where(Repository.id == row.forked_from_id).first())
        if source is None or repos.level(self.app.actor(req), source) is None:
            return None
        return source

    def _is_empty(self, row: Repository) -> bool:
        try:
            return os.stat(self.app.repo_path(row) / ".hg" / "store" / "00changelog.i").st_size == 0
        except OSError:
            return True

    def overview(self, req: Request, start_response, row, facts, level):
        pushes = pushlog.recent_pushes(row, 5)
        empty = not pushes and self._is_empty(row)
        readme = None if empty else self._readme(row)
        topics = [] if row.publishing or empty else open_topics(self.app._open(row))
        return self.render(req, start_response, "repo.html", repo=row, level=level, pushes=pushes,
                           clone_urls=self.clone_urls(req, row), readme=readme, title=row.full_name,
                           archives=self.archive_suffixes(), topics=topics, empty=empty,
                           forked_from=self._fork_source(req, row),
                           changesets=self._changeset_info(row, pushes, CHANGESETS_PER_PUSH),
                           per_push=CHANGESETS_PER_PUSH)

    def pushlog(self, req: Request, start_response, row, facts, level):
        """The push log, newest first, by pages of :data:`PUSHES_PER_PAGE` (:func:`service.pushes.page`)."""
        found = service_pushes.page(row, req.page_arg(), PUSHES_PER_PAGE)
        return self.render(req, start_response, "pushlog.html", repo=row, level=level, pushes=found.pushes,
                           page=found.page, pages=found.pages, total=found.total,
                           changesets=self._changeset_info(row, found.pushes, CHANGESETS_PER_PUSH),
                           per_push=CHANGESETS_PER_PUSH, title=f"{row.full_name}: push log")

    def pushloghtml(self, req: Request, start_response, row, facts, level):
        """``pushloghtml?fromchange=A&tochange=B`` (Mozilla's links): the pushes of a range.

        Takes json-pushes' parameters (:func:`daemon.jsonpushes.range_filter`); at most
        :data:`RANGE_PUSHES` pushes, the oldest of the range first; without a start
        bound, ``user`` or ``changeset``, the push log's first page.
        """
        revisions = jsonpushes.Revisions(lambda: self.app._open(row))
        where, selects = jsonpushes.range_filter(req, row.id, revisions)
        if not selects:
            return self.pushlog(req, start_response, row, facts, level)
        rows = pushlog.views(Push.select().where(where).order_by(Push.push_id).limit(RANGE_PUSHES + 1))
        more = len(rows) > RANGE_PUSHES
        pushes = list(reversed(rows[:RANGE_PUSHES]))
        total = pushlog.last_push_id(row)
        per_push = CHANGESETS_PER_PUSH if len(pushes) > 1 else RANGE_CHANGESETS
        return self.render(req, start_response, "pushlog.html", repo=row, level=level, pushes=pushes,
                           page=1, pages=1, total=total, ranged=True, more=more, per_push=per_push,
                           changesets=self._changeset_info(row, pushes, per_push),
                           title=f"{row.full_name}: push log")

    def settings(self, req: Request, start_response, row, facts, level):
        """The repository's settings (admin level): grants, protected refs, visibility, description."""
        self.require_login(req)
        actor = self.app.actor(req)
        try:
            repos.require(actor, row, "admin")
        except UserError as e:
            raise HTTPError(page_status(e), str(e)) from None
        message = error = None
        status = 200
        if req.method == "POST":
            self.check_csrf(req)
            try:
                moved = self._apply_lifecycle(req, actor, row)
                if moved is not None:
                    return redirect(start_response, moved)
                message = self._apply_setting(req, actor, row.full_name)
                row = Repository.get_by_id(row.id)
            except UserError as e:
                error, status = str(e), page_status(e)
        owners = [o for o in repos.owner_choices(actor) if o.lower() != row.owner.name.lower()]
        return self.render(
            req, start_response, "settings.html", status=status, repo=row, level=level,
            grants=repos.grants(actor, row.full_name), protected=repos.protected(actor, row.full_name),
            message=message, error=error, title=f"{row.full_name}: settings", transfer_owners=owners,
            form=req.form if req.method == "POST" else {},
        )

    def _apply_lifecycle(self, req: Request, actor, row: Repository) -> str | None:
        """Rename, transfer or delete (the Danger zone): where to go next, or None for other actions.

        The service layer checks everything (admin level, the new owner's create
        right, a free name); the page only asks for the full name before a delete.
        """
        action = req.field("action")
        if action in ("rename", "transfer"):
            owner = row.owner.name if action == "rename" else req.field("owner").strip()
            name = req.field("name").strip() if action == "rename" else row.name
            moved = repos.rename(self.site, actor, row.full_name, f"{owner}/{name}")
            # After a transfer the user may no longer administer it (a team's member): its overview.
            where = f"/{urllib.parse.quote(moved.owner.name)}/{urllib.parse.quote(moved.name)}"
            return where + "/settings" if action == "rename" else where
        if action == "delete":
            if req.field("confirm").strip() != row.full_name:
                raise Invalid(f"type {row.full_name} to confirm the deletion; nothing was deleted", "confirm")
            repos.remove(self.site, actor, row.full_name)
            return f"/{urllib.parse.quote(row.owner.name)}"
        return None

    def _apply_setting(self, req: Request, actor, full: str) -> str:
        """Apply the settings form's ``action``; the message to show, or a UserError."""
        action = req.field("action")
        if action == "grant":
            subject, level = req.field("subject").strip(), req.field("level")
            repos.grant(actor, full, subject, level)
            return f"granted {level} to {subject}"
        if action == "revoke":
            repos.revoke(actor, full, req.field("subject"))
            return f"revoked the grant of {req.field('subject').strip()}"
        if action == "protect":
            repos.protect(actor, full, req.field("ref"), req.field("allow"))
            return f"protected {req.field('ref').strip()}"
        if action == "unprotect":
            repos.unprotect(actor, full, req.field("ref"))
            return f"unprotected {req.field('ref').strip()}"
        if action == "general":
            publishing = {"true": True, "false": False}.get(req.field("publishing"))  # absent: unchanged
            repos.update(self.site, actor, full, description=req.field("description"), publishing=publishing)
            return "saved"
        if action == "visibility":
            private = {"private": True, "public": False}.get(req.field("visibility"))
            if private is None:
                raise Invalid("choose private or public", "visibility")
            repos.update(self.site, actor, full, private=private)
            return f"{full} is now {'private' if private else 'public'}"
        if action == "settings":  # the former one-form page (description, private, publishing)
            publishing = {"true": True, "false": False}.get(req.field("publishing"))  # absent: unchanged
            repos.update(self.site, actor, full, private=req.field("private") == "on",
                         description=req.field("description"), publishing=publishing)
            return "saved"
        raise Invalid("unknown action", "action")

    def fork(self, req: Request, start_response, row, facts, level):
        """The fork form: the visitor's own namespace and the source's name proposed."""
        def make(actor, target: str) -> Repository:
            return repos.fork(self.site, actor, row.full_name, target)

        return self._new_repository_form(req, start_response, "fork.html", make, repo=row,
                                         level=level, title=f"Fork {row.full_name}")

    def _new_repository_form(self, req: Request, start_response, template: str, make, **context):
        """GET: the form; POST: ``make(actor, "OWNER/NAME")``, then to the new repository."""
        self.require_login(req)
        actor = self.app.actor(req)
        error, status = None, 200
        if req.method == "POST":
            self.check_csrf(req)
            try:
                repo = make(actor, f"{req.field('owner')}/{req.field('name').strip()}")
                return redirect(start_response, f"/{repo.owner.name}/{repo.name}")
            except UserError as e:
                error, status = str(e), page_status(e)
        typed = {"owner": req.field("owner"), "name": req.field("name")} if req.method == "POST" else {}
        return self.render(req, start_response, template, status=status, owners=repos.owner_choices(actor),
                           error=error, typed=typed, **context)

    def new_repo(self, req: Request, start_response):
        def make(actor, target: str) -> Repository:
            return repos.create(self.site, actor, target, private=req.field("private") == "on",
                                description=req.field("description"))

        return self._new_repository_form(req, start_response, "new.html", make, title="New repository")

    # -- logging in and out ----------------------------------------------------------------

    def login(self, req: Request, start_response):
        target = safe_next(req.arg("next"))
        if req.method == "POST":
            cookie_token = req.cookie(LOGIN_CSRF_COOKIE) or ""
            form_token = req.field("csrf")
            if not cookie_token or not hmac.compare_digest(cookie_token.encode(), form_token.encode()):
                raise HTTPError(403, "the login form has expired; reload and try again")
            result = self.auth.password_login(req.field("user").strip(), req.field("password"), req.address)
            if not isinstance(result, Refusal):
                cookie = self.auth.new_session(result, req.address)
                return redirect(start_response, safe_next(req.field("next")), headers=[
                    _cookie(SESSION_COOKIE, cookie, secure=self._secure(req), max_age=14 * 86400),
                    _cookie(LOGIN_CSRF_COOKIE, "", secure=self._secure(req), max_age=0),
                ])
            status, error = result.status, result.reason
            extra = self.auth.refusal_headers(result)
        else:
            status, error, extra = 200, None, []
        token = secrets.token_urlsafe(24)
        return self.render(req, start_response, "login.html", status=status, error=error, next=target,
                           login_csrf=token, title="Log in",
                           headers=[_cookie(LOGIN_CSRF_COOKIE, token, secure=self._secure(req)), *extra])

    def logout(self, req: Request, start_response):
        if req.session is not None:
            self.check_csrf(req)
            self.auth.end_session(req.session)
        return redirect(start_response, "/", headers=[
            _cookie(SESSION_COOKIE, "", secure=self._secure(req), max_age=0)])
