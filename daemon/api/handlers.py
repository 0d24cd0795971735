"""The API's handlers: each parses its input, calls one service function, renders JSON.

A handler takes a :class:`Call` (the request, the actor, the path parameters
and the body already checked against its schema) and returns a :class:`Reply`.
No rule lives here: who may do what is the service layer's
(:mod:`hgext_hosting.service`), which raises the typed errors that
:mod:`.errors` maps to statuses.
"""

from __future__ import annotations

import math
import urllib.parse
from dataclasses import dataclass, field

from hgext_hosting import names, webhooks
from hgext_hosting.errors import Invalid, NotFound
from hgext_hosting.models import Owner
from hgext_hosting.service import accounts, contents, hooks, repos
from hgext_hosting.service import pushes as service_pushes
from hgext_hosting.service.actors import Actor

from ..web import MAX_PAGE, HTTPError, Request

#: The default and largest page sizes of every listing.
PER_PAGE, MAX_PER_PAGE = 30, 100


@dataclass
class Reply:
    """What a handler answers: a status, JSON data (or raw bytes), extra headers."""

    status: int = 200
    data: object = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    raw: bytes | None = None


@dataclass
class Call:
    """One API request as a handler sees it."""

    app: object  # daemon.app.HostingApp
    req: Request
    actor: Actor
    params: dict[str, str]
    body: dict | None

    def page(self) -> tuple[int, int]:
        """``?page=N&per_page=M``: from 1, and from 1 to :data:`MAX_PER_PAGE` (else 422 naming it)."""
        return self.int_arg("page", 1, MAX_PAGE, 1), self.int_arg("per_page", 1, MAX_PER_PAGE, PER_PAGE)

    def int_arg(self, name: str, low: int, high: int, default: int) -> int:
        try:
            return self.req.int_arg(name, default, low, high)
        except HTTPError as e:
            raise Invalid(e.reason, name) from None

    def repo(self, level: str = "read"):
        """The repository of the path, if the actor holds ``level`` on it.

        Hidden or missing: 404, or 401 for an anonymous caller, exactly as
        everywhere on the site (:meth:`daemon.app.HostingApp.hidden`).
        """
        try:
            return repos.find(self.actor, f"{self.params['owner']}/{self.params['name']}", level)
        except NotFound:
            if self.req.user is None:
                raise HTTPError(401, "authorization required") from None
            raise

    def url(self, path: str) -> str:
        return f"{self.req.host_url}/api/v1{path}"


def iso(value) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="@")


def paged(call: Call, items: list, total: int, page: int, per_page: int) -> Reply:
    """A page of a listing with ``Link`` (first, prev, next, last) and ``X-Total-Count``."""
    last = max(1, math.ceil(total / per_page))
    query = {k: v[-1] for k, v in call.req.query.items() if k not in ("page", "per_page")}
    base = call.req.host_url + "/" + "/".join(quote(s) for s in call.req.segments)

    def link(number: int, rel: str) -> str:
        qs = urllib.parse.urlencode({**query, "page": number, "per_page": per_page})
        return f'<{base}?{qs}>; rel="{rel}"'

    links = [link(1, "first")]
    if page > 1:
        links.append(link(min(page - 1, last), "prev"))
    if page < last:
        links.append(link(page + 1, "next"))
    links.append(link(last, "last"))
    return Reply(200, items, [("Link", ", ".join(links)), ("X-Total-Count", str(total))])


# -- renderings ----------------------------------------------------------------------


def user_json(user: Owner) -> dict:
    return {"name": user.name, "email": user.email, "is_admin": bool(user.is_admin),
            "disabled": bool(user.disabled), "created": iso(user.created)}


def repo_json(call: Call, repo, last_push=None, permission: str | None = None) -> dict:
    url = f"{call.req.host_url}/{quote(repo.owner.name)}/{quote(repo.name)}"
    return {
        "owner": repo.owner.name, "name": repo.name, "full_name": repo.full_name,
        "description": repo.description, "private": bool(repo.private),
        "publishing": bool(repo.publishing), "created": iso(repo.created), "last_push": iso(last_push),
        "permission": permission,
        "clone_url": url,
        "html_url": url,
    }


def created(call: Call, data, path: str) -> Reply:
    return Reply(201, data, [("Location", call.url(path))])


def repo_path(repo) -> str:
    return f"/repos/{quote(repo.owner.name)}/{quote(repo.name)}"


NO_CONTENT = Reply(204)


def _me(call: Call) -> str:
    if call.req.user is None:
        raise HTTPError(401, "authorization required")
    return call.req.user.name


# -- the caller --------------------------------------------------------------------------


def get_user(call: Call) -> Reply:
    _me(call)
    return Reply(200, user_json(call.req.user))


def list_keys(call: Call) -> Reply:
    keys = accounts.list_ssh_keys(call.actor, _me(call))
    return Reply(200, [{"id": k.id, "fingerprint": k.fingerprint, "type": k.key_type, "comment": k.comment,
                        "created": iso(k.created)} for k in keys])


def add_key(call: Call) -> Reply:
    k = accounts.add_ssh_key(call.actor, _me(call), call.body["key"])
    return created(call, {"id": k.id, "fingerprint": k.fingerprint, "type": k.key_type, "comment": k.comment,
                          "created": iso(k.created)}, f"/user/keys/{k.id}")


def delete_key(call: Call) -> Reply:
    me = _me(call)
    key_id = call.params["id"]
    for k in accounts.list_ssh_keys(call.actor, me):
        if str(k.id) == key_id:
            accounts.remove_ssh_key(call.actor, me, k.fingerprint)
            return NO_CONTENT
    raise NotFound(f"{me} has no key {key_id[:32]!r}")


def token_json(t) -> dict:
    return {"label": t.label, "scope": t.scope, "created": iso(t.created), "last_used": iso(t.last_used)}


def list_tokens(call: Call) -> Reply:
    return Reply(200, [token_json(t) for t in accounts.list_tokens(call.actor, _me(call))])


def create_token(call: Call) -> Reply:
    me = _me(call)
    scope = call.body.get("scope", "write")
    token = accounts.create_token(call.actor, me, call.body.get("label"), scope)
    label = next(t.label for t in accounts.list_tokens(call.actor, me)
                 if t.digest == accounts.credentials.token_digest(token))
    return created(call, {"label": label, "scope": scope, "token": token}, f"/user/tokens/{quote(label)}")


def delete_token(call: Call) -> Reply:
    accounts.revoke_token(call.actor, _me(call), call.params["label"])
    return NO_CONTENT


# -- repositories --------------------------------------------------------------------------


def list_repos(call: Call) -> Reply:
    page, per_page = call.page()
    owner = call.req.arg("owner")
    found = repos.listing(call.actor, search=call.req.arg("q") or "", owner=owner or None, page=page,
                          per_page=per_page)
    items = [repo_json(call, r, last) for r, last in found.repos]
    return paged(call, items, found.total, page, per_page)


def create_repo(call: Call) -> Reply:
    b = call.body
    repo = repos.create(call.app.site, call.actor, f"{b['owner']}/{b['name']}", private=b.get("private", False),
                        description=b.get("description", ""), publishing=b.get("publishing", True))
    repo = repos.find(call.actor, repo.full_name, "read")
    return created(call, repo_json(call, repo, None, repos.level(call.actor, repo)), repo_path(repo))


def get_repo(call: Call) -> Reply:
    try:
        seen = repos.view(call.actor, f"{call.params['owner']}/{call.params['name']}")
    except NotFound:
        if call.req.user is None:
            raise HTTPError(401, "authorization required") from None
        raise
    return Reply(200, repo_json(call, seen.repo, seen.last_push, seen.level))


def update_repo(call: Call) -> Reply:
    repo = call.repo()
    b = call.body
    repo = repos.update(call.app.site, call.actor, repo.full_name, private=b.get("private"),
                        description=b.get("description"), publishing=b.get("publishing"))
    repo = repos.find(call.actor, repo.full_name, "read")
    return Reply(200, repo_json(call, repo, None, repos.level(call.actor, repo)))


def delete_repo(call: Call) -> Reply:
    repo = call.repo()
    repos.remove(call.app.site, call.actor, repo.full_name)
    return NO_CONTENT


def fork_repo(call: Call) -> Reply:
    repo = call.repo()
    target = f"{call.body['owner']}/{call.body.get('name', repo.name)}"
    fork = repos.fork(call.app.site, call.actor, repo.full_name, target, private=call.body.get("private"))
    fork = repos.find(call.actor, fork.full_name, "read")
    return created(call, repo_json(call, fork, None, repos.level(call.actor, fork)), repo_path(fork))


def rename_repo(call: Call) -> Reply:
    repo = call.repo()
    target = f"{call.body.get('owner', repo.owner.name)}/{call.body.get('name', repo.name)}"
    moved = repos.rename(call.app.site, call.actor, repo.full_name, target)
    moved = repos.find(call.actor, moved.full_name, "read")
    reply = Reply(200, repo_json(call, moved, None, repos.level(call.actor, moved)))
    reply.headers.append(("Location", call.url(repo_path(moved))))
    return reply


# -- grants and protected refs ------------------------------------------------------------------


def list_grants(call: Call) -> Reply:
    repo = call.repo()
    return Reply(200, [{"subject": s, "level": lv} for s, lv in repos.grants(call.actor, repo.full_name)])


def put_grant(call: Call) -> Reply:
    repo = call.repo()
    repos.grant(call.actor, repo.full_name, call.params["subject"], call.body["level"])
    return NO_CONTENT


def delete_grant(call: Call) -> Reply:
    repo = call.repo()
    repos.revoke(call.actor, repo.full_name, call.params["subject"])
    return NO_CONTENT


def list_protected(call: Call) -> Reply:
    repo = call.repo()
    return Reply(200, [{"ref": r, "allow": a} for r, a in repos.protected(call.actor, repo.full_name)])


def put_protected(call: Call) -> Reply:
    repo = call.repo()
    allowed = repos.protect(call.actor, repo.full_name, call.params["ref"], call.body["allow"])
    return Reply(200, {"ref": call.params["ref"], "allow": allowed})


def delete_protected(call: Call) -> Reply:
    repo = call.repo()
    repos.unprotect(call.actor, repo.full_name, call.params["ref"])
    return NO_CONTENT


# -- push log ----------------------------------------------------------------------------------


def list_pushes(call: Call) -> Reply:
    repo = call.repo()
    page, per_page = call.page()
    found = service_pushes.page(repo, page, per_page)
    return paged(call, [p.as_json() for p in found.pushes], found.total, page, per_page)


def get_push(call: Call) -> Reply:
    repo = call.repo()
    text = call.params["id"]
    if not text.isdigit() or len(text) > 18:
        raise NotFound(f"no push {text[:32]!r} in {repo.full_name}")
    return Reply(200, service_pushes.one(repo, int(text)).as_json())


# -- contents ------------------------------------------------------------------------------------


def _contents(call: Call, read):
    repo = call.repo()
    return read(call.app._open(repo))


def list_branches(call: Call) -> Reply:
    return Reply(200, _contents(call, contents.branches))


def list_bookmarks(call: Call) -> Reply:
    return Reply(200, _contents(call, contents.bookmarks))


def list_tags(call: Call) -> Reply:
    return Reply(200, _contents(call, contents.tags))


def get_changeset(call: Call) -> Reply:
    return Reply(200, _contents(call, lambda r: contents.changeset(r, call.params["rev"])))


def get_raw(call: Call) -> Reply:
    return Reply(200, raw=_contents(call, lambda r: contents.raw(r, call.params["rev"], call.params["path"])))


# -- teams and users -------------------------------------------------------------------------------


def list_teams(call: Call) -> Reply:
    page, per_page = call.page()
    teams = accounts.list_teams(call.actor)
    items = [{"name": t.name, "members": m} for t, m in teams]
    return paged(call, items[(page - 1) * per_page:page * per_page], len(items), page, per_page)


def _team(call: Call) -> tuple:
    key = names.key(call.params["team"])
    for team, members in accounts.list_teams(call.actor):
        if team.name_key == key:
            return team, members
    raise NotFound(f"no team named {call.params['team'][:64]!r}")


def create_team(call: Call) -> Reply:
    team = accounts.add_team(call.actor, call.body["name"])
    return created(call, {"name": team.name, "members": []}, f"/teams/{quote(team.name)}")


def get_team(call: Call) -> Reply:
    team, members = _team(call)
    return Reply(200, {"name": team.name, "members": members})


def delete_team(call: Call) -> Reply:
    accounts.remove_team(call.actor, call.params["team"])
    return NO_CONTENT


def list_members(call: Call) -> Reply:
    return Reply(200, _team(call)[1])


def put_member(call: Call) -> Reply:
    accounts.add_member(call.actor, call.params["team"], call.params["user"])
    return NO_CONTENT


def delete_member(call: Call) -> Reply:
    accounts.remove_member(call.actor, call.params["team"], call.params["user"])
    return NO_CONTENT


def list_users(call: Call) -> Reply:
    page, per_page = call.page()
    users = [user_json(u) for u in accounts.list_users(call.actor)]
    return paged(call, users[(page - 1) * per_page:page * per_page], len(users), page, per_page)


def disable_user(call: Call) -> Reply:
    """Disable a user (idempotent): every login ends, nothing of theirs is deleted."""
    accounts.disable_user(call.actor, call.params["user"])
    return NO_CONTENT


def enable_user(call: Call) -> Reply:
    """Enable a disabled user again (idempotent)."""
    accounts.enable_user(call.actor, call.params["user"])
    return NO_CONTENT


def create_user(call: Call) -> Reply:
    b = call.body
    user = accounts.add_user(call.actor, b["name"], b.get("email", ""), bool(b.get("admin", False)),
                             b.get("password"))
    return created(call, user_json(user), f"/users/{quote(user.name)}")


# -- webhooks (repository, user and team hooks) and watching --------------------------------------
#
# The same seven operations under three prefixes: /repos/{owner}/{name}/hooks,
# /users/{user}/hooks and /teams/{team}/hooks.  :func:`_hook_handlers` makes each
# kind's functions (named for the OpenAPI document's operation ids); who may is
# hgext_hosting.service.hooks'.


def _where(call: Call, kind: str) -> str:
    """The hooks' target of the path: ``OWNER/NAME``, or a user's or team's name."""
    if kind == "repo":
        return f"{call.params['owner']}/{call.params['name']}"
    name = call.params[kind]
    owner = repos.find_owner(name)
    if owner.kind != kind:
        raise NotFound(f"no {kind} named {name[:64]!r}")
    return owner.name


def _hooks_path(call: Call, kind: str, where: str) -> str:
    if kind == "repo":
        owner, _, name = where.partition("/")
        return f"/repos/{quote(owner)}/{quote(name)}/hooks"
    return f"/{kind}s/{quote(where)}/hooks"


def _hook_handlers(kind: str) -> dict:
    def list_hooks(call: Call) -> Reply:
        return Reply(200, [webhooks.as_json(h) for h in hooks.hooks_of(call.actor, _where(call, kind))])

    def create_hook(call: Call) -> Reply:
        where, b = _where(call, kind), call.body
        hook, _ = hooks.add(call.actor, where, b["url"], b["secret"], b.get("events", ["push", "repository"]),
                            b.get("active", True))
        return created(call, webhooks.as_json(hook), f"{_hooks_path(call, kind, where)}/{hook.id}")

    def get_hook(call: Call) -> Reply:
        return Reply(200, webhooks.as_json(hooks.get(call.actor, call.params["id"], _where(call, kind))))

    def update_hook(call: Call) -> Reply:
        b = call.body
        hook = hooks.update(call.actor, call.params["id"], _where(call, kind), url=b.get("url"),
                            events=b.get("events"), active=b.get("active"), secret=b.get("secret"))
        return Reply(200, webhooks.as_json(hook))

    def delete_hook(call: Call) -> Reply:
        hooks.remove(call.actor, call.params["id"], _where(call, kind))
        return NO_CONTENT

    def list_hook_deliveries(call: Call) -> Reply:
        return Reply(200, hooks.deliveries(call.actor, call.params["id"], _where(call, kind),
                                           limit=webhooks.DELIVERIES))

    def redeliver_hook_delivery(call: Call) -> Reply:
        delivery = hooks.redeliver(call.actor, call.params["delivery"], call.params["id"], _where(call, kind))
        return Reply(202, {"delivery": delivery.guid, "state": delivery.state})

    made = {}
    for function in (list_hooks, create_hook, get_hook, update_hook, delete_hook, list_hook_deliveries,
                     redeliver_hook_delivery):
        name = function.__name__
        verb, _, rest = name.partition("_")
        function.__name__ = function.__qualname__ = f"{verb}_{kind}_{rest}"
        made[name] = function
    return made


REPO_HOOKS, USER_HOOKS, TEAM_HOOKS = (_hook_handlers(kind) for kind in ("repo", "user", "team"))


def _watch_info(call: Call, repo) -> dict:
    base = call.url(repo_path(repo))
    return {"subscribed": True, "ignored": False, "reason": None, "url": base + "/subscription",
            "repository_url": base}


def get_subscription(call: Call) -> Reply:
    """Gitea's answer: the WatchInfo when the caller watches, else 404."""
    repo = call.repo()
    if not hooks.is_watching(call.actor, repo.full_name):
        raise NotFound(f"{call.actor.name} does not watch {repo.full_name}")
    return Reply(200, _watch_info(call, repo))


def put_subscription(call: Call) -> Reply:
    repo = call.repo()
    hooks.watch(call.actor, repo.full_name)
    return Reply(200, _watch_info(call, repo))


def delete_subscription(call: Call) -> Reply:
    repo = call.repo()
    hooks.unwatch(call.actor, repo.full_name)
    return NO_CONTENT
