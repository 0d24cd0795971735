"""Users, teams and memberships, API tokens and SSH keys: every operation on accounts.

Users and teams are the site admins' (:func:`hgext_hosting.policy.may_administer_site`);
a user's own password, tokens and keys are theirs and the site admins'
(:func:`hgext_hosting.policy.may_manage_user`).  A user the actor may not manage
is :class:`Forbidden` only for someone who may know the account exists; the
names of users are public (they own repositories and push), so no hiding here.
"""

from __future__ import annotations

from .. import audit, credentials, names, policy, sshkeys
from ..accounts import bump_credentials, end_logins, get_team, get_user
from ..errors import Conflict, Forbidden, Invalid, NotFound
from ..models import ApiToken, Membership, Owner, Repository, SshKey, write_transaction
from .actors import Actor

#: The longest email address accepted (RFC 5321's path limit).
MAX_EMAIL = 254


def _require_site_admin(actor: Actor) -> None:
    decision = policy.may_administer_site(actor.subject)
    if not decision:
        raise Forbidden(decision.reason)


def _account(actor: Actor, user_name: str) -> Owner:
    """The user ``user_name`` if ``actor`` may manage that account."""
    user = get_user(user_name)
    decision = policy.may_manage_user(actor.subject, user.name_key)
    if not decision:
        raise Forbidden(decision.reason)
    return user


# -- owners ------------------------------------------------------------------------


def check_new_owner_name(name: str, kind: str = "user") -> str:
    """``name`` if a new user or team may be called so: valid and not taken (read only)."""
    names.check_owner_name(name, f"{kind} name")
    if Owner.select().where(Owner.name_key == names.key(name)).exists():
        raise Conflict(f"the name {name!r} is already taken by a user or team")
    return name


def _create_owner(actor: Actor, name: str, kind: str, **fields) -> Owner:
    with write_transaction():
        check_new_owner_name(name, kind)
        owner = Owner.create(name=name, name_key=names.key(name), kind=kind, **fields)
        audit.record_for(actor, f"{kind}.add", name, **({"admin": True} if fields.get("is_admin") else {}))
        return owner


def _refuse_if_owning(owner: Owner) -> None:
    owned = [r.name for r in Repository.select().where(Repository.owner == owner.id)]
    if owned:
        listing = ", ".join(f"{owner.name}/{n}" for n in sorted(owned))
        raise Conflict(f"{owner.name} owns repositories ({listing}); remove or rename them first")


# -- users -----------------------------------------------------------------------------


def check_email(email: str) -> str:
    if len(email) > MAX_EMAIL or any(c in email for c in "\r\n\0"):
        raise Invalid("invalid email address", "email")
    return email


def add_user(actor: Actor, name: str, email: str = "", admin: bool = False,
             password: str | None = None) -> Owner:
    """Create a user; ``password`` None leaves them without one (tokens only)."""
    _require_site_admin(actor)
    check_email(email or "")
    pw_hash = credentials.hash_password(password) if password is not None else None
    return _create_owner(actor, name, "user", email=email or "", is_admin=admin, password_hash=pw_hash)


def set_password(actor: Actor, name: str, password: str) -> None:
    """Set a user's password; every browser session of theirs ends."""
    user = _account(actor, name)
    pw_hash = credentials.hash_password(password)
    with write_transaction():
        Owner.update(password_hash=pw_hash).where(Owner.id == user.id).execute()
        end_logins(user)
        audit.record_for(actor, "user.password", user.name)


def remove_user(actor: Actor, name: str) -> None:
    """Remove a user with their tokens, keys, grants and memberships (not their pushes)."""
    _require_site_admin(actor)
    with write_transaction():
        user = get_user(name)
        _refuse_if_owning(user)
        end_logins(user)
        user.delete_instance()
        audit.record_for(actor, "user.remove", user.name)


def list_users(actor: Actor) -> list[Owner]:
    _require_site_admin(actor)
    return list(Owner.select().where(Owner.kind == "user").order_by(Owner.name_key))


def site_admin_names() -> list[str]:
    """The names of the site admins (``init`` shows them; no actor: the console's own question)."""
    return [u.name for u in Owner.select(Owner.name).where((Owner.kind == "user") & Owner.is_admin)
            .order_by(Owner.name_key)]


# -- teams -------------------------------------------------------------------------------


def add_team(actor: Actor, name: str) -> Owner:
    _require_site_admin(actor)
    return _create_owner(actor, name, "team")


def remove_team(actor: Actor, name: str) -> None:
    _require_site_admin(actor)
    with write_transaction():
        team = get_team(name)
        _refuse_if_owning(team)
        team.delete_instance()
        audit.record_for(actor, "team.remove", team.name)


def _member(user_name: str) -> Owner:
    try:
        return get_user(user_name)
    except NotFound as e:
        raise Invalid(str(e), "user") from None


def add_member(actor: Actor, team_name: str, user_name: str) -> None:
    _require_site_admin(actor)
    with write_transaction():
        team, user = get_team(team_name), _member(user_name)
        if Membership.select().where((Membership.team == team) & (Membership.user == user)).exists():
            raise Conflict(f"{user.name} is already a member of {team.name}")
        Membership.create(team=team, user=user)
        bump_credentials(user)
        audit.record_for(actor, "team.member-add", team.name, user=user.name)


def remove_member(actor: Actor, team_name: str, user_name: str) -> None:
    _require_site_admin(actor)
    with write_transaction():
        team, user = get_team(team_name), _member(user_name)
        deleted = (
            Membership.delete()
            .where((Membership.team == team) & (Membership.user == user))
            .execute()
        )
        if not deleted:
            raise NotFound(f"{user.name} is not a member of {team.name}")
        bump_credentials(user)
        audit.record_for(actor, "team.member-remove", team.name, user=user.name)


def list_teams(actor: Actor) -> list[tuple[Owner, list[str]]]:
    """Every team with its members' names (anyone may see teams: they own public repositories)."""
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


# -- API tokens ----------------------------------------------------------------------------


def create_token(actor: Actor, user_name: str, label: str | None = None) -> str:
    """Create a token and return it (shown once); only its digest is stored."""
    user = _account(actor, user_name)
    token = credentials.new_token()
    with write_transaction():
        if label is None:
            count = ApiToken.select().where(ApiToken.user == user).count()
            label = f"token-{count + 1}"
            while ApiToken.select().where((ApiToken.user == user) & (ApiToken.label == label)).exists():
                count += 1
                label = f"token-{count + 1}"
        names.check_name(label, "token label")
        if ApiToken.select().where((ApiToken.user == user) & (ApiToken.label == label)).exists():
            raise Conflict(f"{user.name} already has a token labelled {label!r}")
        ApiToken.create(user=user, label=label, digest=credentials.token_digest(token))
        audit.record_for(actor, "token.create", user.name, label=label)
    return token


def list_tokens(actor: Actor, user_name: str) -> list[ApiToken]:
    user = _account(actor, user_name)
    return list(ApiToken.select().where(ApiToken.user == user).order_by(ApiToken.created))


def revoke_token(actor: Actor, user_name: str, label: str) -> None:
    user = _account(actor, user_name)
    with write_transaction():
        deleted = ApiToken.delete().where((ApiToken.user == user) & (ApiToken.label == label)).execute()
        if not deleted:
            raise NotFound(f"{user.name} has no token labelled {label!r}")
        bump_credentials(user)
        audit.record_for(actor, "token.revoke", user.name, label=label)


# -- SSH keys ----------------------------------------------------------------------------------


def add_ssh_key(actor: Actor, user_name: str, key_text: str) -> SshKey:
    """Register an OpenSSH public key line for a user; a key belongs to one user only."""
    user = _account(actor, user_name)
    key = sshkeys.parse_public_key(key_text)
    with write_transaction():
        if SshKey.select().where(SshKey.fingerprint == key.fingerprint).exists():
            raise Conflict(f"the key {key.fingerprint} is already registered")
        audit.record_for(actor, "ssh-key.add", user.name, fingerprint=key.fingerprint)
        return SshKey.create(user=user, fingerprint=key.fingerprint, key_type=key.type,
                             blob=key.blob, comment=key.comment[:255])


def list_ssh_keys(actor: Actor, user_name: str) -> list[SshKey]:
    user = _account(actor, user_name)
    return list(SshKey.select().where(SshKey.user == user).order_by(SshKey.created))


def remove_ssh_key(actor: Actor, user_name: str, fingerprint: str) -> None:
    user = _account(actor, user_name)
    with write_transaction():
        deleted = (
            SshKey.delete()
            .where((SshKey.user == user) & (SshKey.fingerprint == fingerprint.strip()))
            .execute()
        )
        if not deleted:
            raise NotFound(f"{user.name} has no key with fingerprint {fingerprint!r}")
        audit.record_for(actor, "ssh-key.remove", user.name, fingerprint=fingerprint.strip())
