"""What the hosting hooks cost on a push: the same push with and without the extension.

Measures, on this machine and in one run, the wall time of a local ``hg push``
into

* a repository of an hg-hosting site (``hg-hosting repo create``; its
  ``.hg/hgrc`` includes the site hgrc, so the extension's hooks run and the
  push is recorded in the push log), and
* a plain ``hg init`` repository outside the site with the same relevant
  configuration minus the extension (``[phases] publish = True``).

Scenarios (source: a local clone of the Flask corpus, ``shared/data/flask.hg``)::

    1cset   target pre-loaded with revs 0..999, time ``hg push -r 1000``
    1000cset target pre-loaded with revs 0..999, time ``hg push -f -r 0:1999``
            (exactly revs 1000..1999 are new; they hold five heads, hence -f,
            which only lifts the client's new-head check, for both kinds)

Every trial gets fresh targets.  The with/without pushes of a trial run in ABBA
order (trial 0: hooks first, trial 1: plain first, ...) so that drift hits both
kinds alike; one untimed warm-up pair runs first.  Only the measured push is
timed (subprocess wall time, ``time.perf_counter``); ``os.sync()`` runs before
each timed push so that neither kind pays for the pre-load's dirty pages.
``HG_HOSTING_USER=alice`` is set for both kinds, the client runs with
``HGRCPATH`` pointing at an empty file and ``HGPLAIN=1``.

The targets apply to the ratio of the medians of wall time.  Also printed: the
median of the per-trial ratios, the CPU time (user+sys) of the push processes,
and the load average; when it exceeds nproc, other processes competed for the
CPUs and the script says that its wall times are not to be trusted.

After the runs every target is checked: it holds exactly revs 0..999 plus the
pushed changesets, and the push log of every hosting target has the pre-load
push and the measured push by alice with exactly the pushed changesets, so a
refused push cannot be measured silently.

Usage (from the repository root)::

    /work/venv/bin/python bench/hook_cost.py [--quick] [--json FILE]

Exit status: 0 when every target is met, 1 when one is missed, 2 when the
benchmark itself failed (a push refused, a verification mismatch).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchenv import BIN, isolated_env

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "flask.hg"

USER = "alice"
PRELOAD_REVS = "0:999"  # the first 1,000 changesets
PRELOAD_COUNT = 1000


@dataclass
class Scenario:
    key: str
    title: str
    push_revs: str  # what the measured push names with -r
    force: bool  # push -f: the pushed range has several heads (new remote heads)
    new_revs: range  # source revs the measured push adds
    target_ratio: float
    trials: int


@dataclass
class Sample:
    trial: int
    order: str  # "AB" (hooks first) or "BA" (plain first)
    hooks_s: float
    plain_s: float
    hooks_cpu_s: float  # user + system CPU time of the push process
    plain_cpu_s: float
    hosting_repo: str  # OWNER/NAME
    plain_path: str


@dataclass
class Result:
    scenario: Scenario
    samples: list[Sample] = field(default_factory=list)

    def medians(self) -> tuple[float, float]:
        return (statistics.median(s.hooks_s for s in self.samples),
                statistics.median(s.plain_s for s in self.samples))

    def ratio(self) -> float:
        hooks, plain = self.medians()
        return hooks / plain

    def cpu_medians(self) -> tuple[float, float]:
        return (statistics.median(s.hooks_cpu_s for s in self.samples),
                statistics.median(s.plain_cpu_s for s in self.samples))

    def paired_ratio(self) -> float:
        """Median of the per-trial ratios (robust against slow drift)."""
        return statistics.median(s.hooks_s / s.plain_s for s in self.samples)

    def passed(self) -> bool:
        return self.ratio() < self.scenario.target_ratio


class BenchError(RuntimeError):
    """The benchmark could not measure what it claims to (refused push, bad state)."""


class Bench:
    def __init__(self, work: Path, hg: str, hg_hosting: str, corpus: Path, verbose: bool):
        self.work = work
        self.hg = hg
        self.hg_hosting = hg_hosting
        self.corpus = corpus
        self.verbose = verbose
        self.site = work / "site"
        self.src = work / "src"
        self.plain_root = work / "plain"
        self.counter = 0
        self.warmup: Sample | None = None
        self.env = env = isolated_env(work)
        self.push_env = dict(env, HG_HOSTING_USER=USER)

    # -- running commands ---------------------------------------------------

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> str:
        proc = subprocess.run(argv, env=env or self.env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BenchError(
                f"{' '.join(argv)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
            )
        return proc.stdout

    def log(self, msg: str) -> None:
        if self.verbose:
            print(msg, file=sys.stderr, flush=True)

    # -- setup ----------------------------------------------------------------

    def setup(self) -> None:
        self.log(f"setup in {self.work}")
        self.run([self.hg_hosting, "--site", str(self.site), "init"])
        self.run([self.hg_hosting, "--site", str(self.site), "user", "add", USER])
        self.run([self.hg, "init", str(self.src)])
        self.run([self.hg, "-R", str(self.src), "unbundle", "-q", str(self.corpus)])
        self.plain_root.mkdir()
        nodes = self.run([self.hg, "-R", str(self.src), "log", "-r", "all()", "-T", "{node}\n"]).split()
        if len(nodes) < 2000:
            raise BenchError(f"the corpus has {len(nodes)} changesets, the benchmark needs 2,000")
        self.nodes = nodes

    def new_targets(self) -> tuple[str, Path, Path]:
        """A fresh hosting repository and a fresh plain one, both empty."""
        name = f"t{self.counter}"
        self.counter += 1
        full = f"{USER}/{name}"
        self.run([self.hg_hosting, "--site", str(self.site), "repo", "create", full])
        hosting = self.site / "repos" / USER / name
        plain = self.plain_root / name
        self.run([self.hg, "init", str(plain)])
        (plain / ".hg" / "hgrc").write_text(
            "# the site hgrc's relevant settings, without the extension\n"
            "[phases]\npublish = True\n"
        )
        return full, hosting, plain

    def push(self, revs: str, target: Path, force: bool = False) -> tuple[float, float]:
        """Push ``-r revs`` from the source to ``target``; return (wall, CPU) seconds."""
        argv = [self.hg, "-R", str(self.src), "push", "-q", *(["-f"] if force else []),
                "-r", revs, str(target)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(argv, env=self.push_env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            raise BenchError(
                f"push to {target} exited {proc.returncode} (refused or nothing pushed)\n"
                f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
            )
        return elapsed, cpu

    # -- measuring ------------------------------------------------------------

    def trial(self, sc: Scenario, index: int, *, hooks_first: bool) -> Sample:
        full, hosting, plain = self.new_targets()
        kinds = [("hooks", hosting), ("plain", plain)]
        if not hooks_first:
            kinds.reverse()
        for _kind, target in kinds:
            self.push(PRELOAD_REVS, target)  # untimed; HG_HOSTING_USER=alice
        times: dict[str, tuple[float, float]] = {}
        for kind, target in kinds:
            os.sync()
            times[kind] = self.push(sc.push_revs, target, sc.force)
        sample = Sample(index, "AB" if hooks_first else "BA", times["hooks"][0], times["plain"][0],
                        times["hooks"][1], times["plain"][1], full, str(plain))
        self.log(f"  {sc.key} trial {index} {sample.order}: hooks {ms(sample.hooks_s)} ms"
                 f" (cpu {ms(sample.hooks_cpu_s)}), plain {ms(sample.plain_s)} ms"
                 f" (cpu {ms(sample.plain_cpu_s)}), load {os.getloadavg()[0]:.2f}")
        return sample

    def measure(self, sc: Scenario, warmup: bool) -> Result:
        self.log(f"{sc.key}: {sc.trials} trials")
        if warmup:
            self.log("  warm-up pair (not counted)")
            self.warmup = self.trial(sc, -1, hooks_first=True)
        result = Result(sc)
        for i in range(sc.trials):
            result.samples.append(self.trial(sc, i, hooks_first=(i % 2 == 0)))
        return result

    # -- verifying --------------------------------------------------------------

    def verify(self, results: list[Result]) -> list[str]:
        """Problems found in the targets after the runs (empty: all good)."""
        problems: list[str] = []
        preload = self.nodes[:PRELOAD_COUNT]
        first = self.run([self.hg, "-R", str(self.site / "repos" / USER / "t0"), "debugrequires"])
        second = self.run([self.hg, "-R", str(self.plain_root / "t0"), "debugrequires"])
        if first != second:
            problems.append(f"the two kinds of target differ in format:\n{first}\nvs\n{second}")
        for result in results:
            sc = result.scenario
            pushed = [self.nodes[r] for r in sc.new_revs]
            expected = set(preload) | set(pushed)
            for s in result.samples:
                where = f"{sc.key} trial {s.trial}"
                hosting = self.site / "repos" / s.hosting_repo
                for kind, path in (("hooks", hosting), ("plain", Path(s.plain_path))):
                    have = self.run([self.hg, "-R", str(path), "log", "-r", "all()", "-T", "{node}\n"]).split()
                    if set(have) != expected or len(have) != len(expected):
                        problems.append(f"{where}: {kind} target {path} holds {len(have)} changesets,"
                                        f" expected {len(expected)}")
                log = json.loads(self.run(
                    [self.hg_hosting, "--site", str(self.site), "pushlog", s.hosting_repo, "--json"]
                ))
                if [p["id"] for p in log] != [2, 1]:
                    problems.append(f"{where}: push log of {s.hosting_repo} has ids"
                                    f" {[p['id'] for p in log]}, expected [2, 1]")
                    continue
                measured, pre = log
                if measured["user"] != USER or pre["user"] != USER:
                    problems.append(f"{where}: push log users {measured['user']!r}, {pre['user']!r}")
                if sorted(measured["changesets"]) != sorted(pushed):
                    problems.append(f"{where}: the measured push recorded {len(measured['changesets'])}"
                                    f" changesets, expected the {len(pushed)} pushed")
                if sorted(pre["changesets"]) != sorted(preload):
                    problems.append(f"{where}: the pre-load push recorded {len(pre['changesets'])}"
                                    f" changesets, expected {len(preload)}")
        return problems


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def machine_info(hg: str, env: dict[str, str]) -> dict:
    def out(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, env=env, capture_output=True, text=True).stdout.strip()
        except OSError as e:
            return f"unavailable ({e})"

    hg_version = out([hg, "--version", "-q"]).splitlines()
    versions = out([str(BIN / "python"), "-c",
                    "import peewee, mercurial.util as u;"
                    "print(peewee.__version__, u.version().decode())"]).split()
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "hg": hg_version[0] if hg_version else "",
        "mercurial_module": versions[1] if len(versions) > 1 else "",
        "peewee": versions[0] if versions else "",
        "sqlite": sqlite3.sqlite_version,
        "hg_hosting_commit": out(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
    }


def filesystem_of(path: Path) -> str:
    try:
        return subprocess.run(["df", "--output=fstype", str(path)], capture_output=True,
                              text=True).stdout.split()[-1]
    except (OSError, IndexError):
        return "unknown"


def print_table(results: list[Result]) -> None:
    head = ("scenario", "n", "with hooks ms", "without ms", "overhead ms", "ratio",
            "paired", "target", "result")
    rows = [head]
    for r in results:
        hooks, plain = r.medians()
        rows.append((
            r.scenario.title, str(len(r.samples)), ms(hooks), ms(plain), ms(hooks - plain),
            f"{r.ratio():.3f}x", f"{r.paired_ratio():.3f}x", f"< {r.scenario.target_ratio:.2f}x",
            "PASS" if r.passed() else "FAIL",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for j, row in enumerate(rows):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    print("(medians of wall time; ratio = median with / median without, which the target applies to;"
          " paired = median of per-trial ratios)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 and 2 trials instead of 9 and 5")
    parser.add_argument("--trials-1", type=int, metavar="N", help="trials of the 1-changeset push")
    parser.add_argument("--trials-1000", type=int, metavar="N", help="trials of the 1,000-changeset push")
    parser.add_argument("--json", metavar="FILE", help="write the numbers to FILE")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the Flask bundle")
    parser.add_argument("--hg", default=str(BIN / "hg"), help="hg executable (default: next to python)")
    parser.add_argument("--hg-hosting", default=str(BIN / "hg-hosting"), help="hg-hosting executable")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every trial on stderr")
    args = parser.parse_args(argv)

    n1 = args.trials_1 or (3 if args.quick else 9)
    n1000 = args.trials_1000 or (2 if args.quick else 5)
    scenarios = [
        Scenario("1cset", "1 changeset", "1000", False, range(1000, 1001), 1.15, n1),
        Scenario("1000cset", "1,000 changesets", "0:1999", True, range(1000, 2000), 1.05, n1000),
    ]
    if not args.corpus.is_file():
        print(f"error: no corpus at {args.corpus}", file=sys.stderr)
        return 2
    for exe in (args.hg, args.hg_hosting):
        if not Path(exe).is_file() and shutil.which(exe) is None:
            print(f"error: no executable {exe}", file=sys.stderr)
            return 2

    work = Path(tempfile.mkdtemp(prefix="hook-cost-", dir=args.workdir))
    try:
        bench = Bench(work, args.hg, args.hg_hosting, args.corpus, args.verbose)
        info = machine_info(args.hg, bench.env)
        info["filesystem"] = filesystem_of(work)
        print(f"nproc {info['nproc']}  |  {info['hg']}  |  mercurial module {info['mercurial_module']}"
              f"  |  Python {info['python']}  |  peewee {info['peewee']}  |  SQLite {info['sqlite']}")
        print(f"hg-hosting {info['hg_hosting_commit']}  |  {info['platform']}  |  work dir on"
              f" {info['filesystem']}  |  trials {n1} / {n1000}", flush=True)
        load_start = os.getloadavg()
        started = time.perf_counter()
        bench.setup()
        results = []
        for i, sc in enumerate(scenarios):
            results.append(bench.measure(sc, warmup=(i == 0)))
        problems = bench.verify(results)
        total = time.perf_counter() - started
        load_end = os.getloadavg()
        print()
        print_table(results)
        for r in results:
            hooks, plain = r.cpu_medians()
            print(f"CPU time (user+sys) of the push, {r.scenario.title}: with {ms(hooks)} ms,"
                  f" without {ms(plain)} ms, ratio {hooks / plain:.3f}x")
        print(f"\n{sum(len(r.samples) for r in results)} pairs in {total:.0f} s;"
              f" push logs verified: {'yes' if not problems else 'NO'};"
              f" load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end"
              f" (nproc {info['nproc']}; above it, other processes were competing)")
        if max(load_start[0], load_end[0]) > info["nproc"]:
            print(f"WARNING: the load average exceeded nproc ({info['nproc']}): other processes competed"
                  " for the CPUs, so the wall times are inflated and the ratios noisy; rerun on a quiet"
                  " machine before trusting a FAIL or a PASS near its target")
        for p in problems:
            print(f"VERIFY FAILED: {p}")
        if args.json:
            data = {
                "machine": info,
                "scenarios": [
                    {
                        "key": r.scenario.key,
                        "title": r.scenario.title,
                        "push": f"hg push {'-f ' if r.scenario.force else ''}-r {r.scenario.push_revs}",
                        "preload": f"hg push -r {PRELOAD_REVS}",
                        "new_changesets": len(r.scenario.new_revs),
                        "trials": len(r.samples),
                        "median_with_s": r.medians()[0],
                        "median_without_s": r.medians()[1],
                        "ratio": r.ratio(),
                        "paired_ratio": r.paired_ratio(),
                        "median_cpu_with_s": r.cpu_medians()[0],
                        "median_cpu_without_s": r.cpu_medians()[1],
                        "target_ratio": r.scenario.target_ratio,
                        "pass": r.passed(),
                        "samples": [
                            {"trial": s.trial, "order": s.order, "with_s": s.hooks_s,
                             "without_s": s.plain_s, "with_cpu_s": s.hooks_cpu_s,
                             "without_cpu_s": s.plain_cpu_s}
                            for s in r.samples
                        ],
                    }
                    for r in results
                ],
                "warmup_1cset": ({"with_s": bench.warmup.hooks_s, "without_s": bench.warmup.plain_s}
                                 if bench.warmup else None),
                "loadavg_start": load_start,
                "loadavg_end": load_end,
                "verified": not problems,
                "problems": problems,
                "total_s": total,
            }
            Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
        if problems:
            return 2
        return 0 if all(r.passed() for r in results) else 1
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
