"""The pages of events (issue 14): webhooks settings, watching, the Atom feed, the audit log.

:class:`EventPages` is passed to :class:`daemon.pages.Pages` when it is built
(``Pages(..., events=EventPages)``, :func:`daemon.service.make_app`), which
serves its :attr:`EventPages.repo_pages` and gives its templates
:meth:`EventPages.template_globals`:

``/OWNER/NAME/settings/hooks`` (repository admins)
    The repository's webhooks (and its owner's, shown for reference): add
    (URL, secret, event kinds), remove, enable; each hook's last deliveries
    (status, duration, the start of the answer) with a *Redeliver* button; a
    hook the daemon disabled says why.
``POST /OWNER/NAME/watch`` (logged-in readers)
    Watch or stop watching (the overview's button): a mail after each push.
``/OWNER/NAME/pushlog.atom``
    An Atom 1.0 feed of the last :data:`FEED_PUSHES` pushes, exactly as
    private as the repository (the application's read check runs first).
``/-/admin/audit`` (site admins)
    The newest entries of the audit log.

Every POST carries the session's CSRF token; the pages only parse the form and
call :mod:`hgext_hosting.service.hooks` (who may, the audit record), rendering
a refusal with :func:`daemon.web.page_status`.
"""

from __future__ import annotations

import datetime
import uuid
from xml.sax.saxutils import escape, quoteattr

from hgext_hosting import audit, outbox, pushlog, webhooks
from hgext_hosting.errors import Forbidden, NotFound, UserError
from hgext_hosting.models import Repository
from hgext_hosting.service import hooks as service_hooks

from .web import HTTPError, Request, page_status, redirect, respond

#: Pushes in the Atom feed.
FEED_PUSHES = 20
#: Changesets listed per push in a feed entry.
FEED_CHANGESETS = 20
#: Deliveries shown per hook on the settings page.
PAGE_DELIVERIES = 10


class EventPages:
    """The handlers; ``pages`` (:class:`daemon.pages.Pages`) renders, checks logins and CSRF."""

    def __init__(self, pages):
        self.pages = pages

    @property
    def repo_pages(self) -> dict:
        """The pages under ``/OWNER/NAME/`` these handlers serve, by name."""
        return {"pushlog.atom": self.feed, "watch": self.watch, "settings/hooks": self.hooks}

    @staticmethod
    def template_globals() -> dict:
        """``is_watching(repo, user)`` for the overview's Watch button (the user's own state)."""
        return {"is_watching": lambda repo, user: user is not None and webhooks.watching(repo, user)}

    # -- watching --------------------------------------------------------------------

    def watch(self, req: Request, start_response, row: Repository, facts, level):
        self.pages.require_login(req)
        self.pages.check_csrf(req)
        actor = self.pages.app.actor(req)
        try:
            if req.field("action") == "unwatch":
                service_hooks.unwatch(actor, row.full_name)
            else:
                service_hooks.watch(actor, row.full_name)
        except UserError as e:
            raise HTTPError(page_status(e), str(e)) from None
        return redirect(start_response, f"/{row.owner.name}/{row.name}")

    # -- webhooks ----------------------------------------------------------------------

    def hooks(self, req: Request, start_response, row: Repository, facts, level):
        self.pages.require_login(req)
        actor = self.pages.app.actor(req)
        try:
            hooks = service_hooks.hooks_of(actor, row.full_name)
        except (NotFound, Forbidden) as e:
            raise HTTPError(page_status(e), str(e)) from None
        message = error = secret = None
        status = 200
        if req.method == "POST":
            self.pages.check_csrf(req)
            try:
                message, secret = self._apply(req, actor, row)
            except UserError as e:
                error, status = str(e), 400  # the form's refusal, as ever
            hooks = service_hooks.hooks_of(actor, row.full_name)
        shown = [{"hook": h, "deliveries": service_hooks.deliveries(actor, h.id, row.full_name, PAGE_DELIVERIES)}
                 for h in hooks]
        return self.pages.render(
            req, start_response, "hooks.html", status=status, repo=row, level=level,
            hooks=shown, inherited=service_hooks.inherited(actor, row.full_name), kinds=outbox.KINDS,
            message=message, error=error, secret=secret, title=f"{row.full_name}: webhooks",
        )

    @staticmethod
    def _apply(req: Request, actor, row: Repository) -> tuple[str, str | None]:
        action, where = req.field("action"), row.full_name
        if action == "add":
            kinds = ",".join(k for k in outbox.KINDS if req.field(f"event-{k}") == "on")
            given = req.field("secret").strip() or None
            hook, secret = service_hooks.add(actor, where, req.field("url"), given, kinds)
            return f"added webhook {hook.id}", (None if given else secret)
        hook = service_hooks.get(actor, req.field("hook"), where)
        if action == "remove":
            service_hooks.remove(actor, hook.id, where)
            return f"removed webhook {hook.id}", None
        if action in ("enable", "disable"):
            service_hooks.update(actor, hook.id, where, active=action == "enable")
            return f"{action}d webhook {hook.id}", None
        if action == "redeliver":
            service_hooks.redeliver(actor, req.field("delivery"), hook.id, where)
            return f"delivery {req.field('delivery')} will be sent again", None
        raise UserError("unknown action")

    # -- the feed ----------------------------------------------------------------------

    def feed(self, req: Request, start_response, row: Repository, facts, level):
        base = (self.pages.site.ui.config(b"web", b"baseurl") or b"").decode().strip().rstrip("/") or req.host_url
        body = atom_feed(row, pushlog.recent_pushes(row, FEED_PUSHES), base, self._summaries(row))
        return respond(start_response, 200, body, "application/atom+xml; charset=utf-8")

    def _summaries(self, row: Repository):
        repo = None

        def summary(node: str) -> str:
            nonlocal repo
            if repo is None:
                repo = self.pages.app._open(row).unfiltered()
            try:
                return repo[bytes.fromhex(node)].description().decode("utf-8", "replace").split("\n", 1)[0]
            except Exception:  # noqa: BLE001 - stripped since: the node alone
                return ""

        return summary

    # -- the audit log -----------------------------------------------------------------

    def audit(self, req: Request, start_response):
        self.pages.require_login(req)
        subject = self.pages.app.subject(req)
        if subject is None or not subject.is_admin:
            raise HTTPError(403, f"{req.user.name} is not a site admin")
        limit = req.int_arg("limit", 100, 1, 1000)
        return self.pages.render(req, start_response, "audit.html", entries=audit.entries(limit),
                                 title="audit log")


def _atom_date(dt: datetime.datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def atom_feed(row: Repository, pushes: list[pushlog.PushView], base: str, summary) -> str:
    """The Atom 1.0 document of a repository's pushes (newest first).

    Ids are ``urn:uuid:`` names derived from the repository's uuid, so they
    survive renames and differ between sites.
    """
    repo_uuid = uuid.UUID(hex=row.uuid)
    home = f"{base}/{row.owner.name}/{row.name}"
    updated = pushes[0].date if pushes else row.created
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<feed xmlns="http://www.w3.org/2005/Atom">',
        f"  <id>urn:uuid:{repo_uuid}</id>",
        f"  <title>{escape(row.full_name)}: pushes</title>",
        f"  <updated>{_atom_date(updated)}</updated>",
        f"  <link rel=\"self\" type=\"application/atom+xml\" href={quoteattr(home + '/pushlog.atom')}/>",
        f"  <link rel=\"alternate\" type=\"text/html\" href={quoteattr(home + '/pushlog')}/>",
        f"  <author><name>{escape(row.owner.name)}</name></author>",
        "  <generator>hg-hosting</generator>",
    ]
    for push in pushes:
        count = len(push.changesets)
        title = f"Push {push.push_id} by {push.user}: {count} changeset{'s' if count != 1 else ''}"
        items = "".join(
            f"<li><a href={quoteattr(f'{home}/rev/{node}')}><code>{node[:12]}</code></a> {escape(summary(node))}</li>"
            for node in push.changesets[:FEED_CHANGESETS])
        if count > FEED_CHANGESETS:
            items += f"<li>... and {count - FEED_CHANGESETS} more</li>"
        items += "".join(f"<li>bookmark {escape(n)} → {escape(w[:12]) if w else '(deleted)'}</li>"
                         for n, _o, w in push.bookmarks)
        link = f"{home}/pushloghtml?startID={push.push_id - 1}&endID={push.push_id}"
        lines += [
            "  <entry>",
            f"    <id>urn:uuid:{uuid.uuid5(repo_uuid, f'push/{push.push_id}')}</id>",
            f"    <title>{escape(title)}</title>",
            f"    <updated>{_atom_date(push.date)}</updated>",
            f"    <author><name>{escape(push.user)}</name></author>",
            f"    <link rel=\"alternate\" type=\"text/html\" href={quoteattr(link)}/>",
            f"    <content type=\"html\">{escape(f'<ul>{items}</ul>')}</content>",
            "  </entry>",
        ]
    lines.append("</feed>")
    return "\n".join(lines) + "\n"
