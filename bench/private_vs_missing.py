"""Can a client tell a private repository from a missing one by the time of the answer?

The daemon answers both alike (401 anonymous, 404 authenticated, same headers and
body); this measures whether the time differs.  Set-up, in a temporary directory:
a site with the private ``alice/secret`` (one changeset pushed) and users alice and
carol (carol may not read it, authenticates with an API token), and one daemon.

Measurement: ``GET /alice/secret?cmd=heads`` and ``GET /alice/nothing?cmd=heads``
alternated on one keep-alive connection, ``--pairs`` pairs, the order inside a
pair alternating (private first in even pairs), after 500 untimed warm-up pairs;
anonymously and as carol.  Client-side wall time per request
(``time.perf_counter_ns``).  Printed per identity: the medians, the median of the
paired differences (private minus missing) with a 95% confidence interval
(order statistics of the sign test), the share of pairs where private was
slower and the sign test's two-sided p-value.  A difference the daemon leaks
shows as an interval away from 0 and a small p.

Usage (from the repository root)::

    .venv/bin/python bench/private_vs_missing.py [--pairs 5000] [--keep]
"""

from __future__ import annotations

import argparse
import http.client
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchenv import BIN, isolated_env, serving, work_directory  # noqa: E402

HG, HG_HOSTING = str(BIN / "hg"), str(BIN / "hg-hosting")


def timed(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> tuple[int, int]:
    start = time.perf_counter_ns()
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.read()
    return time.perf_counter_ns() - start, response.status


def sign_test(diffs: list[int]) -> tuple[float, float, float]:
    """(share of positive differences, two-sided p of the sign test, z) for non-zero diffs."""
    nonzero = [d for d in diffs if d != 0]
    n = len(nonzero)
    pos = sum(1 for d in nonzero if d > 0)
    z = (pos - n / 2) / math.sqrt(n / 4) if n else 0.0
    p = math.erfc(abs(z) / math.sqrt(2))
    return pos / n if n else 0.5, p, z


def median_ci(values: list[int]) -> tuple[float, float]:
    """95% confidence interval of the median (order statistics, normal approximation)."""
    s = sorted(values)
    n = len(s)
    k = max(0, int(math.floor(n / 2 - 1.96 * math.sqrt(n) / 2)))
    return s[k], s[min(n - 1, n - 1 - k)]


def measure(port: int, headers: dict[str, str], pairs: int, expected: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    private, missing = "/alice/secret?cmd=heads", "/alice/nothing?cmd=heads"
    for _ in range(500):
        for path in (private, missing):
            assert timed(conn, path, headers)[1] == expected
    times_private, times_missing = [], []
    for i in range(pairs):
        order = (private, missing) if i % 2 == 0 else (missing, private)
        result = {}
        for path in order:
            elapsed, status = timed(conn, path, headers)
            assert status == expected, (path, status)
            result[path] = elapsed
        times_private.append(result[private])
        times_missing.append(result[missing])
    conn.close()
    diffs = [a - b for a, b in zip(times_private, times_missing, strict=True)]
    share, p, z = sign_test(diffs)
    low, high = median_ci(diffs)
    return {
        "median_private_us": statistics.median(times_private) / 1000,
        "median_missing_us": statistics.median(times_missing) / 1000,
        "median_diff_us": statistics.median(diffs) / 1000,
        "ci95_us": (low / 1000, high / 1000),
        "private_slower_share": share, "sign_test_p": p, "z": z,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    with work_directory("private-vs-missing-", args.keep) as work:
        env = isolated_env(work)
        site = work / "site"
        cli = [HG_HOSTING, "--site", str(site)]
        subprocess.run([*cli, "init"], env=env, check=True, capture_output=True)
        for name in ("alice", "carol"):
            subprocess.run([*cli, "user", "add", name, "--email", f"{name}@example.org"], env=env, check=True,
                           capture_output=True)
        subprocess.run([*cli, "repo", "create", "alice/secret", "--private"], env=env, check=True,
                       capture_output=True)
        token = subprocess.run([*cli, "token", "create", "carol", "--label", "bench"], env=env, check=True,
                               capture_output=True, text=True).stdout.strip()
        wc = work / "wc"
        subprocess.run([HG, "init", str(wc)], env=env, check=True)
        (wc / "a").write_text("a\n")
        subprocess.run([HG, "-R", str(wc), "commit", "-qAm", "a"], env=env, check=True)
        subprocess.run([HG, "-R", str(wc), "push", "-q", str(site / "repos" / "alice" / "secret")],
                       env={**env, "HG_HOSTING_USER": "alice"}, check=True)
        with serving(site, env, work / "daemon.log") as (pid, port):
            import base64

            carol = {"Authorization": "Basic " + base64.b64encode(f"carol:{token}".encode()).decode()}
            for label, headers, expected in (("anonymous (401)", {}, 401), ("carol, token (404)", carol, 404)):
                r = measure(port, headers, args.pairs, expected)
                print(f"{label:20} pairs={args.pairs} median private {r['median_private_us']:.1f} µs,"
                      f" missing {r['median_missing_us']:.1f} µs; paired difference median"
                      f" {r['median_diff_us']:+.1f} µs (95% CI {r['ci95_us'][0]:+.1f} .. {r['ci95_us'][1]:+.1f});"
                      f" private slower in {r['private_slower_share']:.1%} of pairs, sign test"
                      f" p={r['sign_test_p']:.3g} (z={r['z']:+.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
