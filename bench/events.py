"""What events cost a push, and how soon a receiver hears of it (issue 14).

Two sites, each with one repository and a daemon running:

* ``none``: no webhook, no watcher;
* ``hooks``: three webhooks on the repository (a receiver in this process,
  ``tools/hookreceiver.py``) and five watchers with ``[hosting] smtp`` set (an
  aiosmtpd server in this process).

A trial pushes one new changeset locally (``hg push``, ``HG_HOSTING_USER``)
to each site, in ABBA order; the wall time of the push process is measured.
After a ``hooks`` push the script waits for its 3 requests and 5 mails, and
for the daemon to have recorded them, before the next push, so that no push is
timed while the daemon delivers (on two cores that work, and its fsyncs, would
compete with the push).  ``--control`` configures nothing on the second site
either (an A/A run: how far apart two equal sites measure).
The push never waits for delivery: it only writes the event row with its push
record.  Printed: the ratio of the medians (target <= 1.05) and, for the
``hooks`` site, the median latency from the push's commit to the receiver's
request (target < 500 ms).  The commit time is taken as the end of the push
process (hg has committed and released its lock; an upper bound, so the
latency is a lower bound by the process's exit) and, as a second measure,
from the push record's date (written just before hg's commit).

    python bench/events.py [--trials 30]
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

from benchenv import BIN, isolated_env, start_daemon  # noqa: E402
from hookreceiver import Receiver  # noqa: E402

HG = str(BIN / "hg")
HG_HOSTING = str(BIN / "hg-hosting")


class _Sink:
    async def handle_DATA(self, server, session, envelope):
        _Sink.count += 1
        return "250 OK"

    count = 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_site(work: Path, env: dict, name: str, settings: str) -> tuple[Path, Path]:
    site = work / name
    subprocess.run([HG_HOSTING, "--site", str(site), "init"], env=env, check=True, capture_output=True)
    with open(site / "hgrc", "a") as f:
        f.write(settings)
    run = [HG_HOSTING, "--site", str(site)]
    subprocess.run([*run, "user", "add", "alice"], env=env, check=True, capture_output=True)
    subprocess.run([*run, "repo", "create", "alice/demo"], env=env, check=True, capture_output=True)
    wc = work / f"wc-{name}"
    subprocess.run([HG, "clone", "-q", str(site / "repos/alice/demo"), str(wc)], env=env, check=True)
    return site, wc


def _wait_recorded(site: Path, timeout: float = 60) -> None:
    """Until the daemon has recorded every attempt (no delivery pending or claimed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db = sqlite3.connect(site / "hosting.db", timeout=30)
        try:
            (left,) = db.execute("SELECT COUNT(*) FROM delivery WHERE state = 'pending'").fetchone()
            (fresh,) = db.execute("SELECT COUNT(*) FROM event WHERE fanned = 0").fetchone()
        finally:
            db.close()
        if not left and not fresh:
            return
        time.sleep(0.02)


def _wait_mails(count: int, timeout: float = 60) -> None:
    """Until the SMTP sink has received ``count`` mails; a bench that would measure nothing stops."""
    deadline = time.monotonic() + timeout
    while _Sink.count < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {_Sink.count} of {count} mails arrived in {timeout:.0f} s:"
                             " is [hosting] smtp/mail-from set?")
        time.sleep(0.02)


def timed_push(site: Path, wc: Path, env: dict, i: int) -> float:
    (wc / f"f{i}.txt").write_text(f"{i}\n")
    subprocess.run([HG, "commit", "-q", "-A", "-m", f"change {i}"], cwd=wc, env=env, check=True)
    os.sync()
    start = time.perf_counter()
    subprocess.run([HG, "push", "-q", str(site / "repos/alice/demo")], cwd=wc, check=True,
                   env={**env, "HG_HOSTING_USER": "alice"})
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--control", action="store_true",
                        help="configure no hook and no watcher on the second site either (an A/A run)")
    args = parser.parse_args(argv)
    from aiosmtpd.controller import Controller

    smtp = Controller(_Sink(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    receiver = Receiver().start()
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        work = Path(tmp)
        env = isolated_env(work)
        common = "\n[hosting]\nwebhook-allow = 127.0.0.1\n"
        none_site, none_wc = make_site(work, env, "none", common)
        hooks_site, hooks_wc = make_site(work, env, "hooks", common + f"smtp = 127.0.0.1:{smtp.port}\nmail-from = hosting@example.org\n")
        run = [HG_HOSTING, "--site", str(hooks_site)]
        for _ in range(0 if args.control else 3):
            subprocess.run([*run, "webhook", "add", "alice/demo", receiver.url, "--secret-stdin"],
                           env=env, input="k\n", text=True, check=True, capture_output=True)
        for i in range(0 if args.control else 5):
            subprocess.run([*run, "user", "add", f"watcher{i}", "--email", f"w{i}@example.org"],
                           env=env, check=True, capture_output=True)
            subprocess.run([*run, "watch", "alice/demo", f"watcher{i}"], env=env, check=True, capture_output=True)
        daemons = [start_daemon(none_site, env, work / "none.log")[0],
                   start_daemon(hooks_site, env, work / "hooks.log")[0]]
        try:
            times: dict[str, list[float]] = {"none": [], "hooks": []}
            ends: list[float] = []
            timed_push(none_site, none_wc, env, 0)  # warm-up pair
            timed_push(hooks_site, hooks_wc, env, 0)
            receiver.wait(0 if args.control else 3, timeout=30)
            _wait_mails(0 if args.control else 5)
            for t in range(1, args.trials + 1):
                order = [("none", none_site, none_wc), ("hooks", hooks_site, hooks_wc)]
                for kind, site, wc in (order if t % 2 else order[::-1]):
                    seconds = timed_push(site, wc, env, t)
                    times[kind].append(seconds)
                    if kind == "hooks":
                        ends.append(time.time())
                        # The next push starts once this one's deliveries are done, so that it
                        # is timed alone (on 2 cores the daemon's delivery work would compete).
                        receiver.wait(0 if args.control else 3 * (t + 1), timeout=60)
                        _wait_mails(0 if args.control else 5 * (t + 1))
                        _wait_recorded(hooks_site)
            if args.control:
                print(f"A/A: medians {statistics.median(times['none']) * 1000:.1f} ms and"
                      f" {statistics.median(times['hooks']) * 1000:.1f} ms, ratio"
                      f" {statistics.median(times['hooks']) / statistics.median(times['none']):.3f}")
                return 0
            hits = receiver.wait(3 * (args.trials + 1), timeout=60)
            db = sqlite3.connect(hooks_site / "hosting.db")
            dates = {pid: datetime.datetime.fromisoformat(d).replace(tzinfo=datetime.UTC).timestamp()
                     for pid, d in db.execute("SELECT push_id, date FROM push")}
            first: dict[int, float] = {}
            for h in hits:
                if h.json.get("event") != "push":
                    continue
                pid = h.json["push"]["id"]
                first[pid] = min(first.get(pid, h.at), h.at)
            from_exit = [first[pid] - ends[pid - 2] for pid in range(2, args.trials + 2)]
            from_record = [first[pid] - dates[pid] for pid in range(2, args.trials + 2)]
            wal = {name: (site / "hosting.db-wal").stat().st_size if (site / "hosting.db-wal").exists() else 0
                   for name, site in (("none", none_site), ("hooks", hooks_site))}
        finally:
            for d in daemons:
                d.terminate()
                d.wait(60)
            receiver.stop()
            smtp.stop()
    med_none, med_hooks = statistics.median(times["none"]), statistics.median(times["hooks"])
    print(f"{args.trials} trials, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"1-changeset push, no hooks:                      median {med_none * 1000:7.1f} ms")
    print(f"1-changeset push, 3 hooks + 5 watchers:          median {med_hooks * 1000:7.1f} ms")
    print(f"ratio of the medians:                            {med_hooks / med_none:.3f} (target <= 1.05)")
    print(f"push end -> receiver request:                    median {statistics.median(from_exit) * 1000:7.1f} ms"
          f" (max {max(from_exit) * 1000:.0f} ms)")
    print(f"push record written -> receiver request:         median {statistics.median(from_record) * 1000:7.1f} ms"
          f" (target < 500 ms)")
    print(f"mails received: {_Sink.count}; WAL at the end: none {wal['none'] // 1024} KiB,"
          f" hooks {wal['hooks'] // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
