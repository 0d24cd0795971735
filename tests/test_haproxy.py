"""contrib/haproxy.cfg.in itself: a push (POST) is never sent twice, a read is retried.

The recipe's HAProxy retries a request that a daemon never answered (the
daemon died or reset the connection) on another daemon, which keeps clones and
pulls going through a rolling restart.  Replaying a POST could apply an
``unbundle`` twice, so the configuration must never retry one.  Two stand-in
backends that answer ``/healthz`` (so HAProxy keeps them in rotation) and drop
every other request without answering show exactly what HAProxy sends: the
real ``haproxy`` with the shipped configuration, no daemon needed.
"""

from __future__ import annotations

import http.client
import socket
import threading

import pytest
from test_cluster import HAProxy


class Dropper:
    """A backend that answers ``GET /healthz`` 200 and closes every other request unanswered."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
            except OSError:
                return
            line = data.split(b"\r\n", 1)[0].decode("latin-1")
            if line.startswith("GET /healthz "):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                return
            with self._lock:
                self.requests.append(line)
            # no answer at all: HAProxy sees an empty response

    def seen(self, method: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.startswith(method + " "))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    backends = [Dropper(), Dropper()]
    haproxy = HAProxy(tmp_path_factory.mktemp("haproxy"), [b.port for b in backends])
    yield haproxy, backends
    haproxy.stop()
    for b in backends:
        b.close()


def through(haproxy: HAProxy, method: str, path: str, body: bytes | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", haproxy.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/mercurial-0.1"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_a_push_is_never_replayed(proxy):
    """An unanswered POST (an unbundle whose daemon died) reaches one daemon once: 502 to the client."""
    haproxy, backends = proxy
    assert through(haproxy, "POST", "/alice/demo?cmd=unbundle", b"bundle bytes") == 502
    assert sum(b.seen("POST") for b in backends) == 1


def test_a_read_is_retried_on_another_daemon(proxy):
    """An unanswered GET is tried again (``retries 3``, redispatched): the contrast that makes the test mean it."""
    haproxy, backends = proxy
    before = sum(b.seen("GET") for b in backends)
    assert through(haproxy, "GET", "/alice/demo?cmd=capabilities") == 502
    assert sum(b.seen("GET") for b in backends) - before == 4
    assert all(b.seen("GET") for b in backends), "the retries went to both daemons"
