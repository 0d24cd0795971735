"""The daemon's SSH server: ``hg clone ssh://hg@HOST:PORT/OWNER/NAME`` without the system's sshd.

``hg-hosting serve --ssh HOST:PORT`` adds the service built by
:func:`make_ssh_service` to the daemon.  It is Twisted Conch, wired so that an
SSH connection can do exactly one thing: run Mercurial's
``hg -R OWNER/NAME serve --stdio`` for the user whose key it presented.

How a connection flows (one class per step, in the order they act)::

    TCP accept ──> HostingSSHFactory        host key (SITE/ssh_host_ed25519_key), modern
                   │                        algorithms only, at most MAX_CONNECTIONS, at most
                   │                        [hosting] ssh-max-per-address per client address;
                   │                        _Transport closes a connection not logged in
                   │                        within [hosting] ssh-login-seconds
                   ▼
                   _UserAuth + Portal       "publickey" is the only method offered;
                   │  └─ KeyChecker         key blob -> user in the database (in a thread);
                   │                        unknown key: refused before any signature;
                   │                        signature checked with Key.verify
                   ▼
                   Realm -> HgAvatar        the avatar is the key's user; the SSH login
                   │                        name (hg@, git@, anything) is ignored
                   ▼
                   HgSession (a channel)    exec only; pty, env, shell, subsystem refused;
                   │                        the command passes hgext_hosting.sshcommand
                   │                        and the user's read permission (in a thread)
                   ▼
                   hg -R ABS serve --stdio  a child process with HG_HOSTING_USER=<user>;
                                            its pipes wired to the channel

Why it is built this way (see docs/design.md §4.7, "Twisted Conch as an embedded SSH server"):

- **Our own checker.**  Conch's ``SSHPublicKeyChecker`` matches keys per login
  name and answers "key OK, send a signature" for *any* key.  :class:`KeyChecker`
  looks the blob up by its SHA256 fingerprint (``accounts.user_for_key_blob``)
  on every attempt, so a key removed with ``hg-hosting ssh-key remove`` stops
  working on the next connection.  The lookup runs in the service's small
  thread pool, never on the reactor thread.
- **The identity travels by environment.**  ``hg serve --stdio`` refuses any
  extra argument, so the child gets ``HG_HOSTING_USER`` (and ``SSH_CLIENT``,
  which Mercurial turns into the hook's ``url``).  Clients cannot set
  variables: ``env`` requests are refused.  Write permission is then decided
  inside the child by the extension (its ``unbundle`` wrapper refuses before
  the upload, its hooks before the transaction commits), as for HTTP.
- **Refusals a user can read.**  A refused exec (bad command, repository not
  readable, too many sessions) is still *accepted* at the SSH level, then
  answered with one ``error: ...`` line on stderr and exit status 1: an
  exception in the request handler would only show "exec request failed".
  A repository the user may not read is reported as missing.
- **Back-pressure both ways.**  Conch buffers without limit past the peer's
  window.  When the client's window is full the child's stdout is paused
  (:meth:`HgSession.stopWriting`); when the child does not keep up with its
  stdin, the channel withholds the window adjustments it would send the
  client (:class:`_Connection`), so at most one window of data is buffered.
- **Teardown.**  The client's EOF closes the child's stdin (``hg serve`` exits
  on it); the child's exit status is forwarded after its last output;
  a channel closed early (client gone) closes stdin and sends SIGTERM, which
  makes ``hg`` roll back a transaction cleanly (never SIGKILL: it would leave
  a journal).  Stopping the service stops listening and waits for running
  sessions (at most ``drain_timeout`` seconds, ``[hosting] drain-seconds``,
  then SIGTERM).

The child's environment is the daemon's own (so it reads the same hg
configuration the daemon does: its ``HGRCPATH`` if set, else the system and
user hgrc; the repository includes the site hgrc either way), minus every
``HG_*`` and ``SSH_*`` variable, plus ``HG_HOSTING_USER``, ``HGENCODING=UTF-8``,
``HGPLAIN=1``, ``SSH_CLIENT`` and ``SSH_CONNECTION``.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

from twisted.application.service import Service
from twisted.conch import error as concherror
from twisted.conch.avatar import ConchUser
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import channel, common, connection, factory, keys, transport, userauth
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IListeningPort, IPushProducer, IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from hgext_hosting import accounts, models, sshcommand
from hgext_hosting.errors import UserError
from hgext_hosting.site import Site, write_private_file
from hgext_hosting.sshkeys import fingerprint_of_blob

from .lifecycle import Abandonable, url_of

log = Logger()

#: Sessions at once, each counted from its exec request until its channel is closed
#: and its ``hg serve`` child has ended.
MAX_SESSIONS = 32
#: TCP connections at once, authenticated or not; more are closed at accept.
MAX_CONNECTIONS = 256
#: Seconds a connection may take to authenticate once it asked to (Conch's own timer);
#: the whole pre-authentication phase, from the TCP accept, has [hosting] ssh-login-seconds.
LOGIN_TIMEOUT = 120
#: Failed authentication attempts before disconnecting (OpenSSH's MaxAuthTries).
MAX_AUTH_TRIES = 6
#: Bytes the client may send ahead of the child reading them (per session).
LOCAL_WINDOW = 1 << 20

_STDERR = connection.EXTENDED_DATA_STDERR


def load_host_key(site: Site) -> keys.Key:
    """The site's ed25519 host key; generated once (mode 0600) if ``init`` did not."""
    path = site.host_key_path
    if not path.exists():
        from cryptography.hazmat.primitives.asymmetric import ed25519

        new = keys.Key(ed25519.Ed25519PrivateKey.generate())
        try:
            write_private_file(path, new.toString("OPENSSH"))
            log.info("generated the SSH host key {path}", path=str(path))
        except FileExistsError:
            pass  # another process made it meanwhile: use theirs
    return keys.Key.fromFile(str(path))


# -- authentication ---------------------------------------------------------------


@implementer(ICredentialsChecker)
class KeyChecker:
    """Public-key authentication against the keys registered in the site database.

    ``lookup(blob)`` returns a Deferred firing with the user name owning the
    key, or None.  Unknown keys are refused outright (no "send a signature"
    answer), known keys without a signature get ``ValidPublicKey`` (the
    protocol's PK_OK), and a signature must verify.  The avatar id is the user
    name; the SSH login name in ``credentials.username`` is ignored.
    """

    credentialInterfaces = (ISSHPrivateKey,)

    def __init__(self, lookup: Callable[[bytes], defer.Deferred]):
        self._lookup = lookup

    def requestAvatarId(self, credentials) -> defer.Deferred:
        d = self._lookup(credentials.blob)
        d.addCallback(self._check, credentials)
        return d

    @staticmethod
    def _check(user: str | None, credentials) -> str:
        if user is None:
            raise UnauthorizedLogin("unknown key")
        if not credentials.signature:
            raise concherror.ValidPublicKey()
        try:
            ok = keys.Key.fromString(credentials.blob).verify(credentials.signature, credentials.sigData)
        except Exception:  # noqa: BLE001 - any malformed key or signature is a refusal
            ok = False
        if not ok:
            raise UnauthorizedLogin("bad signature")
        return user


@implementer(IRealm)
class Realm:
    """Turns an authenticated user name into an :class:`HgAvatar`."""

    def __init__(self, server: SessionManager):
        self.server = server

    def requestAvatar(self, avatarId, mind, *interfaces):
        if IConchUser not in interfaces:
            raise NotImplementedError("only SSH avatars")
        avatar = HgAvatar(avatarId, self.server)
        return IConchUser, avatar, avatar.logout


class HgAvatar(ConchUser):
    """A logged-in user: may open ``session`` channels, nothing else (no forwarding)."""

    def __init__(self, user: str, server: SessionManager):
        super().__init__()
        self.user = user
        self.server = server
        self.channelLookup[b"session"] = HgSession

    def logout(self) -> None:
        pass  # sessions end with their channels


class _UserAuth(userauth.SSHUserAuthServer):
    """Conch's user authentication with OpenSSH's limits instead of a 10-hour grace time."""

    loginTimeout = LOGIN_TIMEOUT
    attemptsBeforeDisconnect = MAX_AUTH_TRIES


class _Connection(connection.SSHConnection):
    """The connection service, letting a session withhold its window adjustments.

    Conch grants the client more window as soon as data arrives, whether or
    not anyone consumed it.  A :class:`HgSession` whose child is not reading
    sets ``window_held``; the adjustment is then skipped here and sent by the
    session (:meth:`HgSession.release_window`) when the child has caught up.
    """

    def adjustWindow(self, channel, bytesToAdd):
        if getattr(channel, "window_held", False):
            return
        super().adjustWindow(channel, bytesToAdd)


class _Transport(transport.SSHServerTransport):
    """Counts open connections for :class:`HostingSSHFactory`'s limits; a login deadline.

    From the TCP accept until the user is authenticated (version exchange, key
    exchange, authentication) the connection has ``factory.login_seconds``
    (OpenSSH's LoginGraceTime); past it, it is closed.  Conch's own login timer
    only starts once the client asks for authentication.
    """

    _login_deadline = None
    _peer_host = ""

    def connectionMade(self):
        self._peer_host = getattr(self.transport.getPeer(), "host", "")
        self.factory.connection_opened(self._peer_host)
        if self.factory.login_seconds:
            self._login_deadline = self.factory.reactor.callLater(self.factory.login_seconds, self._login_too_slow)
        super().connectionMade()

    def setService(self, service):
        if service.name == b"ssh-connection":  # authenticated
            self._cancel_login_deadline()
        super().setService(service)

    def connectionLost(self, reason):
        self._cancel_login_deadline()
        self.factory.connection_closed(self._peer_host)
        super().connectionLost(reason)

    def _cancel_login_deadline(self) -> None:
        if self._login_deadline is not None and self._login_deadline.active():
            self._login_deadline.cancel()
        self._login_deadline = None

    def _login_too_slow(self) -> None:
        self._login_deadline = None
        log.info("ssh: {host} did not log in within {s} s; closing", host=self._peer_host,
                 s=self.factory.login_seconds)
        self.transport.abortConnection()


class HostingSSHFactory(factory.SSHFactory):
    """The SSH protocol factory: host key, portal, the algorithms we offer, connection limits."""

    protocol = _Transport
    services = {b"ssh-userauth": _UserAuth, b"ssh-connection": _Connection}
    noisy = False  # no "Starting factory <...>" lines

    def __init__(self, host_key: keys.Key, portal: Portal, max_connections: int = MAX_CONNECTIONS, *,
                 max_per_address: int = 0, login_seconds: float = 0, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.publicKeys = {host_key.sshType(): host_key.public()}
        self.privateKeys = {host_key.sshType(): host_key}
        self.portal = portal
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.login_seconds = login_seconds
        self.reactor = reactor
        self.open_connections = 0
        self.per_address: dict[str, int] = {}
        self._capped: set[str] = set()  # addresses refused since they last dropped below the cap

    def getPrimes(self):
        return None  # fixed groups and elliptic curves only (no moduli file)

    def connection_opened(self, host: str) -> None:
        self.open_connections += 1
        self.per_address[host] = self.per_address.get(host, 0) + 1

    def connection_closed(self, host: str) -> None:
        self.open_connections -= 1
        left = self.per_address.get(host, 1) - 1
        if left:
            self.per_address[host] = left
        else:
            self.per_address.pop(host, None)
        self._capped.discard(host)

    def buildProtocol(self, addr):
        if self.open_connections >= self.max_connections:
            log.warn("ssh: refusing a connection from {addr}: {n} open", addr=addr, n=self.open_connections)
            return None
        host = getattr(addr, "host", "")
        if self.max_per_address and self.per_address.get(host, 0) >= self.max_per_address:
            if host not in self._capped:  # once until it drops below the cap: no log flood
                self._capped.add(host)
                log.warn("ssh: {host} holds {n} connections (ssh-max-per-address); closing more from it",
                         host=host, n=self.per_address[host])
            return None
        t = super().buildProtocol(addr)
        # No CBC, 3DES, MD5/SHA-1 MACs or SHA-1 key exchanges.
        t.supportedCiphers = [c for c in t.supportedCiphers if c.endswith(b"-ctr") and b"3des" not in c]
        t.supportedMACs = [m for m in t.supportedMACs if m.startswith(b"hmac-sha2-")]
        t.supportedKeyExchanges = [k for k in t.supportedKeyExchanges if not k.endswith(b"sha1")]
        return t


# -- sessions ---------------------------------------------------------------------


class SessionManager:
    """What sessions share: the site, the hg to run, the slots, the thread pool."""

    def __init__(self, site: Site, reactor, pool: ThreadPool, max_sessions: int = MAX_SESSIONS):
        self.site = site
        self.reactor = reactor
        self.pool = pool
        self.max_sessions = max_sessions
        self.hg = sshcommand.hg_executable()
        self.sessions: set[HgSession] = set()
        self.stopping = False
        self._drained: list[defer.Deferred] = []

    def in_thread(self, func, *args) -> defer.Deferred:
        """Run blocking work (the database) in the service's pool, never on the reactor."""
        return deferToThreadPool(self.reactor, self.pool, func, *args)

    # the database, in a pool thread -----------------------------------------------

    def user_for_blob(self, blob: bytes) -> defer.Deferred:
        return self.in_thread(_user_for_blob, blob)

    def authorize(self, user: str, owner: str, name: str) -> defer.Deferred:
        return self.in_thread(_authorize, self.site, user, owner, name)

    # slots ----------------------------------------------------------------------

    def acquire(self, session: HgSession) -> str | None:
        """Take a session slot; the refusal message when none may be taken."""
        if self.stopping:
            return "the server is shutting down; try again in a moment"
        if len(self.sessions) >= self.max_sessions:
            return f"too many sessions at once ({self.max_sessions}); try again in a moment"
        self.sessions.add(session)
        return None

    def release(self, session: HgSession) -> None:
        """Give a slot back: the session's channel is closed and its child (if any) has ended."""
        self.sessions.discard(session)
        if not self.sessions and self._drained:
            # not from inside the caller: the reactor may go on shutting down at once
            self.reactor.callLater(0, self._fire_drained)

    def _fire_drained(self) -> None:
        waiters, self._drained = self._drained, []
        for d in waiters:
            if not d.called:
                d.callback(None)

    def drain(self, timeout: float, grace: float = 10.0) -> defer.Deferred:
        """Refuse new sessions; fire when the running ones have ended.

        After ``timeout`` seconds the children still running get SIGTERM; after
        ``grace`` more seconds the Deferred fires regardless (a client that
        never closes its channel does not hold the daemon up).
        """
        self.stopping = True
        if not self.sessions:
            return defer.succeed(None)
        log.info("ssh: waiting for {n} session(s) to end", n=len(self.sessions))
        d = defer.Deferred()
        self._drained.append(d)
        timers = [self.reactor.callLater(timeout, self._terminate_all),
                  self.reactor.callLater(timeout + grace, self._fire_drained)]
        d.addBoth(_cancel_timers, timers)
        return d

    def force(self) -> int:
        """A second signal: SIGTERM every child now (hg rolls back); how many sessions ran."""
        running = len(self.sessions)
        self.stopping = True
        self._terminate_all()
        self.reactor.callLater(0, self._fire_drained)
        return running

    def _terminate_all(self) -> None:
        log.warn("ssh: {n} session(s) still running; sending SIGTERM", n=len(self.sessions))
        for session in list(self.sessions):
            session.terminate_child()


def _cancel_timers(result, timers):
    for timer in timers:
        if timer.active():
            timer.cancel()
    return result


def _user_for_blob(blob: bytes) -> str | None:
    with models.db.connection_context():
        user = accounts.user_for_key_blob(blob)
        return user.name if user is not None else None


def _authorize(site: Site, user: str, owner: str, name: str) -> Path:
    """The repository's absolute path if ``user`` may read ``owner/name``, else UserError."""
    with models.db.connection_context():
        path = sshcommand.repository_path(site, user, owner, name)
    # the child's environment as HgSession._spawn builds it (SSH_* aside): will it run the extension?
    child_env = sshcommand.session_environ(os.environ, user, drop=("HG_", "SSH_"))
    sshcommand.require_enforced(site, path, f"{owner}/{name}", child_env)
    return path


@implementer(IPushProducer)
class _StdinProducer:
    """Registered on the child's stdin: its buffer filling up holds the client's window."""

    def __init__(self, session: HgSession):
        self.session = session

    def pauseProducing(self) -> None:
        self.session.stdin_full = True

    def resumeProducing(self) -> None:
        self.session.stdin_full = False
        self.session.release_window()

    def stopProducing(self) -> None:
        self.resumeProducing()


class _Child(ProcessProtocol):
    """The ``hg serve --stdio`` child: stdout and stderr go to the channel."""

    def __init__(self, session: HgSession):
        self.session = session

    def outReceived(self, data: bytes) -> None:
        self.session.write(data)

    def errReceived(self, data: bytes) -> None:
        self.session.writeExtended(_STDERR, data)

    def processEnded(self, reason: Failure) -> None:
        self.session.child_ended(reason.value)


class HgSession(channel.SSHChannel):
    """One SSH ``session`` channel: one exec of ``hg -R OWNER/NAME serve --stdio``.

    The requests a client may send on a session channel are handled by the
    ``request_*`` methods (Conch dispatches on the name).  Only ``exec`` is
    accepted; ``shell`` is answered with a message; everything else
    (``pty-req``, ``env``, ``subsystem``, ``x11-req``, agent forwarding) fails.
    """

    name = b"session"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("localWindow", LOCAL_WINDOW)
        super().__init__(*args, **kwargs)
        self.user: str = self.avatar.user
        self.server: SessionManager = self.avatar.server
        #: Set by the child's stdin while its buffer is full (see window_held).
        self.stdin_full = False
        self._requested = False
        self._process = None
        self._pending: list[bytes] = []
        self._eof = False
        self._closed = False
        self._final: tuple[bytes, bytes] | None = None
        self._what = ""
        self._started = 0.0

    # requests -------------------------------------------------------------------

    def request_exec(self, data: bytes) -> int:
        if self._requested:
            return 0
        self._requested = True
        command = common.getNS(data)[0]
        self._started = time.monotonic()
        refusal = self.server.acquire(self)
        if refusal is not None:
            self._refuse_soon(refusal)
            return 1
        try:
            owner, name = sshcommand.parse_command(command)
        except UserError as e:
            log.info("ssh: {user} refused: {reason}", user=self.user, reason=str(e))
            self._refuse_soon(str(e))
            return 1
        self._what = f"{owner}/{name}"
        d = self.server.authorize(self.user, owner, name)
        d.addCallbacks(self._spawn, self._authorize_failed)
        d.addErrback(self._crashed)
        return 1

    def request_shell(self, data: bytes) -> int:
        if self._requested:
            return 0
        self._requested = True
        log.info("ssh: {user} refused: asked for a shell", user=self.user)
        self._refuse_soon(sshcommand.NO_SHELL)
        return 1

    def request_pty_req(self, data: bytes) -> int:
        return 0

    def request_env(self, data: bytes) -> int:
        return 0  # clients must not set HG_HOSTING_USER, HGRCPATH, ...

    def request_subsystem(self, data: bytes) -> int:
        return 0

    # refusing -------------------------------------------------------------------

    def _refuse_soon(self, message: str) -> None:
        """Answer with one ``error:`` line and exit status 1, after the exec reply went out."""
        self.server.reactor.callLater(0, self._refuse, message)

    def _refuse(self, message: str) -> None:
        if self._closed:
            return
        self.writeExtended(_STDERR, f"error: {message}\n".encode("utf-8", "replace"))
        self._finish(b"exit-status", struct.pack(">L", 1))

    def _authorize_failed(self, failure: Failure) -> None:
        if failure.check(UserError):
            message = str(failure.value)
            log.info("ssh: {user} refused {what}: {reason}", user=self.user, what=self._what, reason=message)
        else:
            log.failure("ssh: checking {user} on {what} failed", failure, user=self.user, what=self._what)
            message = "the server could not check your access; try again later"
        self._refuse(message)

    def _crashed(self, failure: Failure) -> None:
        log.failure("ssh: session of {user} on {what} failed", failure, user=self.user, what=self._what)
        if self._process is None:
            self._refuse("internal error")

    # the child ------------------------------------------------------------------

    def _spawn(self, path: Path) -> None:
        if self._closed:
            return
        if self.server.stopping:
            self._refuse("the server is shutting down; try again in a moment")
            return
        env = sshcommand.session_environ(os.environ, self.user, drop=("HG_", "SSH_"))
        peer = self.conn.transport.transport.getPeer()
        host = self.conn.transport.transport.getHost()
        env["SSH_CLIENT"] = f"{peer.host} {peer.port} {host.port}"
        env["SSH_CONNECTION"] = f"{peer.host} {peer.port} {host.host} {host.port}"
        hg = self.server.hg
        reactor: IReactorProcess = self.server.reactor
        try:
            self._process = reactor.spawnProcess(
                _Child(self), hg, sshcommand.serve_argv(hg, path), env=env, path=str(path)
            )
        except Exception:  # noqa: BLE001 - e.g. EMFILE: refuse this session, keep serving
            log.failure("ssh: cannot start {hg}", hg=hg)
            self._refuse("the server could not start Mercurial; try again later")
            return
        log.info("ssh: {user} started {what} (pid {pid})", user=self.user, what=self._what,
                 pid=self._process.pid)
        self._process.registerProducer(_StdinProducer(self), True)
        pending, self._pending = self._pending, []
        for data in pending:
            self._process.write(data)
        if self._eof:
            self._close_stdin()
        self.release_window()  # unless writing the pending data filled the child's stdin

    def _close_stdin(self) -> None:
        if self._process is not None:
            self._process.unregisterProducer()
            self._process.closeStdin()

    def terminate_child(self) -> None:
        """Ask the child to stop: EOF on stdin, then SIGTERM (hg rolls back cleanly)."""
        if self._process is None:
            return
        self._close_stdin()
        try:
            self._process.signalProcess("TERM")
        except (ProcessExitedAlready, OSError):
            pass

    def child_ended(self, status) -> None:
        proc, self._process = self._process, None
        code, signal_number = getattr(status, "exitCode", None), getattr(status, "signal", None)
        log.info("ssh: {user} {what} ended (exit {code}, signal {sig}) after {s:.2f}s",
                 user=self.user, what=self._what, code=code, sig=signal_number,
                 s=time.monotonic() - self._started)
        if proc is not None:
            proc.unregisterProducer()
        if self._closed:
            self.server.release(self)
            return
        if signal_number is not None:
            name = _signal_name(signal_number)
            self._finish(b"exit-signal", common.NS(name) + b"\0" + common.NS(b"") + common.NS(b""))
        else:
            self._finish(b"exit-status", struct.pack(">L", code or 0))

    # channel plumbing -------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._process is not None:
            self._process.write(data)
        elif self._requested and not self._final:
            self._pending.append(data)  # bounded: the window is held until the child runs

    def extReceived(self, dataType: int, data: bytes) -> None:
        pass  # a client has no business sending stderr

    def eofReceived(self) -> None:
        self._eof = True
        self._close_stdin()

    @property
    def window_held(self) -> bool:
        """True while nobody takes what the client sends: no child (yet), or its stdin is full.

        :class:`_Connection` then withholds the window adjustments, so the client
        can send at most one window (LOCAL_WINDOW) ahead.
        """
        return self._process is None or self.stdin_full

    def release_window(self) -> None:
        """Give the client back the window it used, now that the child consumed it."""
        if self.window_held:
            return
        missing = self.localWindowSize - self.localWindowLeft
        if missing > 0 and not self.localClosed and not self._closed:
            self.conn.adjustWindow(self, missing)

    def stopWriting(self) -> None:
        """The client's window is full: stop reading the child's output."""
        if self._process is not None:
            self._process.pauseProducing()

    def startWriting(self) -> None:
        if self._process is not None:
            self._process.resumeProducing()

    def addWindowBytes(self, data: int) -> None:
        super().addWindowBytes(data)
        self._maybe_close()

    def _finish(self, request: bytes, payload: bytes) -> None:
        """Send the exit request, EOF and close, once every byte of output went out."""
        self._final = (request, payload)
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self._final is None or self.buf or self.extBuf or self._closed:
            return
        request, payload = self._final
        self._final = (b"", b"")  # sent; keep _final truthy so late data is dropped
        if not request:
            return
        self.conn.sendRequest(self, request, payload)
        self.conn.sendEOF(self)
        self.loseConnection()

    def closed(self) -> None:
        """Both sides closed the channel, or the connection is gone: the slot is free once the child ended."""
        self._closed = True
        if self._process is not None:
            self.terminate_child()  # child_ended releases the slot
        else:
            self.server.release(self)


def _signal_name(number: int) -> bytes:
    import signal

    try:
        return signal.Signals(number).name.removeprefix("SIG").encode("ascii")
    except ValueError:
        return b"KILL"


# -- the service --------------------------------------------------------------------


class SshService(Abandonable, Service):
    """The SSH server as a Twisted service: listens in ``startService``, drains in ``stopService``.

    After ``startService``, :attr:`port` is the bound TCP port (useful with port 0).
    """

    name = "ssh"

    def __init__(self, site: Site, host: str, port: int, reactor=None, *,
                 max_sessions: int = MAX_SESSIONS, max_connections: int = MAX_CONNECTIONS,
                 drain_timeout: float | None = None, login_seconds: float | None = None,
                 max_per_address: int | None = None):
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.site = site
        self.host = host
        self.requested_port = port
        self.reactor = reactor
        self.max_connections = max_connections
        ui = site.ui
        self.drain_timeout = ui.configint(b"hosting", b"drain-seconds") if drain_timeout is None else drain_timeout
        self.login_seconds = ui.configint(b"hosting", b"ssh-login-seconds") if login_seconds is None else login_seconds
        self.max_per_address = (ui.configint(b"hosting", b"ssh-max-per-address") if max_per_address is None
                                else max_per_address)
        self.pool = ThreadPool(minthreads=0, maxthreads=4, name="hg-hosting-ssh")
        self.sessions = SessionManager(site, reactor, self.pool, max_sessions)
        self.listening: IListeningPort | None = None
        self.port: int | None = None

    def privilegedStartService(self) -> None:
        """Bind the port (CannotListenError before any thread starts)."""
        super().privilegedStartService()
        if self.listening is not None:
            return
        self.site.bind_database()
        self._host_key = load_host_key(self.site)
        portal = Portal(Realm(self.sessions), [KeyChecker(self.sessions.user_for_blob)])
        ssh_factory = HostingSSHFactory(host_key=self._host_key, portal=portal, max_connections=self.max_connections,
                                        max_per_address=self.max_per_address, login_seconds=self.login_seconds,
                                        reactor=self.reactor)
        self.listening = self.reactor.listenTCP(self.requested_port, ssh_factory, interface=self.host)
        self.port = self.listening.getHost().port

    def startService(self) -> None:
        if self.listening is None:
            self.privilegedStartService()
        self.pool.start()
        super().startService()
        log.info("serving SSH on {url} (host key {fp})", url=url_of("ssh", self.host, self.port),
                 fp=fingerprint_of_blob(self._host_key.public().blob()))

    def force(self) -> int:
        """A second signal: end the running sessions now; how many there were."""
        return self.sessions.force()

    def stopService(self) -> defer.Deferred:
        super().stopService()
        listening, self.listening = self.listening, None
        d = defer.maybeDeferred(listening.stopListening) if listening else defer.succeed(None)
        d.addCallback(lambda _: self.sessions.drain(self.drain_timeout))
        d.addBoth(self._stop_pool)
        return d

    def _stop_pool(self, result):
        self.pool.stop()
        return result


def make_ssh_service(site: Site, host: str, port: int, reactor=None) -> Service:
    """The SSH server for ``serve --ssh HOST:PORT``; it listens when the service starts.

    ``site`` is normally already open (``site.open()`` binds the database);
    the service binds it otherwise.  After ``startService()``, ``.port`` is the
    bound port.
    """
    return SshService(site, host, port, reactor)
