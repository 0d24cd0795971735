"""The WSGI application behind every URL except ``/healthz`` and ``/-/static``.

For each request, in order:

1. :class:`daemon.web.Request` validates the path and query (400 otherwise).
2. Authentication: HTTP Basic (password or token, :mod:`daemon.auth`), Bearer
   (a token), or the session cookie.  Bad credentials: 401; throttled: 429;
   malformed: 400.  A token's scope caps the request's subject
   (:func:`hgext_hosting.policy.with_scope`): a read-scoped token's push is
   refused like any push without ``write``.
3. Routing: ``/`` index, ``/-/login|logout|new|api`` pages, ``/api/v1/...`` the
   REST API (:mod:`daemon.api`), ``/OWNER`` owner page, ``/OWNER/NAME[/...]`` a
   repository.
4. For a repository, read permission first: a repository the requester may not
   read does not exist for them (401 anonymous, 404 authenticated, exactly as
   for a missing one).  A wire-protocol command that writes (``unbundle``,
   ``pushkey``) needs ``write``: 401 anonymous, 403 with the policy's reason
   otherwise.  The hosting pages (overview, pushlog, settings, fork,
   json-pushes) are ours; everything else goes to the repository's cached
   hgweb with ``REMOTE_USER`` set by us alone.  The extension's hooks then
   make the push decision (protected refs) inside the transaction.
"""

from __future__ import annotations

import os
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mercurial import hg, wireprotov1server
from mercurial.hgweb import common as hgwebcommon
from mercurial.hgweb import webcommands
from twisted.logger import Logger

from hgext_hosting import hooks, models, names, policy, pushdb
from hgext_hosting.models import Owner, Repository
from hgext_hosting.service.actors import Actor

from . import jsonpushes
from .account_pages import AccountPages
from .admin_pages import AdminPages
from .api import ApiFace
from .api import errors as api_errors
from .auth import SESSION_COOKIE, Authenticator, Malformed, Refusal
from .hgwebs import TOPBAR_KEY, HgwebCache
from .web import (
    SECURITY_HEADERS,
    HTTPError,
    Request,
    error_body,
    hgweb_headers,
    redirect,
    respond,
    respond_json,
)

log = Logger()

REALM = 'Basic realm="hg-hosting", charset="UTF-8"'
LEVEL_KEY = "hosting.level"


def hosting_permhook(hgweb, req, op) -> None:
    """hgweb permission hook: never let hgweb write for a requester without write.

    The daemon already decided; this is defense in depth for wire commands
    nested in ``batch``.  Only our daemon puts ``hosting.level`` in the environ.
    And no write reaches a repository object that the extension did not set up
    (its site hgrc lost ``[extensions] hosting``): it would be neither checked
    nor recorded.
    """
    if op in (b"push", b"upload"):
        level = req.rawenv.get(LEVEL_KEY.encode())
        if level not in (b"write", b"publish", b"admin", "write", "publish", "admin"):
            raise hgwebcommon.ErrorResponse(hgwebcommon.HTTP_FORBIDDEN, b"write access required")
        problem = hooks.enforcement_problem(hgweb.repo)
        if problem is not None:
            log.error("refused a push to {repo}: {problem}", repo=hgweb.reponame, problem=problem)
            raise hgwebcommon.ErrorResponse(
                hgwebcommon.HTTP_FORBIDDEN,
                b"%s does not run the hg-hosting extension; pushes are refused (ask an administrator"
                b" to run 'hg-hosting check')" % (hgweb.reponame or b"this repository"))


def setup_hgweb() -> None:
    """Install :func:`hosting_permhook` in hgweb (a process-wide list); once, whoever calls.

    Called by the daemon's factory (``daemon.service.make_app``), not at import:
    importing this module changes nothing in Mercurial.
    """
    if hosting_permhook not in hgwebcommon.permhooks:
        hgwebcommon.permhooks.append(hosting_permhook)


def wire_command_writes(req: Request) -> bool:
    """Does this request ask hgweb to write?  Unknown commands count as writes."""
    cmd = req.arg("cmd")
    if cmd is None:
        return req.method not in ("GET", "HEAD")
    entry = wireprotov1server.commands.get(cmd.encode("utf-8", "replace"))
    if entry is None:
        return cmd not in webcommands.__all__
    return entry.permission == b"push"


#: Request headers only Mercurial's HTTP peer sends.
HG_CLIENT_HEADERS = ("HTTP_X_HGARG_1", "HTTP_X_HGPROTO_1", "HTTP_X_HGPROTO_2")


def is_browser(req: Request) -> bool:
    """A browser asking for a page: it accepts ``text/html`` and is not an hg client.

    hg sends ``Accept: application/mercurial-0.1``, ``X-HgArg-N``/``X-HgProto-1``
    headers, a ``mercurial/proto-1.0`` User-Agent and ``?cmd=``: any of these is hg.
    """
    accept = req.header("Accept") or ""
    if "text/html" not in accept or "application/mercurial" in accept or req.arg("cmd") is not None:
        return False
    if any(name in req.environ for name in HG_CLIENT_HEADERS):
        return False
    return not (req.header("User-Agent") or "").startswith("mercurial/")


def login_url(req: Request) -> str:
    """``/-/login?next=`` the page asked for (path and query, percent-encoded)."""
    target = urllib.parse.quote("/" + "/".join(req.segments))
    if req.query_string:
        target += "?" + req.query_string
    return "/-/login?" + urllib.parse.urlencode({"next": target})


#: :func:`pushdb.find_repository`'s query, shaped to do the same work whether or not the
#: repository exists: always one row (NULLs when missing), the push table probed either way.
def with_safe_headers(start_response):
    """``start_response`` for hgweb: its headers pass through :func:`daemon.web.hgweb_headers`."""
    def start(status, headers, exc_info=None):
        return start_response(status, hgweb_headers(headers), exc_info)

    return start


class HostingApp:
    """Authenticate, route, authorize; hand repository requests to hgweb."""

    def __init__(self, site, authenticator: Authenticator, hgwebs: HgwebCache, baseui,
                 pages: Callable[[HostingApp], Any]):
        """``pages(app)`` builds the pages (:class:`daemon.pages.Pages`), which open
        repositories and know the requester through this app."""
        self.site = site
        self.auth = authenticator
        self.hgwebs = hgwebs
        self.baseui = baseui
        self.pages = pages(self)
        self.admin_pages = AdminPages(self.pages)
        self.account_pages = AccountPages(self.pages)
        #: Set when the daemon drains for a stop: /healthz answers 503.
        self.draining = False
        self.api = ApiFace(self)

    def __call__(self, environ, start_response):
        req = None
        try:
            req = Request(environ, self.auth.trusted_proxies)
            self._authenticate(req)
            return self._route(req, start_response)
        except HTTPError as e:
            return self.error(req, e, start_response, environ)
        except Exception:  # noqa: BLE001 - logged for the admin, one line for the user
            log.failure("unexpected failure on {path}", path=environ.get("PATH_INFO", "")[:200])
            return self.error(req, HTTPError(500, "internal error; see the server log"), start_response, environ)

    # -- errors --------------------------------------------------------------------

    def error(self, req: Request | None, e: HTTPError, start_response, environ: dict | None = None):
        if environ is not None and (environ.get("PATH_INFO") or "").startswith("/api/"):
            status, data, headers = api_errors.from_http_error(e)  # the API answers JSON, even a 400 here
            return respond(start_response, status, api_errors.body_bytes(data), "application/json",
                           headers=headers)
        browser = req is not None and is_browser(req)
        if e.status == 401 and browser and req.user is None and not req.header("Authorization"):
            # An anonymous browser is sent to the login form, not the Basic-auth dialog
            # (identically for a private repository and a missing one: both are 401 here).
            return redirect(start_response, login_url(req))
        body, ctype = error_body(e, browser)
        if browser:
            try:
                body = self.pages.error_page(req, e)
            except Exception:  # noqa: BLE001 - the plain error page then, never a second failure
                log.failure("rendering the {status} page", status=e.status)
        headers = list(e.headers)
        if e.status == 401 and not any(h[0] == "WWW-Authenticate" for h in headers):
            headers.append(("WWW-Authenticate", REALM))
        return respond(start_response, e.status, body, ctype, headers=headers, reason=e.reason)

    def hidden(self, req: Request) -> HTTPError:
        """What a requester sees for a repository they may not read, or that is missing."""
        if req.user is None:
            return HTTPError(401, "authorization required")
        return HTTPError(404, "not found")

    # -- authentication ---------------------------------------------------------------

    def _authenticate(self, req: Request) -> None:
        header = req.header("Authorization")
        if header:
            try:
                result = self.auth.verify(header, req.address)
            except Malformed as e:
                raise HTTPError(400, str(e)) from None
            if isinstance(result, Refusal):
                raise HTTPError(result.status, result.reason, self.auth.refusal_headers(result))
            req.user, req.scope = result.user, result.scope
            return
        cookie = req.cookie(SESSION_COOKIE)
        if cookie:
            session = self.auth.session(cookie, req.address)
            if session is not None:
                req.session = session
                req.user = session.user

    def health(self, req: Request, start_response):
        """``/healthz``: 200 when the database answers, 503 otherwise or while draining for a stop."""
        if self.draining:
            return respond_json(start_response, {"status": "draining"}, status=503)
        try:
            Repository.select().limit(1).count()
        except Exception:  # noqa: BLE001 - reported as unhealthy, details in the log
            log.failure("health check: the database does not answer")
            return respond_json(start_response, {"status": "error"}, status=503)
        return respond_json(start_response, {"status": "ok"})

    # -- routing ------------------------------------------------------------------------

    def _route(self, req: Request, start_response):
        seg = req.segments
        if not seg:
            return self.pages.index(req, start_response)
        if seg == ["healthz"]:
            return self.health(req, start_response)
        if seg[0] == "api":
            return self.api(req, start_response, seg[1:])
        if seg[0] == "-" and len(seg) > 1:
            answer = self.account_pages.route(req, start_response, seg[1:])
            if answer is not None:
                return answer
        if seg[0] == "-":
            if seg[1:] == ["admin", "audit"]:
                return self.pages.events.audit(req, start_response)
            if len(seg) >= 2 and seg[1] == "admin":
                return self.admin_pages.route(req, start_response, seg[2:])
            if len(seg) == 3 and seg[1] == "reset":
                return self.admin_pages.reset(req, start_response, seg[2])
            handler = {"login": self.pages.login, "logout": self.pages.logout,
                       "new": self.pages.new_repo, "api": self.api.document_page}.get(
                seg[1] if len(seg) == 2 else "")
            if handler is None:
                raise HTTPError(404, "not found")
            return handler(req, start_response)
        if len(seg) == 1:
            return self.pages.owner(req, start_response, seg[0])
        return self._repository(req, start_response, seg[0], seg[1], seg[2:])

    def lookup(self, req: Request, owner: str, name: str) -> tuple[pushdb.RepoRow, policy.RepoFacts, str]:
        """The repository and the requester's level, or the 'hidden' error.

        In plain SQL (:mod:`hgext_hosting.pushdb`): every hgweb request asks, and
        peewee's query building was a third of the daemon's own time on ``/log``.
        A missing repository runs the same queries as a private one the
        requester may not read (``bench/private_vs_missing.py`` measures it).
        """
        try:
            names.check_name(owner)
            names.check_name(name)
        except names.InvalidName:
            raise self.hidden(req) from None
        conn = models.connection()
        row = pushdb.find_repository_evenly(conn, owner, name)
        # A missing repository takes the same steps as a private one (grants, the
        # requester, the level): by time as by answer, it could be either.
        facts = pushdb.load_repo_facts(conn, row)
        level = policy.level_of(self.subject(req), facts)
        if row.id == 0 or level is None:
            raise self.hidden(req)
        return row, facts, level

    def actor(self, req: Request) -> Actor:
        """The service layer's actor for this request: the logged-in user or anonymous."""
        if not hasattr(req, "_actor"):
            user = req.user
            req._actor = Actor(self.subject(req), user.id if user is not None else None, req.address)
        return req._actor

    def subject(self, req: Request) -> policy.Subject | None:
        if req.user is None:
            return None
        if not hasattr(req, "_subject"):
            subject = pushdb.load_subject(models.connection(), req.user.name)
            req._subject = policy.with_scope(subject, req.scope) if subject is not None and req.scope else subject
        return req._subject

    def _repository(self, req: Request, start_response, owner: str, name: str, rest: list[str]):
        row, facts, level = self.lookup(req, owner, name)
        if req.arg("cmd") is None and (not rest or rest[0] in self.pages.repo_pages):
            page = rest[0] if rest else "overview"
            if rest[:2] == ["settings", "hooks"]:
                page = "settings/hooks"
            if page == "json-pushes":
                return jsonpushes.serve(req, start_response, row.id, lambda: self._open(row), rest[1:],
                                        self.repo_path(row) / ".hg" / "store" / "obsstore")
            model = Repository.select(Repository, Owner).join(Owner).where(Repository.id == row.id).get()
            return self.pages.repo_pages[page](req, start_response, model, facts, level)
        if wire_command_writes(req) and level not in ("write", "publish", "admin"):
            if req.user is None:
                raise HTTPError(401, "authorization required to push")
            raise HTTPError(403, policy.may(self.subject(req), "write", facts).reason)
        return self._hgweb(req, start_response, row, level, rest)

    def repo_path(self, row: pushdb.RepoRow | Repository) -> Path:
        return self.site.repo_path(row.owner_name, row.name)

    def _open(self, row: pushdb.RepoRow | Repository):
        return hg.repository(self.baseui.copy(), os.fsencode(self.repo_path(row)))

    def _hgweb(self, req: Request, start_response, row: pushdb.RepoRow, level: str, rest: list[str]):
        path = self.repo_path(row)
        if (path / ".hg" / "store" / "journal").exists():
            self._open(row)  # the extension's reposetup recovers an abandoned transaction
        app = self.hgwebs.get(row.id, path, row.full_name, row.description, row.settings_epoch)
        environ = dict(req.environ)
        environ.pop("REMOTE_USER", None)
        if req.user is not None:
            environ["REMOTE_USER"] = req.user.name
        environ["REMOTE_HOST"] = req.address
        environ[LEVEL_KEY] = level
        environ[TOPBAR_KEY] = lambda: self.pages.hgweb_topbar(req, row, level)
        environ["SCRIPT_NAME"] = f"/{row.owner_name}/{row.name}"
        environ["PATH_INFO"] = ("/" + "/".join(rest)).encode("utf-8").decode("latin-1") if rest else ""
        return self._guarded(req, app(environ, with_safe_headers(start_response)), start_response)

    def _guarded(self, req: Request, result, start_response):
        """hgweb's response, or 400 when hgweb fails before answering.

        hgweb computes a response before yielding anything, and raises on malformed
        wire-protocol arguments (``?cmd=known&nodes=zz``): that is the client's error.
        """
        iterator = iter(result)
        try:
            first = next(iterator)
        except StopIteration:
            return []
        except Exception as e:  # noqa: BLE001 - answered 400, logged in one line
            log.info("hgweb refused {path}: {kind}: {msg}", path=req.environ.get("PATH_INFO", "")[:200],
                     kind=type(e).__name__, msg=str(e)[:200])
            body, ctype = error_body(HTTPError(400, "malformed request"), False)
            start_response("400 malformed request", [("Content-Type", ctype), *SECURITY_HEADERS],
                           sys.exc_info())
            return [body.encode()]

        def rest():
            try:
                yield first
                yield from iterator
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()

        return rest()
