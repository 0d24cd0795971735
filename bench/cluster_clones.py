"""16 concurrent clones through HAProxy to 3 daemons, against the same to 1 daemon directly.

Same machine, same run, the two targets interleaved (round 0 HAProxy first,
round 1 direct first, ...) after one untimed warm-up round of each.

Set-up (in a temporary directory): site ``S`` (``hg-hosting init``, SQLite:
clones read the repository, not the database), ``repo create alice/flask``,
the corpus (``shared/data/flask.hg``, 5,534 changesets) unbundled into it as
alice; three ``hg-hosting serve --http 127.0.0.1:PORT`` processes on free
ports; HAProxy (``haproxy -db``) from ``contrib/haproxy.cfg.in`` with those
ports filled in, as in ``tests/test_cluster.py``, the site hgrc trusting it
as a proxy.

Measurement: 16 ``hg clone -U`` processes started at once, wall time until
the last ends; through HAProxy (balanced over the 3 daemons) and to daemon 1
directly.  Every clone is checked to hold every changeset.

On a 2-core machine three daemons give no more CPU than one, so the ratio
HAProxy / direct shows what the load balancer costs; the target is at most
1.1.

Usage (from the repository root)::

    .venv/bin/python bench/cluster_clones.py [--rounds N] [--clones N] [--corpus FILE] [--keep]

Exit status: 0 when the target is met, 1 when missed, 2 when the benchmark failed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchenv import BIN, isolated_env

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "flask.hg"
TARGET = 1.1
HG, HG_HOSTING = str(BIN / "hg"), str(BIN / "hg-hosting")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def render_haproxy(http_port: int, ssh_port: int, ports: list[int]) -> str:
    """contrib/haproxy.cfg.in with the addresses filled in (markers in comments left alone)."""
    values = {
        "HTTP_BIND": f"127.0.0.1:{http_port}", "SSH_BIND": f"127.0.0.1:{ssh_port}",
        "HTTP_SERVERS": "\n".join(f"    server web{i + 1} 127.0.0.1:{p} check" for i, p in enumerate(ports)),
        "SSH_SERVERS": "",
    }
    text = (ROOT / "contrib" / "haproxy.cfg.in").read_text()
    return re.sub(r"^(.*?)@@([A-Z_]+)@@", lambda m: m.group(0) if "#" in m.group(1)
                  else m.group(1) + values[m.group(2)], text, flags=re.M)


def clone_all(url: str, work: Path, n: int, env: dict[str, str], expected: int) -> float:
    """``n`` clones at once; wall seconds until the last ends (each checked complete)."""
    targets = [work / f"clone{i}" for i in range(n)]
    for t in targets:
        shutil.rmtree(t, ignore_errors=True)

    def one(target: Path) -> None:
        proc = subprocess.run([HG, "clone", "-U", "-q", url, str(target)], env=env,
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"clone failed: {proc.stderr.strip()}")

    started = time.monotonic()
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(one, targets))
    elapsed = time.monotonic() - started
    for t in targets:
        count = subprocess.run([HG, "-R", str(t), "log", "-r", "tip", "-T", "{rev}"], env=env,
                               capture_output=True, text=True, check=True).stdout
        if int(count) + 1 != expected:
            raise RuntimeError(f"{t} holds {int(count) + 1} changesets, not {expected}")
        shutil.rmtree(t)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clones", type=int, default=16)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists() or not args.corpus.exists():
        print(f"error: needs haproxy and the corpus {args.corpus}", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    env = isolated_env(work)
    procs: list[subprocess.Popen] = []
    try:
        site = work / "site"
        site.mkdir()
        subprocess.run([HG_HOSTING, "--site", str(site), "init"], env=env, check=True, capture_output=True)
        hgrc = (site / "hgrc").read_text().replace(
            "\n[hosting]\n", "\n[hosting]\ntrusted-proxies = 127.0.0.1\nhttp-max-per-address = 100000\n", 1)
        (site / "hgrc").write_text(hgrc)
        subprocess.run([HG_HOSTING, "--site", str(site), "user", "add", "alice"], env=env, check=True,
                       capture_output=True)
        subprocess.run([HG_HOSTING, "--site", str(site), "repo", "create", "alice/flask"], env=env, check=True,
                       capture_output=True)
        repo = site / "repos" / "alice" / "flask"
        subprocess.run([HG, "-R", str(repo), "unbundle", "-q", str(args.corpus)],
                       env={**env, "HG_HOSTING_USER": "alice"}, check=True, capture_output=True)
        expected = int(subprocess.run([HG, "-R", str(repo), "log", "-r", "tip", "-T", "{rev}"], env=env,
                                      check=True, capture_output=True, text=True).stdout) + 1

        ports = [free_port() for _ in range(3)]
        for i, port in enumerate(ports):
            log = open(work / f"daemon{i}.log", "w")
            procs.append(subprocess.Popen([HG_HOSTING, "--site", str(site), "serve", "--http",
                                           f"127.0.0.1:{port}"], env=env, stdout=log, stderr=subprocess.STDOUT))
        for port in ports:
            wait_for(lambda p=port: accepts(p), f"the daemon on {port}")
        front = free_port()
        cfg = work / "haproxy.cfg"
        cfg.write_text(render_haproxy(front, free_port(), ports))
        procs.append(subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=open(work / "haproxy.log", "w"),
                                      stderr=subprocess.STDOUT))
        wait_for(lambda: accepts(front), "HAProxy")
        time.sleep(1)  # first health checks

        targets = {"haproxy": f"http://127.0.0.1:{front}/alice/flask",
                   "direct": f"http://127.0.0.1:{ports[0]}/alice/flask"}
        for url in targets.values():  # warm-up
            clone_all(url, work, args.clones, env, expected)
        samples: dict[str, list[float]] = {k: [] for k in targets}
        for r in range(args.rounds):
            order = list(targets) if r % 2 == 0 else list(reversed(targets))
            for kind in order:
                samples[kind].append(clone_all(targets[kind], work, args.clones, env, expected))
                print(f"round {r} {kind:8s} {samples[kind][-1]:7.2f} s", flush=True)
    except Exception as e:  # noqa: BLE001 - one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    through, direct = statistics.median(samples["haproxy"]), statistics.median(samples["direct"])
    ratio = through / direct
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"{args.clones} concurrent clones of {expected} changesets: HAProxy -> 3 daemons {through:.2f} s, "
          f"1 daemon directly {direct:.2f} s (medians of {args.rounds}); ratio {ratio:.2f} "
          f"(target <= {TARGET}) {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
