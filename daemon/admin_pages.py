"""The password reset page (``/-/reset/TOKEN``).

``/-/reset/TOKEN`` sets a new password with a reset link
(:func:`hgext_hosting.service.accounts.use_reset_link`; the form carries a
double-submit cookie like the login form).  A used, expired or unknown token
gets one and the same 404 page.  The page never links back to its own URL
(the "Log in" link comes back to ``/``): the token is a secret.
"""

from __future__ import annotations

import hmac
import secrets

from hgext_hosting.errors import Invalid, UserError
from hgext_hosting.service import accounts

from .web import HTTPError, Request, page_status, redirect

RESET_CSRF_COOKIE = "hgh_reset_csrf"


class AdminPages:
    """The handlers; ``pages`` (:class:`daemon.pages.Pages`) renders."""

    def __init__(self, pages):
        self.pages = pages

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
