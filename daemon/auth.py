"""Who is making a request: HTTP Basic for ``hg``, a session cookie for browsers.

- **Basic**: ``user:password`` or ``user:token``.  A clone makes several
  requests and a push about eight, each carrying the header, so a verified
  pair is cached in memory for a few minutes under ``HMAC(site secret,
  user NUL secret)`` (never the plaintext).  A cache hit still re-reads the
  user's ``credentials_epoch``, which every password change, token
  revocation, membership change or removal bumps, so revocation is effective
  on the next request.
- **Bearer**: ``Authorization: Bearer TOKEN``, the token alone (the API's
  usual form), verified and cached like a token in Basic.  Every verified
  token carries its scope (:class:`Credential`), which caps what the request
  may do (:func:`hgext_hosting.policy.with_scope`).
- **Throttling** (:class:`Throttle`): failed logins, wrong tokens included, are
  counted in the database, so every worker process and every daemon on the
  same database shares the counts.  Keys: a user name from one address (10 a
  window by default), the name alone (50) and the address alone (100); the
  address is the client's, from ``X-Forwarded-For`` only when the peer is one
  of ``[hosting] trusted-proxies``.  An attempt is counted before the slow
  password check, so concurrent guesses cannot overrun the limit; past it the
  answer is 429 without a check.  A right token is still accepted, and a
  name blocked by guesses from elsewhere still logs in from the addresses it
  logged in from before.  The login form and Basic share this one path
  (:meth:`Authenticator.password`).
- **Sessions**: a random id in an HttpOnly, SameSite=Lax cookie, signed with
  the site secret; the database keeps only the id's digest, the user, the
  expiry, the CSRF token and the user's ``login_epoch`` at login, so logging
  out ends the session on the server and every worker process sees it, and a
  password change, reset, disable or removal (which bump the epoch) ends every
  session of the user.
- **Disabled users** (``hg-hosting user disable``): refused from the next
  request on, whichever daemon it reaches.  Disabling bumps both epochs, so
  cached Basic verifications and sessions die; a fresh password or token is
  answered ``403 this account is disabled`` only once it was verified, so
  the answer tells nothing to someone without the credential (a wrong one
  gets the usual 401, and the attempt still counts for the throttle).

All of this runs in WSGI pool threads, never on the reactor.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from dataclasses import dataclass

from hgext_hosting import accounts, credentials, models, names
from hgext_hosting.errors import UserError
from hgext_hosting.models import ApiToken, Owner, Session, utcnow, write_transaction

SESSION_COOKIE = "hgh_session"
SESSION_DAYS = 14


#: A session's ``last_seen`` is written at most this often (unless its address changed).
SESSION_SEEN_RESOLUTION = datetime.timedelta(seconds=60)


def touch_session(session: Session, address: str) -> bool:
    """Record that ``session`` was just used from ``address``, at most once a minute
    (like :func:`hgext_hosting.accounts.touch_token`); True when a write was made."""
    now = utcnow()
    address = address[:64]
    if (session.last_seen is not None and now - session.last_seen < SESSION_SEEN_RESOLUTION
            and session.address == address):
        return False
    Session.update(last_seen=now, address=address).where(Session.id == session.id).execute()
    session.last_seen, session.address = now, address
    return True


class Malformed(ValueError):
    """An Authorization header that is not valid HTTP Basic or Bearer."""


#: The user name wrong Bearer tokens are counted under by the throttle (no user is named).
BEARER_NAME = "(bearer)"


@dataclass(frozen=True)
class Credential:
    """Who an Authorization header proves: the user, and the token's scope (None: a password)."""

    user: Owner
    scope: str | None = None


@dataclass(frozen=True)
class Refusal:
    """Why a request with credentials is refused: 401 (bad) or 429 (throttled)."""

    status: int
    reason: str


THROTTLED = Refusal(429, "too many failed logins; try again later")
WRONG = Refusal(401, "wrong user name or password")
#: Given only for a right password or token: it tells nothing to whoever lacks them.
DISABLED = Refusal(403, "this account is disabled")


def parse_basic(header: str) -> tuple[str, str]:
    """``(user, secret)`` from an ``Authorization: Basic ...`` value, or Malformed."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value or len(value) > 4096:
        raise Malformed("expected HTTP Basic credentials")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Malformed("the Basic credentials are not valid base64 UTF-8") from None
    user, sep, secret = decoded.partition(":")
    if not sep or not user or any(ord(c) < 32 for c in user + secret):
        raise Malformed("the Basic credentials are not user:password")
    return user, secret


def parse_bearer(header: str) -> str:
    """The token of an ``Authorization: Bearer ...`` value ("" when none), or Malformed.

    Anything short enough is a token to look up (a wrong one is 401, as in RFC 6750);
    only an oversized value is malformed.
    """
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or len(value) > 4096:
        raise Malformed("expected Bearer credentials")
    return value.strip()


@dataclass(frozen=True)
class Limits:
    """How many failed logins each key may have within ``window`` seconds.

    The tightest is a user name from one address, so that an attacker elsewhere
    is blocked long before the name itself is; a name alone allows more (a
    distributed guess), and an address more still (many users behind one NAT).
    Once the name alone is blocked, the addresses it logged in from within
    ``known_days`` are still let in (subject to their own limits).
    """

    window: int = 300
    pair: int = 10
    user: int = 50
    address: int = 100
    rows: int = 100_000
    known_days: int = 30
    #: Sign-up attempts (``/-/register``, ``/-/join``) one address may make per window.
    signup: int = 10

    @classmethod
    def from_ui(cls, ui) -> Limits:
        """The limits of a site hgrc's ``[hosting] login-throttle-*`` and ``signup-throttle`` keys."""
        values = {field: ui.configint(b"hosting", b"login-throttle-" + field.encode())
                  for field in ("window", "pair", "user", "address", "rows")}
        values["signup"] = ui.configint(b"hosting", b"signup-throttle")
        for field, value in values.items():
            if value is None or value < 1:
                key = "signup-throttle" if field == "signup" else f"login-throttle-{field}"
                raise UserError(f"[hosting] {key} must be a positive number")
        return cls(**values)


@dataclass(frozen=True)
class Attempt:
    """A login attempt already counted as a failure, until :meth:`Throttle.succeeded`."""

    counted: tuple[str, ...]
    known: str


class _Blocked(Exception):
    """Raised inside the counting transaction to roll it back."""


class Throttle:
    """Failed logins counted in the database, shared by every worker and daemon.

    One row per key in ``login_throttle`` (:class:`~hgext_hosting.models.LoginThrottle`),
    keyed by an HMAC of the key with the site secret: ``pair`` (user name and
    address), ``user`` (the name) and ``addr`` (the address), plus a ``known`` row
    for each name and address that logged in successfully.  An attempt is
    counted *before* the password is checked, in one short write transaction
    whose upserts serialize concurrent attempts, so that no more than the limit
    are ever checked however many arrive at once; a success gives its count
    back.  Rows expire with their window, and the table is capped at
    ``limits.rows`` (the rows closest to expiry go first).
    """

    def __init__(self, secret: bytes, limits: Limits | None = None):
        self._secret = secret
        self.limits = limits or Limits()

    def _digest(self, kind: str, *parts: str) -> str:
        message = "\0".join((kind, *parts)).encode("utf-8", "surrogateescape")
        return hmac.new(self._secret, b"login-throttle\0" + message, hashlib.sha256).hexdigest()

    @staticmethod
    def _address_key(address: str) -> str:
        """An IPv6 client counts by its /64 (one subscriber's usual allocation)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address
        if ip.version == 6 and ip.ipv4_mapped is None:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)

    def _keys(self, user_name: str, address: str) -> tuple[dict[str, int], str, str]:
        """``({digest: limit})`` for pair, address and user; the user digest; the known digest."""
        name = names.key(user_name)
        address = self._address_key(address)
        user = self._digest("user", name)
        limits = {
            self._digest("pair", name, address): self.limits.pair,
            self._digest("addr", address): self.limits.address,
            user: self.limits.user,
        }
        return limits, user, self._digest("known", name, address)

    def _over(self, counts: dict[str, int], limits: dict[str, int], user: str, known: bool,
              allowance: int) -> bool:
        return any(counts.get(d, 0) > limit - allowance for d, limit in limits.items()
                   if not (d == user and known))

    def _live(self, conn, digests: list[str], now: int) -> dict[str, int]:
        marks = ", ".join("?" * len(digests))
        return dict(conn.query(
            f"SELECT digest, failures FROM login_throttle WHERE digest IN ({marks}) AND expires > ?",
            (*digests, now),
        ))

    def blocked(self, user_name: str, address: str) -> bool:
        """Would an attempt now be refused?  (One read, no write.)"""
        limits, user, known = self._keys(user_name, address)
        live = self._live(models.connection(), [*limits, known], int(time.time()))
        return self._over(live, limits, user, known in live, 1)

    def reserve(self, user_name: str, address: str) -> Attempt | None:
        """Count one attempt as failed before checking it; None when the keys are blocked."""
        limits, user, known = self._keys(user_name, address)
        conn = models.connection()
        now = int(time.time())
        live = self._live(conn, [*limits, known], now)
        # Read first, without the write lock: a flood of blocked attempts writes nothing.
        if self._over(live, limits, user, known in live, 1):
            return None
        try:
            with conn.write():
                conn.execute(
                    "DELETE FROM login_throttle WHERE digest IN"
                    f" (SELECT digest FROM login_throttle WHERE expires <= ?{self._skip_locked(conn)})",
                    (now,),
                )
                counts = {}
                for digest in limits:
                    counts[digest] = self._count_failure(conn, digest, now)
                if self._over(counts, limits, user, known in live, 0):
                    raise _Blocked
                self._cap(conn)
        except _Blocked:
            return None
        return Attempt(tuple(limits), known)

    @staticmethod
    def _skip_locked(conn) -> str:
        """On PostgreSQL, pruning skips rows another attempt holds (no lock waits, no
        deadlocks); SQLite's write transactions are serialized anyway."""
        return "" if conn.is_sqlite() else " FOR UPDATE SKIP LOCKED"

    def _count_failure(self, conn, digest: str, now: int) -> int:
        """Count one more failure under ``digest`` (a fresh window once the last one ended)."""
        ((count,),) = conn.query(
            "INSERT INTO login_throttle (digest, failures, expires) VALUES (?, 1, ?)"
            " ON CONFLICT (digest) DO UPDATE SET"
            " failures = CASE WHEN login_throttle.expires <= ? THEN 1"
            " ELSE login_throttle.failures + 1 END,"
            " expires = CASE WHEN login_throttle.expires <= ? THEN ?"
            " ELSE login_throttle.expires END"
            " RETURNING failures",
            (digest, now + self.limits.window, now, now, now + self.limits.window),
        )
        return count

    def _cap(self, conn) -> None:
        ((rows,),) = conn.query("SELECT COUNT(*) FROM login_throttle")
        if rows > self.limits.rows:
            conn.execute(
                "DELETE FROM login_throttle WHERE digest IN (SELECT digest FROM login_throttle"
                f" ORDER BY expires LIMIT ?{self._skip_locked(conn)})",
                (rows - self.limits.rows,),
            )

    def allow_signup(self, address: str) -> bool:
        """Count one sign-up attempt from ``address`` (its /64 for IPv6); False once the
        address made ``limits.signup`` within the window (then nothing is written)."""
        digest = self._digest("signup", self._address_key(address))
        conn = models.connection()
        now = int(time.time())
        if self._live(conn, [digest], now).get(digest, 0) >= self.limits.signup:
            return False
        with conn.write():
            count = self._count_failure(conn, digest, now)
            self._cap(conn)
        return count <= self.limits.signup

    def succeeded(self, attempt: Attempt) -> None:
        """The attempt was right: give its counts back, remember the name's address."""
        conn = models.connection()
        marks = ", ".join("?" * len(attempt.counted))
        expires = int(time.time()) + self.limits.known_days * 86400
        with conn.write():
            conn.execute(
                f"UPDATE login_throttle SET failures = failures - 1 WHERE digest IN ({marks})"
                " AND failures > 0",
                attempt.counted,
            )
            conn.execute(
                "INSERT INTO login_throttle (digest, failures, expires) VALUES (?, 0, ?)"
                " ON CONFLICT (digest) DO UPDATE SET expires = excluded.expires",
                (attempt.known, expires),
            )


def record_failed_login(user_name: str, address: str, kind: str) -> None:
    """A wrong password or token, in the audit log (throttled attempts are not checked, nor logged)."""
    from twisted.logger import Logger

    from hgext_hosting import audit

    try:
        with write_transaction():
            audit.record(user_name, "login.failed", user_name, address, credential=kind)
    except Exception:  # noqa: BLE001 - a busy database must not turn a 401 into a 500
        Logger().failure("recording a failed login")


def trusted_networks(entries: list[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``[hosting] trusted-proxies``: addresses or networks (``10.0.0.0/8``), or UserError."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise UserError(f"[hosting] trusted-proxies: {entry!r} is not an IP address or network") from None
    return tuple(networks)


class Authenticator:
    """Verifies credentials for one daemon process."""

    def __init__(self, secret: bytes, cache_seconds: float = 300.0, throttle: Throttle | None = None,
                 trusted_proxies: tuple = ()):
        self._secret = secret
        self._cache_seconds = cache_seconds
        #: Peers whose ``X-Forwarded-For`` names the client (:func:`daemon.web.client_address`).
        self.trusted_proxies = trusted_proxies
        #: HMAC key -> (user id, name key, created, credentials_epoch, expiry, token id).
        #: The name and creation time pin the very user: SQLite may give a removed
        #: user's id to the next user created, whose epoch starts again at 0.  The
        #: token id (None for a password) lets a cached token still record its use.
        self._cache: dict[bytes, tuple[int, str, object, int, float, int | None]] = {}
        self._lock = threading.Lock()
        self.throttle = throttle or Throttle(secret)

    @property
    def retry_after(self) -> int:
        """Seconds a throttled client is told to wait (``Retry-After``): the counting window."""
        return self.throttle.limits.window

    def refusal_headers(self, refusal: Refusal) -> list[tuple[str, str]]:
        """The headers a refusal carries: ``Retry-After`` when it is the throttle's 429."""
        return [("Retry-After", str(self.retry_after))] if refusal.status == 429 else []

    @classmethod
    def for_site(cls, site) -> Authenticator:
        """An Authenticator with the site's secret, throttle limits and trusted proxies."""
        secret = site.secret()
        proxies = [e.decode("utf-8", "replace") for e in site.ui.configlist(b"hosting", b"trusted-proxies")]
        return cls(secret, throttle=Throttle(secret, Limits.from_ui(site.ui)),
                   trusted_proxies=trusted_networks(proxies))

    def _cache_key(self, user: str, secret: str) -> bytes:
        message = names.key(user).encode() + b"\0" + secret.encode("utf-8", "surrogateescape")
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def _cached_user(self, key: bytes) -> Credential | None:
        """The user (and token scope) of a verified pair still valid, or None.

        One query either way: the user row, or for a token the token row with
        its user, whose ``last_used`` is refreshed at most once a minute.
        """
        with self._lock:
            entry = self._cache.get(key)
        if entry is None:
            return None
        user_id, name_key, created, epoch, expires, token_id = entry
        if expires < time.monotonic():
            return None
        token, user = self._load(user_id, token_id)
        expired = token is not None and token.expires is not None and token.expires <= utcnow()
        if (user is None or user.disabled or expired or user.id != user_id or user.kind != "user"
                or user.name_key != name_key
                or user.created != created or user.credentials_epoch != epoch):
            with self._lock:
                self._cache.pop(key, None)
            return None
        if token is not None:
            accounts.touch_token(token)
        return Credential(user, token.scope if token is not None else None)

    @staticmethod
    def _load(user_id: int, token_id: int | None) -> tuple[ApiToken | None, Owner | None]:
        """The user row, or the token row and its user's, in one plain-SQL query (every
        cached request asks it; building the joined peewee query cost more than running it)."""
        conn = models.connection()
        if token_id is None:
            rows = conn.query(f"SELECT {models.columns(Owner, 'o')} FROM owner o WHERE o.id = ? AND o.kind = ?",
                              (user_id, "user"))
            return None, (models.from_row(Owner, rows[0]) if rows else None)
        rows = conn.query(f"SELECT {models.columns(ApiToken, 't')}, {models.columns(Owner, 'o')}"
                          " FROM api_token t JOIN owner o ON o.id = t.user_id WHERE t.id = ?", (token_id,))
        if not rows:
            return None, None
        token = models.from_joined(rows[0], ApiToken, Owner, "user")
        return token, token.user

    def _remember(self, key: bytes, user: Owner, token_id: int | None = None) -> None:
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (user.id, user.name_key, user.created, user.credentials_epoch,
                                time.monotonic() + self._cache_seconds, token_id)

    def basic(self, header: str, address: str) -> Owner | Refusal:
        """The user an Authorization header proves, or why not (raises Malformed)."""
        result = self.verify(header, address)
        return result.user if isinstance(result, Credential) else result

    def verify(self, header: str, address: str) -> Credential | Refusal:
        """Who an Authorization header (Basic or Bearer) proves, or why not (raises Malformed).

        A right token is accepted even while its name or address is throttled; a
        wrong one counts as a failed login like a wrong password (a wrong Bearer
        token under :data:`BEARER_NAME` and the address).
        """
        if header.strip().partition(" ")[0].lower() == "bearer":
            return self._token(None, parse_bearer(header), address)
        user_name, secret = parse_basic(header)
        if secret.startswith(credentials.TOKEN_PREFIX):
            return self._token(user_name, secret, address)
        key = self._cache_key(user_name, secret)
        cached = self._cached_user(key)
        if cached is not None:
            # A blocked guesser must not learn a password from the cache of the
            # user's own recent logins: cached passwords obey the throttle too.
            if self.throttle.blocked(user_name, address):
                return THROTTLED
            return cached
        user = self.password(user_name, secret, address)
        if isinstance(user, Refusal):
            return user
        self._remember(key, user)
        return Credential(user)

    def _token(self, user_name: str | None, secret: str, address: str) -> Credential | Refusal:
        """A token's user and scope (``user_name`` None: Bearer, anyone's token)."""
        key = self._cache_key(user_name or "", secret)
        cached = self._cached_user(key)
        if cached is not None:
            return cached
        token = accounts.find_token(user_name, secret)
        if token is not None and token.user.disabled:
            return DISABLED
        if token is not None:
            accounts.touch_token(token)
            self._remember(key, token.user, token.id)
            return Credential(token.user, token.scope)
        if self.throttle.reserve(user_name or BEARER_NAME, address) is None:
            return THROTTLED
        record_failed_login(user_name or BEARER_NAME, address, "token")
        return WRONG

    def already_verified(self, header: str) -> bool:
        """Does this Authorization header prove a user without a slow hash?  Read-only.

        True for a valid token (one SHA-256 and one lookup) or a password pair
        this process verified within the cache time; False otherwise, malformed
        headers included.  Counts no failure and never verifies a password, so
        it may run on the reactor thread (:mod:`daemon.bodylimit` asks it from a
        request's headers, before its body is stored).
        """
        try:
            user_name, secret = parse_basic(header)
        except Malformed:
            return False
        if secret.startswith(credentials.TOKEN_PREFIX):
            return accounts.check_token(user_name, secret) is not None
        return self._cached_user(self._cache_key(user_name, secret)) is not None

    def password_login(self, user_name: str, password: str, address: str) -> Owner | Refusal:
        """A browser login with the form: exactly :meth:`password`, Basic's check."""
        return self.password(user_name, password, address)

    def password(self, user_name: str, password: str, address: str) -> Owner | Refusal:
        """Check a password, counted by the throttle before the (slow) check runs."""
        attempt = self.throttle.reserve(user_name, address)
        if attempt is None:
            return THROTTLED
        user = accounts.check_password(user_name, password) if user_name else None
        if user is None:
            record_failed_login(user_name, address, "password")
            return WRONG
        if user.disabled:
            return DISABLED  # counted as a failure: no probing of a disabled account
        self.throttle.succeeded(attempt)
        self._upgrade_hash(user, password)
        return user

    @staticmethod
    def _upgrade_hash(user: Owner, password: str) -> None:
        if user.password_hash and credentials.needs_rehash(user.password_hash):
            Owner.update(password_hash=credentials.hash_password(password)).where(
                Owner.id == user.id
            ).execute()

    # -- sessions ----------------------------------------------------------------

    def _sign(self, sid: str) -> str:
        return hmac.new(self._secret, b"session\0" + sid.encode(), hashlib.sha256).hexdigest()[:32]

    def new_session(self, user: Owner, address: str = "") -> str:
        """Create a session and return the cookie value."""
        sid = secrets.token_urlsafe(32)
        now = utcnow()
        with write_transaction():
            Session.create(
                digest=hashlib.sha256(sid.encode()).hexdigest(),
                user=user,
                csrf=secrets.token_urlsafe(24),
                expires=now + datetime.timedelta(days=SESSION_DAYS),
                epoch=user.login_epoch,
                last_seen=now,
                address=address[:64],
            )
        return f"{sid}.{self._sign(sid)}"

    def session(self, cookie: str | None, address: str | None = None) -> Session | None:
        """The live session a cookie value names, with its user loaded.

        Live: not expired, and made under the user's current ``login_epoch``, which
        a password change, reset, disable or removal bumps.  With ``address``, the
        session's ``last_seen`` and ``address`` are refreshed (:func:`touch_session`).
        """
        if not cookie or len(cookie) > 200 or "." not in cookie:
            return None
        sid, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(sid).encode()):
            return None
        # Plain SQL, as for a token (_load): every page a logged-in user opens asks it.
        found = models.connection().query(
            f"SELECT {models.columns(Session, 's')}, {models.columns(Owner, 'o')}"
            ' FROM "session" s JOIN owner o ON o.id = s.user_id WHERE s.digest = ? AND s.expires > ?'
            " AND s.epoch = o.login_epoch AND o.disabled = ?",
            (hashlib.sha256(sid.encode()).hexdigest(), str(utcnow()), False))
        row = models.from_joined(found[0], Session, Owner, "user") if found else None
        if row is not None and address is not None:
            touch_session(row, address)
        return row

    def end_session(self, session: Session) -> None:
        with write_transaction():
            Session.delete().where(Session.id == session.id).execute()
