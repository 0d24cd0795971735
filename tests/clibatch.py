"""Many ``hg-hosting`` commands in one Python process: each CLI process pays about a second
of imports, so a module's site is set up at once (the browser, self-service and admin tests share it)."""

from __future__ import annotations

import json
import subprocess
import sys

#: stdin: a JSON list of [ARGV, STDIN]; stdout: a JSON list of [exit code, stdout, stderr].
CLI_BATCH = r"""
import contextlib, io, json, sys
from hgext_hosting.admin import main
results = []
for argv, stdin in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    sys.stdin = io.StringIO(stdin or "")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    results.append([rc or 0, out.getvalue(), err.getvalue()])
    if rc:
        break
json.dump(results, sys.__stdout__)
"""


def cli_batch(site, commands: list[tuple[list[str], str | None]]) -> list[str]:
    """``hg-hosting --site SITE ARGV`` for each command, in one process; all must succeed.

    Returns each command's standard output, in order.
    """
    steps = [[["--site", str(site.root), *argv], stdin] for argv, stdin in commands]
    proc = subprocess.run([sys.executable, "-c", CLI_BATCH], input=json.dumps(steps), env=site.env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    for (argv, _), (rc, out, err) in zip(commands, results, strict=False):
        assert rc == 0, f"hg-hosting {' '.join(argv)} exited {rc}\n{out}\n{err}"
    assert len(results) == len(commands)
    return [out for _, out, _ in results]
