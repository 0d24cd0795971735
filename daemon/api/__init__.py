"""The REST API under ``/api/v1``: a thin face over the service layer.

- :mod:`.routes`: the one route table (method, path, handler, schemas, scope);
- :mod:`.handlers`: parse, call one service function, render;
- :mod:`.schemas`: the JSON Schemas of the bodies, and their check;
- :mod:`.errors`: the service layer's typed errors as statuses, once;
- :mod:`.openapi`: the OpenAPI 3.1 document, generated from the table.

:class:`ApiFace` dispatches: it matches the route (404, or 405 with
``Allow``), requires the CSRF header for a write made with the session cookie,
checks the token scope the route needs (:func:`hgext_hosting.policy.scope_allows`),
reads and checks the JSON body (at most :data:`MAX_BODY` bytes: 413; not JSON:
400; not the schema: 422 naming the field), calls the handler with the
request's actor, and renders: JSON, ``ETag`` on every GET with
``If-None-Match`` answered 304.  Conventions are Gitea's (``docs/api.md``).
"""

from __future__ import annotations

import hashlib
import hmac
import json

from twisted.logger import Logger

from hgext_hosting import policy
from hgext_hosting.errors import Forbidden, Invalid, UserError

from ..web import SANDBOX_CSP, HTTPError, Request, respond
from . import errors, openapi, routes
from .handlers import Call, Reply
from .schemas import check_body

log = Logger()

#: The largest JSON body accepted.
MAX_BODY = 64 * 1024
#: How deep a JSON body may nest.
MAX_DEPTH = 32
CSRF_HEADER = "X-CSRF-Token"
JSON = "application/json"


class ApiFace:
    """``/api/v1/...`` and the readable document at ``/-/api``, for one :class:`~daemon.app.HostingApp`."""

    def __init__(self, app):
        self.app = app

    def __call__(self, req: Request, start_response, segments: list[str]):
        try:
            return self._dispatch(req, start_response, segments)
        except UserError as e:
            return self._answer(req, start_response, *errors.from_user_error(e))
        except HTTPError as e:
            return self._answer(req, start_response, *errors.from_http_error(e))
        except Exception:  # noqa: BLE001 - logged for the admin, one line for the caller
            log.failure("API: unexpected failure on {path}", path=req.environ.get("PATH_INFO", "")[:200])
            return self._answer(req, start_response, 500,
                                {"error": {"status": 500, "message": "internal error; see the server log"}}, [])

    def _dispatch(self, req: Request, start_response, segments: list[str]):
        if not segments or segments[0] != "v1":
            raise HTTPError(404, "no such API; the API is /api/v1")
        rest = segments[1:]
        if rest == ["openapi.json"] and req.method in ("GET", "HEAD"):
            return self._reply(req, start_response, Reply(200, openapi.document()))
        route, params, allowed = routes.match(req.method, rest)
        if route is None:
            if allowed:
                raise HTTPError(405, f"{req.method} is not allowed here",
                                [("Allow", ", ".join(dict.fromkeys(allowed)))])
            raise HTTPError(404, "no such API resource")
        if route.method != "GET":
            self._check_csrf(req)
        actor = self.app.actor(req)
        decision = policy.scope_allows(actor.subject, route.scope)
        if not decision:
            raise Forbidden(decision.reason)
        if not route.anonymous and req.user is None:
            raise HTTPError(401, "authorization required")
        self._check_query(req, route)
        body = self._body(req, route)
        reply = route.handler(Call(self.app, req, actor, params, body))
        return self._reply(req, start_response, reply)

    # -- input ------------------------------------------------------------------------

    @staticmethod
    def _check_csrf(req: Request) -> None:
        """A write with the session cookie (the pages' scripts) needs the session's CSRF token."""
        if req.session is None:
            return
        token = req.header(CSRF_HEADER) or ""
        if not hmac.compare_digest(token.encode("utf-8", "replace"), req.session.csrf.encode()):
            raise HTTPError(403, f"a write with the session cookie needs the {CSRF_HEADER} header")

    @staticmethod
    def _check_query(req: Request, route: routes.Route) -> None:
        """The route's string query parameters within their documented length (integers: the handler)."""
        for q in route.query:
            value = req.arg(q.name)
            if value is not None and q.schema.get("type") == "string" and len(value) > q.schema["maxLength"]:
                raise Invalid(f"{q.name} is longer than {q.schema['maxLength']} characters", q.name)

    @staticmethod
    def _body(req: Request, route: routes.Route) -> dict | None:
        try:
            length = int(req.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise HTTPError(400, "bad Content-Length") from None
        if length > MAX_BODY:
            raise HTTPError(413, f"the body is larger than {MAX_BODY // 1024} KB")
        raw = req.environ["wsgi.input"].read(length) if length > 0 else b""
        if route.body is None:
            return None
        if not raw.strip():
            raise Invalid("a JSON object is required as the body", "body")
        ctype = (req.header("Content-Type") or req.environ.get("CONTENT_TYPE") or JSON).split(";")[0].strip()
        if ctype.lower() != JSON:
            raise HTTPError(415, "the body must be application/json")
        try:
            value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise HTTPError(400, "the body is not valid JSON") from None
        if _depth(value) > MAX_DEPTH:
            raise HTTPError(400, "the body nests too deeply")
        return check_body(value, route.body)

    # -- output -----------------------------------------------------------------------

    def _reply(self, req: Request, start_response, reply: Reply):
        headers = [*reply.headers, ("Vary", "Authorization, Cookie"), ("Cache-Control", "private, no-cache")]
        if reply.raw is not None:
            body, ctype = reply.raw, "application/octet-stream"
            headers += [("Content-Security-Policy", SANDBOX_CSP), ("Content-Disposition", "attachment")]
        elif reply.status == 204:
            body, ctype = b"", JSON
        else:
            body, ctype = errors.body_bytes(reply.data), JSON
        if req.method in ("GET", "HEAD") and reply.status == 200:
            etag = f'W/"{hashlib.sha256(body).hexdigest()[:32]}"'
            headers.append(("ETag", etag))
            wanted = req.header("If-None-Match") or ""
            if wanted.strip() == "*" or etag in (t.strip() for t in wanted.split(",")):
                return respond(start_response, 304, b"", ctype, headers=headers)
        if req.method == "HEAD":
            body = b""
        return respond(start_response, reply.status, body, ctype, headers=headers)

    def _answer(self, req: Request, start_response, status: int, data: dict, headers: list[tuple[str, str]]):
        return respond(start_response, status, errors.body_bytes(data), JSON,
                       headers=[*headers, ("Vary", "Authorization, Cookie"), ("Cache-Control", "no-store")])

    # -- the readable document -----------------------------------------------------------

    def document_page(self, req: Request, start_response):
        """``/-/api``: the OpenAPI document as a page (no script, no external resource)."""
        if req.method not in ("GET", "HEAD"):
            raise HTTPError(405, "only GET", [("Allow", "GET, HEAD")])
        doc = openapi.document()
        operations = [
            {"method": method.upper(), "path": path, **op}
            for path, item in doc["paths"].items() for method, op in item.items()
        ]
        schemas = {name: json.dumps(schema, indent=1, sort_keys=True)
                   for name, schema in doc["components"]["schemas"].items()}
        return self.app.pages.render(req, start_response, "api.html", title="API", doc=doc,
                                     operations=operations, schemas=schemas)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _depth(value, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


__all__ = ["ApiFace"]
