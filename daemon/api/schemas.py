"""The JSON Schemas (2020-12, as OpenAPI 3.1 takes them) of the API's bodies, and their check.

The route table (:mod:`.routes`) names these for each operation's request and
response, the document (:mod:`.openapi`) publishes them under
``components/schemas``, and :func:`check_body` validates every request body
against its schema before a handler sees it: wrong types, unknown fields,
missing ones and values out of range are :class:`~hgext_hosting.errors.Invalid`
naming the field (422), so that a handler only ever sees well-formed input.

Only the subset of JSON Schema used here is checked: ``type`` (object,
string, boolean, integer, array), ``properties``, ``required``,
``additionalProperties: false``, ``enum``, ``minLength``/``maxLength``,
``minimum``/``maximum``, ``pattern``, ``items`` and ``maxItems``.
"""

from __future__ import annotations

import re

from hgext_hosting.errors import Invalid


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def array(name: str) -> dict:
    return {"type": "array", "items": ref(name)}


NAME = {"type": "string", "minLength": 1, "maxLength": 64}
DATE = {"type": "string", "format": "date-time"}
NULLABLE_DATE = {"type": ["string", "null"], "format": "date-time"}
LEVEL = {"type": "string", "enum": ["read", "write", "publish", "admin"]}
SCOPE = {"type": "string", "enum": ["read", "write", "admin"]}
NODE = {"type": "string", "pattern": "^[0-9a-f]{40}$"}
#: A webhook's event kinds (hgext_hosting.outbox.KINDS).
EVENTS = {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string", "enum": ["push", "repository"]}}
HOOK_URL = {"type": "string", "minLength": 1, "maxLength": 2000,
            "pattern": r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[!-~]*)?$"}
SECRET = {"type": "string", "minLength": 1, "maxLength": 255}


def obj(properties: dict, required: tuple[str, ...] = (), closed: bool = True) -> dict:
    schema = {"type": "object", "properties": properties, "required": list(required)}
    if closed:
        schema["additionalProperties"] = False
    return schema


SCHEMAS: dict[str, dict] = {
    "Error": obj({"error": obj({
        "status": {"type": "integer"},
        "message": {"type": "string"},
        "field": {"type": "string"},
    }, ("status", "message"))}, ("error",)),
    "User": obj({
        "name": {"type": "string"}, "email": {"type": "string"}, "is_admin": {"type": "boolean"},
        "disabled": {"type": "boolean"}, "created": DATE,
    }, ("name", "is_admin", "disabled", "created")),
    "NewUser": obj({
        "name": NAME, "email": {"type": "string", "maxLength": 254}, "admin": {"type": "boolean"},
        "password": {"type": "string", "minLength": 1, "maxLength": 1024},
    }, ("name",)),
    "Token": obj({
        "label": {"type": "string"}, "scope": SCOPE, "created": DATE, "last_used": NULLABLE_DATE,
    }, ("label", "scope", "created", "last_used")),
    "NewToken": obj({"label": NAME, "scope": SCOPE}),
    "CreatedToken": obj({
        "label": {"type": "string"}, "scope": SCOPE, "token": {"type": "string"},
    }, ("label", "scope", "token")),
    "SshKey": obj({
        "id": {"type": "integer"}, "fingerprint": {"type": "string"}, "type": {"type": "string"},
        "comment": {"type": "string"}, "created": DATE,
    }, ("id", "fingerprint", "type", "comment", "created")),
    "NewSshKey": obj({"key": {"type": "string", "minLength": 1, "maxLength": 16384}}, ("key",)),
    "Repository": obj({
        "owner": {"type": "string"}, "name": {"type": "string"}, "full_name": {"type": "string"},
        "description": {"type": "string"}, "private": {"type": "boolean"},
        "publishing": {"type": "boolean"}, "created": DATE, "last_push": NULLABLE_DATE,
        "permission": {"type": ["string", "null"]}, "clone_url": {"type": "string"},
        "html_url": {"type": "string"},
    }, ("owner", "name", "full_name", "description", "private", "publishing", "created")),
    "NewRepository": obj({
        "owner": NAME, "name": NAME, "description": {"type": "string", "maxLength": 10000},
        "private": {"type": "boolean"}, "publishing": {"type": "boolean"},
    }, ("owner", "name")),
    "RepositoryUpdate": obj({
        "description": {"type": "string", "maxLength": 10000}, "private": {"type": "boolean"},
        "publishing": {"type": "boolean"},
    }),
    "Fork": obj({"owner": NAME, "name": NAME, "private": {"type": "boolean"}}, ("owner",)),
    "Rename": obj({"owner": NAME, "name": NAME}),
    "Grant": obj({"subject": {"type": "string"}, "level": LEVEL}, ("subject", "level")),
    "GrantLevel": obj({"level": LEVEL}, ("level",)),
    "Protected": obj({"ref": {"type": "string"}, "allow": {"type": "array", "items": {"type": "string"}}},
                     ("ref", "allow")),
    "AllowList": obj({"allow": {"type": "array", "minItems": 1, "maxItems": 100,
                                "items": {"type": "string", "minLength": 1, "maxLength": 65}}}, ("allow",)),
    "Push": obj({
        "id": {"type": "integer"}, "user": {"type": "string"}, "date": DATE,
        "changesets": {"type": "array", "items": NODE},
        "bookmarks": {"type": "array", "items": {"type": "object"}},
    }, ("id", "user", "date", "changesets", "bookmarks"), closed=False),
    "Branch": obj({"name": {"type": "string"}, "node": NODE, "closed": {"type": "boolean"}},
                  ("name", "node", "closed")),
    "Ref": obj({"name": {"type": "string"}, "node": NODE}, ("name", "node"), closed=False),
    "Changeset": obj({
        "node": NODE, "author": {"type": "string"}, "date": DATE, "branch": {"type": "string"},
        "phase": {"type": "string", "enum": ["public", "draft", "secret"]},
        "description": {"type": "string"}, "parents": {"type": "array", "items": NODE},
        "files": {"type": "array", "items": {"type": "string"}},
        "tags": {"type": "array", "items": {"type": "string"}},
        "bookmarks": {"type": "array", "items": {"type": "string"}},
    }, ("node", "author", "date", "branch", "phase", "description", "parents", "files")),
    "Team": obj({"name": {"type": "string"}, "members": {"type": "array", "items": {"type": "string"}}},
                ("name", "members")),
    "NewTeam": obj({"name": NAME}, ("name",)),
    # webhooks (the secret is write-only: has_secret tells it is set)
    "Hook": obj({
        "id": {"type": "integer"}, "type": {"type": "string", "enum": ["repository", "user", "team"]},
        "target": {"type": "string"}, "url": {"type": "string"}, "events": EVENTS,
        "active": {"type": "boolean"}, "disabled_reason": {"type": ["string", "null"]},
        "failing_since": NULLABLE_DATE, "has_secret": {"type": "boolean"}, "created": NULLABLE_DATE,
    }, ("id", "type", "target", "url", "events", "active", "disabled_reason", "has_secret", "created")),
    "NewHook": obj({
        "url": HOOK_URL, "events": EVENTS, "secret": SECRET, "active": {"type": "boolean"},
    }, ("url", "secret")),
    "HookUpdate": obj({
        "url": HOOK_URL, "events": EVENTS, "secret": SECRET, "active": {"type": "boolean"},
    }),
    "HookDelivery": obj({
        "delivery": {"type": "string"}, "event": {"type": "string"}, "repository": {"type": "string"},
        "state": {"type": "string", "enum": ["pending", "delivered", "failed"]}, "date": DATE,
        "status": {"type": ["integer", "null"]}, "duration_ms": {"type": "integer"},
        "error": {"type": ["string", "null"]}, "response": {"type": "string"},
    }, ("delivery", "event", "repository", "state", "date", "status", "duration_ms", "error", "response")),
    "Redelivery": obj({"delivery": {"type": "string"}, "state": {"type": "string"}}, ("delivery", "state")),
    # watching (Gitea's WatchInfo)
    "WatchInfo": obj({
        "subscribed": {"type": "boolean"}, "ignored": {"type": "boolean"}, "reason": {"type": "null"},
        "url": {"type": "string"}, "repository_url": {"type": "string"},
    }, ("subscribed", "ignored", "reason", "url", "repository_url")),
}


_TYPES = {"string": str, "boolean": bool, "object": dict, "array": list}


def _type_ok(value, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "null":
        return value is None
    return isinstance(value, _TYPES[kind])


def check(value, schema: dict, field: str) -> None:
    """Raise Invalid (naming ``field``) unless ``value`` fits ``schema``."""
    if "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_type_ok(value, k) for k in kinds):
            raise Invalid(f"{field} must be {' or '.join(kinds)}", field)
    if "enum" in schema and value not in schema["enum"]:
        raise Invalid(f"{field} must be one of {', '.join(map(str, schema['enum']))}", field)
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1 << 30):
            raise Invalid(f"{field} must be {schema.get('minLength', 0)} to"
                          f" {schema.get('maxLength', 'any number of')} characters", field)
        if "\0" in value:
            raise Invalid(f"{field} must not contain NUL", field)
        if "pattern" in schema and not re.fullmatch(schema["pattern"], value):  # patterns here are anchored
            raise Invalid(f"{field} is malformed", field)
    if isinstance(value, int) and not isinstance(value, bool) and not (
            schema.get("minimum", -(1 << 63)) <= value <= schema.get("maximum", (1 << 63) - 1)):
        raise Invalid(f"{field} is out of range", field)
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", 1000):
            raise Invalid(f"{field} has too few or too many items", field)
        for i, item in enumerate(value):
            check(item, schema.get("items", {}), f"{field}[{i}]")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                raise Invalid(f"{name} is required", name)
        for name, item in value.items():
            if name not in properties:
                if schema.get("additionalProperties", True) is False:
                    raise Invalid(f"unknown field {name[:64]!r}", name[:64])
                continue
            check(item, properties[name], name)


def check_body(value, schema_name: str) -> dict:
    """``value`` (a parsed JSON body) if it fits the schema ``schema_name``, else Invalid."""
    if not isinstance(value, dict):
        raise Invalid("the body must be a JSON object", "body")
    check(value, SCHEMAS[schema_name], "body")
    return value
