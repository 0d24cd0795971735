"""Operations on users, teams, memberships, API tokens and SSH keys.

Each function is one unit of work in one write transaction: it validates its
input, refuses with :class:`~hgext_hosting.errors.UserError` (nothing changed)
or commits.  The CLI and the daemon's pages both call these.
"""

from __future__ import annotations

from . import credentials, names, sshkeys
from .errors import UserError
from .models import ApiToken, Membership, Owner, Repository, SshKey, utcnow, write_transaction


def get_owner(name: str) -> Owner:
    """The user or team called ``name`` (any case), or UserError."""
    owner = Owner.get_or_none(Owner.name_key == names.key(name))
    if owner is None:
        raise UserError(f"no user or team named {name!r}")
    return owner


def get_user(name: str) -> Owner:
    owner = Owner.get_or_none((Owner.name_key == names.key(name)) & (Owner.kind == "user"))
    if owner is None:
        raise UserError(f"no user named {name!r}")
    return owner


def get_team(name: str) -> Owner:
    owner = Owner.get_or_none((Owner.name_key == names.key(name)) & (Owner.kind == "team"))
    if owner is None:
        raise UserError(f"no team named {name!r}")
    return owner


def get_subject(subject: str) -> Owner:
    """``USER`` or ``@TEAM`` as used by grants and allow-lists."""
    if subject.startswith("@"):
        return get_team(subject[1:])
    return get_user(subject)


def subject_label(owner: Owner) -> str:
    """How a grant or allow-list shows a subject: ``alice`` or ``@team``."""
    return "@" + owner.name if owner.is_team else owner.name


def _create_owner(name: str, kind: str, **fields) -> Owner:
    names.check_owner_name(name, f"{kind} name")
    with write_transaction():
        if Owner.select().where(Owner.name_key == names.key(name)).exists():
            raise UserError(f"the name {name!r} is already taken by a user or team")
        return Owner.create(name=name, name_key=names.key(name), kind=kind, **fields)


def _refuse_if_owning(owner: Owner) -> None:
    owned = [r.name for r in Repository.select().where(Repository.owner == owner.id)]
    if owned:
        listing = ", ".join(f"{owner.name}/{n}" for n in sorted(owned))
        raise UserError(
            f"{owner.name} owns repositories ({listing}); remove or rename them first"
        )


# -- users -----------------------------------------------------------------


def add_user(name: str, email: str = "", admin: bool = False, password: str | None = None):
    """Create a user; ``password`` None leaves them without one (tokens only)."""
    if len(email) > 254 or any(c in email for c in "\r\n\0"):
        raise UserError("invalid email address")
    pw_hash = credentials.hash_password(password) if password is not None else None
    return _create_owner(name, "user", email=email, is_admin=admin, password_hash=pw_hash)


def check_new_user_name(name: str) -> None:
    """Refuse (UserError) a name that ``add_user`` would refuse: invalid or already taken (read only)."""
    names.check_owner_name(name, "user name")
    if Owner.select().where(Owner.name_key == names.key(name)).exists():
        raise UserError(f"the name {name!r} is already taken by a user or team")


def set_password(name: str, password: str) -> None:
    pw_hash = credentials.hash_password(password)
    with write_transaction():
        user = get_user(name)
        user.password_hash = pw_hash
        user.credentials_epoch += 1
        user.save()


def remove_user(name: str) -> None:
    """Remove a user with their tokens, keys, grants and memberships (not their pushes)."""
    with write_transaction():
        user = get_user(name)
        _refuse_if_owning(user)
        user.delete_instance()


def list_users() -> list[Owner]:
    return list(Owner.select().where(Owner.kind == "user").order_by(Owner.name_key))


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


# -- teams -----------------------------------------------------------------


def add_team(name: str) -> Owner:
    return _create_owner(name, "team")


def remove_team(name: str) -> None:
    with write_transaction():
        team = get_team(name)
        _refuse_if_owning(team)
        team.delete_instance()


def add_member(team_name: str, user_name: str) -> None:
    with write_transaction():
        team, user = get_team(team_name), get_user(user_name)
        if Membership.select().where((Membership.team == team) & (Membership.user == user)).exists():
            raise UserError(f"{user.name} is already a member of {team.name}")
        Membership.create(team=team, user=user)
        _bump_epoch(user)


def remove_member(team_name: str, user_name: str) -> None:
    with write_transaction():
        team, user = get_team(team_name), get_user(user_name)
        deleted = (
            Membership.delete()
            .where((Membership.team == team) & (Membership.user == user))
            .execute()
        )
        if not deleted:
            raise UserError(f"{user.name} is not a member of {team.name}")
        _bump_epoch(user)


def list_teams() -> list[tuple[Owner, list[str]]]:
    teams = list(Owner.select().where(Owner.kind == "team").order_by(Owner.name_key))
    members: dict[int, list[str]] = {t.id: [] for t in teams}
    User = Owner.alias()
    rows = (
        Membership.select(Membership.team, User.name)
        .join(User, on=(Membership.user == User.id))
        .order_by(User.name_key)
        .tuples()
    )
    for team_id, user_name in rows:
        members.setdefault(team_id, []).append(user_name)
    return [(t, members[t.id]) for t in teams]


def _bump_epoch(user: Owner) -> None:
    Owner.update(credentials_epoch=Owner.credentials_epoch + 1).where(Owner.id == user.id).execute()


# -- API tokens ------------------------------------------------------------


def create_token(user_name: str, label: str | None = None) -> str:
    """Create a token and return it; only its digest is stored."""
    token = credentials.new_token()
    with write_transaction():
        user = get_user(user_name)
        if label is None:
            count = ApiToken.select().where(ApiToken.user == user).count()
            label = f"token-{count + 1}"
            while ApiToken.select().where((ApiToken.user == user) & (ApiToken.label == label)).exists():
                count += 1
                label = f"token-{count + 1}"
        names.check_name(label, "token label")
        if ApiToken.select().where((ApiToken.user == user) & (ApiToken.label == label)).exists():
            raise UserError(f"{user.name} already has a token labelled {label!r}")
        ApiToken.create(user=user, label=label, digest=credentials.token_digest(token))
    return token


def list_tokens(user_name: str) -> list[ApiToken]:
    user = get_user(user_name)
    return list(ApiToken.select().where(ApiToken.user == user).order_by(ApiToken.created))


def revoke_token(user_name: str, label: str) -> None:
    with write_transaction():
        user = get_user(user_name)
        deleted = ApiToken.delete().where((ApiToken.user == user) & (ApiToken.label == label)).execute()
        if not deleted:
            raise UserError(f"{user.name} has no token labelled {label!r}")
        _bump_epoch(user)


def check_token(user_name: str, token: str) -> Owner | None:
    """The user when ``token`` is one of theirs, else None (fast: SHA-256)."""
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
    return row.user


# -- SSH keys --------------------------------------------------------------


def add_ssh_key(user_name: str, key_text: str) -> SshKey:
    key = sshkeys.parse_public_key(key_text)
    with write_transaction():
        user = get_user(user_name)
        existing = SshKey.get_or_none(SshKey.fingerprint == key.fingerprint)
        if existing is not None:
            raise UserError(f"the key {key.fingerprint} is already registered")
        return SshKey.create(
            user=user,
            fingerprint=key.fingerprint,
            key_type=key.type,
            blob=key.blob,
            comment=key.comment[:255],
        )


def list_ssh_keys(user_name: str) -> list[SshKey]:
    user = get_user(user_name)
    return list(SshKey.select().where(SshKey.user == user).order_by(SshKey.created))


def remove_ssh_key(user_name: str, fingerprint: str) -> None:
    with write_transaction():
        user = get_user(user_name)
        deleted = (
            SshKey.delete()
            .where((SshKey.user == user) & (SshKey.fingerprint == fingerprint))
            .execute()
        )
        if not deleted:
            raise UserError(f"{user.name} has no key with fingerprint {fingerprint!r}")


def user_for_key_blob(blob: bytes) -> Owner | None:
    """The user a raw public key blob belongs to (SSH authentication)."""
    fingerprint = sshkeys.fingerprint_of_blob(blob)
    row = SshKey.select(SshKey, Owner).join(Owner).where(SshKey.fingerprint == fingerprint).first()
    return row.user if row else None


def touch_token(digest: str) -> None:
    ApiToken.update(last_used=utcnow()).where(ApiToken.digest == digest).execute()

