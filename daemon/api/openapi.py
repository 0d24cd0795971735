"""The OpenAPI 3.1 document, generated from the route table (:mod:`.routes`).

Nothing here is written by hand per operation: paths, parameters, bodies,
responses, the scope each operation needs (``x-scope``, also in its
description) and its security all come from :data:`.routes.ROUTES`, so the
document is what the dispatcher does.  Every operation documents its success
response, ``304`` for GETs (``If-None-Match``), and a ``default`` error (the
one error body of :mod:`.errors`) for every refusal.
"""

from __future__ import annotations

import functools
import re

from ..auth import SESSION_COOKIE
from . import routes
from .schemas import SCHEMAS

TITLE = "hg-hosting API"
VERSION = "1"
PREFIX = "/api/v1"

_PARAM = re.compile(r"\{(\w+)\}")
#: Schemas of the path parameters by name (anything else: a non-empty string).
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: One path segment: no slash, backslash or control character, not "." or ".." (the
#: daemon refuses those in any URL: daemon.web.parse_path).
_SEGMENT = r"^[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*$"
PATH_PARAMS = {
    "owner": {"type": "string", "pattern": _NAME},
    "name": {"type": "string", "pattern": _NAME},
    "id": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
    "rev": {"type": "string", "maxLength": 255, "pattern": _SEGMENT},
    "path": {"type": "string", "maxLength": 4096, "pattern": _SEGMENT},
    "ref": {"type": "string", "maxLength": 255, "pattern": _SEGMENT},
    "subject": {"type": "string", "pattern": r"^@?[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
    "team": {"type": "string", "pattern": _NAME},
    "user": {"type": "string", "pattern": _NAME},
    "label": {"type": "string", "pattern": _NAME},
    "delivery": {"type": "string", "maxLength": 64, "pattern": _SEGMENT},
}
PARAM_TEXT = {
    "owner": "the owning user or team", "name": "the repository's name",
    "id": "a number", "rev": "a changeset: node (or prefix), branch, bookmark or tag",
    "path": "a file path in that changeset (slashes allowed)", "ref": "a branch or bookmark name",
    "subject": "USER or @TEAM", "team": "a team's name", "user": "a user's name", "label": "a token's label",
    "delivery": "a delivery id (X-HgHosting-Delivery)",
}
ERROR = {"description": "An error: 4xx for the request, 5xx for the server",
         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
PAGING_HEADERS = {
    "Link": {"description": "RFC 8288 links: first, prev, next, last", "schema": {"type": "string"}},
    "X-Total-Count": {"description": "the number of items in every page", "schema": {"type": "integer"}},
}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "an API token (hg-hosting token create, or POST /user/tokens)"},
    "basic": {"type": "http", "scheme": "basic", "description": "user name and password, or user name and token"},
    "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                "description": "the pages' login; writes then need the X-CSRF-Token header"},
}


def _operation(route: routes.Route) -> dict:
    params = [{"name": name, "in": "path", "required": True, "schema": PATH_PARAMS.get(name, {"type": "string"}),
               "description": PARAM_TEXT.get(name, name)} for name in _PARAM.findall(route.path)]
    params += [{"name": q.name, "in": "query", "required": False, "schema": q.schema, "description": q.description}
               for q in route.query]
    success: dict = {"description": route.summary}
    if route.raw:
        success["content"] = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    elif route.response is not None:
        success["content"] = {"application/json": {"schema": route.response}}
    if route.paged:
        success["headers"] = PAGING_HEADERS
    responses = {str(route.status): success, "default": ERROR}
    if route.method == "GET":
        responses["304"] = {"description": "Not modified (If-None-Match matched the ETag)"}
    security = [{"bearer": []}, {"basic": []}, {"session": []}]
    if route.anonymous:
        security.append({})
    op = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "description": f"Token scope: `{route.scope}`."
                       + ("" if route.anonymous else " Needs authentication."),
        "tags": [route.tag],
        "parameters": params,
        "responses": responses,
        "security": security,
        "x-scope": route.scope,
    }
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{route.body}"}}}}
    return op


@functools.cache
def document() -> dict:
    """The OpenAPI 3.1 document of :data:`.routes.ROUTES`."""
    paths: dict[str, dict] = {}
    for route in routes.ROUTES:
        paths.setdefault(PREFIX + route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE, "version": VERSION,
            "description": "Repositories, grants, protected refs, push logs, contents, teams and users of"
                           " an hg-hosting site.  Conventions follow Gitea's API: JSON, `page`/`per_page`"
                           " paging with `Link` and `X-Total-Count`, 201 with `Location` on create,"
                           " 204 on delete, errors as `{\"error\": {\"status\", \"message\", \"field\"}}`.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": SECURITY_SCHEMES},
        "tags": [{"name": t} for t in dict.fromkeys(r.tag for r in routes.ROUTES)],
    }
