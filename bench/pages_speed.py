"""hgweb's ``/log`` with the site's top bar against ``hg serve``, and every hosting page's time.

Issue 12's speed targets, measured in one run on this machine:

- ``/log`` of the Flask corpus (5,534 changesets): ``hg-hosting serve`` (one
  process) and ``hg-hosting serve --workers 2`` each against ``hg serve`` of the
  same revlogs, interleaved rounds after a warm-up, fresh connections, median
  per request: the ratio must be at most 1.0 for both.
- every hosting page of the 1,000-repository site (``bench/http_vs_hgserve.py``'s
  ``S2``; one user ``bench`` with a password is added and made admin of
  ``u00/r000`` for the pages that need a login): median per request, warm,
  under 15 ms each (the daemon's CPU time per request is printed too: on a
  loaded machine the wall time mostly measures the wait for a core).  hgweb's ``/u00/r000/log`` of that site against
  ``hg serve --web-conf``'s is printed for information.

It reuses :mod:`http_vs_hgserve`'s set-up and servers (its ``Bench``).

Usage (from the repository root)::

    .venv/bin/python bench/pages_speed.py [--quick] [--repos N] [-v] [--json FILE]

Exit status: 0 when every target is met, 1 when one is missed, 2 when the
benchmark itself failed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import http_vs_hgserve as hv
from http_vs_hgserve import DEFAULT_CORPUS, HGSERVE, Bench, BenchError

PASSWORD = "bench-pages-password"
PAGE_TARGET_MS = 15.0
LOG_TARGET_RATIO = 1.0
#: The hosting pages measured on the 1,000-repository site: name -> (path, needs the session).
PAGES = {
    "index": ("/", False),
    "owner": ("/u00", False),
    "overview": ("/u00/r000", False),
    "pushlog": ("/u00/r000/pushlog", False),
    "pushloghtml": ("/u00/r000/pushloghtml?startID=0&endID=1", False),
    "login": ("/-/login", False),
    "overview (logged in)": ("/u00/r000", True),
    "settings": ("/u00/r000/settings", True),
    "fork": ("/u00/r000/fork", True),
    "new": ("/-/new", True),
    "404 page": ("/u00/no-such", True),
}


class SessionClient(hv.Client):
    """A client that sends a session cookie with every request."""

    def __init__(self, port: int, cookie: str | None):
        super().__init__(port)
        self.cookie = cookie

    def get(self, path: str, close: bool = False) -> tuple[int, bytes, float]:
        headers = {"Accept": "text/html", "Connection": "close"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        start = time.perf_counter()
        self.conn.request("GET", path, headers=headers)
        resp = self.conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - start
        self.conn.close()
        return resp.status, body, elapsed


def log_in(port: int, user: str, password: str) -> str:
    """The ``hgh_session=...`` cookie of a login through the form."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/-/login", headers={"Accept": "text/html"})
    resp = conn.getresponse()
    body = resp.read().decode()
    csrf_cookie = re.search(r"(hgh_login_csrf=[^;]+)", resp.getheader("Set-Cookie")).group(1)
    token = re.search(r'name="csrf" value="([^"]+)"', body).group(1)
    form = urllib.parse.urlencode({"csrf": token, "user": user, "password": password, "next": "/"})
    conn.request("POST", "/-/login", body=form, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": csrf_cookie})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    if resp.status != 303:
        raise BenchError(f"logging in answered {resp.status}")
    cookies = [c.split(";")[0] for c in resp.headers.get_all("Set-Cookie") if c.startswith("hgh_session=")]
    return cookies[0]


def measure_page(port: int, pid: int, path: str, cookie: str | None, rounds: int,
                 per_round: int) -> tuple[list[float], float]:
    """ms per request: one warm-up round, then ``rounds`` x ``per_round`` requests (fresh connections).

    Also the daemon's CPU time per request (``/proc/PID/stat``, user + system, over
    the measured requests): what the page costs the server, whatever else runs
    on the machine, where the wall time on a loaded machine mostly measures the
    queue for a core.
    """
    client = SessionClient(port, cookie)
    samples = []
    cpu_start = 0.0
    for index in range(-1, rounds):
        if index == 0:
            cpu_start = hv.cpu_seconds(pid)
        for _ in range(per_round):
            status, body, elapsed = client.get(path)
            if status not in (200, 404):
                raise BenchError(f"GET {path}: {status} {body[:200]!r}")
            if index >= 0:
                samples.append(elapsed * 1000)
    return samples, (hv.cpu_seconds(pid) - cpu_start) * 1000 / len(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pages-bench-"))
    bench = Bench(work, args.corpus, str(hv.BIN / "hg"), str(hv.BIN / "hg-hosting"), args.quick, args.repos,
                  args.verbose, frozenset({"log", "index"}))
    rounds = 6 if args.quick else 15
    out: dict[str, object] = {"load_start": os.getloadavg()[0]}
    try:
        bench.setup()
        bench.pages("log", {"daemon": ("daemon", "/alice/flask/log"), HGSERVE: ("hgserve", "/log")},
                    per_round=20, count=rounds)
        bench.pages("log-w2", {"daemon --workers 2": ("daemon-w2", "/alice/flask/log"),
                               HGSERVE: ("hgserve", "/log")}, per_round=20, count=rounds)
        bench.setup_many()
        cli = [bench.hg_hosting, "--site", str(bench.site2)]
        bench.run([*cli, "user", "add", "bench", "--email", "bench@example.org", "--password-stdin"],
                  input=PASSWORD + "\n")
        bench.run([*cli, "grant", "u00/r000", "bench", "admin"])
        port = bench.servers["daemon-many"].port
        cookie = log_in(port, "bench", PASSWORD)
        pages, cpu = {}, {}
        pid = bench.servers["daemon-many"].proc.pid
        for name, (path, logged_in) in PAGES.items():
            samples, cpu[name] = measure_page(port, pid, path, cookie if logged_in else None,
                                              3 if args.quick else 5, 10)
            pages[name] = statistics.median(samples)
            bench.log(f"  {name}: {pages[name]:.2f} ms, daemon CPU {cpu[name]:.2f} ms per request")
        bench.pages("log-many", {"daemon": ("daemon-many", "/u00/r000/log"),
                                 HGSERVE: ("hgserve-many", "/u00/r000/log")}, per_round=10, count=rounds)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        bench.stop()
        shutil.rmtree(work, ignore_errors=True)
    ok = True
    print(f"nproc {os.cpu_count()}; load average {out['load_start']:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    print(f"{'measure':34} {'daemon':>10} {'hg serve':>10} {'ratio':>7} {'target':>8}")
    for key, kind in (("log", "daemon"), ("log-w2", "daemon --workers 2"), ("log-many", "daemon")):
        result = bench.results[key]
        ours, theirs = result.median(kind), result.median(HGSERVE)
        ratio = ours / theirs
        target = LOG_TARGET_RATIO if key != "log-many" else None
        passed = target is None or ratio <= target
        ok &= passed
        title = {"log": "/log, one process", "log-w2": "/log, --workers 2",
                 "log-many": "/u00/r000/log (1,000 repos, info)"}[key]
        print(f"{title:34} {ours:8.2f}ms {theirs:8.2f}ms {ratio:6.2f}x "
              f"{f'<= {target:.1f}x' if target else '':>8} {'' if target is None else 'PASS' if passed else 'FAIL'}")
        out[key] = {"daemon_ms": ours, "hgserve_ms": theirs, "ratio": ratio}
    print(f"\n{'page (1,000 repositories)':34} {'median':>10} {'CPU/req':>10} {'target':>8}")
    for name, ms in pages.items():
        passed = ms < PAGE_TARGET_MS
        ok &= passed
        print(f"{name:34} {ms:8.2f}ms {cpu[name]:8.2f}ms {'< 15 ms':>8} {'PASS' if passed else 'FAIL'}")
    out["pages_ms"] = pages
    out["pages_cpu_ms"] = cpu
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
