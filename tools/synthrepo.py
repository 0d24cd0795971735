"""A generated repository with a few thousand changesets, standing in for a real history.

The heaviest tests (the crash trials, the daemon memory test, SIGTERM during a
clone) need a history large enough that a push takes a while and a clone does
not fit in the kernel's socket buffers.  This module builds one in-process
with the Mercurial API (one transaction, ``memctx`` commits), deterministically:
the same arguments give the same bytes, so the same changeset hashes, on every
machine.

The default history (:data:`DEFAULT`) has two parts:

* revisions ``0 .. text_changesets-1``: source-code-sized text files in several
  directories (``src/<package>/``, ``docs/``, ``tests/``), created in the first
  changesets and then edited 1-3 files per changeset; every 40th changeset
  copies a file, every other 40th removes one, and about 3% add one.  The
  crash trials push a prefix of this part.
* the remaining revisions edit text files too, and every ``blob_every``-th of
  them also adds or rewrites a ``blob_kib`` KiB binary asset
  (``assets/<kind>/<name>.bin``, pseudo-random bytes that no compressor
  shrinks), so that a clone or a bundle is tens of MB.

All changesets are public, on the ``default`` branch, in a single line of
history, with fixed users and dates one hour apart from 2020-01-01.

    python tools/synthrepo.py DEST.hg          # build and bundle, print size and time
    python tools/synthrepo.py DEST.hg --changesets 500 --blob-every 0
    python tools/synthrepo.py --cache DIR      # DIR/corpus-KEY.hg unless already there

``tests/conftest.py`` (fixture ``corpus``) gets the bundle through
:func:`cached_bundle` in ``tests/artifacts/``: built once, shared by the
pytest-xdist workers and by later runs, keyed by :func:`cache_key` (this file's
source and the parameters), so a change to the generator rebuilds it.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
HG = str(BIN / "hg")

#: Changeset dates start here and advance one hour per changeset.
EPOCH = 1577836800  # 2020-01-01 00:00:00 UTC

USERS = [f"{name} <{name.lower()}@example.org>" for name in
         ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi")]
PACKAGES = ["core", "web", "cli", "store", "auth", "util", "proto", "sched"]
ASSET_KINDS = ["images", "fonts", "archives", "models"]
WORDS = ("the of and to in is that for it as with was on be by this are from or have an they which "
         "one you were all we when there can if more no out so said what up its about into than them "
         "request response session token cache buffer stream commit revision bundle manifest "
         "changeset repository transaction journal lock push pull clone record daemon worker").split()


@dataclass(frozen=True)
class Params:
    """What to generate; part of the cache key."""

    changesets: int = 3000
    text_changesets: int = 2500  # changesets before the first binary asset
    files: int = 160  # text files created in the first changesets
    blob_every: int = 16  # after text_changesets, one asset every N changesets (0: none)
    blob_kib: int = 1024
    seed: int = 1


DEFAULT = Params()


def cache_key(params: Params = DEFAULT) -> str:
    """A short hash of this generator's source and ``params``: a new key means a new bundle."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(repr(sorted(asdict(params).items())).encode())
    return digest.hexdigest()[:16]


def _line(rng: random.Random) -> str:
    indent = "    " * rng.randrange(3)
    return indent + " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 12))) + "\n"


def _text(rng: random.Random, lines: int) -> list[str]:
    return [_line(rng) for _ in range(lines)]


def _edit(rng: random.Random, lines: list[str]) -> list[str]:
    """Replace, insert or delete a few lines, the way a code change does."""
    lines = list(lines)
    start = rng.randrange(len(lines) + 1)
    removed = rng.randrange(0, 4) if lines else 0
    lines[start:start + removed] = _text(rng, rng.randrange(1, 6))
    return lines


def _text_path(rng: random.Random, index: int) -> str:
    kind = rng.random()
    if kind < 0.7:
        return f"src/{PACKAGES[index % len(PACKAGES)]}/module{index:03d}.py"
    if kind < 0.85:
        return f"tests/test_{PACKAGES[index % len(PACKAGES)]}_{index:03d}.py"
    return f"docs/{PACKAGES[index % len(PACKAGES)]}/page{index:03d}.rst"


def build(dest: Path, params: Params = DEFAULT) -> None:
    """Create the repository ``dest`` (which must not exist) holding the generated history."""
    from mercurial import context, hg, node
    from mercurial import ui as uimod

    rng = random.Random(params.seed)
    ui = uimod.ui.load()
    ui.setconfig(b"phases", b"new-commit", b"public", b"synthrepo")
    ui.setconfig(b"ui", b"quiet", b"true", b"synthrepo")
    repo = hg.repository(ui, os.fsencode(dest), create=True)
    texts: dict[str, list[str]] = {}
    blobs: list[str] = []
    next_index = 0
    parent = node.nullid
    with repo.wlock(), repo.lock(), repo.transaction(b"synthrepo"):
        for rev in range(params.changesets):
            changed: dict[str, bytes | None] = {}
            copies: dict[str, str] = {}
            if len(texts) < params.files:  # the first changesets lay out the tree
                for _ in range(min(8, params.files - len(texts))):
                    path = _text_path(rng, next_index)
                    next_index += 1
                    texts[path] = _text(rng, rng.randrange(20, 160))
                    changed[path] = None
                message = f"add {len(changed)} modules"
            else:
                if rev % 40 == 0:
                    source = rng.choice(sorted(texts))
                    path = _text_path(rng, next_index)
                    next_index += 1
                    texts[path] = _edit(rng, texts[source])
                    changed[path], copies[path] = None, source
                    message = f"copy {source} to {path}"
                elif rev % 40 == 20 and len(texts) > params.files // 2:
                    path = rng.choice(sorted(texts))
                    del texts[path]
                    changed[path] = None
                    message = f"remove {path}"
                elif rng.random() < 0.03:
                    path = _text_path(rng, next_index)
                    next_index += 1
                    texts[path] = _text(rng, rng.randrange(20, 120))
                    changed[path] = None
                    message = f"add {path}"
                else:
                    for path in rng.sample(sorted(texts), rng.randrange(1, 4)):
                        texts[path] = _edit(rng, texts[path])
                        changed[path] = None
                    message = f"{rng.choice(WORDS)}: {' '.join(rng.choice(WORDS) for _ in range(6))}"
            after_text = rev - params.text_changesets
            if params.blob_every and after_text >= 0 and after_text % params.blob_every == 0:
                if blobs and rng.random() < 0.25:
                    path = rng.choice(blobs)  # a new version of an asset
                else:
                    path = f"assets/{ASSET_KINDS[len(blobs) % len(ASSET_KINDS)]}/asset{len(blobs):03d}.bin"
                    blobs.append(path)
                changed[path] = rng.randbytes(params.blob_kib * 1024)
                message += f"; update {path}"
            for path in changed:
                if changed[path] is None and path in texts:
                    changed[path] = "".join(texts[path]).encode()

            def filectx(repo, memctx, path, changed=changed, copies=copies):
                data = changed[path.decode()]
                if data is None:
                    return None  # removed
                source = copies.get(path.decode())
                return context.memfilectx(repo, memctx, path, data,
                                          copysource=source.encode() if source else None)

            ctx = context.memctx(repo, (parent, node.nullid), message.encode(),
                                 sorted(p.encode() for p in changed), filectx,
                                 user=USERS[rng.randrange(len(USERS))].encode(),
                                 date=(EPOCH + 3600 * rev, 0))
            parent = repo.commitctx(ctx)


def make_bundle(dest: Path, params: Params = DEFAULT) -> None:
    """Build the repository in a temporary directory and write ``hg bundle --all`` of it to ``dest``.

    The bundle is ``zstd-v2;phases=yes``, so that ``hg unbundle`` makes the
    changesets public.  ``dest`` appears atomically (written beside, then renamed).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("HG")}
    with tempfile.TemporaryDirectory(prefix="synthrepo-", dir=dest.parent) as tmp:
        hgrc = Path(tmp) / "empty-hgrc"
        hgrc.touch()
        env.update(HGRCPATH=str(hgrc), HGPLAIN="1")
        repo = Path(tmp) / "repo"
        subprocess.run([sys.executable, __file__, "--repo-only", str(repo), *_argv(params)],
                       env=env, check=True)
        partial = Path(tmp) / "bundle.hg"
        subprocess.run([HG, "-R", str(repo), "bundle", "-q", "--all", "--type", "zstd-v2;phases=yes",
                        str(partial)], env=env, check=True)
        partial.replace(dest)


def cached_bundle(directory: Path, params: Params = DEFAULT) -> tuple[Path, bool]:
    """The bundle for ``params`` in ``directory``, built if missing; ``(path, built by this call)``.

    The file is ``corpus-KEY.hg``, KEY being :func:`cache_key`, so a change to
    the generator builds a new one (and removes the others) while a rerun
    reuses it.  An exclusive ``flock`` on ``directory/corpus.lock`` makes
    concurrent callers (pytest-xdist workers) build it once: the first builds,
    the others wait and find it there.
    """
    path = directory / f"corpus-{cache_key(params)}.hg"
    if path.exists():  # it appears complete (make_bundle renames it into place)
        return path, False
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "corpus.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return path, False
        make_bundle(path, params)
        for stale in directory.glob("corpus-*.hg"):
            if stale != path:
                stale.unlink()
    return path, True


def _argv(params: Params) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in asdict(params).items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path,
                        help="the bundle to write (--repo-only: the repository, --cache: the cache directory)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--repo-only", action="store_true", help="build the repository, no bundle")
    mode.add_argument("--cache", action="store_true", help="DEST is a cache directory (see cached_bundle)")
    for key, value in asdict(DEFAULT).items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=value)
    args = parser.parse_args(argv)
    params = Params(**{k: getattr(args, k) for k in asdict(DEFAULT)})
    start = time.perf_counter()
    if args.repo_only:
        build(args.dest, params)
        return 0
    if args.cache:
        path, built = cached_bundle(args.dest.resolve(), params)
        print(f"{path}: {'built' if built else 'cached'}")
        return 0
    make_bundle(args.dest.resolve(), params)
    print(f"{args.dest}: {params.changesets} changesets, {args.dest.stat().st_size / 1e6:.1f} MB,"
          f" built in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
