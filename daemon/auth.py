"""Who is making a request: HTTP Basic for ``hg``, a session cookie for browsers.

- **Basic**: ``user:password`` or ``user:token``.  A clone makes several
  requests and a push about eight, each carrying the header, so a verified
  pair is cached in memory for a few minutes under ``HMAC(site secret,
  user NUL secret)`` (never the plaintext).  A cache hit still re-reads the
  user's ``credentials_epoch``, which every password change, token
  revocation, membership change or removal bumps, so revocation is effective
  on the next request.
- **Throttling**: failed logins are counted per address and per user name in a
  sliding window; past the limit, password attempts are refused with 429
  without being checked.  Tokens (256 random bits, checked with one SHA-256)
  are still accepted, and other users and addresses are not slowed.
- **Sessions**: a random id in an HttpOnly, SameSite=Lax cookie, signed with
  the site secret; the database keeps only the id's digest, the user, the
  expiry and the CSRF token, so logging out ends the session on the server
  and every worker process sees it.

All of this runs in WSGI pool threads, never on the reactor.
"""

from __future__ import annotations

import base64
import binascii
import collections
import datetime
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from hgext_hosting import accounts, credentials, names
from hgext_hosting.models import Owner, Session, utcnow, write_transaction

SESSION_COOKIE = "hgh_session"
SESSION_DAYS = 14


class Malformed(ValueError):
    """An Authorization header that is not valid HTTP Basic."""


@dataclass(frozen=True)
class Refusal:
    """Why a request with credentials is refused: 401 (bad) or 429 (throttled)."""

    status: int
    reason: str


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


class Throttle:
    """Counts failures per key in a sliding window; thread-safe."""

    def __init__(self, limit: int = 10, window: float = 300.0):
        self.limit = limit
        self.window = window
        self._failures: dict[str, collections.deque] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> collections.deque:
        q = self._failures.setdefault(key, collections.deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def blocked(self, *keys: str) -> bool:
        now = time.monotonic()
        with self._lock:
            return any(len(self._recent(k, now)) >= self.limit for k in keys)

    def fail(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for k in keys:
                self._recent(k, now).append(now)
            if len(self._failures) > 100_000:  # bound memory under a spray of names
                self._failures = {k: q for k, q in self._failures.items() if q}


class Authenticator:
    """Verifies credentials for one daemon process."""

    def __init__(self, secret: bytes, cache_seconds: float = 300.0, throttle: Throttle | None = None):
        self._secret = secret
        self._cache_seconds = cache_seconds
        #: HMAC key -> (user id, name key, created, credentials_epoch, expiry).  The name
        #: and creation time pin the very user: SQLite may give a removed user's id to
        #: the next user created, whose epoch starts again at 0.
        self._cache: dict[bytes, tuple[int, str, object, int, float]] = {}
        self._lock = threading.Lock()
        self.throttle = throttle or Throttle()

    def _cache_key(self, user: str, secret: str) -> bytes:
        message = names.key(user).encode() + b"\0" + secret.encode("utf-8", "surrogateescape")
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def _cached_user(self, key: bytes) -> Owner | None:
        with self._lock:
            entry = self._cache.get(key)
        if entry is None:
            return None
        user_id, name_key, created, epoch, expires = entry
        if expires < time.monotonic():
            return None
        user = Owner.get_or_none((Owner.id == user_id) & (Owner.kind == "user"))
        if (user is None or user.name_key != name_key or user.created != created
                or user.credentials_epoch != epoch):
            with self._lock:
                self._cache.pop(key, None)
            return None
        return user

    def _remember(self, key: bytes, user: Owner) -> None:
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (user.id, user.name_key, user.created, user.credentials_epoch,
                                time.monotonic() + self._cache_seconds)

    def basic(self, header: str, address: str) -> Owner | Refusal:
        """The user an Authorization header proves, or why not (raises Malformed)."""
        user_name, secret = parse_basic(header)
        key = self._cache_key(user_name, secret)
        cached = self._cached_user(key)
        if cached is not None:
            return cached
        keys = (f"addr:{address}", f"user:{names.key(user_name)}")
        if secret.startswith(credentials.TOKEN_PREFIX):
            user = accounts.check_token(user_name, secret)
            if user is not None:
                self._remember(key, user)
                return user
        elif self.throttle.blocked(*keys):
            return Refusal(429, "too many failed logins; try again later")
        else:
            user = accounts.check_password(user_name, secret)
            if user is not None:
                self._upgrade_hash(user, secret)
                self._remember(key, user)
                return user
        self.throttle.fail(*keys)
        return Refusal(401, "wrong user name or password")

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
        """A browser login with the form (same throttling as Basic)."""
        keys = (f"addr:{address}", f"user:{names.key(user_name)}")
        if self.throttle.blocked(*keys):
            return Refusal(429, "too many failed logins; try again later")
        user = accounts.check_password(user_name, password) if user_name else None
        if user is None:
            self.throttle.fail(*keys)
            return Refusal(401, "wrong user name or password")
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

    def new_session(self, user: Owner) -> str:
        """Create a session and return the cookie value."""
        sid = secrets.token_urlsafe(32)
        with write_transaction():
            Session.create(
                digest=hashlib.sha256(sid.encode()).hexdigest(),
                user=user,
                csrf=secrets.token_urlsafe(24),
                expires=utcnow() + datetime.timedelta(days=SESSION_DAYS),
            )
        return f"{sid}.{self._sign(sid)}"

    def session(self, cookie: str | None) -> Session | None:
        """The live session a cookie value names, with its user loaded."""
        if not cookie or len(cookie) > 200 or "." not in cookie:
            return None
        sid, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(sid).encode()):
            return None
        row = (
            Session.select(Session, Owner)
            .join(Owner)
            .where((Session.digest == hashlib.sha256(sid.encode()).hexdigest()) & (Session.expires > utcnow()))
            .first()
        )
        return row

    def end_session(self, session: Session) -> None:
        with write_transaction():
            Session.delete().where(Session.id == session.id).execute()
