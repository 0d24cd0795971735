"""The pages of events (issue 14): webhooks settings, watching, the Atom feed, the audit log.

:func:`install` adds them to a :class:`daemon.pages.Pages`:

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

Every POST carries the session's CSRF token and changes go through
:mod:`hgext_hosting.webhooks` (which records them in the audit log).
"""

from __future__ import annotations

import datetime
import uuid
from xml.sax.saxutils import escape, quoteattr

from hgext_hosting import audit, outbox, pushlog, webhooks
from hgext_hosting.errors import UserError
from hgext_hosting.models import Repository, Webhook

from .web import HTTPError, Request, redirect, respond

#: Pushes in the Atom feed.
FEED_PUSHES = 20
#: Changesets listed per push in a feed entry.
FEED_CHANGESETS = 20
#: Deliveries shown per hook on the settings page.
PAGE_DELIVERIES = 10


def install(pages) -> None:
    """Add the event pages to ``pages`` (and ``is_watching`` to its templates)."""
    events = EventPages(pages)
    pages.events = events
    pages.repo_pages["pushlog.atom"] = events.feed
    pages.repo_pages["watch"] = events.watch
    pages.repo_pages["settings/hooks"] = events.hooks
    pages.env.globals["is_watching"] = lambda repo, user: user is not None and webhooks.is_watching(repo, user.name)


class EventPages:
    def __init__(self, pages):
        self.pages = pages

    # -- watching --------------------------------------------------------------------

    def watch(self, req: Request, start_response, row: Repository, facts, level):
        self.pages.require_login(req)
        self.pages.check_csrf(req)
        if req.field("action") == "unwatch":
            webhooks.unwatch(row.full_name, req.user.name, req.user.name, req.address)
        else:
            webhooks.watch(row.full_name, req.user.name, req.user.name, req.address)
        return redirect(start_response, f"/{row.owner.name}/{row.name}")

    # -- webhooks ----------------------------------------------------------------------

    def hooks(self, req: Request, start_response, row: Repository, facts, level):
        self.pages.require_login(req)
        if level != "admin":
            raise HTTPError(403, f"{req.user.name} is not an admin of {row.full_name}")
        message = error = secret = None
        if req.method == "POST":
            self.pages.check_csrf(req)
            try:
                message, secret = self._apply(req, row)
            except UserError as e:
                error = str(e)
        hooks = list(Webhook.select().where(Webhook.repository == row.id).order_by(Webhook.id))
        inherited = list(Webhook.select().where((Webhook.owner == row.owner_id) & Webhook.repository.is_null())
                         .order_by(Webhook.id))
        shown = [{"hook": h, "deliveries": webhooks.deliveries(h.id, PAGE_DELIVERIES)} for h in hooks]
        return self.pages.render(
            req, start_response, "hooks.html", status=400 if error else 200, repo=row, level=level,
            hooks=shown, inherited=inherited, kinds=outbox.KINDS, message=message, error=error, secret=secret,
            title=f"{row.full_name}: webhooks",
        )

    def _apply(self, req: Request, row: Repository) -> tuple[str, str | None]:
        action = req.field("action")
        actor, address = req.user.name, req.address
        if action == "add":
            kinds = ",".join(k for k in outbox.KINDS if req.field(f"event-{k}") == "on")
            given = req.field("secret").strip() or None
            hook, secret = webhooks.add(row.full_name, req.field("url"), given, kinds, actor, address)
            return f"added webhook {hook.id}", (None if given else secret)
        hook = self._own_hook(req, row)
        if action == "remove":
            webhooks.remove(hook.id, actor, address, repository=row)
            return f"removed webhook {hook.id}", None
        if action in ("enable", "disable"):
            webhooks.set_active(hook.id, action == "enable", actor, address)
            return f"{action}d webhook {hook.id}", None
        if action == "redeliver":
            webhooks.redeliver(req.field("delivery"), actor, address, repository=row)
            return f"delivery {req.field('delivery')} will be sent again", None
        raise UserError("unknown action")

    @staticmethod
    def _own_hook(req: Request, row: Repository) -> Webhook:
        hook = webhooks.get(req.field("hook"))
        if hook.repository_id != row.id:
            raise UserError(f"no webhook {hook.id} on {row.full_name}")
        return hook

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
