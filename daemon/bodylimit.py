"""Request bodies over the site's limit are refused with 413 before they are stored.

Twisted reads a request's whole body before the resource sees it, and spools
anything over 100 KB into a temporary file, of any size.  A client could fill
the disk with one POST.  :class:`BoundedRequest` refuses a body longer than
``[hosting] max-request-mb`` (2048 MB by default: a push of a large
repository's bundle fits) as soon as its ``Content-Length`` says so, or, for
a chunked body, as soon as the bytes received pass the limit: one readable
line, ``413``, and the connection is closed so the rest is never read.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.web import server

log = Logger()


class BoundedRequest(server.Request):
    """A request whose body may not exceed ``channel.site.max_request_bytes``."""

    _refused = False
    _received = 0

    def _limit(self) -> int | None:
        return getattr(self.channel.site, "max_request_bytes", None)

    def gotLength(self, length):
        limit = self._limit()
        if limit is not None and length is not None and length > limit:
            self._refuse(limit, length)
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._received += len(data)
        limit = self._limit()
        if limit is not None and self._received > limit:
            self._refuse(limit, self._received)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if self._refused:  # the rest of a refused body was already buffered: ignore it
            return
        super().requestReceived(command, path, version)

    def _refuse(self, limit: int, size: int) -> None:
        self._refused = True
        body = f"request body too large: the limit is {limit // (1024 * 1024)} MB\n".encode()
        address = getattr(self.getClientAddress(), "host", "-")
        log.info("{address}: refused a request body of {size} bytes (limit {limit})",
                 address=address, size=size, limit=limit)
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Content Too Large\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.channel.loseConnection()
