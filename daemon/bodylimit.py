"""Request bodies are refused with 413 from their headers, before a byte is stored.

Twisted reads a request's whole body before the resource sees it, and spools
anything over 100 KB into a temporary file, of any size.  One anonymous POST
could fill the disk, and a few held open could keep gigabytes of temporary
files.  So :class:`BoundedRequest` decides from the request line and headers,
as soon as they are in (``gotLength``, on the reactor thread), how large the
body may be:

- **an authenticated push** (``POST ...?cmd=unbundle`` whose ``Authorization``
  header is already proven, see below) may send up to ``[hosting]
  max-request-mb`` (2048 MB by default: a large repository's bundle fits);
- **everything else** (forms, the API, anonymous or unproven requests, any
  other URL) at most :data:`SMALL_BODY_BYTES` (4 MB, or ``max-request-mb`` if
  lower).  Such bodies always reach the application, which answers 401/403
  itself as before.

A body declared longer (``Content-Length``), or a chunked body whose bytes pass
the limit, gets one readable line, ``413``, and the connection is closed so the
rest is never read.

"Already proven" is :meth:`daemon.auth.Authenticator.already_verified`, which
never runs a password hash on the reactor: a token (``hgh_...``) costs one
SHA-256 and one indexed lookup; a password counts only if this process
verified it within the cache time.  A password the process has not verified
yet is refused a large body.  That is not a limitation for ``hg``: its push
sends ``capabilities``, ``batch`` and ``listkeys`` with the same header on the
same keep-alive connection (so the same worker process) before ``unbundle``,
and those small requests verify and cache it.  A client that sends a large
body first, with a password nobody checked, is exactly the anonymous disk
filler this module exists to stop.
"""

from __future__ import annotations

import urllib.parse

from twisted.internet import threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server

from .auth import Malformed, Refusal

log = Logger()

#: The largest body of any request but an authenticated push.
SMALL_BODY_BYTES = 4 * 1024 * 1024


def is_push(method: bytes | None, target: bytes | None) -> bool:
    """Is this request line a wire-protocol push (``POST /OWNER/NAME?cmd=unbundle``)?"""
    if method != b"POST" or not target:
        return False
    _, _, query = target.partition(b"?")
    try:
        commands = urllib.parse.parse_qs(query.decode("latin-1"), max_num_fields=100).get("cmd")
    except ValueError:
        return False
    return bool(commands) and commands[-1] == "unbundle"


class BoundedRequest(server.Request):
    """A request whose body may not exceed the limit its headers earn (see the module).

    States: ``open`` (the body is stored, up to ``_allowed`` bytes), ``pending``
    (a push's password is being verified in a thread: reading is paused and the
    few chunks already read are held in memory), ``answered`` (a 401 or 429 went
    out from the headers: the rest of the body is read and discarded, never
    stored, so that the client reads the answer instead of a reset, then the
    connection closes) and ``refused`` (413: the connection is closed at once).
    """

    _state = "open"
    _received = 0
    _allowed: int | None = None
    _held: list[bytes] | None = None
    _complete: tuple | None = None  # requestReceived's arguments, if the body ended while pending

    def _site_limit(self) -> int | None:
        return getattr(self.channel.site, "max_request_bytes", None)

    def gotLength(self, length):
        big = self._site_limit()
        if big is None:
            return super().gotLength(length)
        small = min(SMALL_BODY_BYTES, big)
        self._allowed = small
        if length is not None and length <= small:
            return super().gotLength(length)  # the common case: no need to ask who sends it
        if length is not None and length > big:
            return self._refuse(big, length)
        if not is_push(getattr(self.channel, "_command", None), getattr(self.channel, "_path", None)):
            if length is not None:
                return self._refuse(small, length)
            return super().gotLength(length)  # chunked: counted as it arrives
        header = self.requestHeaders.getRawHeaders(b"authorization")
        authenticator = getattr(self.channel.site, "authenticator", None)
        if length is None:  # chunked: the large limit only for proven credentials
            if header and authenticator is not None and self._proven(authenticator, header[0]):
                self._allowed = big
            return super().gotLength(length)
        if not header or authenticator is None:
            # hg pushes without credentials until it is challenged (a public repository's
            # reads need none): challenge it now, before its bundle is stored.
            return self._answer(401, "authorization required to push")
        value = header[0].decode("latin-1")
        super().gotLength(length)
        if self._proven(authenticator, header[0]):
            self._allowed = big
            return None
        # A password this process has not verified yet: verify it off the reactor,
        # reading nothing meanwhile.
        self._state = "pending"
        self._held = []
        self.channel.transport.pauseProducing()
        address = getattr(self.getClientAddress(), "host", "")
        d = threads.deferToThread(authenticator.basic, value, address)
        d.addBoth(self._verified, big)
        return None

    @staticmethod
    def _proven(authenticator, header: bytes) -> bool:
        try:
            return authenticator.already_verified(header.decode("latin-1"))
        except Exception:  # noqa: BLE001 - the database is down: not proven
            log.failure("checking the credentials of a large push")
            return False

    def _verified(self, result, big: int) -> None:
        if self._state != "pending" or getattr(self, "_disconnected", False):
            return
        held, self._held = self._held or [], None
        self._state = "open"
        if isinstance(result, Failure) or isinstance(result, Refusal):
            if isinstance(result, Failure) and not result.check(Malformed):
                log.failure("verifying the credentials of a large push", result)
            status, reason = (result.status, result.reason) if isinstance(result, Refusal) else (
                401, "wrong user name or password")
            self._answer(status, reason)
        else:
            self._allowed = big
            for chunk in held:
                self.handleContentChunk(chunk)
        if self._complete is not None and self._state == "open":
            super().requestReceived(*self._complete)
        elif self._complete is not None:
            self.channel.loseConnection()
        self.channel.transport.resumeProducing()

    def handleContentChunk(self, data):
        if self._state == "pending":
            self._held.append(data)
            self.channel.transport.pauseProducing()  # the channel may have resumed it
            return
        if self._state != "open":
            self._received += len(data)
            if self._state == "answered" and self._received > (self._site_limit() or 0):
                self.channel.loseConnection()
            return
        self._received += len(data)
        if self._allowed is not None and self._received > self._allowed:
            self._refuse(self._allowed, self._received)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if self._state == "pending":
            self._complete = (command, path, version)
            return
        if self._state == "answered":  # the discarded body is complete: the answer stands
            self.channel.loseConnection()
            return
        if self._state == "refused":  # the rest of a refused body was already buffered: ignore it
            return
        super().requestReceived(command, path, version)

    def _write_raw(self, status: str, message: str, extra: bytes = b"") -> None:
        # Answered from the headers: no "100 Continue" may follow (Twisted sends one
        # after gotLength when the client asked with Expect).
        self.requestHeaders.removeHeader(b"expect")
        body = (message + "\n").encode("utf-8")
        self.channel.transport.write(
            b"HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\n%s"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status.encode("latin-1"), extra, len(body), body)
        )

    def _answer(self, status: int, reason: str) -> None:
        """Answer 401/429 from the headers; read and discard the body, then close."""
        self._state = "answered"
        log.info("{address}: answered {status} to a push from its headers ({reason})",
                 address=getattr(self.getClientAddress(), "host", "-"), status=status, reason=reason)
        reason = " ".join(reason.split())[:200].encode("latin-1", "replace").decode("latin-1")
        extra = b'WWW-Authenticate: Basic realm="hg-hosting", charset="UTF-8"\r\n' if status == 401 else b""
        self._write_raw(f"{status} {reason}", reason, extra)

    def _refuse(self, limit: int, size: int) -> None:
        self._state = "refused"
        message = f"request body too large: the limit is {limit // (1024 * 1024)} MB"
        if limit != self._site_limit():
            message += " (only an authenticated push may send more)"
        address = getattr(self.getClientAddress(), "host", "-")
        log.info("{address}: refused a request body of {size} bytes (limit {limit})",
                 address=address, size=size, limit=limit)
        self._write_raw("413 Content Too Large", message)
        self.channel.loseConnection()
