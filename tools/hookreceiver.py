"""A webhook receiver on a loopback port, for the tests, the crash loop and the benchmarks.

    with Receiver() as r:          # listening on 127.0.0.1:r.port
        r.mode = "hang"            # "ok" (200), "fail" (500) or "hang" (never answers)
        hits = r.wait(2, timeout=10)   # the first two requests (Hit: time, headers, body)

``stop()`` closes the port (the receiver is "down"); ``start()`` listens again on
the same port.  Signatures are checked by the caller with :func:`verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from dataclasses import dataclass


@dataclass
class Hit:
    """One request the receiver got."""

    at: float  # time.time() when its body was read
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def delivery(self) -> str:
        return self.headers.get("x-hghosting-delivery", "")


def wait_until(predicate, timeout: float = 20, interval: float = 0.05):
    """Poll ``predicate()`` until it returns something true; return that (AssertionError on timeout)."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {predicate}")
        time.sleep(interval)
    return result


def attempts(db_path, hook_id: int) -> list[tuple]:
    """``(status, error, state)`` of a hook's recorded attempts, newest first, read from the site's SQLite file."""
    import sqlite3

    conn = sqlite3.connect(db_path, timeout=30)
    try:
        return conn.execute(
            "SELECT a.status, a.error, d.state FROM delivery_attempt a JOIN delivery d ON d.id = a.delivery_id"
            " WHERE a.webhook_id = ? ORDER BY a.id DESC", (hook_id,)).fetchall()
    finally:
        conn.close()


def verify(secret: str, hit: Hit) -> bool:
    """Does the hit carry the HMAC-SHA256 signature of its body with ``secret``?"""
    expected = "sha256=" + hmac.new(secret.encode(), hit.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, hit.headers.get("x-hghosting-signature-256", ""))


class Receiver:
    def __init__(self, port: int = 0):
        self.port = port
        self.mode = "ok"
        self.hits: list[Hit] = []
        self.attempts = 0  # every request, answered or not
        self._cond = threading.Condition()
        self._release = threading.Event()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handler(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._cond:
                    receiver.attempts += 1
                    mode = receiver.mode
                    if mode == "ok":
                        receiver.hits.append(Hit(time.time(), {k.lower(): v for k, v in self.headers.items()}, body))
                    receiver._cond.notify_all()
                if mode == "hang":
                    receiver._release.wait(60)
                    return
                status = 200 if mode == "ok" else 500
                answer = b"thanks" if status == 200 else b"broken"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(answer)

        return Handler

    def start(self) -> Receiver:
        self._release.clear()
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait(self, count: int, timeout: float = 20, attempts: bool = False) -> list[Hit]:
        """The first ``count`` hits (or wait for that many requests, ``attempts``); AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self.attempts if attempts else len(self.hits)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.hits)} hits ({self.attempts} requests), {count} expected")
                self._cond.wait(left)
            return list(self.hits)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
