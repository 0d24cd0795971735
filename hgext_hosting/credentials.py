"""Passwords and API tokens: slow salted hashes, hashed tokens, constant-time compares.

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106 low-memory
profile); a hash made with older parameters is re-hashed on the next successful
check.  API tokens carry 256 random bits, so they are stored as a plain SHA-256
digest: no slow KDF is needed for a secret that cannot be guessed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .errors import Invalid

_hasher = PasswordHasher()

#: Every token starts with this, so that it is recognisable in a leaked file.
TOKEN_PREFIX = "hgh_"

#: Longest password accepted, to bound the work an attacker can ask for.
MAX_PASSWORD_BYTES = 1024


class BadPassword(Invalid, ValueError):
    """A password that cannot be set; the message is fit for a user."""

    def __init__(self, message: str, field: str = "password"):
        super().__init__(message, field)


def check_new_password(password: str) -> str:
    """Refuse passwords that are empty or absurdly long."""
    if not password:
        raise BadPassword("the password is empty")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise BadPassword(f"the password is longer than {MAX_PASSWORD_BYTES} bytes")
    return password


def hash_password(password: str) -> str:
    """A salted argon2id hash of ``password``, in PHC string format."""
    return _hasher.hash(check_new_password(password))


def verify_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches the ``stored`` hash (constant time)."""
    if not stored or len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        return False
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """True when ``stored`` was made with weaker parameters than today's."""
    return _hasher.check_needs_rehash(stored)


def new_token() -> str:
    """A new API token: the prefix and 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The SHA-256 hex digest under which a token is stored and looked up."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def digests_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two digests."""
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))
