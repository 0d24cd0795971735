"""Do the push log's readers cost the same on a million pushes as on one?

Set-up, in a temporary directory: a site with three public repositories,
``alice/one``, ``alice/twenty`` and ``alice/million``, each receiving the same
real changeset by an ``hg push`` (push 1); ``alice/twenty`` then gets 19 more
push records and ``alice/million`` ``--pushes - 1``, inserted directly with SQL
in one transaction (one fake changeset node each, dates one second apart).
One daemon serves them.  ``alice/twenty`` fills a push log page (20) as the
million does, so the ratio to it is the history's cost alone; the ratio to
``alice/one`` also counts the 20 rows shown instead of 1.

Measurement: for each reader, ``GET`` on the same keep-alive connection,
the repositories alternated, ``--rounds`` rounds after 50 untimed warm-up
rounds; client-side wall time per request (``time.perf_counter_ns``).  Printed
per reader: the median for each repository and the million's ratios, then the
daemon's CPU time per request (``/proc``, ``--rounds`` requests to each
repository in a row): on a loaded machine the wall time mostly measures the
wait for a core.  The readers:
json-pushes (the last 10; version 2; a deep page ``json-pushes/N?version=2``
(the middle of the history) and the last; 10 ids from the middle; 10 seconds
of dates; ``changeset=tip``), the push log's newest page, page 5,000 and its
last page, the overview, ``pushloghtml`` over 10 ids and the API's pushes
(page 1, a deep and the last page, 20 a page as the push log; a page of 100 is
``bench/api_latency.py``'s).  The last line gives the
highest ratio to the single push (issue 16 C: at most 1.5).  Then, in-process, the
CLI/``hg pushlog`` read (``pushlog.recent_pushes(repo, 20)``), same method.

Usage (from the repository root)::

    .venv/bin/python bench/pushlog_scale.py [--pushes 1000000] [--rounds 300] [--keep]
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchenv import BIN, cpu_seconds, isolated_env, serving, work_directory  # noqa: E402

HG, HG_HOSTING = str(BIN / "hg"), str(BIN / "hg-hosting")
START = datetime.datetime(2020, 1, 1)


def fill(db_path: Path, repository_id: int, count: int) -> None:
    """Push records 2..count+1 of a repository, one fake changeset each, in one transaction."""
    db = sqlite3.connect(db_path)
    with db:
        db.executemany(
            'INSERT INTO push (repository_id, push_id, "user", date, state, txnid, details)'
            " VALUES (?, ?, 'bot', ?, 'done', '', '{}')",
            ((repository_id, i, str(START + datetime.timedelta(seconds=i))) for i in range(2, count + 2)),
        )
        # Each has one changeset: it is the push_id-th push with changesets (models.Push.cset_seq).
        db.execute("UPDATE push SET cset_seq = push_id WHERE repository_id = ? AND push_id > 1", (repository_id,))
        db.execute(
            "INSERT INTO push_changeset (push_id, position, node)"
            " SELECT id, 0, printf('%040x', push_id) FROM push WHERE repository_id = ? AND push_id > 1",
            (repository_id,),
        )
    db.close()


def readers(repo: str, pushes: int) -> dict[str, str]:
    """Reader name -> path, for the repository ``repo`` (``alice/NAME``) of ``pushes`` pushes."""
    mid = max(0, pushes // 2 - 5)
    first = START + datetime.timedelta(seconds=mid - 1)
    last = first + datetime.timedelta(seconds=11)
    fmt = "%Y-%m-%d+%H:%M:%S+%%2B0000"
    pages = max(1, -(-pushes // 20))
    api = f"/api/v1/repos/{repo}/pushes"
    return {
        "json-pushes": f"/{repo}/json-pushes",
        "json-pushes v2": f"/{repo}/json-pushes?version=2",
        "json-pushes deep page": f"/{repo}/json-pushes/{max(1, pushes // 20)}?version=2",
        "json-pushes last page": f"/{repo}/json-pushes/{-(-pushes // 10)}?version=2",
        "json-pushes 10 ids": f"/{repo}/json-pushes?version=2&startID={mid}&endID={mid + 10}",
        "json-pushes 10 s": f"/{repo}/json-pushes?startdate={first.strftime(fmt)}&enddate={last.strftime(fmt)}",
        "json-pushes changeset=tip": f"/{repo}/json-pushes?changeset=tip",
        "pushlog page 1": f"/{repo}/pushlog",
        "pushlog page 5000": f"/{repo}/pushlog?page={min(5000, pages)}",
        "pushlog last page": f"/{repo}/pushlog?page={pages}",
        "overview": f"/{repo}",
        "pushloghtml 10 ids": f"/{repo}/pushloghtml?startID={mid}&endID={mid + 10}",
        "API pushes page 1": f"{api}?per_page=20",
        "API pushes deep page": f"{api}?per_page=20&page={max(1, pushes // 40)}",
        "API pushes last page": f"{api}?per_page=20&page={-(-pushes // 20)}",
    }


def get(conn: http.client.HTTPConnection, path: str) -> int:
    start = time.perf_counter_ns()
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise SystemExit(f"{path}: {response.status}")
    return time.perf_counter_ns() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    with work_directory("pushlog-scale-", args.keep) as work:
        env = isolated_env(work)
        site = work / "site"
        cli = [HG_HOSTING, "--site", str(site)]
        subprocess.run([*cli, "init"], env=env, check=True, capture_output=True)
        subprocess.run([*cli, "user", "add", "alice", "--email", "alice@example.org"], env=env, check=True,
                       capture_output=True)
        wc = work / "wc"
        subprocess.run([HG, "init", str(wc)], env=env, check=True)
        (wc / "a").write_text("a\n")
        subprocess.run([HG, "-R", str(wc), "commit", "-qAm", "a"], env=env, check=True)
        for name in ("one", "twenty", "million"):
            subprocess.run([*cli, "repo", "create", f"alice/{name}"], env=env, check=True, capture_output=True)
            subprocess.run([HG, "-R", str(wc), "push", "-q", str(site / "repos" / "alice" / name)],
                           env={**env, "HG_HOSTING_USER": "alice"}, check=True)
        db_path = next(site.glob("*.db"))
        ids = dict(sqlite3.connect(db_path).execute("SELECT name, id FROM repository"))
        with sqlite3.connect(db_path) as db:  # the one push dated like the million's first
            db.execute("UPDATE push SET date = ? WHERE repository_id IN (?, ?)",
                       (str(START), ids["one"], ids["twenty"]))
        fill(db_path, ids["twenty"], 19)
        began = time.monotonic()
        fill(db_path, ids["million"], args.pushes - 1)
        print(f"inserted {args.pushes - 1:,} push records in {time.monotonic() - began:.1f} s", flush=True)
        with serving(site, env, work / "daemon.log") as (pid, port):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            sizes = {"one": 1, "twenty": 20, "million": args.pushes}
            print(f"{'median ms':28} {'1 push':>9} {'20 pushes':>10} {f'{args.pushes:,} pushes':>16}"
                  f" {'/1 push':>8} {'/20':>6}")
            worst = 0.0
            for name in readers("alice/one", 1):
                paths = {repo: readers(f"alice/{repo}", n)[name] for repo, n in sizes.items()}
                for _ in range(50):
                    for path in paths.values():
                        get(conn, path)
                times: dict[str, list[int]] = {repo: [] for repo in paths}
                order = list(paths)
                for i in range(args.rounds):
                    for repo in order[i % 3:] + order[:i % 3]:
                        times[repo].append(get(conn, paths[repo]))
                m = {repo: statistics.median(t) / 1e6 for repo, t in times.items()}
                cpu = {}  # the daemon's CPU per request, each repository's requests in a row
                for repo, path in paths.items():
                    before = cpu_seconds(pid)
                    for _ in range(args.rounds):
                        get(conn, path)
                    cpu[repo] = (cpu_seconds(pid) - before) * 1000 / args.rounds
                worst = max(worst, m["million"] / m["one"])
                for label, v in ((name, m), ("  daemon CPU per request", cpu)):
                    print(f"{label:28} {v['one']:9.2f} {v['twenty']:10.2f} {v['million']:16.2f}"
                          f" {v['million'] / v['one']:8.2f} {v['million'] / v['twenty']:6.2f}"
                          f"{'  OVER 1.5x' if v['million'] / v['one'] > 1.5 else ''}", flush=True)
            print(f"highest wall-time ratio to the single push: {worst:.2f} (target: at most 1.5);"
                  f" load average {os.getloadavg()[0]:.1f}")
        probe = (
            "import statistics, sys, time\n"
            "from hgext_hosting import models, pushlog\n"
            "from hgext_hosting.site import Site\n"
            "models.bind(Site(sys.argv[1]).open().database())\n"
            "for rid in map(int, sys.argv[2:5]):\n"
            "    for _ in range(50): pushlog.recent_pushes(rid, 20)\n"
            "    t = []\n"
            "    for _ in range(int(sys.argv[5])):\n"
            "        s = time.perf_counter_ns(); pushlog.recent_pushes(rid, 20); t.append(time.perf_counter_ns() - s)\n"
            "    print(statistics.median(t) / 1e6)\n"
        )
        out = subprocess.run([sys.executable, "-c", probe, str(site), str(ids["one"]), str(ids["twenty"]),
                              str(ids["million"]), str(args.rounds)], env=env, check=True, capture_output=True,
                             text=True).stdout
        m1, m20, m2 = map(float, out.split())
        print(f"{'recent_pushes(20) in-process':28} {m1:9.2f} {m20:10.2f} {m2:16.2f} {m2 / m1:8.2f} {m2 / m20:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
