"""Looking up owners, and checking credentials: what logging in needs.

Owners by name (:class:`~hgext_hosting.errors.NotFound` when missing), the
checks of a password, a token or an SSH key that the daemon's authentication
makes, and :func:`end_logins`.  Changing accounts (users, teams, tokens, keys)
is the service layer's (:mod:`hgext_hosting.service.accounts`), which applies
the rules of who may.
"""

from __future__ import annotations

import datetime

from . import credentials, names, sshkeys
from .errors import NotFound
from .models import ApiToken, Owner, Session, SshKey, utcnow


def get_owner(name: str) -> Owner:
    """The user or team called ``name`` (any case), or NotFound."""
    owner = Owner.get_or_none(Owner.name_key == names.key(name))
    if owner is None:
        raise NotFound(f"no user or team named {name!r}")
    return owner


def get_user(name: str) -> Owner:
    owner = Owner.get_or_none((Owner.name_key == names.key(name)) & (Owner.kind == "user"))
    if owner is None:
        raise NotFound(f"no user named {name!r}")
    return owner


def get_team(name: str) -> Owner:
    owner = Owner.get_or_none((Owner.name_key == names.key(name)) & (Owner.kind == "team"))
    if owner is None:
        raise NotFound(f"no team named {name!r}")
    return owner


def get_subject(subject: str) -> Owner:
    """``USER`` or ``@TEAM`` as used by grants and allow-lists."""
    if subject.startswith("@"):
        return get_team(subject[1:])
    return get_user(subject)


def subject_label(owner: Owner) -> str:
    """How a grant or allow-list shows a subject: ``alice`` or ``@team``."""
    return "@" + owner.name if owner.is_team else owner.name


def end_logins(user: Owner) -> None:
    """End every login of ``user``: browser sessions and cached Basic verifications.

    Call it (inside the write transaction) whenever the password changes or the
    account is reset, disabled or removed.  Bumping ``login_epoch`` alone would be
    enough (a session lives only while its epoch matches); the rows go too.
    """
    Owner.update(
        credentials_epoch=Owner.credentials_epoch + 1, login_epoch=Owner.login_epoch + 1
    ).where(Owner.id == user.id).execute()
    Session.delete().where(Session.user == user.id).execute()


def check_password(name: str, password: str) -> Owner | None:
    """The user when ``password`` is theirs, else None (slow: argon2)."""
    user = Owner.get_or_none((Owner.name_key == names.key(name)) & (Owner.kind == "user"))
    if user is None:
        credentials.verify_password(_dummy_hash(), password)  # same cost as a real miss
        return None
    return user if credentials.verify_password(user.password_hash, password) else None


_dummy: list[str] = []


def _dummy_hash() -> str:
    """A real hash to verify against for unknown users, so that timing tells nothing."""
    if not _dummy:
        _dummy.append(credentials.hash_password("not a real password"))
    return _dummy[0]


def bump_credentials(user: Owner) -> None:
    """Make every daemon forget the Basic verifications it cached for ``user`` (a token or team changed)."""
    Owner.update(credentials_epoch=Owner.credentials_epoch + 1).where(Owner.id == user.id).execute()


# -- API tokens ------------------------------------------------------------


def find_token(user_name: str, token: str) -> ApiToken | None:
    """The token row (its user loaded) when ``token`` is one of the user's, else None.

    Fast: one SHA-256 and one indexed lookup.
    """
    if not token.startswith(credentials.TOKEN_PREFIX) or len(token) > 128:
        return None
    digest = credentials.token_digest(token)
    row = (
        ApiToken.select(ApiToken, Owner)
        .join(Owner)
        .where((ApiToken.digest == digest) & (Owner.name_key == names.key(user_name)))
        .first()
    )
    if row is None or not credentials.digests_equal(row.digest, digest):
        return None
    return row


def check_token(user_name: str, token: str) -> Owner | None:
    """The user when ``token`` is one of theirs, else None (fast: SHA-256)."""
    row = find_token(user_name, token)
    return row.user if row is not None else None


# -- SSH keys --------------------------------------------------------------


def user_for_key_blob(blob: bytes) -> Owner | None:
    """The user a raw public key blob belongs to (SSH authentication)."""
    fingerprint = sshkeys.fingerprint_of_blob(blob)
    row = SshKey.select(SshKey, Owner).join(Owner).where(SshKey.fingerprint == fingerprint).first()
    return row.user if row else None


#: A token's last use is recorded at most this often: a clone makes several requests.
TOKEN_USE_RESOLUTION = datetime.timedelta(seconds=60)


def touch_token(token: ApiToken) -> bool:
    """Record that ``token`` was just used, unless a use was recorded less than a minute ago.

    ``token.last_used`` is the value last read; the UPDATE checks it again, so
    that several processes together still write at most once a minute.  True
    when a write was attempted.
    """
    now = utcnow()
    if token.last_used is not None and now - token.last_used < TOKEN_USE_RESOLUTION:
        return False
    cutoff = now - TOKEN_USE_RESOLUTION
    ApiToken.update(last_used=now).where(
        (ApiToken.id == token.id) & (ApiToken.last_used.is_null() | (ApiToken.last_used < cutoff))
    ).execute()
    token.last_used = now
    return True

