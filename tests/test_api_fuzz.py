"""Schemathesis (pinned in setup.py's test extras) fuzzes every operation of the live
daemon's OpenAPI document, anonymously and with a site admin's admin-scoped token.

Seeded, a few hundred cases per run.  The checks: no 5xx, every status, content
type, header and body conforms to the document, schema-violating input is
refused, unsupported methods get 405 with ``Allow``, bad credentials 401.  Not
``positive_data_acceptance``: a schema-valid request may still name what does
not exist or break a rule JSON Schema cannot say (a reserved name, an SSH key's
format), and is then rightly refused with 404, 409 or 422.

The site's login throttle is raised: the fuzzer is one address sending many
wrong credentials on purpose, and must see 401 for each, not 429.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Daemon, site_handle

from daemon.api.routes import ROUTES

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
SEED = 20261201
EXAMPLES = 2


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    site = site_handle(tmp)
    site.cli("init")
    with open(site.root / "hgrc", "a") as hgrc:
        hgrc.write("\n[hosting]\nlogin-throttle-pair = 1000000\nlogin-throttle-user = 1000000\n"
                   "login-throttle-address = 1000000\n")
    site.cli("user", "add", "root", "--admin")
    site.cli("repo", "create", "root/demo")
    token = site.cli("token", "create", "root", "--scope", "admin").stdout.strip()
    daemon = Daemon(site)
    yield daemon, token, tmp
    daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()[-5000:]


def schemathesis(daemon: Daemon, tmp: Path, *extra: str) -> str:
    proc = subprocess.run(
        [SCHEMATHESIS, "run", f"{daemon.url}/api/v1/openapi.json", "--url", daemon.url,
         "--seed", str(SEED), "-n", str(EXAMPLES), "-w", "1", "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--generation-database", "none",
         "--no-color", "--request-timeout", "60", *extra],
        cwd=tmp, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    summary = output[output.rfind("SUMMARY"):]
    print(summary)
    assert proc.returncode == 0, output[-20000:]
    assert re.search(rf"Tested: {len(ROUTES)}\b", summary), summary  # every operation of the document
    return summary


def test_anonymous(fuzzed):
    daemon, _, tmp = fuzzed
    schemathesis(daemon, tmp)


def test_admin_token(fuzzed):
    daemon, token, tmp = fuzzed
    schemathesis(daemon, tmp, "-H", f"Authorization: Bearer {token}")
