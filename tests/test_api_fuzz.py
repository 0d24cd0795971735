"""Schemathesis (pinned in setup.py's test extras) fuzzes every operation of the live
daemon's OpenAPI document, anonymously and with a site admin's admin-scoped token.

Seeded, a few hundred cases per run.  The checks: no 5xx, every status, content
type, header and body conforms to the document, schema-violating input is
refused, unsupported methods get 405 with ``Allow``, bad credentials 401.  Not
``positive_data_acceptance``: a schema-valid request may still name what does
not exist or break a rule JSON Schema cannot say (a reserved name, an SSH key's
format), and is then rightly refused with 404, 409 or 422.

The site holds data for the fuzzer to find (users, teams, repositories with a
push, grants, a protection, an SSH key, a spare token, hooks with pending
deliveries), and a ``schemathesis.toml`` beside it binds the path parameters to
their names with a probability (:func:`fuzz_dictionaries`), so that operations
reach their logic instead of answering only 404 ("missing test data").

The site's login throttle is raised: the fuzzer is one address sending many
wrong credentials on purpose, and must see 401 for each, not 429.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from clibatch import cli_batch
from conftest import Daemon, commit, site_handle
from hookreceiver import wait_until
from test_auth import db_query

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
                   "login-throttle-address = 1000000\nwebhook-allow = 127.0.0.1\nwebhook-retry-first = 3600\n")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fuzz", "-f", str(tmp / "key")], check=True)
    cli_batch(site, [(argv, None) for argv in (
        ["user", "add", "root", "--admin"], ["user", "add", "alice"],
        *(["team", "add", team] for team in TEAMS), *(["team", "member-add", team, "alice"] for team in TEAMS),
        ["repo", "create", "root/demo"], ["team", "add", GONE],
        *(["repo", "create", f"alice/{name}"] for name in (*REPO_NAMES, GONE)),
        ["grant", "alice/demo", "@devs", "read"], ["grant", "alice/demo", "root", "write"],
        ["protect", "alice/demo", "default", "--allow", "alice"], ["ssh-key", "add", "root", str(tmp / "key.pub")],
        ["token", "create", "root", "--label", "spare"],
        # hooks 1, 2, 3...: alice/demo's, alice's, then each team's; a receiver that refuses (port 9)
        *(["webhook", "add", target, "http://127.0.0.1:9/hook"] for target in ("alice/demo", "alice", *TEAMS)))])
    wc = tmp / "wc"
    site.hg("clone", "-q", str(site.repo_path("alice/demo")), str(wc))
    commit(site.hg, wc, "README.txt", "hello\n", "first")
    site.hg("push", "-q", str(site.repo_path("alice/demo")), cwd=wc, user="alice")
    token = site.cli("token", "create", "root", "--scope", "admin").stdout.strip()
    daemon = Daemon(site)
    deliveries = {hook: wait_until(lambda hook=hook: [g for (g,) in db_query(
        site, "SELECT guid FROM delivery WHERE webhook_id = ?", (hook,))]) for hook in (1, 2)}
    (tmp / "schemathesis.toml").write_text(fuzz_dictionaries(deliveries))
    yield daemon, token, tmp
    daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()[-5000:]


#: alice's repositories and the teams: the fuzzer may delete some, others remain to be read;
#: "gone" is what the DELETE of a repository or a team is given.
REPO_NAMES = ("demo", "two", "three", "four")
TEAMS = ("devs", "ops", "qa")
GONE = "gone"


def fuzz_dictionaries(deliveries: dict[int, list[str]]) -> str:
    """Schemathesis' configuration: most path parameters it makes name what exists (so that
    operations reach their logic, not only 404), the rest are its own.

    ``deliveries``: the delivery ids of hook 1 (alice/demo's) and hook 2 (alice's).
    """
    everywhere = {"owner": ["alice", "root"], "name": list(REPO_NAMES), "user": ["alice", "root"],
                  "team": list(TEAMS), "id": [1, 2, 3], "rev": ["tip", "default"], "path": ["README.txt"],
                  "ref": ["default"], "subject": ["@devs", "root"], "label": ["spare"], "delivery": deliveries[1]}
    # (method, path regex, values): where other names exist
    overrides = [
        (None, r"/users/\{user\}/hooks/", {"user": ["alice"], "id": [2], "delivery": deliveries[2]}),
        (None, r"/teams/\{team\}/hooks/", {"id": [3, 4, 5]}),
        ("DELETE", r"/teams/\{team\}$", {"team": [GONE]}),
        ("DELETE", r"/repos/\{owner\}/\{name\}$", {"owner": ["alice"], "name": [GONE]}),
    ]
    lines, names = [], {}

    def binding(param: str, entries: list, where: str = "path") -> str:
        name = names.setdefault(json.dumps(entries), f"d{len(names)}")
        return f'"{where}.{param}" = {{ dictionary = "{name}", probability = 0.75 }}'

    params = ["[parameters]", *(binding(p, v) for p, v in everywhere.items()), binding("owner", ["alice", "root"], "body")]
    for method, regex, values in overrides:
        params += ["", "[[operations]]", *([f'include-method = "{method}"'] if method else []),
                   f"include-path-regex = {json.dumps(regex)}", "[operations.parameters]",
                   *(binding(p, v) for p, v in values.items())]
    for entries, name in names.items():
        lines += [f"[dictionaries.{name}]", f"values = {entries}", ""]
    return "\n".join(lines + params) + "\n"


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
