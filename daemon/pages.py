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
from hgext_hosting.errors import NotFound, UserError
from hgext_hosting.models import Push, Repository
from hgext_hosting.service import pushes as service_pushes
from hgext_hosting.service import repos

from . import jsonpushes
from . import readme as readmes
from .auth import SESSION_COOKIE, Refusal
from .web import HTTPError, Request, page_status, redirect, respond

LOGIN_CSRF_COOKIE = "hgh_login_csrf"
PUSHES_PER_PAGE = 20
#: The most pushes ``pushloghtml`` shows of a range.
RANGE_PUSHES = 500
REPOS_PER_PAGE = repos.MAX_PER_PAGE
#: Rendered READMEs kept in memory (one per repository and tip).
README_CACHE_SIZE = 256
README_NAMES = readmes.README_NAMES


def templates_dir() -> str:
    return str(resources.files("hg_hosting_templates"))


def make_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short"] = lambda node: (node or "")[:12]
    env.filters["datetime"] = lambda dt: dt.strftime("%Y-%m-%d %H:%M UTC") if dt else ""
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

    def __init__(self, site, auth, ssh_address: str | None = None):
        self.site = site
        self.auth = auth
        self.ssh_address = ssh_address
        self.env = make_environment()
        self.app = None
        self._readmes: collections.OrderedDict[tuple, tuple[str, str] | None] = collections.OrderedDict()
        self._readmes_lock = threading.Lock()
        self.repo_pages = {
            "overview": self.overview,
            "pushlog": self.pushlog,
            "settings": self.settings,
            "fork": self.fork,
            "json-pushes": None,  # served by daemon.jsonpushes through the app
            "pushloghtml": self.pushloghtml,
        }

    # -- rendering ---------------------------------------------------------------

    def render(self, req: Request, start_response, template: str, status: int = 200,
               headers: list[tuple[str, str]] | None = None, **context) -> list[bytes]:
        context.setdefault("title", "hg-hosting")
        body = self.env.get_template(template).render(
            user=req.user,
            csrf=req.session.csrf if req.session is not None else "",
            path=urllib.parse.quote("/" + "/".join(req.segments)),
            **context,
        )
        return respond(start_response, status, body, "text/html; charset=utf-8", headers=headers)

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

    def _listing(self, req: Request, owner: str | None = None) -> dict:
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
                           title=owner.name, **self._listing(req, owner=owner.name))

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

    def overview(self, req: Request, start_response, row, facts, level):
        pushes = pushlog.recent_pushes(row, 5)
        readme = self._readme(row)
        topics = [] if row.publishing else open_topics(self.app._open(row))
        return self.render(req, start_response, "repo.html", repo=row, level=level, pushes=pushes,
                           clone_urls=self.clone_urls(req, row), readme=readme, title=row.full_name,
                           archives=self.archive_suffixes(), topics=topics)

    def pushlog(self, req: Request, start_response, row, facts, level):
        """The push log, newest first, by pages of :data:`PUSHES_PER_PAGE` (:func:`service.pushes.page`)."""
        found = service_pushes.page(row, req.page_arg(), PUSHES_PER_PAGE)
        return self.render(req, start_response, "pushlog.html", repo=row, level=level, pushes=found.pushes,
                           page=found.page, pages=found.pages, total=found.total,
                           title=f"{row.full_name}: push log")

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
        rows = list(Push.select().where(where).order_by(Push.push_id).limit(RANGE_PUSHES + 1))
        more = len(rows) > RANGE_PUSHES
        pushes = list(reversed(pushlog.views(rows[:RANGE_PUSHES])))
        total = pushlog.last_push_id(row)
        return self.render(req, start_response, "pushlog.html", repo=row, level=level, pushes=pushes,
                           page=1, pages=1, total=total, ranged=True, more=more,
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
                message = self._apply_setting(req, actor, row.full_name)
                row = Repository.get_by_id(row.id)
            except UserError as e:
                error, status = str(e), page_status(e)
        return self.render(
            req, start_response, "settings.html", status=status, repo=row, level=level,
            grants=repos.grants(actor, row.full_name), protected=repos.protected(actor, row.full_name),
            message=message, error=error, title=f"{row.full_name}: settings",
        )

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
        if action == "settings":
            publishing = {"true": True, "false": False}.get(req.field("publishing"))  # absent: unchanged
            repos.update(self.site, actor, full, private=req.field("private") == "on",
                         description=req.field("description"), publishing=publishing)
            return "saved"
        raise HTTPError(400, "unknown action")

    def fork(self, req: Request, start_response, row, facts, level):
        def make(actor, target: str) -> Repository:
            return repos.fork(self.site, actor, row.full_name, target)

        return self._new_repository_form(req, start_response, "fork.html", make, repo=row,
                                         title=f"Fork {row.full_name}")

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
        return self.render(req, start_response, template, status=status, owners=repos.owner_choices(actor),
                           error=error, **context)

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
                cookie = self.auth.new_session(result)
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
