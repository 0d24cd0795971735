"""End-to-end tests of the ``hg-hosting`` admin CLI, run as the real console script.

Successes are checked through the CLI's own ``--json`` listings, the stock ``hg``
client and a read-only look into the SQLite database.  Every refusal must print
exactly one ``error:`` line, exit non-zero and leave the site as it was: same
rows in every table, same repository directories, nothing left in ``SITE/tmp``.

The refusal tables share one module-scoped site (a refusal changes nothing, and
each case checks that), which keeps the many short CLI runs affordable.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import select
import shlex
import shutil
import sqlite3
import stat
import subprocess
import termios
import time
import unicodedata
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from clibatch import cli_batch
from conftest import HG_HOSTING, SiteHandle, commit, run, site_handle

SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"

# -- looking at a site from outside ---------------------------------------------------


@contextlib.contextmanager
def database(site: SiteHandle):
    """A read-only connection to the site's SQLite database."""
    conn = sqlite3.connect(f"file:{site.root / 'hosting.db'}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


def query(site: SiteHandle, sql: str, *params) -> list[tuple]:
    with database(site) as conn:
        return conn.execute(sql, params).fetchall()


def db_dump(site: SiteHandle) -> dict[str, list[tuple]]:
    """Every row of every table, sorted: equal dumps mean an unchanged database."""
    with database(site) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}


def db_bytes(site: SiteHandle) -> bytes:
    """The raw bytes of the database and its WAL, to look for secrets that must not be there."""
    return b"".join(p.read_bytes() for p in sorted(site.root.glob("hosting.db*")))


def repo_dirs(site: SiteHandle) -> list[str]:
    """``OWNER/NAME`` of every directory under ``repos/``, sorted."""
    repos = site.root / "repos"
    return sorted(f"{o.name}/{r.name}" for o in repos.iterdir() if o.is_dir() for r in o.iterdir())


def tmp_entries(site: SiteHandle) -> list[str]:
    tmp = site.root / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def snapshot(site: SiteHandle) -> dict:
    return {"db": db_dump(site), "dirs": repo_dirs(site), "tmp": tmp_entries(site)}


def refused(site: SiteHandle, *args: str, input: str | None = None) -> str:
    """Run a command that must be refused and must change nothing; return its error line."""
    before = snapshot(site)
    line = site.refuse(*args, input=input)
    after = snapshot(site)
    assert after["tmp"] == [], f"{args} left {after['tmp']} in SITE/tmp"
    assert after == before, f"{args} was refused but changed the site"
    return line


def pick(rows: list[dict], *keys: str) -> list[dict]:
    """The rows restricted to ``keys`` (extra fields are allowed), sorted."""
    return sorted(({k: row[k] for k in keys} for row in rows), key=json.dumps)


def verifies(stored: str, password: str) -> bool:
    """True when an argon2 hash from the database matches ``password``."""
    try:
        return PasswordHasher().verify(stored, password)
    except VerificationError:
        return False


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def site_nodes(site: SiteHandle, full_name: str, user: str = "alice") -> list[str]:
    """Every changeset of a site repository, in revision order."""
    out = site.hg("log", "-R", str(site.repo_path(full_name)), "-r", "all()", "-T", "{node}\n", user=user)
    return out.stdout.split()


def hg_verify(site: SiteHandle, full_name: str, user: str = "alice") -> None:
    site.hg("verify", "-q", "-R", str(site.repo_path(full_name)), user=user)


def push_new_changesets(site: SiteHandle, full_name: str, wc: Path, user: str,
                        files: list[tuple[str, str]]) -> list[str]:
    """Clone a site repository, commit ``files`` one per changeset, push them back."""
    site.hg("clone", "-q", str(site.repo_path(full_name)), str(wc), user=user)
    nodes = [commit(site.hg, wc, name, content) for name, content in files]
    site.hg("push", "-q", cwd=wc, user=user)
    return nodes


def grants_in_db(site: SiteHandle, full_name: str) -> list[tuple[str, str, str]]:
    """``(subject, kind, level)`` of the grants on a repository, read from the database."""
    owner, name = full_name.split("/")
    return sorted(query(site, """
        SELECT s.name, s.kind, g.level FROM "grant" g
        JOIN owner s ON s.id = g.subject_id
        JOIN repository r ON r.id = g.repository_id
        JOIN owner o ON o.id = r.owner_id
        WHERE o.name_key = ? AND r.name_key = ?""", owner.lower(), name.lower()))


def protections_in_db(site: SiteHandle, full_name: str) -> dict[str, list[str]]:
    owner, name = full_name.split("/")
    rows = query(site, """
        SELECT p.name, s.kind, s.name FROM protected_ref p
        JOIN repository r ON r.id = p.repository_id
        JOIN owner o ON o.id = r.owner_id
        LEFT JOIN protected_ref_allow a ON a.ref_id = p.id
        LEFT JOIN owner s ON s.id = a.subject_id
        WHERE o.name_key = ? AND r.name_key = ?""", owner.lower(), name.lower())
    result: dict[str, list[str]] = {}
    for ref, kind, subject in rows:
        result.setdefault(ref, [])
        if subject is not None:
            result[ref].append("@" + subject if kind == "team" else subject)
    return {ref: sorted(allowed) for ref, allowed in result.items()}


# -- SSH keys made by the real ssh-keygen -------------------------------------------


@pytest.fixture
def keygen(tmp_path: Path):
    """Make OpenSSH key pairs with ssh-keygen; return the public key's path."""
    if not os.path.exists(SSH_KEYGEN):
        pytest.skip("ssh-keygen is not installed")
    keys = tmp_path / "keys"
    keys.mkdir()

    def make(name: str, key_type: str = "ed25519", bits: int | None = None) -> Path:
        argv = [SSH_KEYGEN, "-q", "-t", key_type, "-N", "", "-C", f"{name}@example.org",
                "-f", str(keys / name)]
        if bits:
            argv[2:2] = ["-b", str(bits)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            pytest.skip(f"ssh-keygen cannot make a {key_type} {bits or ''} key: {proc.stderr.strip()}")
        return keys / f"{name}.pub"

    return make


def ssh_fingerprint(pub: Path) -> str:
    """The SHA256 fingerprint as ``ssh-keygen -lf`` prints it."""
    out = subprocess.run([SSH_KEYGEN, "-E", "sha256", "-lf", str(pub)], capture_output=True,
                         text=True, check=True).stdout
    return out.split()[1]


# -- init and choosing the site --------------------------------------------------------


def test_init_creates_the_site(site):
    """init creates the site hgrc, a 0600 database, secret and host key, and an empty repos/."""
    root = site.root
    assert (root / "hgrc").is_file()
    extensions = (root / "hgrc").read_text().split("[extensions]", 1)[1].split("\n[", 1)[0]
    assert "hosting" in extensions  # the site hgrc enables the extension
    for private in ("hosting.db", "secret", "ssh_host_ed25519_key"):
        assert (root / private).is_file(), private
        assert mode(root / private) == 0o600, private
    assert len((root / "secret").read_bytes()) >= 16
    assert b"PRIVATE KEY" in (root / "ssh_host_ed25519_key").read_bytes()
    assert (root / "repos").is_dir() and list((root / "repos").iterdir()) == []
    assert site.cli_json("user", "list") == []
    assert site.cli_json("repo", "list") == []


def test_init_again_changes_nothing(site):
    """A second init keeps the admin's hgrc byte for byte, the secrets, the keys and every row."""
    site.add_user("alice")
    site.cli("repo", "create", "alice/demo")
    hgrc = site.root / "hgrc"
    hgrc.write_bytes(hgrc.read_bytes() + b"\n[web]\n# edited by the admin\nstyle = gitweb\n")
    files = ("hgrc", "secret", "ssh_host_ed25519_key")
    before = {name: (site.root / name).read_bytes() for name in files}
    modes = {name: mode(site.root / name) for name in (*files, "hosting.db")}
    state = snapshot(site)

    site.cli("init")

    assert {name: (site.root / name).read_bytes() for name in files} == before
    assert {name: mode(site.root / name) for name in (*files, "hosting.db")} == modes
    assert snapshot(site) == state
    assert [u["name"] for u in site.cli_json("user", "list")] == ["alice"]
    assert site_nodes(site, "alice/demo") == []


def test_init_on_an_existing_site_names_the_admins_and_the_reset_command(tmp_path, env):
    """init on a site with admins names them and prints the exact command that resets a password; it works."""
    handle = SiteHandle(tmp_path / "my site", env)  # a blank in the path: the command must quote it
    first = handle.cli("init", "--admin", "admin", env={"HG_HOSTING_ADMIN_PASSWORD": "first pw"}).stdout
    assert "created site admin admin" in first
    handle.cli("user", "add", "root", "--admin")
    handle.cli("user", "add", "alice")

    lines = handle.cli("init", "--admin", "admin").stdout.splitlines()
    assert f"site at {handle.root} is up to date" in lines
    assert "site admins: admin, root" in lines
    (hint,) = [line for line in lines if "user passwd" in line]
    command = hint.split(": ", 1)[1]
    argv = shlex.split(command)
    assert argv[0] == "hg-hosting" and argv[-3:] == ["user", "passwd", "admin"], command
    run(argv, handle.env, input="reset pw\n")  # the printed command, as a user would paste it
    (stored,) = query(handle, "SELECT password_hash FROM owner WHERE name = 'admin'")[0]
    assert verifies(stored, "reset pw")


def test_init_admin_makes_the_first_site_admin(tmp_path, env):
    """``init --admin root`` on a new site creates the site admin root with a generated password
    printed once, which is the one stored; with HG_HOSTING_ADMIN_PASSWORD it takes that one
    and prints none."""
    handle = SiteHandle(tmp_path / "site", env)
    lines = handle.cli("init", "--admin", "root").stdout.splitlines()
    assert "created site admin root" in lines
    (shown,) = [line.removeprefix("password (shown once): ") for line in lines if line.startswith("password")]
    assert len(shown) >= 16
    assert [(u["name"], u["admin"]) for u in handle.cli_json("user", "list")] == [("root", True)]
    (stored,) = query(handle, "SELECT password_hash FROM owner WHERE name = 'root'")[0]
    assert verifies(stored, shown)

    other = SiteHandle(tmp_path / "other", env)
    out = other.cli("init", "--admin", "root", env={"HG_HOSTING_ADMIN_PASSWORD": "chosen pw"}).stdout
    assert "created site admin root" in out and "password" not in out
    (stored,) = query(other, "SELECT password_hash FROM owner WHERE name = 'root'")[0]
    assert verifies(stored, "chosen pw")


def test_init_admin_refusals(site):
    """``init --admin`` with an invalid name, or the name of a user who is not an admin (on a
    site with no admin), is refused with one error line and creates no user."""
    site.add_user("alice")
    assert refused(site, "init", "--admin", "bad name") == \
        "error: invalid user name 'bad name': use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    assert refused(site, "init", "--admin", "ALICE") == "error: the name 'ALICE' is already taken by a user or team"
    assert [(u["name"], u["admin"]) for u in site.cli_json("user", "list")] == [("alice", False)]


def test_init_without_an_admin_says_how_to_make_one(site):
    """init on a site without a site admin says so and prints the command that makes one."""
    site.cli("user", "add", "alice")
    out = site.cli("init").stdout
    assert "no site admin" in out and f"hg-hosting --site {site.root} init --admin NAME" in out


def test_site_from_environment(site):
    """HG_HOSTING_SITE chooses the site when --site is absent, and --site wins over it."""
    site.add_user("alice")
    proc = run([HG_HOSTING, "user", "list", "--json"], {**site.env, "HG_HOSTING_SITE": str(site.root)})
    assert [u["name"] for u in json.loads(proc.stdout)] == ["alice"]
    elsewhere = {"HG_HOSTING_SITE": str(site.root.parent / "not-a-site")}
    assert [u["name"] for u in json.loads(site.cli("user", "list", "--json", env=elsewhere).stdout)] == ["alice"]


def test_default_site_directory(tmp_path, env):
    """Without --site nor HG_HOSTING_SITE, init and the other commands use the documented default."""
    env = {**env, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    run([HG_HOSTING, "init"], env)
    default = tmp_path / "xdg" / "hg-hosting"
    assert (default / "hgrc").is_file() and (default / "hosting.db").is_file()
    run([HG_HOSTING, "user", "add", "alice"], env)
    assert [u["name"] for u in json.loads(run([HG_HOSTING, "user", "list", "--json"], env).stdout)] == ["alice"]


def test_commands_without_a_site_fail(tmp_path, env):
    """Commands on a directory holding no site fail with one error line and create nothing."""
    missing = SiteHandle(tmp_path / "missing", env)
    assert "error: " in missing.refuse("user", "list")
    missing.refuse("repo", "create", "alice/demo")
    assert not missing.root.exists()
    empty = SiteHandle(tmp_path / "empty", env)
    empty.root.mkdir()
    empty.refuse("user", "add", "alice")
    assert list(empty.root.iterdir()) == []


# -- users ---------------------------------------------------------------------------


def test_user_add_list_remove(site):
    """Users are added with email and admin flag, listed as JSON and removed."""
    site.cli("user", "add", "alice", "--email", "alice@example.org")
    site.cli("user", "add", "Root", "--admin")
    assert pick(site.cli_json("user", "list"), "name", "email", "admin") == [
        {"name": "Root", "email": "", "admin": True},
        {"name": "alice", "email": "alice@example.org", "admin": False},
    ]
    text = site.cli("user", "list").stdout
    assert "alice" in text and "Root" in text
    site.cli("user", "remove", "ROOT")
    assert [u["name"] for u in site.cli_json("user", "list")] == ["alice"]


def test_passwords_come_from_stdin_and_are_hashed(site):
    """--password-stdin strips one trailing newline and the database holds only an argon2id hash."""
    site.cli("user", "add", "carol", "--password-stdin", input="correct horse\n")
    (stored,) = query(site, "SELECT password_hash FROM owner WHERE name = 'carol'")[0]
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert b"correct horse" not in db_bytes(site)
    assert verifies(stored, "correct horse") and not verifies(stored, "correct horse\n")

    site.cli("user", "passwd", "carol", "--password-stdin", input="battery staple\n\n")
    (new,) = query(site, "SELECT password_hash FROM owner WHERE name = 'carol'")[0]
    assert new.startswith("$argon2id$") and new != stored
    assert verifies(new, "battery staple\n")  # only one newline is stripped
    assert not verifies(new, "correct horse")
    assert b"battery staple" not in db_bytes(site)

    refused(site, "user", "add", "erin", "--password-stdin", input="\n")  # empty password
    refused(site, "user", "passwd", "nobody", "--password-stdin", input="secret\n")


# -- passwords typed on a terminal ---------------------------------------------------


def _controlling_terminal() -> None:
    """In the child, after setsid: make its stdin (the pty) the controlling terminal, as a login shell has."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def on_terminal(site: SiteHandle, *args: str, answers: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run ``hg-hosting`` on a real pseudo-terminal, typing each answer after the next password prompt.

    The pty is the process's stdin, stdout, stderr and controlling terminal.
    Returns the exit status and everything the terminal showed (prompts,
    output and any echo of what was typed).
    """
    master, slave = os.openpty()
    proc = subprocess.Popen([HG_HOSTING, "--site", str(site.root), *args], env=site.env,
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=_controlling_terminal)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + timeout

    def read_some() -> bool:
        nonlocal shown
        ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"{args}: nothing more on the terminal; it showed {shown!r}")
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every process holding the pty has exited
            chunk = b""
        shown += chunk
        return bool(chunk)

    try:
        for typed, answer in enumerate(answers, 1):
            while shown.lower().count(b"password") < typed or not shown.endswith(b": "):
                if not read_some():
                    raise AssertionError(f"{args}: exited before prompt {typed}; it showed {shown!r}")
            os.write(master, answer.encode() + b"\n")
        while read_some():
            pass
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), shown.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def stored_hash(site: SiteHandle, name: str) -> str | None:
    (row,) = query(site, "SELECT password_hash FROM owner WHERE name = ?", name)
    return row[0]


def test_passwd_prompts_twice_on_a_terminal(site):
    """On a terminal, user passwd asks twice without echo and stores the new password."""
    site.add_user("carol", password="old one")
    status, shown = on_terminal(site, "user", "passwd", "carol", answers=["new secret", "new secret"])
    assert status == 0, shown
    assert shown.lower().count("password") >= 2 and "changed the password of carol" in shown
    assert "new secret" not in shown  # not echoed
    assert verifies(stored_hash(site, "carol"), "new secret")


def test_passwd_on_a_terminal_refuses_mismatch_and_empty(site):
    """Two different entries, or an empty one, are refused with one error line and change nothing."""
    site.add_user("carol", password="old one")
    before = snapshot(site)
    status, shown = on_terminal(site, "user", "passwd", "carol", answers=["one thing", "another"])
    assert status == 1 and shown.count("error: ") == 1 and "match" in shown, shown
    status, shown = on_terminal(site, "user", "passwd", "carol", answers=[""])  # asked once only
    assert status == 1 and shown.count("error: ") == 1 and "empty" in shown, shown
    assert snapshot(site) == before
    assert verifies(stored_hash(site, "carol"), "old one")


def test_passwd_reads_stdin_when_it_is_not_a_terminal(site):
    """Without a terminal, user passwd reads the password from stdin (one newline stripped) without the flag."""
    site.add_user("carol", password="old one")
    site.cli("user", "passwd", "carol", input="piped secret\n")
    assert verifies(stored_hash(site, "carol"), "piped secret")
    refused(site, "user", "passwd", "carol", input="")


def test_user_add_on_a_terminal_prompts_only_when_asked(site):
    """user add never prompts by itself (scripts run on terminals too); --password-prompt asks twice."""
    status, shown = on_terminal(site, "user", "add", "dave", answers=[])
    assert status == 0, shown
    assert stored_hash(site, "dave") is None
    assert "Password for" not in shown and "token" in shown

    status, shown = on_terminal(site, "user", "add", "erin", "--password-prompt", answers=["pw erin", "pw erin"])
    assert status == 0 and "pw erin" not in shown, shown
    assert verifies(stored_hash(site, "erin"), "pw erin")

    status, shown = on_terminal(site, "user", "add", "frank", "--password-prompt", answers=["a", "b"])
    assert status == 1 and shown.count("error: ") == 1, shown
    assert [u["name"] for u in site.cli_json("user", "list")] == ["dave", "erin"]


def test_user_added_without_password_is_told_about_tokens(site):
    """A user added without a password gets one line saying they can use only tokens until one is set."""
    out = site.cli("user", "add", "dave").stdout.splitlines()
    assert out[0] == "added user dave"
    assert len(out) == 2 and "token" in out[1] and "user passwd dave" in out[1]
    out = site.cli("user", "add", "erin", "--password-stdin", input="pw\n").stdout.splitlines()
    assert out == ["added user erin"]


def test_password_on_argv_is_refused(site):
    """A password can never be given on the command line: the user is not created."""
    site.add_user("alice")
    refused(site, "user", "add", "bob", "--password", "x")
    refused(site, "user", "add", "bob", "--password=x")
    refused(site, "user", "passwd", "alice", "hunter2")
    assert [u["name"] for u in site.cli_json("user", "list")] == ["alice"]


# -- tokens --------------------------------------------------------------------------


def test_tokens_create_list_revoke(site):
    """A token is printed once, alone, carries >= 128 random bits and is stored only as a SHA-256 digest."""
    site.add_user("alice")
    first = site.cli("token", "create", "alice", "--label", "ci")
    lines = first.stdout.splitlines()
    assert len(lines) == 1 and lines[0] == lines[0].strip()
    token = lines[0]
    second = site.cli("token", "create", "alice").stdout.strip()
    assert token != second
    for t in (token, second):
        random_part = t.split("_", 1)[1] if t.startswith("hgh_") else t
        assert len(random_part) >= 22 and len(random_part) * 6 >= 128, t  # base64: 6 bits a char
        assert set(random_part) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), t

    listed = site.cli_json("token", "list", "alice")
    labels = [t["label"] for t in listed]
    assert len(labels) == 2 and len(set(labels)) == 2 and "ci" in labels
    for t in listed:
        assert isinstance(datetime.datetime.fromisoformat(t["created"]), datetime.datetime)
    digests = sorted(d for (d,) in query(site, "SELECT digest FROM api_token"))
    assert digests == sorted(hashlib.sha256(t.encode()).hexdigest() for t in (token, second))
    raw = db_bytes(site)
    assert token.encode() not in raw and second.encode() not in raw

    refused(site, "token", "create", "alice", "--label", "ci")
    site.cli("token", "revoke", "alice", "ci")
    assert "ci" not in [t["label"] for t in site.cli_json("token", "list", "alice")]
    assert query(site, "SELECT digest FROM api_token") == [(hashlib.sha256(second.encode()).hexdigest(),)]
    refused(site, "token", "revoke", "alice", "ci")


# -- SSH keys --------------------------------------------------------------------------


def test_ssh_keys_add_list_remove(site, keygen):
    """Keys are added from a file or stdin, listed with ssh-keygen's SHA256 fingerprint and removed."""
    site.add_user("alice")
    ed = keygen("ed")
    rsa = keygen("rsa3072", "rsa", 3072)
    site.cli("ssh-key", "add", "alice", str(ed))
    site.cli("ssh-key", "add", "alice", "-", input=rsa.read_text())
    listed = site.cli_json("ssh-key", "list", "alice")
    assert pick(listed, "fingerprint", "type", "comment") == pick([
        {"fingerprint": ssh_fingerprint(ed), "type": "ssh-ed25519", "comment": "ed@example.org"},
        {"fingerprint": ssh_fingerprint(rsa), "type": "ssh-rsa", "comment": "rsa3072@example.org"},
    ], "fingerprint", "type", "comment")

    refused(site, "ssh-key", "remove", "alice", "SHA256:" + "A" * 43)
    site.cli("ssh-key", "remove", "alice", ssh_fingerprint(ed))
    assert [k["fingerprint"] for k in site.cli_json("ssh-key", "list", "alice")] == [ssh_fingerprint(rsa)]
    site.cli("ssh-key", "remove", "alice", ssh_fingerprint(rsa))
    assert site.cli_json("ssh-key", "list", "alice") == []


def test_bad_ssh_keys_are_refused(site, keygen, tmp_path):
    """Weak, duplicate, malformed, truncated, private and empty keys are refused and nothing is stored."""
    site.add_user("alice")
    site.add_user("bob")
    ed = keygen("ed")
    site.cli("ssh-key", "add", "alice", str(ed))
    weak = keygen("rsa1024", "rsa", 1024)

    key_type, blob, comment = ed.read_text().split()
    cut = blob[: len(blob) // 2]
    bad = {
        "garbage": "this is not a key\n",
        "mismatched-type": f"ssh-rsa {blob} {comment}\n",
        "truncated-base64": f"{key_type} {cut[:-1]} {comment}\n",  # not a multiple of 4
        "truncated-key": f"{key_type} {base64.b64encode(base64.b64decode(blob)[:30]).decode()}\n",
        "empty": "",
        "private": (ed.parent / "ed").read_text(),
    }
    for name, text in bad.items():
        path = tmp_path / f"{name}.pub"
        path.write_text(text)
        refused(site, "ssh-key", "add", "bob", str(path))
    refused(site, "ssh-key", "add", "bob", str(weak))
    refused(site, "ssh-key", "add", "bob", str(ed))  # already alice's
    refused(site, "ssh-key", "add", "alice", "-", input=ed.read_text())  # already registered
    refused(site, "ssh-key", "remove", "bob", ssh_fingerprint(ed))  # alice's key, not bob's


# -- teams ----------------------------------------------------------------------------


def test_teams(site):
    """Teams are added, get and lose members, are listed as JSON and removed."""
    site.add_user("alice")
    site.add_user("bob")
    site.cli("team", "add", "devs")
    site.cli("team", "add", "QA")
    site.cli("team", "member-add", "devs", "alice")
    site.cli("team", "member-add", "DEVS", "Bob")
    site.cli("team", "member-add", "qa", "bob")
    teams = {t["name"]: sorted(t["members"]) for t in site.cli_json("team", "list")}
    assert teams == {"devs": ["alice", "bob"], "QA": ["bob"]}
    site.cli("team", "member-remove", "devs", "alice")
    teams = {t["name"]: sorted(t["members"]) for t in site.cli_json("team", "list")}
    assert teams == {"devs": ["bob"], "QA": ["bob"]}
    site.cli("team", "remove", "qa")
    assert [t["name"] for t in site.cli_json("team", "list")] == ["devs"]


# -- repositories -----------------------------------------------------------------------


def test_repo_create_list_remove(site):
    """Repositories are created public or private with a description, listed and removed with their directory."""
    site.add_user("alice")
    site.cli("team", "add", "devs")
    site.cli("repo", "create", "alice/demo", "--description", "A demo, with spaces")
    site.cli("repo", "create", "ALICE/Secret", "--private")
    site.cli("repo", "create", "devs/tools")
    assert pick(site.cli_json("repo", "list"), "name", "owner", "private", "description") == pick([
        {"name": "alice/demo", "owner": "alice", "private": False, "description": "A demo, with spaces"},
        {"name": "alice/Secret", "owner": "alice", "private": True, "description": ""},
        {"name": "devs/tools", "owner": "devs", "private": False, "description": ""},
    ], "name", "owner", "private", "description")
    assert repo_dirs(site) == ["alice/Secret", "alice/demo", "devs/tools"]
    for name in repo_dirs(site):
        assert (site.repo_path(name) / ".hg" / "requires").is_file()
    hg_verify(site, "alice/Secret")

    site.cli("grant", "alice/demo", "@devs", "write")
    site.cli("repo", "remove", "alice/DEMO")
    assert not site.repo_path("alice/demo").exists()
    assert repo_dirs(site) == ["alice/Secret", "devs/tools"]
    assert [r["name"] for r in site.cli_json("repo", "list")] == ["alice/Secret", "devs/tools"]
    assert query(site, 'SELECT COUNT(*) FROM "grant"') == [(0,)]
    assert tmp_entries(site) == []


def test_repo_works_with_the_stock_hg_client(site, tmp_path):
    """A created repository can be cloned, pushed to, and cloned again with the pushed changesets."""
    site.add_user("alice")
    site.cli("repo", "create", "alice/demo")
    wc = tmp_path / "wc"
    nodes = push_new_changesets(site, "alice/demo", wc, "alice", [("README", "hello\n")])
    assert site_nodes(site, "alice/demo") == nodes

    more = [commit(site.hg, wc, "src/a.py", "print('a')\n"),
            commit(site.hg, wc, "README", "hello again\n", branch="stable")]
    site.hg("push", "-q", "--new-branch", cwd=wc, user="alice")
    assert site_nodes(site, "alice/demo") == nodes + more
    hg_verify(site, "alice/demo")

    again = tmp_path / "again"
    site.hg("clone", "-q", "-u", "stable", str(site.repo_path("alice/demo")), str(again), user="alice")
    assert site.hg("log", "-r", "all()", "-T", "{node}\n", cwd=again).stdout.split() == nodes + more
    assert (again / "README").read_text() == "hello again\n"
    assert (again / "src" / "a.py").read_text() == "print('a')\n"


def test_repo_rename_moves_history_and_grants(site, tmp_path):
    """A rename moves the directory with its history, keeps grants and protections, and frees the old name."""
    site.add_user("alice")
    site.add_user("bob")
    site.cli("team", "add", "devs")
    site.cli("repo", "create", "alice/demo", "--private", "--description", "d")
    nodes = push_new_changesets(site, "alice/demo", tmp_path / "wc", "alice", [("a", "1\n")])
    site.cli("grant", "alice/demo", "bob", "write")
    site.cli("protect", "alice/demo", "default", "--allow", "bob")
    grants = grants_in_db(site, "alice/demo")

    site.cli("repo", "rename", "alice/demo", "alice/renamed")
    assert repo_dirs(site) == ["alice/renamed"]
    assert site_nodes(site, "alice/renamed") == nodes
    assert grants_in_db(site, "alice/renamed") == grants == [("bob", "user", "write")]
    assert protections_in_db(site, "alice/renamed") == {"default": ["bob"]}

    site.cli("repo", "rename", "alice/renamed", "devs/moved")
    assert repo_dirs(site) == ["devs/moved"]
    path = site.repo_path("devs/moved")
    assert not (path / ".hg" / "wlock").exists() and not (path / ".hg" / "store" / "lock").exists()
    hg_verify(site, "devs/moved")
    assert site_nodes(site, "devs/moved") == nodes
    assert grants_in_db(site, "devs/moved") == grants
    assert pick(site.cli_json("repo", "list"), "name", "owner", "private", "description") == [
        {"name": "devs/moved", "owner": "devs", "private": True, "description": "d"}]

    site.cli("repo", "create", "alice/demo")
    assert repo_dirs(site) == ["alice/demo", "devs/moved"]
    assert tmp_entries(site) == []


def test_repo_fork_copies_changesets_and_records_one_push(site, tmp_path):
    """A fork holds the same changesets and starts with one push, by the forking user, holding all of them."""
    site.add_user("alice")
    site.add_user("bob")
    site.cli("team", "add", "devs")
    site.cli("repo", "create", "alice/demo", "--description", "upstream")
    wc = tmp_path / "wc"
    nodes = push_new_changesets(site, "alice/demo", wc, "alice", [("a", "1\n"), ("b", "2\n")])
    source_log = nodes

    site.cli("repo", "fork", "alice/demo", "bob/demo")
    site.cli("repo", "fork", "alice/demo", "devs/demo", "--user", "bob")
    assert repo_dirs(site) == ["alice/demo", "bob/demo", "devs/demo"]
    listed = {r["name"]: r for r in site.cli_json("repo", "list")}
    assert listed["bob/demo"]["owner"] == "bob" and listed["bob/demo"]["private"] is False
    assert site_nodes(site, "bob/demo", user="bob") == source_log
    assert site_nodes(site, "devs/demo", user="bob") == source_log
    hg_verify(site, "bob/demo", user="bob")
    assert site_nodes(site, "alice/demo") == source_log

    pushes = site.cli_json("pushlog", "bob/demo")
    assert len(pushes) == 1
    assert pushes[0]["user"] == "bob"
    assert pushes[0]["id"] == 1
    assert pushes[0]["changesets"] == source_log
    team_fork = site.cli_json("pushlog", "devs/demo")
    assert [(p["user"], p["changesets"]) for p in team_fork] == [("bob", source_log)]



def test_repo_fork_private(world):
    """``repo fork --private`` makes a fork of the public alice/demo private; without it a fork
    keeps its source's visibility (public stays public, the private alice/other stays private)."""
    world.cli("repo", "fork", "alice/demo", "bob/fork-private", "--private")
    world.cli("repo", "fork", "alice/demo", "bob/fork-public")
    world.cli("repo", "fork", "alice/other", "bob/fork-of-private")
    listed = {r["name"]: r["private"] for r in world.cli_json("repo", "list")}
    assert {k: listed[k] for k in ("bob/fork-private", "bob/fork-public", "bob/fork-of-private")} == {
        "bob/fork-private": True, "bob/fork-public": False, "bob/fork-of-private": True}
    assert listed["alice/demo"] is False



def test_check_repair_mends_and_reports(site, tmp_path):
    """``check`` finds changesets pushed past the extension, a row without its directory and a
    directory of no owner: exit 1, a ``problem:`` line each, nothing changed.  ``check --repair``
    records the changesets as one push by (repair), removes the row, moves the directory to
    lost+found/: exit 0, a ``repaired:`` line each; ``check`` is clean after."""
    site.add_user("alice")
    site.cli("repo", "create", "alice/demo")
    site.cli("repo", "create", "alice/gone")
    wc = tmp_path / "wc"
    first = push_new_changesets(site, "alice/demo", wc, "alice", [("a", "1\n")])
    stray = commit(site.hg, wc, "b", "2\n")
    site.hg("--config", "extensions.hosting=!", "push", "-q", cwd=wc)  # lands unchecked, unrecorded
    shutil.rmtree(site.repo_path("alice/gone"))
    site.hg("init", str(site.root / "repos" / "nobody" / "x"))

    before = snapshot(site)
    proc = site.cli("check", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [
        f"problem: alice/demo: 1 changeset(s) without a push record (first {stray[:12]})",
        f"problem: alice/gone: in the database but no directory {site.repo_path('alice/gone')}",
        f"problem: nobody/x: directory {site.root / 'repos' / 'nobody' / 'x'} has no row in the database",
    ]
    assert snapshot(site) == before

    proc = site.cli("check", "--repair", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lost = sorted((site.root / "lost+found").iterdir())
    assert [p.name[:-9] for p in lost] == ["nobody-x"] and (lost[0] / ".hg").is_dir()
    assert proc.stdout.splitlines()[3:] == [
        "repaired: alice/demo: recorded 1 changeset(s) as push 2 by (repair)",
        "repaired: alice/gone: removed the row",
        f"repaired: nobody/x: no such owner or name; moved to {lost[0]}",
    ]
    assert [(p["id"], p["user"], p["changesets"]) for p in site.cli_json("pushlog", "alice/demo")] == [
        (2, "(repair)", [stray]), (1, "alice", first)]
    assert [r["name"] for r in site.cli_json("repo", "list")] == ["alice/demo"]
    assert site.cli("check").stdout == "ok: the database and the repositories agree\n"


def test_check_repair_leaves_what_it_may_not_mend(site):
    """A repository whose .hg/hgrc no longer includes the site hgrc (pushes to it would be
    neither checked nor recorded) is the administrator's to fix: ``check --repair`` names it,
    exits 1 and leaves the file as it was."""
    site.add_user("alice")
    site.cli("repo", "create", "alice/demo")
    hgrc = site.repo_path("alice/demo") / ".hg" / "hgrc"
    hgrc.write_text("[ui]\n")
    proc = site.cli("check", "--repair", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [
        f"problem: alice/demo: .hg/hgrc does not include the site hgrc {site.root / 'hgrc'}"
        " (add '%include ../../../../hgrc' to it); pushes are neither checked nor recorded",
        "problem: alice/demo: the hg-hosting extension is not enabled ('hg-hosting init' adds"
        " '[extensions] hosting =' to the site hgrc); pushes are neither checked nor recorded"]
    assert hgrc.read_text() == "[ui]\n"



def test_repo_set_private_and_description(world):
    """``repo set`` makes a repository private with a new description, says what it set, and
    makes it public again."""
    world.cli("repo", "create", "alice/settable")
    out = world.cli("repo", "set", "alice/settable", "private=true", "description=kept quiet").stdout
    assert out == "alice/settable: private=true, description=kept quiet\n"
    row = {r["name"]: r for r in world.cli_json("repo", "list")}["alice/settable"]
    assert (row["private"], row["description"]) == (True, "kept quiet")
    world.cli("repo", "set", "alice/settable", "private=false")
    assert {r["name"]: r["private"] for r in world.cli_json("repo", "list")}["alice/settable"] is False


def test_pushlog_limit(world, tmp_path):
    """``pushlog --limit N`` shows the N newest pushes, newest first."""
    world.cli("repo", "create", "alice/limited")
    wc = tmp_path / "wc"
    world.hg("clone", "-q", str(world.repo_path("alice/limited")), str(wc), user="alice")
    for i in range(3):
        commit(world.hg, wc, f"f{i}", f"{i}\n")
        world.hg("push", "-q", cwd=wc, user="alice")
    assert [p["id"] for p in world.cli_json("pushlog", "alice/limited", "--limit", "2")] == [3, 2]
    assert [p["id"] for p in world.cli_json("pushlog", "alice/limited")] == [3, 2, 1]


# -- grants and protected refs ------------------------------------------------------------


def test_grant_and_revoke(site):
    """Grants to users and @teams are stored, replaced by a new level and revoked."""
    site.add_user("alice")
    site.add_user("bob")
    site.cli("team", "add", "devs")
    site.cli("repo", "create", "alice/demo", "--private")
    site.cli("grant", "alice/demo", "bob", "read")
    site.cli("grant", "alice/demo", "@devs", "admin")
    assert grants_in_db(site, "alice/demo") == [("bob", "user", "read"), ("devs", "team", "admin")]
    site.cli("grant", "ALICE/DEMO", "Bob", "write")
    assert grants_in_db(site, "alice/demo") == [("bob", "user", "write"), ("devs", "team", "admin")]
    site.cli("revoke", "alice/demo", "@DEVS")
    assert grants_in_db(site, "alice/demo") == [("bob", "user", "write")]
    site.cli("revoke", "alice/demo", "bob")
    assert grants_in_db(site, "alice/demo") == []
    refused(site, "revoke", "alice/demo", "bob")


def test_protect_and_unprotect(site):
    """protect stores the allow-list, protecting again replaces it, unprotect removes it."""
    site.add_user("alice")
    site.add_user("bob")
    site.cli("team", "add", "devs")
    site.cli("repo", "create", "alice/demo")
    site.cli("protect", "alice/demo", "default", "--allow", "alice", "--allow", "@devs")
    site.cli("protect", "alice/demo", "release-1.0", "--allow", "bob")
    assert protections_in_db(site, "alice/demo") == {"default": ["@devs", "alice"], "release-1.0": ["bob"]}
    site.cli("protect", "alice/demo", "default", "--allow", "BOB")
    assert protections_in_db(site, "alice/demo") == {"default": ["bob"], "release-1.0": ["bob"]}
    site.cli("unprotect", "alice/demo", "release-1.0")
    assert protections_in_db(site, "alice/demo") == {"default": ["bob"]}
    refused(site, "unprotect", "alice/demo", "release-1.0")
    refused(site, "protect", "alice/demo", "default", "--allow", "alice", "--allow", "nobody")
    assert protections_in_db(site, "alice/demo") == {"default": ["bob"]}


# -- listings as text: aligned columns under a header line ---------------------------------


def display_width(text: str) -> int:
    """Terminal columns of ``text``: wide East Asian characters take two, combining marks none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def columns(text: str) -> tuple[list[str], list[list[str]]]:
    """Parse a text listing: the header's names and each row's cells, cut at the header's display columns.

    Cells are read where their header starts, so a row that is not aligned
    under the header comes out with wrong cells.
    """
    header, *lines = text.splitlines()
    names = re.split(r"\s{2,}", header.strip())
    starts = [header.index(n) for n in names]
    assert starts[0] == 0 and header == header.rstrip(), header
    rows = []
    for line in lines:
        assert line == line.rstrip(), f"trailing blanks: {line!r}"
        cells = [""] * len(names)
        at = 0
        for c in line:
            i = max(k for k, start in enumerate(starts) if start <= at)
            if at == starts[i] and i > 0:
                assert cells[i - 1].endswith("  "), f"{line!r}: column {names[i]} does not start at {at}"
            cells[i] += c
            at += display_width(c)
        rows.append([cell.strip() for cell in cells])
    return names, rows


#: The listings the alignment test reads, text and --json.
READS = [("user", "list"), ("team", "list"), ("repo", "list"), ("repo", "list", "--json"),
         ("token", "list", "alice"), ("token", "list", "alice", "--json"), ("ssh-key", "list", "alice"),
         ("pushlog", "alice/demo"), ("pushlog", "alice/demo", "--json")]


def test_listings_print_aligned_columns_under_a_header(site, keygen, tmp_path):
    """user, team, repo, token, ssh-key list and pushlog print a header line and aligned columns."""
    ed = keygen("ed")
    cli_batch(site, [(argv, None) for argv in (  # the setup in one process: a start costs more than a command
        ["user", "add", "alice", "--email", "alice@example.org", "--admin"],
        ["user", "add", "bob", "--email", "böb@例え.jp"],  # wide characters before another column
        ["user", "add", "carol"],
        ["team", "add", "devs"],
        ["team", "member-add", "devs", "alice"],
        ["team", "member-add", "devs", "bob"],
        ["team", "add", "qa"],
        ["repo", "create", "alice/demo", "--description", "tab\there, new\nline, \x1b[31mred\u202e!"],
        ["repo", "create", "bob/secret-stuff", "--private"],
        ["token", "create", "alice", "--label", "laptop"],
        ["token", "create", "alice", "--label", "ci"],
        ["ssh-key", "add", "alice", str(ed)],
    )])
    with contextlib.closing(sqlite3.connect(site.root / "hosting.db")) as conn, conn:
        conn.execute("UPDATE api_token SET last_used = '2026-01-02 03:04:05' WHERE label = 'ci'")
    wc = tmp_path / "wc"
    nodes = push_new_changesets(site, "alice/demo", wc, "alice", [("a", "1\n"), ("b", "2\n")])
    site.hg("bookmark", "-r", nodes[0], "feature", cwd=wc)
    site.hg("push", "-B", "feature", cwd=wc, user="bob", check=False)  # bob may not: refused
    site.cli("grant", "alice/demo", "bob", "write")
    assert site.hg("push", "-B", "feature", cwd=wc, user="bob", check=False).returncode in (0, 1)

    reads = {  # every listing read by one process (the real program runs the same main)
        args: out for args, out in zip(READS, cli_batch(site, [(list(a), None) for a in READS]), strict=True)}

    def listing(*args: str) -> tuple[list[str], list[list[str]]]:
        return columns(reads[args])

    assert listing("user", "list") == (["NAME", "EMAIL", "ADMIN", "DISABLED"], [
        ["alice", "alice@example.org", "yes", "no"], ["bob", "böb@例え.jp", "no", "no"], ["carol", "-", "no", "no"]])
    assert listing("team", "list") == (["NAME", "MEMBERS"], [["devs", "alice, bob"], ["qa", "-"]])
    names, rows = listing("repo", "list")
    assert names == ["NAME", "VISIBILITY", "CREATED", "DESCRIPTION"]
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("alice/demo", "public", "tab here, new line,  [31mred !"),  # control characters blanked
        ("bob/secret-stuff", "private", "-")]
    json_created = {r["name"]: r["created"] for r in json.loads(reads["repo", "list", "--json"])}
    assert {r[0]: r[2] for r in rows} == json_created
    names, rows = listing("token", "list", "alice")
    assert names == ["LABEL", "SCOPE", "CREATED", "LAST USED"]
    created = {t["label"]: t["created"] for t in json.loads(reads["token", "list", "alice", "--json"])}
    assert rows == [["laptop", "write", created["laptop"], "never"],
                    ["ci", "write", created["ci"], "2026-01-02T03:04:05Z"]]
    assert listing("ssh-key", "list", "alice") == (["FINGERPRINT", "TYPE", "COMMENT"], [
        [ssh_fingerprint(ed), "ssh-ed25519", "ed@example.org"]])
    names, rows = listing("pushlog", "alice/demo")
    pushes = json.loads(reads["pushlog", "alice/demo", "--json"])
    assert names == ["ID", "DATE", "USER", "CHANGESETS", "BOOKMARKS"]
    assert rows == [
        ["2", pushes[0]["date"], "bob", "-", f"feature -> {nodes[0][:12]}"],
        ["1", pushes[1]["date"], "alice", f"2: {nodes[0][:12]}..{nodes[1][:12]}", "-"],
    ]


def test_empty_listings_print_the_header_and_json_is_unchanged(site):
    """An empty listing is its header line alone; --json keeps docs/spec.md's objects."""
    site.cli("user", "add", "alice")
    site.cli("repo", "create", "alice/demo")
    assert site.cli("team", "list").stdout == "NAME  MEMBERS\n"
    assert site.cli("token", "list", "alice").stdout.split("  ")[0] == "LABEL"
    assert len(site.cli("token", "list", "alice").stdout.splitlines()) == 1
    assert site.cli("pushlog", "alice/demo").stdout.splitlines()[0].split() == [
        "ID", "DATE", "USER", "CHANGESETS", "BOOKMARKS"]
    site.cli("team", "add", "devs")
    site.cli("token", "create", "alice", "--label", "ci")
    assert site.cli_json("user", "list") == [{"name": "alice", "email": "", "admin": False, "disabled": False}]
    assert site.cli_json("team", "list") == [{"name": "devs", "members": []}]
    assert set(site.cli_json("repo", "list")[0]) == {"name", "owner", "private", "publishing", "description",
                                                     "created"}
    assert set(site.cli_json("token", "list", "alice")[0]) == {"label", "scope", "created", "last_used"}


# -- refusals: one shared site, each case must change nothing --------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SiteHandle:
    """A site with users alice and bob, team devs (alice), repos alice/demo and alice/other."""
    tmp = tmp_path_factory.mktemp("world")
    handle = site_handle(tmp)
    cli_batch(handle, [(argv, None) for argv in (
        ["init"],
        ["user", "add", "alice", "--email", "alice@example.org"],
        ["user", "add", "bob", "--email", "bob@example.org"],
        ["team", "add", "devs"],
        ["team", "member-add", "devs", "alice"],
        ["repo", "create", "alice/demo"],
        ["repo", "create", "alice/other", "--private"],
        ["grant", "alice/demo", "bob", "write"],
        ["protect", "alice/demo", "default", "--allow", "alice"],
        ["token", "create", "alice", "--label", "ci"],
    )])
    return handle


BAD_NAMES = ["", "-x", ".hg", "foo.hg", "FOO.HG", "a/b", "a b", "x" * 65, "é", "..", "a\nb"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[:20] for n in BAD_NAMES])
def test_bad_names_are_refused(world, name):
    """A name outside docs/spec.md's rule is refused for a user and a repository, and nothing is created."""
    refused(world, "user", "add", name)
    refused(world, "repo", "create", f"alice/{name}")


def test_good_names_are_accepted(site):
    """Names at the edges of docs/spec.md's rule are accepted."""
    for name in ("x" * 64, "A.b_c-9"):
        site.cli("user", "add", name)
    site.cli("repo", "create", f"{'x' * 64}/{'y' * 64}")
    site.cli("repo", "create", "A.b_c-9/hg.hgx")
    assert sorted(u["name"] for u in site.cli_json("user", "list")) == ["A.b_c-9", "x" * 64]
    assert repo_dirs(site) == ["A.b_c-9/hg.hgx", f"{'x' * 64}/{'y' * 64}"]


#: A well-formed public key nobody registered (for refusals that must get past the key's checks).
VALID_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFJ0bdDR0FB4dsVatRlGbGXjUPwY5kD88Wm8zp7q476F k@example.org\n"

REFUSALS = [
    # users
    pytest.param(("user", "add", "ALICE"), None,
                 "the name 'ALICE' is already taken by a user or team", id="user-duplicate-any-case"),
    pytest.param(("user", "add", "Devs"), None,
                 "the name 'Devs' is already taken by a user or team", id="user-named-like-a-team"),
    pytest.param(("user", "passwd", "alice"), "\n",
                 "the password is empty", id="passwd-empty-from-stdin"),
    pytest.param(("user", "add", "carol", "--password-prompt"), "pw\n",
                 "--password-prompt needs a terminal; use --password-stdin to read stdin", id="password-prompt-without-terminal"),
    pytest.param(("user", "add", "carol", "--password-prompt", "--password-stdin"), "pw\n",
                 "argument --password-stdin: not allowed with argument --password-prompt (see 'hg-hosting user add --help')", id="password-prompt-and-stdin"),
    pytest.param(("user", "remove", "nobody"), None,
                 "no user named 'nobody'", id="user-remove-unknown"),
    # tokens
    pytest.param(("token", "create", "nobody"), None,
                 "no user named 'nobody'", id="token-unknown-user"),
    pytest.param(("token", "create", "alice", "--label", "bad label"), None,
                 "invalid token label 'bad label': use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", id="token-bad-label"),
    # SSH keys (bad keys: test_bad_ssh_keys_are_refused)
    pytest.param(("ssh-key", "list", "nobody"), None,
                 "no user named 'nobody'", id="ssh-key-list-unknown-user"),
    pytest.param(("ssh-key", "add", "nobody", "-"), VALID_KEY,
                 "no user named 'nobody'", id="ssh-key-add-unknown-user"),
    pytest.param(("ssh-key", "add", "alice", "-"), "ssh-ed25519 AAAA\n",
                 "the key data does not match its type", id="ssh-key-add-truncated"),
    # teams
    pytest.param(("team", "add", "ALICE"), None,
                 "the name 'ALICE' is already taken by a user or team", id="team-named-like-a-user-any-case"),
    pytest.param(("team", "add", "DEVS"), None,
                 "the name 'DEVS' is already taken by a user or team", id="team-duplicate-any-case"),
    pytest.param(("team", "add", "x.hg"), None,
                 "invalid team name 'x.hg': a name may not end in '.hg'", id="team-bad-name"),
    pytest.param(("team", "member-add", "devs", "ALICE"), None,
                 "alice is already a member of devs", id="member-add-twice"),
    pytest.param(("team", "member-add", "devs", "nobody"), None,
                 "no user named 'nobody'", id="member-add-unknown-user"),
    pytest.param(("team", "member-add", "nosuch", "bob"), None,
                 "no team named 'nosuch'", id="member-add-unknown-team"),
    pytest.param(("team", "member-remove", "devs", "bob"), None,
                 "bob is not a member of devs", id="member-remove-non-member"),
    pytest.param(("team", "remove", "nosuch"), None,
                 "no team named 'nosuch'", id="team-remove-unknown"),
    # repositories
    pytest.param(("repo", "create", "alice/DEMO"), None,
                 "repository alice/demo already exists", id="repo-duplicate-any-case"),
    pytest.param(("repo", "create", "ALICE/Demo"), None,
                 "repository alice/demo already exists", id="repo-duplicate-owner-any-case"),
    pytest.param(("repo", "create", "nobody/demo"), None,
                 "no user or team named 'nobody'", id="repo-create-unknown-owner"),
    pytest.param(("repo", "create", "alice"), None,
                 "invalid repository 'alice': expected OWNER/NAME", id="repo-create-without-owner"),
    pytest.param(("repo", "remove", "alice/nosuch"), None,
                 "no repository 'alice/nosuch'", id="repo-remove-unknown"),
    pytest.param(("repo", "rename", "alice/nosuch", "alice/x"), None,
                 "no repository 'alice/nosuch'", id="repo-rename-unknown"),
    pytest.param(("repo", "rename", "alice/demo", "alice/OTHER"), None,
                 "repository alice/other already exists", id="repo-rename-onto-existing"),
    pytest.param(("repo", "rename", "alice/demo", "nobody/demo"), None,
                 "no user or team named 'nobody'", id="repo-rename-unknown-owner"),
    pytest.param(("repo", "fork", "alice/nosuch", "bob/x"), None,
                 "no repository 'alice/nosuch'", id="repo-fork-unknown"),
    pytest.param(("repo", "fork", "alice/demo", "alice/Other"), None,
                 "repository alice/other already exists", id="repo-fork-onto-existing"),
    pytest.param(("repo", "fork", "alice/demo", "devs/demo"), None,
                 "a fork into a team needs --user: the user who forks", id="repo-fork-to-team-without-user"),
    pytest.param(("repo", "fork", "alice/demo", "bob/demo", "--user", "nobody"), None,
                 "no user named 'nobody'", id="repo-fork-unknown-forking-user"),
    # grants
    pytest.param(("grant", "alice/demo", "nobody", "read"), None,
                 "no user named 'nobody'", id="grant-unknown-user"),
    pytest.param(("grant", "alice/demo", "@nosuch", "read"), None,
                 "no team named 'nosuch'", id="grant-unknown-team"),
    pytest.param(("grant", "alice/demo", "devs", "read"), None,
                 "no user named 'devs'", id="grant-team-without-at"),
    pytest.param(("grant", "alice/nosuch", "bob", "read"), None,
                 "no repository 'alice/nosuch'", id="grant-unknown-repo"),
    pytest.param(("grant", "alice/demo", "bob", "owner"), None,
                 "unknown level 'owner': use read, write, publish or admin", id="grant-unknown-level"),
    pytest.param(("revoke", "alice/nosuch", "bob"), None,
                 "no repository 'alice/nosuch'", id="revoke-unknown-repo"),
    # protected refs
    pytest.param(("protect", "alice/demo", "default", "--allow", "nobody"), None,
                 "no user named 'nobody'", id="protect-unknown-user"),
    pytest.param(("protect", "alice/demo", "default", "--allow", "@nosuch"), None,
                 "no team named 'nosuch'", id="protect-unknown-team"),
    pytest.param(("protect", "alice/nosuch", "default", "--allow", "bob"), None,
                 "no repository 'alice/nosuch'", id="protect-unknown-repo"),
    pytest.param(("protect", "alice/demo", "default"), None,
                 "the following arguments are required: --allow (see 'hg-hosting protect --help')", id="protect-without-allow"),
    pytest.param(("revoke", "alice/demo", "@devs"), None,
                 "@devs has no grant on alice/demo", id="revoke-without-grant"),
    pytest.param(("unprotect", "alice/demo", "stable"), None,
                 "'stable' is not protected in alice/demo", id="unprotect-not-protected"),
    pytest.param(("unprotect", "alice/nosuch", "default"), None,
                 "no repository 'alice/nosuch'", id="unprotect-unknown-repo"),
    # repository settings
    pytest.param(("repo", "set", "alice/nosuch", "private=true"), None,
                 "no repository 'alice/nosuch'", id="repo-set-unknown-repo"),
    pytest.param(("repo", "set", "alice/demo", "private=maybe"), None,
                 "private must be true or false, got 'maybe'", id="repo-set-bad-value"),
    pytest.param(("repo", "set", "alice/demo", "colour=blue"), None,
                 "expected KEY=VALUE with KEY one of publishing, private, description, got 'colour=blue'", id="repo-set-unknown-key"),
    # push log
    pytest.param(("pushlog", "alice/demo", "--limit", "0"), None,
                 "--limit must be at least 1", id="pushlog-limit-zero"),
    pytest.param(("pushlog", "alice/demo", "--limit", "many"), None,
                 "argument --limit: invalid int value: 'many' (see 'hg-hosting pushlog --help')", id="pushlog-limit-not-a-number"),
    pytest.param(("pushlog", "alice/nosuch"), None,
                 "no repository 'alice/nosuch'", id="pushlog-unknown-repo"),
    # usage errors
    pytest.param(("bogus",), None,
                 "argument COMMAND: invalid choice: 'bogus' (choose from 'init', 'serve', 'user', 'token', 'ssh-key', 'team', 'repo', 'grant', 'revoke', 'protect', 'unprotect', 'pushlog', 'check', 'db', 'backup', 'restore', 'ssh-serve', 'ssh-authorized-keys', 'invite', 'webhook', 'watch', 'unwatch', 'audit') (see 'hg-hosting --help')", id="unknown-command"),
    pytest.param(("user",), None,
                 "the following arguments are required: ACTION (see 'hg-hosting user --help')", id="missing-action"),
    pytest.param(("user", "add"), None,
                 "the following arguments are required: name (see 'hg-hosting user add --help')", id="missing-name"),
    pytest.param(("grant", "alice/demo", "bob"), None,
                 "the following arguments are required: LEVEL (see 'hg-hosting grant --help')", id="missing-level"),
    pytest.param(("repo", "list", "--bogus"), None,
                 "unrecognized arguments: --bogus (see 'hg-hosting --help')", id="unknown-option"),
    # serve: refused before it listens
    pytest.param(("serve", "--http", "nonsense"), None,
                 "invalid --http address 'nonsense': expected HOST:PORT", id="serve-bad-http-address"),
    pytest.param(("serve", "--ssh", "127.0.0.1:99999"), None,
                 "invalid --ssh address '127.0.0.1:99999': expected HOST:PORT", id="serve-bad-ssh-port"),
    pytest.param(("serve", "--http", "127.0.0.1:0", "--workers", "0"), None,
                 "--workers must be between 1 and 64", id="serve-no-workers"),
    pytest.param(("serve", "--ssh", "127.0.0.1:0", "--workers", "2"), None,
                 "--workers applies to HTTP: give --http HOST:PORT too", id="serve-workers-without-http"),
]


@pytest.mark.parametrize("args, stdin, message", REFUSALS)
def test_refusals_change_nothing(world, args, stdin, message):
    """Each refusal prints exactly its one ``error:`` line, exits non-zero and leaves every row and directory as it was."""
    assert refused(world, *args, input=stdin) == f"error: {message}"


# -- atomicity: a failure in the middle of an operation leaves the site as it was ----------


@pytest.fixture(scope="module")
def fault_site(tmp_path_factory) -> tuple[SiteHandle, list[str], list[dict]]:
    """A site with alice/demo holding two pushed changesets, alice/other empty, users bob and carol."""
    tmp = tmp_path_factory.mktemp("faults")
    handle = site_handle(tmp)
    handle.cli("init")
    handle.add_user("alice")
    handle.add_user("bob")
    handle.add_user("carol")
    handle.cli("repo", "create", "alice/demo")
    handle.cli("repo", "create", "alice/other")
    handle.cli("grant", "alice/demo", "bob", "read")
    nodes = push_new_changesets(handle, "alice/demo", tmp / "wc", "alice", [("a", "1\n"), ("b", "2\n")])
    return handle, nodes, handle.cli_json("repo", "list")


FAULTS = [
    pytest.param("repo-create-after-move", ("repo", "create", "alice/new"), id="create-after-move"),
    pytest.param("repo-rename-after-move", ("repo", "rename", "alice/demo", "alice/renamed"),
                 id="rename-after-move"),
    pytest.param("repo-rename-after-move", ("repo", "rename", "alice/demo", "bob/demo"),
                 id="rename-to-other-owner-after-move"),
    pytest.param("repo-fork-before-move", ("repo", "fork", "alice/demo", "bob/fork"), id="fork-before-move"),
    pytest.param("repo-fork-after-move", ("repo", "fork", "alice/demo", "bob/fork"), id="fork-after-move"),
    pytest.param("repo-remove-after-move", ("repo", "remove", "alice/demo"), id="remove-after-move"),
]


@pytest.mark.parametrize("fault, args", FAULTS)
def test_failed_operation_leaves_site_unchanged(fault_site, fault, args):
    """An operation failing at a fault point exits with one error line and leaves disk and database as before."""
    site, nodes, listing = fault_site
    before = snapshot(site)

    faulty = SiteHandle(site.root, {**site.env, "HG_HOSTING_FAULTS": fault})
    faulty.refuse(*args)

    assert snapshot(site) == before
    assert tmp_entries(site) == []
    assert site.cli_json("repo", "list") == listing
    assert repo_dirs(site) == ["alice/demo", "alice/other"]
    for name in repo_dirs(site):
        path = site.repo_path(name)
        assert not (path / ".hg" / "wlock").exists() and not (path / ".hg" / "store" / "lock").exists()
    assert site_nodes(site, "alice/demo") == nodes
    hg_verify(site, "alice/demo")
    assert grants_in_db(site, "alice/demo") == [("bob", "user", "read")]


def test_failed_operation_leaves_no_owner_directory(fault_site):
    """An operation rolled back leaves no new empty owner directory under repos/."""
    site, _, _ = fault_site
    owners = sorted(p.name for p in (site.root / "repos").iterdir())
    assert "carol" not in owners
    faulty = SiteHandle(site.root, {**site.env, "HG_HOSTING_FAULTS": "repo-create-after-move"})
    faulty.refuse("repo", "create", "carol/new")
    assert sorted(p.name for p in (site.root / "repos").iterdir()) == owners


def test_kill_during_rename_keeps_disk_and_database_in_agreement(site, tmp_path):
    """A rename killed with SIGKILL before its commit leaves the repository where the database says it is."""
    site.add_user("alice")
    site.cli("repo", "create", "alice/demo")
    nodes = push_new_changesets(site, "alice/demo", tmp_path / "wc", "alice", [("a", "1\n")])

    proc = site.cli("repo", "rename", "alice/demo", "alice/renamed", check=False,
                    env={"HG_HOSTING_FAULTS": "repo-rename-after-move=kill"})
    assert proc.returncode != 0

    (listed,) = site.cli_json("repo", "list")
    assert repo_dirs(site) == [listed["name"]], "the database and the disk disagree"
    assert site_nodes(site, listed["name"]) == nodes
    hg_verify(site, listed["name"])
