"""Back-pressure: clients that stop reading a clone do not make the daemon buffer the bundle.

Four raw HTTP clients send the ``getbundle`` request ``hg clone`` makes for the
generated corpus (``big_site``: tens of MB, most of it incompressible assets, so
four buffered copies would break the limit; same arguments, same
``X-HgArg-1``/``X-HgProto-1`` headers) with a small receive buffer, read the
response headers and then stop reading.  Meanwhile a normal ``hg clone`` must
complete and the daemon's resident memory
(``/proc/PID/status`` VmRSS, sampled every 50 ms) must stay under 150 MB.  Twisted
writes the access-log line of a request when the application has produced all of
it, so a stalled request without such a line proves the daemon stopped producing.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from conftest import HG, Daemon, RssPeak

RSS_LIMIT_KB = 150 * 1024
STALLED = 4





def getbundle_request(port: int, full: str) -> bytes:
    """The full-clone ``getbundle`` request of ``hg clone`` (7.2), for the current heads."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{full}?cmd=heads", timeout=30) as r:
        heads = r.read().decode().split()
    bundle2 = urllib.parse.quote("HG20\nbookmarks\nchangegroup=01,02,03\nlistkeys\nphases=heads", safe="")
    args = urllib.parse.urlencode({
        "bookmarks": "1", "bundlecaps": f"HG20,bundle2={bundle2}", "cg": "1",
        "common": "0" * 40, "heads": " ".join(heads), "listkeys": "bookmarks", "phases": "1",
    })
    return (f"GET /{full}?cmd=getbundle HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Accept-Encoding: identity\r\nVary: X-HgArg-1,X-HgProto-1\r\nX-HgArg-1: {args}\r\n"
            "X-HgProto-1: 0.1 0.2 comp=zstd,zlib,none,bzip2 partial-pull\r\n"
            "Accept: application/mercurial-0.1\r\nUser-Agent: stalled-client\r\n\r\n").encode()


def start_stalled(port: int, request: bytes) -> socket.socket:
    """Send the request, read the response headers and the first bytes, then read no more."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(4096)
        assert chunk, f"closed before the response headers: {received!r}"
        received += chunk
    assert received.startswith(b"HTTP/1.1 200 "), received[:200]
    return sock


def finished_getbundles(log: str) -> list[tuple[str, int]]:
    """(user agent, bytes) of every getbundle request the daemon finished."""
    pattern = re.compile(r'"GET /alice/big\?cmd=getbundle HTTP/1.1" (\d+) (\d+) "[^"]*" "([^"]*)"')
    return [(agent, int(size)) for status, size, agent in pattern.findall(log) if status == "200"]


def test_stalled_clones_keep_memory_bounded(big_site, tmp_path):
    """With 4 clients stalled in a clone of the corpus (larger than the kernel's socket buffers), a normal clone completes, the daemon's RSS stays under 150 MB and the stalled responses are not produced in full; closing them leaves the daemon serving with no traceback."""
    site = big_site
    daemon = Daemon(site)
    rss = RssPeak(daemon.proc.pid)
    stalled: list[socket.socket] = []
    try:
        rss.__enter__()
        request = getbundle_request(daemon.port, "alice/big")
        stalled = [start_stalled(daemon.port, request) for _ in range(STALLED)]
        dest = tmp_path / "clone"
        proc = subprocess.run([HG, "clone", "-q", "-U", f"{daemon.url}/alice/big", str(dest)],
                              env=site.env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
        time.sleep(2)  # the stalled responses had all that time to fill whatever buffer there is
        rss.stop()
        log = daemon.log()

        assert rss.peak < RSS_LIMIT_KB, f"daemon RSS peaked at {rss.peak} kB (started at {rss.baseline} kB)"
        clone_count = site.hg("log", "-R", str(dest), "-T", "x").stdout
        assert len(clone_count) == len(site.hg("log", "-R", str(site.repo_path("alice/big")), "-T", "x").stdout)
        finished = finished_getbundles(log)
        normal = [size for agent, size in finished if agent.startswith("mercurial/")]
        assert len(normal) == 1, finished
        print(f"daemon VmRSS: {rss.baseline} kB at start, peak {rss.peak} kB; the clone sent {normal[0]} bytes")
        wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
        # otherwise the kernel alone could hold a whole response and prove nothing
        assert normal[0] > wmem_max, f"a clone of {normal[0]} bytes fits in a {wmem_max}-byte send buffer"
        assert not [f for f in finished if f[0] == "stalled-client"], (
            f"the daemon produced the whole bundle for a client that stopped reading: {finished}")
    finally:
        rss.stop()
        for sock in stalled:
            sock.close()

    # the stalled requests end with their connections; the daemon goes on serving
    with urllib.request.urlopen(f"{daemon.url}/healthz", timeout=30) as response:
        assert response.status == 200
    time.sleep(0.5)
    daemon.stop()
    log = daemon.log()
    assert "Traceback" not in log, log[-3000:]
    assert "Producer was not unregistered" not in log
