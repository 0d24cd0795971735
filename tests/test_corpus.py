"""The generated corpus (``tools/synthrepo.py``) that the heaviest tests push and clone.

It replaces a bundle that lived outside the repository, so these check what
those tests rely on: the same bytes on every build (stable hashes), one build
however many xdist workers ask at once, and a history large enough that a
clone does not fit in the kernel's socket buffers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from pathlib import Path

import synthrepo
from conftest import HG, run

#: A small history with every kind of change (new, edited, copied, removed files, assets).
SMALL = synthrepo.Params(changesets=120, text_changesets=80, files=24, blob_every=5, blob_kib=16)


def cache(directory: Path, params: synthrepo.Params) -> list[str]:
    """Start ``synthrepo.py --cache DIRECTORY`` with ``params`` (returns the argv)."""
    return [sys.executable, synthrepo.__file__, "--cache", str(directory), *synthrepo._argv(params)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_generated_history_is_deterministic(tmp_path, env):
    """Two builds give the same bundle bytes; unbundled, it holds every changeset, public, one head, verified."""
    first, built = synthrepo.cached_bundle(tmp_path / "a", SMALL)
    second, _ = synthrepo.cached_bundle(tmp_path / "b", SMALL)
    assert built and first.name == second.name
    assert sha256(first) == sha256(second)
    repo = tmp_path / "repo"
    run([HG, "init", str(repo)], env)
    run([HG, "-R", str(repo), "unbundle", "-q", str(first)], env)
    log = run([HG, "-R", str(repo), "log", "-T", "{phase} {branch}\n"], env).stdout.splitlines()
    assert log == ["public default"] * SMALL.changesets
    assert run([HG, "-R", str(repo), "heads", "-T", "x"], env).stdout == "x"
    copies = run([HG, "-R", str(repo), "log", "-T", "{file_copies}", "-r", "all()"], env).stdout
    removed = run([HG, "-R", str(repo), "log", "-T", "{file_dels}", "-r", "all()"], env).stdout
    assets = run([HG, "-R", str(repo), "files", "-r", "tip", "path:assets"], env).stdout.split()
    assert copies and removed and len(assets) >= 2
    run([HG, "-R", str(repo), "verify", "-q"], env)


def test_concurrent_callers_build_once(tmp_path, env):
    """Three processes asking at once build one bundle; a rerun reuses it; other parameters replace it."""
    directory = tmp_path / "cache"
    procs = [subprocess.Popen(cache(directory, SMALL), env=env, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    verdicts = sorted(out.split(": ")[-1].strip() for out, _ in outs)
    assert verdicts == ["built", "cached", "cached"], outs
    (path,) = directory.glob("corpus-*.hg")
    assert run(cache(directory, SMALL), env).stdout.endswith(": cached\n")
    assert run(cache(directory, dataclasses.replace(SMALL, seed=2)), env).stdout.endswith(": built\n")
    (new,) = directory.glob("corpus-*.hg")  # the stale one is gone
    assert new != path


def test_corpus_is_large_enough_for_the_heavy_tests(corpus, env):
    """The default corpus: 3,000 changesets, and a bundle far larger than the kernel's send buffer."""
    log = run([HG, "-R", str(corpus), "log", "-T", "x"], env, cwd=corpus.parent).stdout
    assert len(log) == synthrepo.DEFAULT.changesets
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    assert corpus.stat().st_size > 4 * wmem_max
