"""Site administration pages (``/-/admin...``) and the password reset page (``/-/reset/TOKEN``).

``/-/admin`` and ``/-/admin/users``
    Users, searched and paged; create one (name, email, site admin: a one-time
    reset link to set the password is shown), disable and enable, make or
    remove site admin, issue a reset link.
``/-/admin/teams``
    Create and remove teams (not while one owns repositories), add and remove members.
``/-/admin/site``
    Version, counts, disk used by the repositories, database engine.

Only site admins see these pages: anyone else, anonymous included, gets 404,
as for a page that does not exist.  Every change is a POST carrying the
session's CSRF token and calls one function of
:mod:`hgext_hosting.service.accounts`; a refusal is a message on the page with
the status of :func:`daemon.web.page_status`, what was typed kept, nothing
changed.  The pages share a left menu (``templates/admin_base.html``).

``/-/reset/TOKEN`` sets a new password with a reset link
(:func:`hgext_hosting.service.accounts.use_reset_link`; the form carries a
double-submit cookie like the login form).  A used, expired or unknown token
gets one and the same 404 page.
"""

from __future__ import annotations

import hmac
import importlib.metadata
import math
import secrets
import urllib.parse

from hgext_hosting import policy
from hgext_hosting.errors import Invalid, UserError
from hgext_hosting.service import accounts

from .web import HTTPError, Request, page_status, redirect

USERS_PER_PAGE = 50
RESET_CSRF_COOKIE = "hgh_reset_csrf"


def _version() -> str:
    try:
        return importlib.metadata.version("hg-hosting")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _hg_version() -> str:
    from mercurial import util

    return util.version().decode("ascii", "replace")


def human_bytes(n: int) -> str:
    """``1.5 MB``: bytes for people (powers of 1024, one decimal)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


class AdminPages:
    """The handlers; ``pages`` (:class:`daemon.pages.Pages`) renders and checks CSRF."""

    def __init__(self, pages):
        self.pages = pages

    @property
    def app(self):
        return self.pages.app

    # -- routing ---------------------------------------------------------------------

    def route(self, req: Request, start_response, rest: list[str]):
        """``/-/admin[/users|teams|site]``: site admins only, 404 for everyone else."""
        actor = self.app.actor(req)
        if not policy.may_administer_site(actor.subject):
            raise HTTPError(404, "not found")
        handler = {(): self.users, ("users",): self.users, ("teams",): self.teams,
                   ("site",): self.site}.get(tuple(rest))
        if handler is None:
            raise HTTPError(404, "not found")
        if req.method == "POST":
            self.pages.check_csrf(req)
        elif req.method not in ("GET", "HEAD"):
            raise HTTPError(405, "use the form")
        return handler(req, start_response, actor)

    def _render(self, req, start_response, template: str, section: str, status: int = 200, **context):
        return self.pages.render(req, start_response, template, status=status, section=section, **context)

    def reset_url(self, req: Request, token: str) -> str:
        """The link to give the user: ``[web] baseurl`` when set, else the address we were reached at."""
        base = self.pages.site.ui.config(b"web", b"baseurl")
        base = base.decode("utf-8", "replace").rstrip("/") if base else req.host_url
        return f"{base}/-/reset/{token}"

    # -- users -------------------------------------------------------------------------

    def users(self, req: Request, start_response, actor):
        message = error = link = None
        status = 200
        typed = {"name": "", "email": "", "admin": False}
        if req.method == "POST":
            action, name = req.field("action"), req.field("name").strip()
            try:
                message, link = self._user_action(req, actor, action, name)
            except UserError as e:
                error, status = str(e), page_status(e)
                if action == "create":
                    typed = {"name": req.field("name"), "email": req.field("email"),
                             "admin": req.field("admin") == "on"}
        search = (req.arg("q") or "").strip()
        page = req.page_arg()
        users, total = accounts.search_users(actor, search, page, USERS_PER_PAGE)
        pages = max(1, math.ceil(total / USERS_PER_PAGE))
        prefix = "?" + (urllib.parse.urlencode({"q": search}) + "&" if search else "")
        return self._render(req, start_response, "admin_users.html", "users", status=status,
                            title="Users · Administration", users=users, total=total, page=page, pages=pages,
                            q=search, query_prefix=prefix, message=message, error=error, link=link,
                            typed=typed, me=actor.user_id)

    def _user_action(self, req: Request, actor, action: str, name: str) -> tuple[str, str | None]:
        """Apply one users-page action; the message and a reset link to show once (or None)."""
        if action == "create":
            user = accounts.add_user(actor, name, email=req.field("email").strip(),
                                     admin=req.field("admin") == "on")
            link = self.reset_url(req, accounts.issue_reset_link(actor, user.name))
            return (f"created user {user.name}; give them this link to set their password"
                    " (shown once, valid 24 hours, single use)"), link
        if action == "disable":
            changed = accounts.disable_user(actor, name)
            return (f"disabled {name}: every login of theirs has ended" if changed
                    else f"{name} was already disabled"), None
        if action == "enable":
            return (f"enabled {name}" if accounts.enable_user(actor, name) else f"{name} was not disabled"), None
        if action in ("make-admin", "remove-admin"):
            admin = action == "make-admin"
            changed = accounts.set_site_admin(actor, name, admin)
            verb = "is now a site admin" if admin else "is no longer a site admin"
            return (f"{name} {verb}" if changed else f"{name} was unchanged"), None
        if action == "reset-link":
            link = self.reset_url(req, accounts.issue_reset_link(actor, name))
            return (f"a password reset link for {name} (shown once, valid 24 hours, single use;"
                    " earlier links stop working)"), link
        raise HTTPError(400, "unknown action")

    # -- teams ---------------------------------------------------------------------------

    def teams(self, req: Request, start_response, actor):
        message = error = None
        status = 200
        typed: dict[str, str] = {}
        if req.method == "POST":
            action = req.field("action")
            team, user = req.field("team").strip(), req.field("user").strip()
            try:
                message = self._team_action(actor, action, team, user)
            except UserError as e:
                error, status = str(e), page_status(e)
                typed = {"action": action, "team": req.field("team"), "user": req.field("user")}
        return self._render(req, start_response, "admin_teams.html", "teams", status=status,
                            title="Teams · Administration", teams=accounts.list_teams(actor),
                            message=message, error=error, typed=typed)

    @staticmethod
    def _team_action(actor, action: str, team: str, user: str) -> str:
        if action == "create":
            accounts.add_team(actor, team)
            return f"created team {team}"
        if action == "remove":
            accounts.remove_team(actor, team)
            return f"removed team {team}"
        if action == "add-member":
            accounts.add_member(actor, team, user)
            return f"added {user} to {team}"
        if action == "remove-member":
            accounts.remove_member(actor, team, user)
            return f"removed {user} from {team}"
        raise HTTPError(400, "unknown action")

    # -- the site -------------------------------------------------------------------------

    def site(self, req: Request, start_response, actor):
        if req.method == "POST":
            raise HTTPError(405, "this page changes nothing")
        summary = accounts.site_summary(actor, self.pages.site.repos)
        return self._render(req, start_response, "admin_site.html", "site", title="Site · Administration",
                            version=_version(), hg_version=_hg_version(), counts=summary["counts"], database=summary["database"],
                            disk=human_bytes(summary["disk_bytes"]), disk_bytes=summary["disk_bytes"])

    # -- the reset link ------------------------------------------------------------------------

    def reset(self, req: Request, start_response, token: str):
        """``/-/reset/TOKEN``: the form (GET), the new password (POST); gone links are one 404 page."""
        from .pages import _cookie

        secure = req.environ.get("wsgi.url_scheme") == "https"
        try:
            user = accounts.reset_link_user(token)
        except UserError as e:
            return self.pages.render(req, start_response, "reset.html", status=404, gone=str(e),
                                     title="Reset your password", path="/",
                                     headers=[("Cache-Control", "no-store")])
        error, status = None, 200
        if req.method == "POST":
            cookie_token = req.cookie(RESET_CSRF_COOKIE) or ""
            if not cookie_token or not hmac.compare_digest(cookie_token.encode(), req.field("csrf").encode()):
                raise HTTPError(403, "the form has expired; reload and try again")
            password = req.field("password")
            try:
                if password != req.field("confirm"):
                    raise Invalid("the passwords do not match", "confirm")
                accounts.use_reset_link(token, password)
            except UserError as e:
                error, status = str(e), page_status(e)
                if status == 404:
                    return self.pages.render(req, start_response, "reset.html", status=404, gone=str(e),
                                             title="Reset your password", path="/",
                                             headers=[("Cache-Control", "no-store")])
            else:
                return redirect(start_response, "/-/login", headers=[
                    _cookie(RESET_CSRF_COOKIE, "", secure=secure, max_age=0)])
        elif req.method not in ("GET", "HEAD"):
            raise HTTPError(405, "use the form")
        form_token = secrets.token_urlsafe(24)
        return self.pages.render(req, start_response, "reset.html", status=status, error=error,
                                 target=user.name, reset_csrf=form_token, title="Reset your password", path="/",
                                 headers=[_cookie(RESET_CSRF_COOKIE, form_token, secure=secure),
                                          ("Cache-Control", "no-store")])
