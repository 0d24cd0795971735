"""The SSH command filter: the one remote command an SSH user may run, and who may run it.

Mercurial's client reaches an SSH server by asking it to run one command (see
``mercurial/sshpeer.py``, ``_makeconnection``)::

    hg -R OWNER/NAME serve --stdio

where the path is what follows the host in ``ssh://hg@HOST[:PORT]/OWNER/NAME``,
single-quoted by the client when it holds characters outside
``[a-zA-Z0-9@%_+=:,./-]``.  Both SSH front ends of hg-hosting, the daemon's
built-in server (``daemon/ssh.py``) and the OpenSSH forced command
(``hg-hosting ssh-serve USER``), accept exactly that command and nothing else.
This module is the shared filter, so that the two cannot drift apart:

:func:`parse_command`
    Pure: takes the command string, returns ``(owner, name)`` or raises
    :class:`~hgext_hosting.errors.UserError` with a one-line message.  It
    splits the string with :mod:`shlex` (POSIX rules, like the ``sh -c`` that
    OpenSSH would use) and compares the words exactly.  Accepted path forms:
    ``OWNER/NAME``, ``/OWNER/NAME`` (from ``ssh://host//OWNER/NAME``) and a
    trailing slash; a leading slash is relative to the site, so no path can
    name anything outside ``SITE/repos``.  Refused, each with its own
    message: an empty command (an interactive shell), any other program,
    ``hg init`` (creating repositories over SSH is not supported: use
    ``hg-hosting repo create`` or the web pages), any extra word such as
    ``--debugger``, ``--config`` or ``--hidden``, and any path that is not a
    valid ``OWNER/NAME`` (``../``, deeper paths, names ending in ``.hg``).

    ``--hidden`` (sent by ``hg --remote-hidden``) is refused on purpose: it asks
    for obsolete changesets that the HTTP side does not serve either, and
    Mercurial's own gate for it (``server.allow-hidden-access``) would have to
    be configured per site.  Refusing it keeps the argv that reaches ``hg``
    exactly ``hg -R ABS serve --stdio``, which Mercurial itself also insists on
    (``dispatch.py``: "potentially unsafe serve --stdio invocation").

:func:`repository_path`
    Looks the repository up for the user through the service layer
    (:func:`hgext_hosting.service.repos.find`, ``read``; needs the bound
    database).  A repository the user may not read, or whose directory is
    missing, is reported exactly like one that does not exist (``no
    repository OWNER/NAME``), so SSH reveals no more than HTTP does.
    Write permission is not decided here: the extension's hooks (and its
    ``unbundle`` wrapper, which refuses before the upload) decide it inside the
    ``hg serve`` process, with ``HG_HOSTING_USER`` as the identity.

:func:`require_enforced`
    Refuses a session whose ``hg serve --stdio`` would not load the
    extension (the site hgrc or the repository's ``.hg/hgrc`` lost it): its
    pushes would be neither checked nor recorded.  Both front ends call it
    with the child's exact environment, just before starting the child.

:func:`serve_argv`, :func:`hg_executable` and :func:`session_environ`
    How the session runs: the ``hg`` installed next to the running Python,
    ``-R`` the absolute repository path, ``serve --stdio`` and nothing else;
    the identity goes by environment (``HG_HOSTING_USER``, always set here).

:func:`authorized_keys_line` and :func:`authorized_keys_lines`
    OpenSSH ``authorized_keys`` lines forcing ``hg-hosting --site SITE
    ssh-serve USER`` with ``restrict`` for every registered key (``hg-hosting
    ssh-authorized-keys``; ``docs/ssh.md`` shows the sshd setup).

Examples::

    >>> parse_command("hg -R alice/demo serve --stdio")
    ('alice', 'demo')
    >>> parse_command("hg -R '/alice/demo/' serve --stdio")
    ('alice', 'demo')
    >>> parse_command("ls")
    Traceback (most recent call last):
    ...
    hgext_hosting.sshcommand.CommandRefused: unsupported command 'ls': this account only serves ...
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from . import names
from .errors import NotFound, UserError

#: What we tell a user who asked for something else.
ACCEPTED = "hg -R OWNER/NAME serve --stdio"
#: The answer to a client that asked for a shell (no command).
NO_SHELL = f"interactive shells are not available: this account only serves '{ACCEPTED}'"
#: Longer commands are refused before parsing (the client's are ~160 bytes at most).
MAX_COMMAND_LENGTH = 4096
#: Longest piece of a refused command quoted back in a message.
_QUOTE_MAX = 80


class CommandRefused(UserError):
    """The remote command is not the one Mercurial's client sends; nothing ran."""


def _show(text: str) -> str:
    """``repr`` of a piece of the command, cut short, for a one-line message."""
    if len(text) > _QUOTE_MAX:
        text = text[:_QUOTE_MAX] + "..."
    return repr(text)


def parse_command(command: str | bytes | None) -> tuple[str, str]:
    """The ``(owner, name)`` that ``hg -R OWNER/NAME serve --stdio`` asks for, or CommandRefused.

    ``command`` is what the client asked to run: the SSH exec request's
    payload, or OpenSSH's ``SSH_ORIGINAL_COMMAND`` (None or empty: the client
    asked for a shell).  The names are returned as the client spelled them;
    look them up case-insensitively (:func:`repository_path` does).
    """
    if isinstance(command, bytes):
        try:
            command = command.decode("utf-8")
        except UnicodeDecodeError:
            raise CommandRefused("the command is not valid UTF-8") from None
    if not command or not command.strip():
        raise CommandRefused(NO_SHELL)
    if len(command) > MAX_COMMAND_LENGTH:
        raise CommandRefused(f"the command is too long: this account only serves '{ACCEPTED}'")
    if "\0" in command:
        raise CommandRefused("the command contains a NUL character")
    try:
        words = shlex.split(command, posix=True)
    except ValueError as e:  # "No closing quotation", "No escaped character"
        raise CommandRefused(f"cannot parse the command: {str(e).lower()}") from None
    if not words:
        raise CommandRefused(NO_SHELL)
    if words[0] != "hg":
        raise CommandRefused(f"unsupported command {_show(words[0])}: this account only serves '{ACCEPTED}'")
    if len(words) >= 2 and words[1] == "init":
        raise CommandRefused(
            "creating repositories over SSH is not supported:"
            " use 'hg-hosting repo create' or the web pages, then push"
        )
    if len(words) >= 5 and words[1] == "-R" and words[3:5] == ["serve", "--stdio"]:
        extra = words[5:]
        if not extra:
            return split_path(words[2])
        if extra == ["--hidden"]:
            raise CommandRefused("access to hidden changesets (--hidden) is not supported")
    raise CommandRefused(f"unsupported hg command: this account only serves '{ACCEPTED}'")


def split_path(path: str) -> tuple[str, str]:
    """``OWNER/NAME`` from a client path: ``OWNER/NAME``, ``/OWNER/NAME``, with one trailing ``/``."""
    trimmed = path
    if trimmed.startswith("/"):
        trimmed = trimmed[1:]
    if trimmed.endswith("/"):
        trimmed = trimmed[:-1]
    parts = trimmed.split("/")
    if len(parts) != 2 or not all(parts):
        raise CommandRefused(f"invalid repository path {_show(path)}: expected OWNER/NAME")
    try:
        return names.split_repo_name(trimmed)
    except names.InvalidName:
        raise CommandRefused(f"invalid repository path {_show(path)}: expected OWNER/NAME") from None


def repository_path(site, user: str, owner: str, name: str) -> Path:
    """The directory of ``owner/name`` if ``user`` may read it, else UserError.

    Needs the site database bound (``Site.open()``).  A missing repository, one
    that ``user`` may not read and one whose directory is missing give the same
    message, ``no repository OWNER/NAME`` (with the names as the client typed
    them).  An unknown ``user`` is refused too: a key or forced command naming a
    removed user must not serve even public repositories as that name.  Both
    SSH paths (``hg-hosting ssh-serve`` and the daemon's Conch server) ask here.
    """
    from .repositories import repo_dir  # imports mercurial.hg; only needed here
    from .service import repos
    from .service.actors import Actor

    try:
        actor = Actor.of_user(user)
    except NotFound:
        raise UserError(f"unknown user {_show(user)}") from None
    missing = NotFound(f"no repository {owner}/{name}")
    try:
        repo = repos.find(actor, f"{owner}/{name}", "read")
    except NotFound:
        raise missing from None
    path = repo_dir(site, repo)
    if not (path / ".hg").is_dir():
        raise missing
    return path


def require_enforced(site, path: Path, full_name: str, environ: Mapping[str, str]) -> None:
    """Refuse the session (UserError) when its ``hg serve --stdio`` would not run the extension.

    ``environ`` is the child's environment exactly (:func:`session_environ`):
    the child loads the extension only through the repository's ``.hg/hgrc``
    and the site hgrc it includes, so that is what
    :meth:`hgext_hosting.site.Site.enforcement_problems` reads.  Pushes would
    be neither checked nor recorded, and a session may push at any time, so
    the whole session is refused, reads included.
    """
    problems = site.enforcement_problems(path, environ)
    if problems:
        raise UserError(
            f"{full_name} does not run the hg-hosting extension, so its pushes would be neither"
            " checked nor recorded; ask an administrator to run 'hg-hosting check'"
        )


def hg_executable() -> str:
    """The ``hg`` to run sessions with: the one installed beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / "hg"
    if beside.is_file():
        return str(beside)
    found = shutil.which("hg")
    if found is None:
        raise UserError(f"cannot find the hg command (looked beside {sys.executable} and on PATH)")
    return found


def serve_argv(hg: str, repo_path: Path | str) -> list[str]:
    """Exactly the argv that ``hg`` accepts for an SSH session (no other option is allowed)."""
    return [hg, "-R", str(repo_path), "serve", "--stdio"]


def session_environ(base: Mapping[str, str], user: str, drop: tuple[str, ...] = ("HG",)) -> dict[str, str]:
    """The environment of an ``hg serve --stdio`` session run for ``user``.

    ``base`` minus every variable whose name starts with one of ``drop``, plus
    ``HG_HOSTING_USER`` (the identity the hooks trust, always set here so that
    nothing inherited can name another user), ``HGENCODING=UTF-8`` and
    ``HGPLAIN=1`` (no aliases or defaults from a personal hgrc change what the
    server does).
    """
    env = {k: v for k, v in base.items() if not k.startswith(drop) and k not in CGI_VARIABLES}
    env.update(HG_HOSTING_USER=user, HGENCODING="UTF-8", HGPLAIN="1")
    return env


#: Variables that only a web server sets; never passed to an SSH session.
CGI_VARIABLES = frozenset({"REQUEST_METHOD", "REMOTE_USER", "REMOTE_HOST", "REMOTE_ADDR", "GATEWAY_INTERFACE",
                           "QUERY_STRING", "SCRIPT_NAME", "PATH_INFO", "SERVER_NAME", "SERVER_PORT"})


# -- OpenSSH authorized_keys lines ----------------------------------------------


def authorized_keys_line(command: list[str], key_type: str, blob: str, comment: str = "") -> str:
    """One ``authorized_keys`` line that forces ``command`` (an argv) for a key.

    sshd runs the option's value with the account's shell (``sh -c``), so the
    argv is shell-quoted; inside the double-quoted option value sshd treats
    only ``\\"`` as an escape, so each ``"`` becomes ``\\"`` and nothing else
    changes.  ``restrict`` turns off port, agent and X11 forwarding, PTY
    allocation and ``~/.ssh/rc`` (OpenSSH 7.2 and later).
    """
    shell = shlex.join(command)
    for text in (shell, key_type, blob, comment):
        if any(c in text for c in "\r\n\0"):
            raise UserError("a path, key or comment contains a line break; it cannot go in authorized_keys")
    if not key_type or not blob or any(c.isspace() for c in key_type + blob):
        raise UserError(f"malformed key {key_type[:40]!r}")
    options = 'command="' + shell.replace('"', '\\"') + '",restrict'
    line = f"{options} {key_type} {blob}"
    return f"{line} {comment}" if comment else line


def authorized_keys_lines(hg_hosting: str, site_root: Path | str) -> list[str]:
    """The ``authorized_keys`` lines of every registered key, each forcing ``ssh-serve USER``."""
    from .models import Owner, SshKey

    rows = (
        SshKey.select(SshKey, Owner)
        .join(Owner)
        .order_by(Owner.name_key, SshKey.created, SshKey.id)
    )
    return [
        authorized_keys_line(
            [hg_hosting, "--site", str(site_root), "ssh-serve", key.user.name],
            key.key_type, key.blob, key.comment,
        )
        for key in rows
    ]
