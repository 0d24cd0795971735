"""``hg-hosting``: the administrator's command line.

``main(argv=None) -> int`` parses the command, runs one small function per
subcommand and turns every refusal into one ``error: ...`` line on stderr with
a non-zero exit status.  Nothing here prints a traceback to a user: an
unexpected exception is reported in one line too (``HG_HOSTING_DEBUG=1`` shows
the traceback).

Listings print aligned columns under a header line (``--json``: docs/spec.md's
arrays).  Passwords never come from argv: ``--password-stdin`` reads stdin,
``user passwd`` asks twice on a terminal (else reads stdin), ``user add``
asks only with ``--password-prompt``.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import secrets
import shlex
import shutil
import sys
import traceback
import unicodedata
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path

from . import accounts, models, policy, repositories
from .errors import UserError
from .service import accounts as service_accounts
from .service import pushes, repos
from .service.actors import Actor
from .site import Site, SiteError, resolve_site_dir


class _Parser(argparse.ArgumentParser):
    """argparse that refuses with our one-line ``error:`` instead of exiting 2 with usage."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{message} (see '{self.prog} --help')")


def _password_from_stdin() -> str:
    """All of stdin, one trailing newline (``\\n`` or ``\\r\\n``) stripped (docs/spec.md: ``--password-stdin``)."""
    data = sys.stdin.read()
    if data.endswith("\n"):
        data = data[:-1]
        if data.endswith("\r"):
            data = data[:-1]
    return data


def _password_from_terminal(name: str) -> str:
    """Ask twice on the terminal without echo (``getpass``); refuse an empty or a mismatched entry."""
    try:
        first = getpass.getpass(f"Password for {name}: ")
        if not first:
            raise UserError("the password is empty; nothing changed")
        second = getpass.getpass(f"Repeat the password for {name}: ")
    except EOFError:
        raise UserError("no password given; nothing changed") from None
    if first != second:
        raise UserError("the passwords do not match; nothing changed")
    return first


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # closed
        return False


def _new_password(args, prompt_by_default: bool) -> str | None:
    """The password a ``user add``/``user passwd`` command was given, or None for none.

    ``--password-stdin`` reads stdin (even a terminal, as docs/spec.md says);
    otherwise a terminal is prompted when ``--password-prompt`` asked or
    ``prompt_by_default`` (``passwd``), and ``passwd`` without a terminal reads
    stdin.  ``user add`` without either flag sets no password: it never
    prompts by itself, so a script run from a terminal does not stop to ask.
    """
    if args.password_stdin:
        return _password_from_stdin()
    asked = getattr(args, "password_prompt", False)
    if not (asked or prompt_by_default):
        return None
    if _stdin_is_terminal():
        return _password_from_terminal(args.name)
    if asked:
        raise UserError("--password-prompt needs a terminal; use --password-stdin to read stdin")
    return _password_from_stdin()


def _iso(dt: datetime.datetime | None) -> str | None:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ") if dt else None


#: One text column of a listing: its header and how to show a row's cell.
Column = tuple[str, Callable[[dict], object]]


def _emit(args, rows: list[dict], columns: list[Column]) -> None:
    """Print ``rows`` as a JSON array (``--json``) or as aligned columns under a header line."""
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for line in _table([name for name, _ in columns],
                       [[_cell(show(row)) for _, show in columns] for row in rows]):
        print(line)


def _cell(value: object) -> str:
    """A value as one table cell: ``-`` for nothing; control and format characters (tabs, newlines,
    terminal escapes, bidi overrides) blanked, so no value can break the table or mislead the eye."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in text)


def _width(text: str) -> int:
    """Terminal columns taken by ``text`` (wide East Asian characters count two, combining marks none)."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def _table(header: list[str], rows: list[list[str]], gap: int = 2) -> list[str]:
    """Lines of a table whose columns start at the same terminal column, as ``docker ps`` prints them."""
    widths = [max(_width(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return [
        "".join(cell + " " * (widths[i] - _width(cell) + gap) for i, cell in enumerate(line[:-1]))
        + line[-1]
        for line in (header, *rows)
    ]


# -- commands -----------------------------------------------------------------

#: Who the command line acts as: the site's administrator, allowed everything.
CONSOLE = Actor.of_console()


def cmd_init(args, site: Site) -> int:
    """Create the site; make a first site admin if asked; say who the site admins are and how to reset one."""
    created = site.init()
    for item in created:
        print(f"created {item}")
    print(f"site ready at {site.root}" if created else f"site at {site.root} is up to date")
    admins = service_accounts.site_admin_names()
    if args.admin and not admins:
        password = os.environ.get("HG_HOSTING_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        service_accounts.add_user(CONSOLE, args.admin, admin=True, password=password)
        print(f"created site admin {args.admin}")
        if "HG_HOSTING_ADMIN_PASSWORD" not in os.environ:
            print(f"password (shown once): {password}")
    elif admins:
        print(f"site admins: {', '.join(admins)}")
        named = [a for a in admins if args.admin and a.lower() == args.admin.lower()]
        print(f"reset a password with: {_command_line(site)} user passwd {shlex.quote((named or admins)[0])}")
    else:
        print(f"no site admin yet; make one with: {_command_line(site)} init --admin NAME")
    return 0


def _command_line(site: Site) -> str:
    """``hg-hosting --site DIR`` as a user can paste it: this very program, the site quoted.

    ``hg-hosting`` when that name on ``$PATH`` is this program, else the path
    it was run by (``.venv/bin/hg-hosting`` under ``make serve``).
    """
    exe = sys.argv[0] if sys.argv and os.path.isfile(sys.argv[0]) else "hg-hosting"
    found = shutil.which("hg-hosting")
    try:
        if found and os.path.samefile(found, exe):
            exe = "hg-hosting"
    except OSError:
        exe = "hg-hosting"
    return f"{shlex.quote(exe)} --site {shlex.quote(str(site.root))}"


def cmd_user(args, site: Site) -> int:
    if args.action == "add":
        if args.password_prompt:  # refuse a taken or bad name before asking for a password
            service_accounts.check_new_owner_name(args.name)
        password = _new_password(args, prompt_by_default=False)
        service_accounts.add_user(CONSOLE, args.name, email=args.email or "", admin=args.admin, password=password)
        print(f"added user {args.name}")
        if password is None:
            print(f"{args.name} has no password and can only use API tokens until one is set"
                  f" (hg-hosting user passwd {args.name})")
    elif args.action == "passwd":
        accounts.get_user(args.name)  # refuse an unknown user before asking for a password
        service_accounts.set_password(CONSOLE, args.name, _new_password(args, prompt_by_default=True))
        print(f"changed the password of {args.name}")
    elif args.action == "remove":
        service_accounts.remove_user(CONSOLE, args.name)
        print(f"removed user {args.name}")
    elif args.action == "disable":
        changed = service_accounts.disable_user(CONSOLE, args.name)
        print(f"disabled user {args.name}" if changed else f"{args.name} was already disabled")
    elif args.action == "enable":
        changed = service_accounts.enable_user(CONSOLE, args.name)
        print(f"enabled user {args.name}" if changed else f"{args.name} was not disabled")
    elif args.action == "reset-link":
        token = service_accounts.issue_reset_link(CONSOLE, args.name)
        print(_reset_url(site, token))
    else:
        rows = [{"name": u.name, "email": u.email, "admin": u.is_admin, "disabled": u.disabled}
                for u in service_accounts.list_users(CONSOLE)]
        _emit(args, rows, [("NAME", itemgetter("name")), ("EMAIL", itemgetter("email")),
                           ("ADMIN", itemgetter("admin")), ("DISABLED", itemgetter("disabled"))])
    return 0


def _reset_url(site: Site, token: str) -> str:
    """``BASEURL/-/reset/TOKEN`` with the site's ``[web] baseurl``; else the path, and a note on stderr."""
    path = f"/-/reset/{token}"
    base = site.ui.config(b"web", b"baseurl")
    if base:
        return base.decode("utf-8", "replace").rstrip("/") + path
    print("note: [web] baseurl is not set in the site hgrc; prefix this path with the site's address",
          file=sys.stderr)
    return path


def cmd_token(args, site: Site) -> int:
    if args.action == "create":
        expires = service_accounts.parse_expiry(args.expires)
        print(service_accounts.create_token(CONSOLE, args.user, args.label, args.scope, expires))
    elif args.action == "revoke":
        service_accounts.revoke_token(CONSOLE, args.user, args.label)
        print(f"revoked token {args.label} of {args.user}")
    else:
        rows = [
            {"label": t.label, "scope": t.scope, "created": _iso(t.created), "last_used": _iso(t.last_used),
             **({"expires": _iso(t.expires)} if getattr(t, "expires", None) else {})}
            for t in service_accounts.list_tokens(CONSOLE, args.user)
        ]
        columns: list[Column] = [("LABEL", itemgetter("label")), ("SCOPE", itemgetter("scope")),
                                 ("CREATED", itemgetter("created")),
                                 ("LAST USED", lambda r: r["last_used"] or "never")]
        if any("expires" in r for r in rows):
            columns.append(("EXPIRES", lambda r: r.get("expires") or "never"))
        _emit(args, rows, columns)
    return 0


def cmd_invite(args, site: Site) -> int:
    """``invite create [--email E]``: print the single-use sign-up link's URL (path, or full
    with ``[web] baseurl``)."""
    token = service_accounts.create_invite(CONSOLE, args.email or "")
    base = (site.ui.config(b"web", b"baseurl") or b"").decode("utf-8", "replace").strip().rstrip("/")
    print(f"{base}/-/join/{token}")
    mode = site.ui.config(b"hosting", b"registration").decode("utf-8", "replace").strip()
    if mode not in ("invite", "open"):
        print(f"note: [hosting] registration is {mode or 'closed'}: the link works once it is 'invite'",
              file=sys.stderr)
    return 0


def cmd_ssh_key(args, site: Site) -> int:
    if args.action == "add":
        if args.file == "-":
            text = sys.stdin.read()
        else:
            try:
                with open(args.file, encoding="utf-8", errors="replace") as f:
                    text = f.read(65536)
            except OSError as e:
                raise UserError(f"cannot read {args.file}: {e.strerror}") from None
        key = service_accounts.add_ssh_key(CONSOLE, args.user, text)
        print(f"added key {key.fingerprint} for {args.user}")
    elif args.action == "remove":
        service_accounts.remove_ssh_key(CONSOLE, args.user, args.fingerprint)
        print(f"removed key {args.fingerprint} of {args.user}")
    else:
        rows = [
            {"fingerprint": k.fingerprint, "type": k.key_type, "comment": k.comment}
            for k in service_accounts.list_ssh_keys(CONSOLE, args.user)
        ]
        _emit(args, rows, [("FINGERPRINT", itemgetter("fingerprint")), ("TYPE", itemgetter("type")),
                           ("COMMENT", itemgetter("comment"))])
    return 0


def cmd_team(args, site: Site) -> int:
    if args.action == "add":
        service_accounts.add_team(CONSOLE, args.name)
        print(f"added team {args.name}")
    elif args.action == "remove":
        service_accounts.remove_team(CONSOLE, args.name)
        print(f"removed team {args.name}")
    elif args.action == "member-add":
        service_accounts.add_member(CONSOLE, args.team, args.user)
        print(f"added {args.user} to {args.team}")
    elif args.action == "member-remove":
        service_accounts.remove_member(CONSOLE, args.team, args.user)
        print(f"removed {args.user} from {args.team}")
    else:
        rows = [{"name": t.name, "members": members} for t, members in service_accounts.list_teams(CONSOLE)]
        _emit(args, rows, [("NAME", itemgetter("name")), ("MEMBERS", itemgetter("members"))])
    return 0


def _repo_row(repo) -> dict:
    return {
        "name": repo.full_name,
        "owner": repo.owner.name,
        "private": repo.private,
        "publishing": bool(repo.publishing),
        "description": repo.description,
        "created": _iso(repo.created),
    }


def cmd_repo(args, site: Site) -> int:
    if args.action == "create":
        repo = repos.create(site, CONSOLE, args.name, private=args.private, description=args.description or "",
                            publishing=not args.non_publishing)
        print(f"created {repo.full_name}" + ("" if repo.publishing else " (non-publishing)"))
    elif args.action == "set":
        changes = _repo_settings(args.settings)
        repo = repos.update(site, CONSOLE, args.name, **changes)
        print(f"{repo.full_name}: " + ", ".join(f"{k}={str(v).lower()}" for k, v in changes.items()))
    elif args.action == "remove":
        repos.remove(site, CONSOLE, args.name)
        print(f"removed {args.name}")
    elif args.action == "rename":
        repo = repos.rename(site, CONSOLE, args.src, args.dst)
        print(f"renamed {args.src} to {repo.full_name}")
    elif args.action == "fork":
        repo = repos.fork(site, CONSOLE, args.src, args.dst, user=args.user,
                          private=True if args.private else None)
        print(f"forked {args.src} to {repo.full_name}")
    else:
        rows = [_repo_row(r) for r in repos.all_repositories()]
        _emit(args, rows, [("NAME", itemgetter("name")),
                           ("VISIBILITY", lambda r: "private" if r["private"] else "public"),
                           ("CREATED", itemgetter("created")), ("DESCRIPTION", itemgetter("description"))])
    return 0


#: ``repo set OWNER/NAME KEY=VALUE``: the keys and how their values are read.
_REPO_SETTINGS = {"publishing": "bool", "private": "bool", "description": "text"}


def _repo_settings(pairs: list[str]) -> dict:
    """``["publishing=false", ...]`` as keyword arguments of ``set_repo_settings``, or UserError."""
    changes: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        kind = _REPO_SETTINGS.get(key)
        if not sep or kind is None:
            raise UserError(f"expected KEY=VALUE with KEY one of {', '.join(_REPO_SETTINGS)}, got {pair!r}")
        if kind == "bool":
            if value.lower() not in ("true", "false"):
                raise UserError(f"{key} must be true or false, got {value!r}")
            changes[key] = value.lower() == "true"
        else:
            changes[key] = value
    return changes


def cmd_grant(args, site: Site) -> int:
    repos.grant(CONSOLE, args.repo, args.subject, args.level)
    print(f"granted {args.level} on {args.repo} to {args.subject}")
    return 0


def cmd_revoke(args, site: Site) -> int:
    repos.revoke(CONSOLE, args.repo, args.subject)
    print(f"revoked the grant of {args.subject} on {args.repo}")
    return 0


def cmd_protect(args, site: Site) -> int:
    allowed = repos.protect(CONSOLE, args.repo, args.ref, args.allow or [])
    print(f"protected {args.ref} in {args.repo} (allowed: {' '.join(allowed)})")
    return 0


def cmd_unprotect(args, site: Site) -> int:
    repos.unprotect(CONSOLE, args.repo, args.ref)
    print(f"unprotected {args.ref} in {args.repo}")
    return 0


def _push_changesets(row: dict) -> str | None:
    """``N: FIRST..LAST`` (short hashes) of a push's changesets, None for a bookmark-only push."""
    nodes = row["changesets"]
    if not nodes:
        return None
    return f"{len(nodes)}: {nodes[0][:12]}" + (f"..{nodes[-1][:12]}" if len(nodes) > 1 else "")


def _push_bookmarks(row: dict) -> list[str]:
    return [f"{b['name']} -> {b['new'][:12] if b['new'] else '(deleted)'}" for b in row["bookmarks"]]


def _push_phases(row: dict) -> str | None:
    count = len(row.get("phases", []))
    return f"{count} change{'s' if count != 1 else ''}" if count else None


_PUSH_COLUMNS: list[Column] = [
    ("ID", itemgetter("id")), ("DATE", itemgetter("date")), ("USER", itemgetter("user")),
    ("CHANGESETS", _push_changesets), ("BOOKMARKS", _push_bookmarks),
]


def cmd_pushlog(args, site: Site) -> int:
    rows = [p.as_json() for p in pushes.recent(CONSOLE, args.repo, args.limit)]
    _emit(args, rows, _PUSH_COLUMNS + ([("PHASES", _push_phases)] if any("phases" in r for r in rows) else []))
    return 0


def cmd_check(args, site: Site) -> int:
    from . import check

    report = check.run(site, repair=args.repair)
    for line in report.lines():
        print(line)
    return report.exit_status()


def cmd_db(args, site: Site) -> int:
    """``db copy URL``: copy the site database to an empty one and switch the site hgrc to it."""
    from . import dbcopy

    dbcopy.copy(site, args.url, lambda line: print(line, flush=True))
    return 0


def cmd_backup(args, site: Site) -> int:
    from . import backup

    result = backup.backup(site, Path(args.dest), hardlink=not args.copy)
    for line in result.lines():
        print(line)
    return 0


def cmd_restore(args, site: Site) -> int:
    """Restore SRC into DIR; ``--site`` plays no part (the restored site is DIR)."""
    from . import backup, check

    restored = backup.restore(Path(args.src), Path(args.dir), database_url=args.database,
                              hardlink=not args.copy)
    print(f"restored the backup {args.src} as the site {restored.root}")
    with models.bound(restored.database()):
        report = check.run(restored)
    for line in report.lines():
        print(line)
    return report.exit_status()


def cmd_ssh_serve(args, site: Site) -> int:
    """OpenSSH forced command: run the client's ``hg -R OWNER/NAME serve --stdio`` as ``args.user``.

    The command comes from ``$SSH_ORIGINAL_COMMAND`` (none: the client asked
    for a shell) and passes :mod:`hgext_hosting.sshcommand`'s filter and read
    check; then this process becomes ``hg -R ABS serve --stdio`` (``exec``),
    wired to sshd's stdin and stdout, with ``HG_HOSTING_USER`` set to the user
    and every other ``HG*`` variable removed (sshd passes variables the client
    sent when ``AcceptEnv`` lets it).  Pushes are decided by the hooks, so a
    session whose ``hg`` would not load the extension is refused first.
    """
    from . import sshcommand

    owner, name = sshcommand.parse_command(os.environ.get("SSH_ORIGINAL_COMMAND"))
    path = sshcommand.repository_path(site, args.user, owner, name)
    hg = sshcommand.hg_executable()
    env = sshcommand.session_environ(os.environ, args.user)
    sshcommand.require_enforced(site, path, f"{owner}/{name}", env)
    models.database().close()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(hg, sshcommand.serve_argv(hg, path), env)
    return 1  # not reached: execve replaced this process or raised


def cmd_ssh_authorized_keys(args, site: Site) -> int:
    """Print an ``authorized_keys`` line forcing ``ssh-serve USER`` for every registered key.

    Usable as sshd's ``AuthorizedKeysCommand``.  The optional ACCOUNT (sshd's
    ``%u``) is accepted and ignored: every key of the site is printed because
    the key, not the login name, decides who the user is.
    """
    from . import sshcommand

    beside = Path(sys.executable).parent / "hg-hosting"
    exe = str(beside) if beside.is_file() else os.path.abspath(sys.argv[0])
    for line in sshcommand.authorized_keys_lines(exe, site.root):
        print(line)
    return 0


# -- the parser -------------------------------------------------------------------


# -- events (issue 14): thin faces over hgext_hosting.service.hooks and hgext_hosting.audit --------


def cmd_webhook(args, site: Site) -> int:
    from . import webhooks
    from .service import hooks

    console = Actor.of_console()
    if args.action == "add":
        secret = _password_from_stdin() if args.secret_stdin else None
        hook, secret = hooks.add(console, args.target, args.url, secret, args.events)
        print(f"added webhook {hook.id} for {webhooks.label(hook)}: {hook.url}")
        if not args.secret_stdin:
            print(f"secret (shown once): {secret}")
    elif args.action == "list":
        rows = [webhooks.as_json(h) for h in hooks.hooks_of(console, args.target, with_repositories=True)]
        _emit(args, rows, [("ID", itemgetter("id")), ("TARGET", itemgetter("target")), ("URL", itemgetter("url")),
                           ("EVENTS", itemgetter("events")), ("ACTIVE", itemgetter("active")),
                           ("STATE", lambda r: r["disabled_reason"] or (
                               f"failing since {r['failing_since']}" if r["failing_since"] else "ok"))])
    elif args.action == "remove":
        hooks.remove(console, args.id)
        print(f"removed webhook {args.id}")
    elif args.action in ("enable", "disable"):
        hooks.update(console, args.id, active=args.action == "enable")
        print(f"{args.action}d webhook {args.id}")
    elif args.action == "deliveries":
        if args.limit < 1:
            raise UserError("--limit must be at least 1")
        _emit(args, hooks.deliveries(console, args.id, limit=min(args.limit, hooks.MAX_LIMIT)),
              [("DATE", itemgetter("date")), ("DELIVERY", itemgetter("delivery")), ("EVENT", itemgetter("event")),
               ("REPOSITORY", itemgetter("repository")), ("STATUS", lambda r: r["status"] or r["error"]),
               ("MS", itemgetter("duration_ms")), ("STATE", itemgetter("state"))])
    elif args.action == "redeliver":
        hooks.redeliver(console, args.delivery)
        print(f"delivery {args.delivery} will be sent again")
    return 0


def cmd_watch(args, site: Site) -> int:
    from .service import hooks

    if args.command == "watch":
        done = hooks.watch(Actor.of_console(), args.repo, args.user)
        print(f"{args.user} {'now watches' if done else 'already watches'} {args.repo}")
    else:
        done = hooks.unwatch(Actor.of_console(), args.repo, args.user)
        print(f"{args.user} {'no longer watches' if done else 'did not watch'} {args.repo}")
    return 0


def cmd_audit(args, site: Site) -> int:
    from . import audit

    if args.limit < 1:
        raise UserError("--limit must be at least 1")
    _emit(args, audit.entries(args.limit),
          [("DATE", itemgetter("date")), ("ACTOR", itemgetter("actor")), ("ACTION", itemgetter("action")),
           ("TARGET", itemgetter("target")), ("ADDRESS", itemgetter("address"))])
    return 0


def build_parser(serve: Callable[[Callable[..., argparse.ArgumentParser]], None] | None = None
                 ) -> argparse.ArgumentParser:
    """The CLI's parser; ``serve(command)`` adds the ``serve`` command (``daemon.cli.add_serve``)."""
    parser = _Parser(prog="hg-hosting", description="Administer an hg-hosting site.")
    parser.add_argument("--site", metavar="DIR",
                        help="site directory (default: $HG_HOSTING_SITE, else ~/.local/share/hg-hosting)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    def actions(parent: argparse.ArgumentParser) -> argparse._SubParsersAction:
        s = parent.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
        s.required = True
        return s

    def listing(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print a JSON array")

    p = command("init", cmd_init, "create the site (safe to run again)")
    p.add_argument("--admin", metavar="NAME", default=None,
                   help="also create this site admin if the site has none (password from"
                        " $HG_HOSTING_ADMIN_PASSWORD, else generated and printed once)")

    if serve is not None:  # the daemon's command (daemon.cli): hgext_hosting never imports the daemon
        serve(command)

    users = actions(command("user", cmd_user, "manage users"))
    p = users.add_parser("add", help="add a user")
    p.add_argument("name")
    p.add_argument("--email", default="")
    p.add_argument("--admin", action="store_true", help="make the user a site admin")
    password = p.add_mutually_exclusive_group()
    password.add_argument("--password-stdin", action="store_true",
                          help="read the password from stdin (one trailing newline stripped)")
    password.add_argument("--password-prompt", action="store_true",
                          help="ask for the password twice on the terminal (not echoed)")
    p = users.add_parser("passwd", help="set a user's password: asked twice on a terminal, else read from stdin",
                         description="Set a user's password.  On a terminal it is asked twice (not echoed);"
                                     " otherwise, or with --password-stdin, it is read from stdin"
                                     " (one trailing newline stripped).")
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from stdin even on a terminal")
    users.add_parser("remove", help="remove a user").add_argument("name")
    users.add_parser("disable", help="disable a user: every login ends, no credential works;"
                                     " nothing is deleted").add_argument("name")
    users.add_parser("enable", help="enable a disabled user again").add_argument("name")
    users.add_parser("reset-link", help="print a single-use password reset link (valid 24 hours)"
                     ).add_argument("name")
    listing(users.add_parser("list", help="list users"))

    tokens = actions(command("token", cmd_token, "manage API tokens"))
    p = tokens.add_parser("create", help="create a token and print it (shown once)")
    p.add_argument("user")
    p.add_argument("--label", default=None)
    p.add_argument("--expires", default=None, metavar="YYYY-MM-DD",
                   help="the token stops working on this day (00:00 UTC); default: never")
    p.add_argument("--scope", default="write", choices=policy.SCOPES,
                   help="what the token may do: read (clone, pull, API reads), write (also push and"
                        " repository writes; the default), admin (also site administration, for site admins)")
    p = tokens.add_parser("list", help="list a user's tokens")
    p.add_argument("user")
    listing(p)
    p = tokens.add_parser("revoke", help="revoke a token")
    p.add_argument("user")
    p.add_argument("label")

    keys = actions(command("ssh-key", cmd_ssh_key, "manage SSH public keys"))
    p = keys.add_parser("add", help="add an OpenSSH public key (FILE, or - for stdin)")
    p.add_argument("user")
    p.add_argument("file")
    p = keys.add_parser("list", help="list a user's keys")
    p.add_argument("user")
    listing(p)
    p = keys.add_parser("remove", help="remove a key by its SHA256 fingerprint")
    p.add_argument("user")
    p.add_argument("fingerprint")

    teams = actions(command("team", cmd_team, "manage teams"))
    teams.add_parser("add", help="add a team").add_argument("name")
    teams.add_parser("remove", help="remove a team").add_argument("name")
    for action in ("member-add", "member-remove"):
        p = teams.add_parser(action, help=f"{action.split('-')[1]} a team member")
        p.add_argument("team")
        p.add_argument("user")
    listing(teams.add_parser("list", help="list teams and members"))

    repos = actions(command("repo", cmd_repo, "manage repositories"))
    p = repos.add_parser("create", help="create OWNER/NAME")
    p.add_argument("name", metavar="OWNER/NAME")
    p.add_argument("--private", action="store_true")
    p.add_argument("--description", default="")
    p.add_argument("--non-publishing", action="store_true",
                   help="drafts stay drafts; topics and obsolescence markers (hg-evolve) are exchanged")
    p = repos.add_parser("set", help="change settings: publishing=true|false, private=true|false, description=TEXT")
    p.add_argument("name", metavar="OWNER/NAME")
    p.add_argument("settings", nargs="+", metavar="KEY=VALUE")
    listing(repos.add_parser("list", help="list repositories"))
    repos.add_parser("remove", help="remove a repository").add_argument("name", metavar="OWNER/NAME")
    for action, helptext in (("rename", "rename or move a repository"), ("fork", "fork a repository")):
        p = repos.add_parser(action, help=helptext)
        p.add_argument("src", metavar="OWNER/NAME")
        p.add_argument("dst", metavar="OWNER/NAME")
        if action == "fork":
            p.add_argument("--user", default=None, help="the forking user (default: the new owner)")
            p.add_argument("--private", action="store_true", help="make the fork private")

    p = command("grant", cmd_grant, "grant LEVEL (read, write, publish, admin) to USER or @TEAM")
    p.add_argument("repo", metavar="OWNER/NAME")
    p.add_argument("subject", metavar="SUBJECT")
    p.add_argument("level", metavar="LEVEL")
    p = command("revoke", cmd_revoke, "remove the grant of USER or @TEAM")
    p.add_argument("repo", metavar="OWNER/NAME")
    p.add_argument("subject", metavar="SUBJECT")

    p = command("protect", cmd_protect, "protect a named branch and bookmark")
    p.add_argument("repo", metavar="OWNER/NAME")
    p.add_argument("ref", metavar="REF")
    p.add_argument("--allow", action="append", metavar="SUBJECT", required=True)
    p = command("unprotect", cmd_unprotect, "remove a protection")
    p.add_argument("repo", metavar="OWNER/NAME")
    p.add_argument("ref", metavar="REF")

    p = command("pushlog", cmd_pushlog, "show the push log, newest first")
    p.add_argument("repo", metavar="OWNER/NAME")
    p.add_argument("--limit", type=int, default=None, metavar="N")
    listing(p)

    p = command("check", cmd_check, "compare the database with the repositories")
    p.add_argument("--repair", action="store_true", help="mend every difference found")

    dbs = actions(command("db", cmd_db, "move the site database"))
    p = dbs.add_parser("copy", help="copy the site database to an empty database at URL, then switch the site"
                                    " hgrc to it (restart the daemons right after)")
    p.add_argument("url", metavar="URL", help="postgresql://USER:PASSWORD@HOST/DBNAME or sqlite:////abs/path.db")
    p = command("backup", cmd_backup, "copy the live site (database, repositories, hgrc, secret, host key)"
                                      " into DEST, consistently, while pushes go on")
    p.add_argument("dest", metavar="DEST", help="a new or empty directory outside the site")
    p.add_argument("--copy", action="store_true",
                   help="copy the repositories' store files instead of hardlinking them")
    p = command("restore", cmd_restore, "make a working site in DIR from the backup SRC, then check it")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dir", metavar="DIR", help="a new or empty directory")
    p.add_argument("--database", metavar="URL", default=None,
                   help="an empty PostgreSQL database to load a PostgreSQL backup into")
    p.add_argument("--copy", action="store_true", help="copy store files instead of hardlinking them")

    p = command("ssh-serve", cmd_ssh_serve,
                "OpenSSH forced command: serve $SSH_ORIGINAL_COMMAND (hg -R OWNER/NAME serve --stdio) as USER")
    p.add_argument("user", metavar="USER")
    p = command("ssh-authorized-keys", cmd_ssh_authorized_keys,
                "print authorized_keys lines (forced ssh-serve) for every registered key")
    p.add_argument("account", nargs="?", metavar="ACCOUNT",
                   help="the login account (sshd's %%u); ignored: every key is printed, the key decides the user")

    invites = actions(command("invite", cmd_invite, "invite people to sign up ([hosting] registration = invite)"))
    p = invites.add_parser("create", help="print a single-use sign-up link /-/join/TOKEN (valid 7 days)")
    p.add_argument("--email", default=None, help="the address it is meant for (filled in on the form)")
    hooks = actions(command("webhook", cmd_webhook, "manage webhooks (per repository or per owner)"))
    p = hooks.add_parser("add", help="add a webhook to OWNER/NAME, or to OWNER (all its repositories)")
    p.add_argument("target", metavar="OWNER[/NAME]")
    p.add_argument("url", metavar="URL")
    p.add_argument("--secret-stdin", action="store_true", help="read the signing secret from stdin"
                   " (default: a random one, printed once)")
    p.add_argument("--events", default="push,repository", metavar="KINDS", help="push, repository (comma-separated)")
    listing(p := hooks.add_parser("list", help="list webhooks"))
    p.add_argument("target", nargs="?", metavar="OWNER[/NAME]")
    for action, helptext in (("remove", "remove a webhook"), ("enable", "enable a (disabled) webhook"),
                             ("disable", "stop delivering to a webhook")):
        hooks.add_parser(action, help=helptext).add_argument("id", metavar="ID")
    p = hooks.add_parser("deliveries", help="the last deliveries to a webhook, newest first")
    p.add_argument("id", metavar="ID")
    p.add_argument("--limit", type=int, default=50, metavar="N")
    listing(p)
    hooks.add_parser("redeliver", help="send a delivery again (same delivery id)").add_argument(
        "delivery", metavar="DELIVERY")
    for name, helptext in (("watch", "USER gets a mail after each push to OWNER/NAME"),
                           ("unwatch", "USER no longer gets mails about OWNER/NAME")):
        p = command(name, cmd_watch, helptext)
        p.add_argument("repo", metavar="OWNER/NAME")
        p.add_argument("user", metavar="USER")
    p = command("audit", cmd_audit, "show the audit log, newest first")
    p.add_argument("--limit", type=int, default=50, metavar="N")
    listing(p)
    return parser


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run one command (``parser``: :func:`build_parser`'s, the daemon's ``serve`` added by
    ``daemon.cli.main``, the ``hg-hosting`` program); the models are bound to the site's
    database for the command and unbound after it."""
    try:
        args = (parser or build_parser()).parse_args(argv)
        site = Site(resolve_site_dir(args.site))
        if args.command == "restore":  # --site plays no part: the restored site is DIR
            return args.func(args, site)
        if args.command != "init":
            site.open()
        with models.bound(site.database()):
            if args.command != "init":
                for what in repositories.finish_interrupted_moves(site):
                    print(f"recovered: {what}", file=sys.stderr)
            return args.func(args, site)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `hg-hosting pushlog ... | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # noqa: BLE001 - one line for users, details on demand
        if os.environ.get("HG_HOSTING_DEBUG"):
            traceback.print_exc()
        print(f"error: {_describe(e)}", file=sys.stderr)
        return 2


def _describe(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "database is locked" in text:
        return "the site database is locked by another process; try again"
    return f"unexpected failure: {text}"


__all__ = ["main", "SiteError"]
