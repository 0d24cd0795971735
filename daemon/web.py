"""Small WSGI helpers: a validated request, responses, and HTTP errors.

Every request is validated here before anything else looks at it: the raw
path must be UTF-8 once percent-decoded, and no segment may be empty-in-the-
middle, ``.``, ``..``, or contain a slash, backslash or control character in
any encoding.  Anything else is answered 400 with one line and no detail of
the site.
"""

from __future__ import annotations

import html
import ipaddress
import json
import re
import urllib.parse
from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie

from hgext_hosting.errors import Forbidden, NotFound, Throttled, UserError

MAX_URI = 8192
MAX_FORM = 64 * 1024
#: What a database integer column holds (SQLite and PostgreSQL ``bigint``).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: The highest page number any listing accepts (its offset stays far inside INT64).
MAX_PAGE = 10**9
_INTEGER = re.compile(r"-?[0-9]{1,30}\Z")


class HTTPError(Exception):
    """An error answered to the client: status, a one-line reason, optional headers."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = _latin1_line(reason)
        self.headers = headers or []


def page_status(error: UserError) -> int:
    """The HTTP status a page answers a refusal of the service layer with (errors.py's table)."""
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Forbidden):
        return 403
    if isinstance(error, Throttled):
        return 429
    return 400


def _latin1_line(text: str) -> str:
    line = " ".join(text.split())[:200]
    return line.encode("latin-1", "replace").decode("latin-1")


STATUS_TEXT = {
    200: "OK", 201: "Created", 204: "No Content", 303: "See Other", 304: "Not Modified",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 413: "Payload Too Large", 414: "URI Too Long",
    429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    503: "Service Unavailable",
}

SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
]

#: The policy of every response that is not one of our or hgweb's HTML pages (raw
#: files, archives, wire protocol): whatever a browser makes of it, nothing runs.
SANDBOX_CSP = "sandbox; default-src 'none'"
#: Types a browser shows inline without running anything; other raw files are downloads.
INERT_TYPES = ("text/plain", "application/binary", "application/octet-stream", "image/png", "image/gif",
               "image/jpeg", "image/webp")

PAGE_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class Request:
    """A parsed, validated WSGI request."""

    def __init__(self, environ: dict, trusted_proxies: tuple = ()):
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET")
        raw = environ.get("REQUEST_URI") or urllib.parse.quote(
            environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/"
        ) + ("?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else "")
        if len(raw) > MAX_URI:
            raise HTTPError(414, "request URI too long")
        raw_path, _, raw_query = raw.partition("?")
        self.segments = parse_path(raw_path)
        self.query_string = raw_query
        try:
            self.query = urllib.parse.parse_qs(
                raw_query.encode("latin-1").decode("utf-8"), keep_blank_values=True, max_num_fields=100,
                errors="strict",
            )
        except (UnicodeError, ValueError):
            raise HTTPError(400, "malformed query string") from None
        #: The client's address: the peer's, or the one its trusted proxy names.
        self.address = client_address(environ, trusted_proxies)
        self._form: dict[str, list[str]] | None = None
        self.user = None  # Owner, set by the app once authenticated
        self.session = None  # Session, for browser logins

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def int_arg(self, name: str, default: int | None = None, low: int = INT64_MIN,
                high: int = INT64_MAX) -> int | None:
        """The integer query parameter ``name`` (``default`` when absent), or HTTPError 400.

        Only plain decimal digits, and only values from ``low`` to ``high``: a
        number the database cannot hold is refused here, not by the database.
        """
        text = self.arg(name)
        if text is None:
            return default
        if not _INTEGER.match(text) or not low <= int(text) <= high:
            raise HTTPError(400, f"{name} must be an integer from {low} to {high}")
        return int(text)

    def page_arg(self, name: str = "page") -> int:
        """A page number of a listing (1 when absent), from 1 to :data:`MAX_PAGE`."""
        return self.int_arg(name, 1, 1, MAX_PAGE)

    def args(self, name: str) -> list[str]:
        return self.query.get(name, [])

    def header(self, name: str) -> str | None:
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"))

    def cookie(self, name: str) -> str | None:
        raw = self.environ.get("HTTP_COOKIE")
        if not raw:
            return None
        try:
            jar = SimpleCookie(raw)
        except CookieError:
            return None
        morsel = jar.get(name)
        return morsel.value if morsel else None

    @property
    def form(self) -> dict[str, list[str]]:
        """The url-encoded POST body (bounded)."""
        if self._form is None:
            try:
                length = int(self.environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                raise HTTPError(400, "bad Content-Length") from None
            if length > MAX_FORM:
                raise HTTPError(413, "form too large")
            body = self.environ["wsgi.input"].read(length) if length > 0 else b""
            try:
                self._form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True,
                                                   max_num_fields=200)
            except (UnicodeError, ValueError):
                raise HTTPError(400, "malformed form") from None
        return self._form

    def field(self, name: str, default: str = "") -> str:
        values = self.form.get(name)
        return values[-1] if values else default

    @property
    def host_url(self) -> str:
        """``scheme://host[:port]`` as the client addressed us."""
        scheme = self.environ.get("wsgi.url_scheme", "http")
        host = self.environ.get("HTTP_HOST") or (
            f"{self.environ.get('SERVER_NAME', 'localhost')}:{self.environ.get('SERVER_PORT', '80')}"
        )
        if not all(c.isalnum() or c in ".-:[]" for c in host):
            host = f"{self.environ.get('SERVER_NAME', 'localhost')}:{self.environ.get('SERVER_PORT', '80')}"
        return f"{scheme}://{host}"


def client_address(environ: dict, trusted_proxies: tuple = ()) -> str:
    """The client's IP address: ``REMOTE_ADDR``, unless that is a trusted proxy.

    Behind trusted proxies (``[hosting] trusted-proxies``: addresses and
    networks), ``X-Forwarded-For`` is read from the right, skipping trusted
    hops; the first other address is the client.  A malformed hop stops the
    walk at the last trusted one, so a forged header can only name the proxy.
    From an untrusted peer the header is ignored.
    """
    peer = environ.get("REMOTE_ADDR", "")
    if not trusted_proxies or not _trusted(peer, trusted_proxies):
        return peer
    client = peer
    for hop in reversed(environ.get("HTTP_X_FORWARDED_FOR", "").split(",")):
        try:
            address = ipaddress.ip_address(hop.strip())
        except ValueError:
            return client
        client = str(address)
        if not _trusted(client, trusted_proxies):
            return client
    return client


def _trusted(address: str, networks: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def parse_path(raw_path: str) -> list[str]:
    """The decoded path segments of a raw request path, or HTTPError 400."""
    if not raw_path.startswith("/"):
        raise HTTPError(400, "malformed request path")
    parts = raw_path[1:].split("/")
    if parts and parts[-1] == "":
        parts.pop()  # one trailing slash is fine
    segments = []
    for part in parts:
        try:
            decoded = urllib.parse.unquote_to_bytes(part).decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPError(400, "the request path is not UTF-8") from None
        if decoded in ("", ".", "..") or any(c in decoded for c in "/\\") or any(
            ord(c) < 32 or ord(c) == 127 for c in decoded
        ):
            raise HTTPError(400, "malformed request path")
        segments.append(decoded)
    return segments


def respond(start_response, status: int, body: bytes | str, content_type: str = "text/plain; charset=utf-8",
            headers: list[tuple[str, str]] | None = None, reason: str | None = None) -> Iterable[bytes]:
    if isinstance(body, str):
        body = body.encode("utf-8")
    all_headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *SECURITY_HEADERS]
    if content_type.startswith("text/html"):
        all_headers.append(("Content-Security-Policy", PAGE_CSP))
    all_headers.extend(headers or [])
    start_response(f"{status} {reason or STATUS_TEXT.get(status, 'Error')}", all_headers)
    return [body]


def hgweb_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """hgweb's response headers, made as safe as our own responses.

    Every response gets :data:`SECURITY_HEADERS`.  hgweb's HTML pages keep the
    policy hgweb sets (``web.csp``); anything else, above all ``raw-file``
    (the only response hgweb marks ``Content-Disposition: inline``, with a
    type ``web.guessmime`` may make ``text/html``), gets :data:`SANDBOX_CSP`,
    and a raw file of any type but :data:`INERT_TYPES` becomes an attachment.
    """
    ours = {name.lower() for name, _ in SECURITY_HEADERS} | {"content-security-policy"}
    kept = [(k, v) for k, v in headers if k.lower() not in ours]
    values = {k.lower(): v for k, v in headers}
    ctype = values.get("content-type", "").split(";")[0].strip().lower()
    disposition = values.get("content-disposition", "")
    raw = disposition.lower().startswith("inline")
    if raw and ctype not in INERT_TYPES:
        kept = [(k, v) for k, v in kept if k.lower() != "content-disposition"]
        kept.append(("Content-Disposition", "attachment" + disposition[len("inline"):]))
    if ctype == "text/html" and not raw and "content-security-policy" in values:
        csp = values["content-security-policy"]
    else:
        csp = SANDBOX_CSP
    return [*kept, *SECURITY_HEADERS, ("Content-Security-Policy", csp)]


def respond_json(start_response, data, status: int = 200) -> Iterable[bytes]:
    body = json.dumps(data, indent=1, sort_keys=True)
    return respond(start_response, status, body + "\n", "application/json",
                   headers=[("Access-Control-Allow-Origin", "*")])


def redirect(start_response, location: str, headers: list[tuple[str, str]] | None = None) -> Iterable[bytes]:
    return respond(start_response, 303, f"See {location}\n", headers=[("Location", location), *(headers or [])])


def error_body(error: HTTPError, html_wanted: bool) -> tuple[str, str]:
    if html_wanted:
        return (f"<!doctype html><title>{error.status}</title><h1>{error.status}"
                f" {html.escape(STATUS_TEXT.get(error.status, 'Error'))}</h1><p>{html.escape(error.reason)}</p>"
                '<p><a href="/">home</a> · <a href="/-/login">log in</a></p>\n', "text/html; charset=utf-8")
    return error.reason + "\n", "text/plain; charset=utf-8"
