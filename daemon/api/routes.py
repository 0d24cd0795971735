"""The API's one route table: what the code dispatches from and the document is made of.

Each :class:`Route` names its method, its path template (under ``/api/v1``),
its handler (:mod:`.handlers`), its request and response schemas
(:mod:`.schemas`), the success status, the query parameters, a summary, and
the token scope it needs (:data:`hgext_hosting.policy.SCOPES`).  The
dispatcher (:mod:`daemon.api`) matches requests against :data:`ROUTES`, and
:mod:`.openapi` generates the OpenAPI document from the same table, so the
document cannot drift from the code.  A path parameter marked greedy (the
last one: a file path, a ref) takes the rest of the path, slashes included.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import handlers as h


@dataclass(frozen=True)
class Query:
    """A query parameter."""

    name: str
    schema: dict
    description: str


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: object
    summary: str
    tag: str
    scope: str = "read"
    body: str | None = None  # the request body's schema name
    response: dict | None = None  # the success response's JSON schema (None: no body)
    status: int = 200
    query: tuple[Query, ...] = ()
    paged: bool = False
    raw: bool = False  # the success response is the file's bytes
    anonymous: bool = True  # anonymous callers may ask (they may still be refused)
    greedy: str | None = None  # the path parameter that takes the rest of the path

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    @property
    def parts(self) -> list[str]:
        return [p for p in self.path.split("/") if p]


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def array_of(name: str) -> dict:
    return {"type": "array", "items": ref(name)}


PAGE = (Query("page", {"type": "integer", "minimum": 1, "maximum": 10**9, "default": 1}, "page number, from 1"),
        Query("per_page", {"type": "integer", "minimum": 1, "maximum": 100, "default": 30},
              "items per page, at most 100"))
REPO = "/repos/{owner}/{name}"
STRINGS = {"type": "array", "items": {"type": "string"}}
REFS = array_of("Ref")

def hook_routes(prefix: str, handlers: dict, who: str) -> tuple[Route, ...]:
    """The seven webhook operations under ``prefix`` (a repository, a user, a team)."""
    many, one = prefix + "/hooks", prefix + "/hooks/{id}"
    return (
        Route("GET", many, handlers["list_hooks"], f"The webhooks ({who})", "hooks", "write",
              response=array_of("Hook"), anonymous=False),
        Route("POST", many, handlers["create_hook"], f"Add a webhook ({who}); the secret is write-only",
              "hooks", "write", "NewHook", ref("Hook"), 201, anonymous=False),
        Route("GET", one, handlers["get_hook"], "A webhook", "hooks", "write", response=ref("Hook"),
              anonymous=False),
        Route("PATCH", one, handlers["update_hook"], "Change a webhook's URL, events, active flag or secret",
              "hooks", "write", "HookUpdate", ref("Hook"), anonymous=False),
        Route("DELETE", one, handlers["delete_hook"], "Remove a webhook", "hooks", "write", status=204,
              anonymous=False),
        Route("GET", one + "/deliveries", handlers["list_hook_deliveries"],
              "The webhook's last 50 delivery attempts, newest first", "hooks", "write",
              response=array_of("HookDelivery"), anonymous=False),
        Route("POST", one + "/deliveries/{delivery}/redeliver", handlers["redeliver_hook_delivery"],
              "Send a delivery again, same delivery id", "hooks", "write", response=ref("Redelivery"),
              status=202, anonymous=False),
    )


ROUTES: tuple[Route, ...] = (
    # the caller
    Route("GET", "/user", h.get_user, "The authenticated user", "user", response=ref("User"), anonymous=False),
    Route("GET", "/user/keys", h.list_keys, "The caller's SSH keys", "user", response=array_of("SshKey"),
          anonymous=False),
    Route("POST", "/user/keys", h.add_key, "Add an SSH public key", "user", "write", "NewSshKey",
          ref("SshKey"), 201, anonymous=False),
    Route("DELETE", "/user/keys/{id}", h.delete_key, "Remove an SSH key", "user", "write", status=204,
          anonymous=False),
    Route("GET", "/user/tokens", h.list_tokens, "The caller's API tokens (never their secrets)", "user",
          response=array_of("Token"), anonymous=False),
    Route("POST", "/user/tokens", h.create_token, "Create an API token (its secret is shown once)", "user",
          "write", "NewToken", ref("CreatedToken"), 201, anonymous=False),
    Route("DELETE", "/user/tokens/{label}", h.delete_token, "Revoke an API token", "user", "write", status=204,
          anonymous=False),
    # repositories
    Route("GET", "/repos", h.list_repos, "The repositories the caller may read, by owner then name", "repos",
          response=array_of("Repository"), paged=True,
          query=(Query("q", {"type": "string", "maxLength": 200}, "search in names and descriptions"),
                 Query("owner", {"type": "string", "maxLength": 64}, "only this user's or team's"), *PAGE)),
    Route("POST", "/repos", h.create_repo, "Create a repository", "repos", "write", "NewRepository",
          ref("Repository"), 201, anonymous=False),
    Route("GET", REPO, h.get_repo, "A repository", "repos", response=ref("Repository")),
    Route("PATCH", REPO, h.update_repo, "Change description, visibility, publishing (repository admins)",
          "repos", "write", "RepositoryUpdate", ref("Repository"), anonymous=False),
    Route("DELETE", REPO, h.delete_repo, "Remove a repository (repository admins)", "repos", "write",
          status=204, anonymous=False),
    Route("POST", REPO + "/fork", h.fork_repo, "Fork into an owner the caller may create for", "repos",
          "write", "Fork", ref("Repository"), 201, anonymous=False),
    Route("POST", REPO + "/rename", h.rename_repo, "Rename, or transfer to another owner", "repos", "write",
          "Rename", ref("Repository"), anonymous=False),
    # grants and protected refs
    Route("GET", REPO + "/grants", h.list_grants, "The grants (repository admins)", "grants",
          response=array_of("Grant"), anonymous=False),
    Route("PUT", REPO + "/grants/{subject}", h.put_grant, "Give USER or @TEAM a level", "grants", "write",
          "GrantLevel", status=204, anonymous=False),
    Route("DELETE", REPO + "/grants/{subject}", h.delete_grant, "Remove a grant", "grants", "write",
          status=204, anonymous=False),
    Route("GET", REPO + "/protected", h.list_protected, "The protected branches and bookmarks", "grants",
          response=array_of("Protected"), anonymous=False),
    Route("PUT", REPO + "/protected/{ref}", h.put_protected, "Protect a ref; the allow-list replaces any",
          "grants", "write", "AllowList", ref("Protected"), anonymous=False, greedy="ref"),
    Route("DELETE", REPO + "/protected/{ref}", h.delete_protected, "Lift a protection", "grants", "write",
          status=204, anonymous=False, greedy="ref"),
    # push log
    Route("GET", REPO + "/pushes", h.list_pushes, "The push log, newest first", "pushes",
          response=array_of("Push"), paged=True, query=PAGE),
    Route("GET", REPO + "/pushes/{id}", h.get_push, "One push", "pushes", response=ref("Push")),
    # contents
    Route("GET", REPO + "/branches", h.list_branches, "Named branches", "contents",
          response={"type": "array", "items": ref("Branch")}),
    Route("GET", REPO + "/bookmarks", h.list_bookmarks, "Bookmarks", "contents", response=REFS),
    Route("GET", REPO + "/tags", h.list_tags, "Tags", "contents", response=REFS),
    Route("GET", REPO + "/changesets/{rev}", h.get_changeset, "A changeset (a node, branch, bookmark or tag)",
          "contents", response=ref("Changeset")),
    Route("GET", REPO + "/raw/{rev}/{path}", h.get_raw, "A file's contents at a changeset", "contents",
          raw=True, greedy="path"),
    # teams and users
    Route("GET", "/teams", h.list_teams, "Teams and their members", "teams", response=array_of("Team"),
          paged=True, query=PAGE),
    Route("POST", "/teams", h.create_team, "Create a team (site admins)", "teams", "admin", "NewTeam",
          ref("Team"), 201, anonymous=False),
    Route("GET", "/teams/{team}", h.get_team, "A team", "teams", response=ref("Team")),
    Route("DELETE", "/teams/{team}", h.delete_team, "Remove a team (site admins)", "teams", "admin",
          status=204, anonymous=False),
    Route("GET", "/teams/{team}/members", h.list_members, "A team's members", "teams", response=STRINGS),
    Route("PUT", "/teams/{team}/members/{user}", h.put_member, "Add a member (site admins)", "teams", "admin",
          status=204, anonymous=False),
    Route("DELETE", "/teams/{team}/members/{user}", h.delete_member, "Remove a member (site admins)", "teams",
          "admin", status=204, anonymous=False),
    Route("GET", "/users", h.list_users, "Every user (site admins)", "users", "admin",
          response=array_of("User"), paged=True, query=PAGE, anonymous=False),
    Route("POST", "/users", h.create_user, "Create a user (site admins)", "users", "admin", "NewUser",
          ref("User"), 201, anonymous=False),
    Route("PUT", "/users/{user}/disabled", h.disable_user, "Disable a user: every login ends, nothing is"
          " deleted (site admins)", "users", "admin", status=204, anonymous=False),
    Route("DELETE", "/users/{user}/disabled", h.enable_user, "Enable a disabled user again (site admins)",
          "users", "admin", status=204, anonymous=False),
    # watching (Gitea's subscription)
    Route("GET", REPO + "/subscription", h.get_subscription, "Whether the caller watches the repository"
          " (404 if not)", "watching", response=ref("WatchInfo"), anonymous=False),
    Route("PUT", REPO + "/subscription", h.put_subscription, "Watch: a mail after each push", "watching",
          "write", response=ref("WatchInfo"), anonymous=False),
    Route("DELETE", REPO + "/subscription", h.delete_subscription, "Stop watching", "watching", "write",
          status=204, anonymous=False),
    *hook_routes(REPO, h.REPO_HOOKS, "repository admins"),
    *hook_routes("/users/{user}", h.USER_HOOKS, "the user, site admins; every repository of the user"),
    *hook_routes("/teams/{team}", h.TEAM_HOOKS, "site admins; every repository of the team"),
)


def match(method: str, segments: list[str]) -> tuple[Route | None, dict[str, str], list[str]]:
    """The route for ``method`` and the path segments under ``/api/v1``, its parameters, and
    the methods the path allows (for 405); ``(None, {}, [])`` when no path matches."""
    allowed: list[str] = []
    found: tuple[Route, dict[str, str]] | None = None
    for route in ROUTES:
        params = _match_path(route, segments)
        if params is None:
            continue
        allowed.append(route.method)
        if route.method == method or (method == "HEAD" and route.method == "GET"):
            found = found or (route, params)
    if found is None:
        return None, {}, allowed
    return found[0], found[1], allowed


def _match_path(route: Route, segments: list[str]) -> dict[str, str] | None:
    parts = route.parts
    if route.greedy:
        if len(segments) < len(parts):
            return None
        segments = [*segments[:len(parts) - 1], "/".join(segments[len(parts) - 1:])]
    if len(segments) != len(parts):
        return None
    params = {}
    for part, segment in zip(parts, segments, strict=True):
        if part.startswith("{"):
            params[part[1:-1]] = segment
        elif part != segment:
            return None
    return params
