"""The signed-in user's own pages, sign-up and the forgotten password.

- ``/-/settings`` (email, password), ``/-/settings/keys`` (SSH keys),
  ``/-/settings/tokens`` (API tokens, each shown once on the answer to its
  creation) and ``/-/settings/sessions`` (browser sessions): logged-in users
  only, an anonymous visitor is sent to ``/-/login?next=...``.  Every POST
  carries the session's CSRF token.
- ``/-/join/TOKEN`` (``[hosting] registration = invite``: a site admin's
  single-use invitation), ``/-/register`` (``registration = open``; with mail
  configured the address is checked first: ``/-/verify/TOKEN``), both throttled
  per address (:meth:`daemon.auth.Throttle.allow_signup`); a closed sign-up is 404.
- ``/-/forgot``: mails a password-reset link when mail is configured
  (:mod:`hgext_hosting.mail`); the answer is the same whether or not the
  address belongs to an account, and comes before the mail is sent.

Each handler parses the form, calls one function of
:mod:`hgext_hosting.service.accounts` with the request's actor and renders:
a refusal is a message on the page with what the user typed (never a
password), the status of :func:`daemon.web.page_status`, and nothing changed.
The anonymous forms carry a double-submit CSRF cookie, as the login form does.
"""

from __future__ import annotations

import hmac
import re
import secrets
import urllib.parse

from twisted.internet import reactor, threads
from twisted.logger import Logger
from twisted.web import http

from hgext_hosting import credentials, mail
from hgext_hosting.errors import Invalid, NotFound, Throttled, UserError
from hgext_hosting.models import Owner, utcnow
from hgext_hosting.service import accounts

from .auth import SESSION_COOKIE, SESSION_DAYS
from .pages import LOGIN_CSRF_COOKIE, Pages, _cookie
from .web import HTTPError, Request, page_status, redirect

log = Logger()

#: The settings pages: URL tail -> (template, menu label).
SETTINGS_TABS = {
    "": ("settings_profile.html", "Profile"),
    "keys": ("settings_keys.html", "SSH keys"),
    "tokens": ("settings_tokens.html", "API tokens"),
    "sessions": ("settings_sessions.html", "Sessions"),
}
#: No cache may keep a page that shows a secret (a new token) or an account's details.
NO_STORE = [("Cache-Control", "no-store")]


#: The single-use links whose token is in the path: the access log shows them redacted.
_SECRET_PATHS = re.compile(r"(/-/(?:join|verify|reset)/)[^ \"?]+")


def redacted_log_formatter(timestamp: str, request) -> str:
    """Twisted's combined access-log line, with the token of a sign-up, address-check
    or reset link (in the request line or the referrer) replaced by ``REDACTED``."""
    return _SECRET_PATHS.sub(r"\1REDACTED", http.combinedLogFormatter(timestamp, request))


def mail_later(site, to: str, subject: str, body: str) -> None:
    """Send a mail off the reactor thread and off the request: its outcome changes no answer."""
    def start():
        d = threads.deferToThread(mail.send, site, to, subject, body)
        d.addErrback(lambda f: log.error("mail to {to} failed: {why}", to=to, why=f.getErrorMessage()))

    reactor.callFromThread(start)


class AccountPages:
    """The account handlers; ``pages`` is the site's :class:`daemon.pages.Pages` (rendering,
    CSRF, the app and its authenticator)."""

    def __init__(self, pages: Pages):
        self.pages = pages
        if self.registration() not in accounts.REGISTRATION_MODES:
            raise UserError(f"[hosting] registration must be closed, invite or open, not {self.registration()!r}")
        # What the login page offers besides logging in (the site's hgrc is read once per daemon).
        pages.env.globals.update(signup_open=self.registration() == "open",
                                 forgot_enabled=self.mail_settings() is not None)

    @property
    def site(self):
        return self.pages.site

    @property
    def auth(self):
        return self.pages.auth

    def registration(self) -> str:
        return self.site.ui.config(b"hosting", b"registration").decode("utf-8", "replace").strip().lower()

    def mail_settings(self) -> mail.MailSettings | None:
        return mail.settings(self.site.ui)

    def route(self, req: Request, start_response, rest: list[str]):
        """``/-/settings[/TAB]``, ``/-/join/TOKEN``, ``/-/register``, ``/-/verify/TOKEN``, ``/-/forgot``
        (``rest`` is the path after ``/-/``); None when the path is none of these."""
        head, tail = rest[0], rest[1:]
        if head == "settings" and len(tail) <= 1:
            tab = tail[0] if tail else ""
            if tab not in SETTINGS_TABS:
                raise HTTPError(404, "not found")
            return self.settings(req, start_response, tab)
        if head == "join" and len(tail) == 1:
            return self.join(req, start_response, tail[0])
        if head == "verify" and len(tail) == 1:
            return self.verify(req, start_response, tail[0])
        if head == "register" and not tail:
            return self.register(req, start_response)
        if head == "forgot" and not tail:
            return self.forgot(req, start_response)
        return None

    # -- /-/settings ------------------------------------------------------------------------

    def settings(self, req: Request, start_response, tab: str):
        if req.user is None or req.session is None:
            here = urllib.parse.quote("/-/settings" + (f"/{tab}" if tab else ""))
            return redirect(start_response, "/-/login?" + urllib.parse.urlencode({"next": here}))
        actor = self.pages.app.actor(req)
        context: dict = {"message": None, "error": None, "form": {}}
        status = 200
        if req.method == "POST":
            self.pages.check_csrf(req)
            context["form"] = {k: v[-1] for k, v in req.form.items()
                               if k not in ("csrf", "current", "password", "confirm")}
            try:
                context["message"] = getattr(self, f"_post_{tab or 'profile'}")(req, actor, context)
                context["form"] = {}
            except UserError as e:
                context["error"], status = str(e), page_status(e)
                context["error_field"] = getattr(e, "field", None)
        name = req.user.name
        user = Owner.get_by_id(req.user.id)
        if tab == "keys":
            context["keys"] = accounts.list_ssh_keys(actor, name)
        elif tab == "tokens":
            context["tokens"] = accounts.list_tokens(actor, name)
            context["now"] = utcnow()
        elif tab == "sessions":
            # this session first, then the most recently seen
            context["sessions"] = sorted(accounts.list_sessions(actor, name), key=lambda s: s.id != req.session.id)
            context["current_session"] = req.session.id
        template, label = SETTINGS_TABS[tab]
        return self.pages.render(req, start_response, template, status=status, headers=NO_STORE,
                                 account=user, tab=tab, tabs=SETTINGS_TABS, title=f"Settings: {label}",
                                 **context)

    def _post_profile(self, req: Request, actor, context: dict) -> str:
        action = req.field("action")
        if action == "email":
            accounts.set_email(actor, req.user.name, req.field("email"))
            return "Your email address was saved."
        if action == "password":
            if req.field("password") != req.field("confirm"):
                raise Invalid("the new password and its confirmation differ", "confirm")
            credentials.check_new_password(req.field("password"))  # a bad new one is no guess
            # The current password is a login's secret: its guesses count with the login throttle's.
            attempt = self.auth.throttle.reserve(req.user.name, req.address)
            if attempt is None:
                raise Throttled("too many wrong passwords; try again later", self.auth.retry_after)
            accounts.change_own_password(actor, req.field("current"), req.field("password"),
                                         keep_session=req.session.id)
            self.auth.throttle.succeeded(attempt)
            return "Your password was changed; every other session of yours has ended."
        raise HTTPError(400, "unknown action")

    def _post_keys(self, req: Request, actor, context: dict) -> str:
        action = req.field("action")
        if action == "add":
            key = accounts.add_ssh_key(actor, req.user.name, req.field("key"))
            return f"Added the key {key.fingerprint}."
        if action == "remove":
            accounts.remove_ssh_key(actor, req.user.name, req.field("fingerprint"))
            return f"Removed the key {req.field('fingerprint').strip()}."
        raise HTTPError(400, "unknown action")

    def _post_tokens(self, req: Request, actor, context: dict) -> str:
        action = req.field("action")
        if action == "create":
            label = req.field("label").strip()
            expires = accounts.parse_expiry(req.field("expires"))
            context["new_token"] = accounts.create_token(actor, req.user.name, label or None, expires=expires)
            return "Your new token is below. Copy it now: it is shown only this once."
        if action == "revoke":
            accounts.revoke_token(actor, req.user.name, req.field("label"))
            return f"Revoked the token {req.field('label')}."
        raise HTTPError(400, "unknown action")

    def _post_sessions(self, req: Request, actor, context: dict) -> str:
        action = req.field("action")
        if action == "end":
            try:
                session_id = int(req.field("session"))
            except ValueError:
                raise NotFound("no such session (it has ended already)") from None
            if session_id == req.session.id:
                raise Invalid("this is the session you are using: log out instead", "session")
            accounts.end_session(actor, req.user.name, session_id)
            return "The session was ended."
        if action == "end-others":
            count = accounts.end_other_sessions(actor, req.user.name, req.session.id)
            return f"Ended {count} other session{'s' if count != 1 else ''}."
        raise HTTPError(400, "unknown action")

    # -- the anonymous forms: CSRF by a double-submit cookie -----------------------------------

    def _anonymous_form(self, req: Request, start_response, template: str, status: int = 200,
                        headers: list | None = None, **context):
        token = secrets.token_urlsafe(24)
        cookie = _cookie(LOGIN_CSRF_COOKIE, token, secure=self.pages._secure(req))
        return self.pages.render(req, start_response, template, status=status, form_csrf=token,
                                 headers=[cookie, *NO_STORE, *(headers or [])], **context)

    def _check_anonymous_csrf(self, req: Request) -> None:
        if req.method != "POST":
            raise HTTPError(405, "use the form")
        cookie_token = req.cookie(LOGIN_CSRF_COOKIE) or ""
        form_token = req.field("csrf")
        if not cookie_token or not hmac.compare_digest(cookie_token.encode(), form_token.encode()):
            raise HTTPError(403, "the form has expired; reload and try again")

    def _log_in(self, req: Request, start_response, user: Owner, target: str = "/"):
        cookie = self.auth.new_session(user, req.address)
        secure = self.pages._secure(req)
        return redirect(start_response, target, headers=[
            _cookie(SESSION_COOKIE, cookie, secure=secure, max_age=SESSION_DAYS * 86400),
            _cookie(LOGIN_CSRF_COOKIE, "", secure=secure, max_age=0),
        ])

    def _throttle_signup(self, req: Request) -> None:
        if not self.auth.throttle.allow_signup(req.address):
            raise Throttled("too many sign-ups from your address; try again later", self.auth.retry_after)

    # -- sign-up ---------------------------------------------------------------------------------

    def _signup(self, req: Request, start_response, template: str, create, **context):
        """GET: the form; POST: throttle, ``create(name, email, password)``, then a page or a login."""
        if req.user is not None:
            return redirect(start_response, "/")
        form = {"name": "", "email": context.pop("email", "")}
        error, status, headers = None, 200, []
        if req.method == "POST":
            self._check_anonymous_csrf(req)
            form = {"name": req.field("name").strip(), "email": req.field("email").strip()}
            try:
                self._throttle_signup(req)
                if req.field("password") != req.field("confirm"):
                    raise Invalid("the password and its confirmation differ", "confirm")
                result = create(form["name"], form["email"], req.field("password"))
                if isinstance(result, Owner):
                    return self._log_in(req, start_response, result)
                return self.pages.render(req, start_response, "signup_sent.html", headers=NO_STORE,
                                         email=form["email"], title="Check your mail")
            except UserError as e:
                error, status = str(e), page_status(e)
                if isinstance(e, Throttled):
                    headers = [("Retry-After", str(e.retry_after))]
        return self._anonymous_form(req, start_response, template, status=status, headers=headers,
                                    form=form, error=error, **context)

    def join(self, req: Request, start_response, token: str):
        """``/-/join/TOKEN``: an invitation's sign-up form; 404 unless it is live and invitations are on."""
        mode = self.registration()
        try:
            invite = accounts.check_invite(mode, token)
        except NotFound:
            raise HTTPError(404, "this invitation is not valid: it was used already or has expired") from None

        def create(name: str, email: str, password: str) -> Owner:
            return accounts.join(self.pages.app.actor(req), mode, token, name, email, password)

        return self._signup(req, start_response, "join.html", create, email=invite.email,
                            title="Join", action=f"/-/join/{token}")

    def register(self, req: Request, start_response):
        """``/-/register``: open registration (404 otherwise); with mail, the address is checked first."""
        mode = self.registration()
        if mode != "open":
            raise HTTPError(404, "not found")
        mail_conf = self.mail_settings()

        def create(name: str, email: str, password: str) -> Owner | str:
            result = accounts.register(self.pages.app.actor(req), mode, name, email, password,
                                       verify=mail_conf is not None)
            if isinstance(result, str):
                link = f"{mail_conf.base_url}/-/verify/{result}"
                mail_later(self.site, email, "Confirm your address",
                           f"Someone (hopefully you) signed up as {name} at {mail_conf.base_url}/.\n\n"
                           f"Open this link within {accounts.VERIFY_HOURS} hours to create the account:\n\n"
                           f"  {link}\n\nIf it was not you, ignore this mail: nothing is created.\n")
            return result

        return self._signup(req, start_response, "register.html", create, title="Sign up",
                            action="/-/register", verify=mail_conf is not None)

    def verify(self, req: Request, start_response, token: str):
        """``/-/verify/TOKEN``: GET shows a button (a mail scanner's GET spends nothing); POST creates."""
        if self.registration() != "open":
            raise HTTPError(404, "not found")
        if req.method == "POST":
            self._check_anonymous_csrf(req)
            try:
                user = accounts.confirm_signup(self.pages.app.actor(req), token)
            except NotFound as e:
                raise HTTPError(404, str(e)) from None
            except UserError as e:  # the name was taken meanwhile
                return self._anonymous_form(req, start_response, "verify.html", status=page_status(e),
                                            error=str(e), title="Confirm your address")
            return self._log_in(req, start_response, user)
        return self._anonymous_form(req, start_response, "verify.html", error=None,
                                    title="Confirm your address")

    # -- forgotten passwords -----------------------------------------------------------------------

    def forgot(self, req: Request, start_response):
        """``/-/forgot``: mail a reset link; 404 when mail is off.  The same answer for any address."""
        conf = self.mail_settings()
        if conf is None:
            raise HTTPError(404, "not found")
        if req.method != "POST":
            return self._anonymous_form(req, start_response, "forgot.html", form={}, error=None,
                                        title="Forgot your password")
        self._check_anonymous_csrf(req)
        email = req.field("email").strip()
        try:
            self._throttle_signup(req)
            accounts.check_signup_email(email)
        except UserError as e:
            headers = [("Retry-After", str(e.retry_after))] if isinstance(e, Throttled) else []
            return self._anonymous_form(req, start_response, "forgot.html", status=page_status(e),
                                        headers=headers, form={"email": email}, error=str(e),
                                        title="Forgot your password")
        for user, token in accounts.reset_links_for_email(self.pages.app.actor(req), email):
            mail_later(self.site, user.email, "Set a new password",
                       f"Someone (hopefully you) asked to set a new password for {user.name}"
                       f" at {conf.base_url}/.\n\nOpen this link to choose one (it works once, for"
                       f" {int(accounts.RESET_LIFETIME.total_seconds() // 3600)} hours):\n\n  {conf.base_url}/-/reset/{token}\n\n"
                       "If it was not you, ignore this mail: your password is unchanged.\n")
        return self.pages.render(req, start_response, "forgot_sent.html", headers=NO_STORE, email=email,
                                 title="Check your mail")
