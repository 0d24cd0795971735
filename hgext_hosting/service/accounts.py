"""Users, teams and memberships, API tokens and SSH keys: every operation on accounts.

Users and teams are the site admins' (:func:`hgext_hosting.policy.may_administer_site`);
a user's own password, tokens and keys are theirs and the site admins'
(:func:`hgext_hosting.policy.may_manage_user`).  A user the actor may not manage
is :class:`Forbidden` only for someone who may know the account exists; the
names of users are public (they own repositories and push), so no hiding here.
"""

from __future__ import annotations

import datetime
import re
import secrets

from peewee import fn as pw_fn

from .. import audit, credentials, names, policy, sshkeys
from ..accounts import bump_credentials, check_password, end_logins, get_team, get_user
from ..errors import Conflict, Forbidden, Invalid, NotFound
from ..models import (
    ApiToken,
    Membership,
    Owner,
    PasswordReset,
    Repository,
    Session,
    SignupToken,
    SshKey,
    utcnow,
    write_transaction,
)
from .actors import Actor

#: The longest email address accepted (RFC 5321's path limit).
MAX_EMAIL = 254


def _require_site_admin(actor: Actor) -> None:
    decision = policy.may_administer_site(actor.subject)
    if not decision:
        raise Forbidden(decision.reason)


def _account(actor: Actor, user_name: str, write: bool = False) -> Owner:
    """The user ``user_name`` if ``actor`` may manage that account (``write``: change it)."""
    user = get_user(user_name)
    decision = policy.may_manage_user(actor.subject, user.name_key, write)
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
    user = _account(actor, name, write=True)
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


#: The longest search text the users listing takes.
MAX_SEARCH = 100


def search_users(actor: Actor, search: str = "", page: int = 1, per_page: int = 50) -> tuple[list[Owner], int]:
    """One page of users whose name or email contains ``search`` (any case), and how many match."""
    _require_site_admin(actor)
    search = search.strip()[:MAX_SEARCH]
    query = Owner.select().where(Owner.kind == "user")
    if search:
        lowered = search.lower()
        query = query.where(pw_fn.LOWER(Owner.name).contains(lowered) | pw_fn.LOWER(Owner.email).contains(lowered))
    total = query.count()
    return list(query.order_by(Owner.name_key).paginate(page, per_page)), total


def _enabled_admins_besides(user: Owner) -> int:
    return (Owner.select()
            .where((Owner.kind == "user") & Owner.is_admin & (Owner.disabled == False)  # noqa: E712
                   & (Owner.id != user.id))
            .count())


def _refuse_unseating(actor: Actor, user: Owner) -> None:
    """Conflict when taking ``user``'s site admin powers would leave no enabled site admin."""
    if user.is_admin and not user.disabled:
        decision = policy.may_unseat_site_admin(actor.subject, user.name, _enabled_admins_besides(user))
        if not decision:
            raise Conflict(decision.reason)


def disable_user(actor: Actor, name: str) -> bool:
    """Disable a user: every login ends, and no credential of theirs works until enabled.

    Nothing of theirs is deleted (repositories, grants, tokens, keys, pushes).
    Refused for the last enabled site admin.  False when already disabled.
    """
    _require_site_admin(actor)
    with write_transaction():
        user = get_user(name)
        if user.disabled:
            return False
        _refuse_unseating(actor, user)
        Owner.update(disabled=True).where(Owner.id == user.id).execute()
        end_logins(user)
        audit.record_for(actor, "user.disable", user.name)
    return True


def enable_user(actor: Actor, name: str) -> bool:
    """Enable a disabled user again, with everything they had; False when not disabled."""
    _require_site_admin(actor)
    with write_transaction():
        user = get_user(name)
        if not user.disabled:
            return False
        Owner.update(disabled=False).where(Owner.id == user.id).execute()
        bump_credentials(user)
        audit.record_for(actor, "user.enable", user.name)
    return True


def set_site_admin(actor: Actor, name: str, admin: bool) -> bool:
    """Make a user a site admin or not; refused for the last enabled one.  False when unchanged."""
    _require_site_admin(actor)
    with write_transaction():
        user = get_user(name)
        if bool(user.is_admin) == admin:
            return False
        if not admin:
            _refuse_unseating(actor, user)
        Owner.update(is_admin=admin).where(Owner.id == user.id).execute()
        bump_credentials(user)
        audit.record_for(actor, "user.admin" if admin else "user.unadmin", user.name)
    return True


# -- password reset links -----------------------------------------------------------------

#: How long a reset link works.
RESET_LIFETIME = datetime.timedelta(hours=24)
#: The one answer for a reset link that is unknown, used or expired: they look alike.
RESET_GONE = "this password reset link is unknown, used or expired; ask for a new one"


def new_reset_token(user: Owner) -> str:
    """A new single-use reset token for ``user`` (their earlier ones stop working).

    No rule here: the caller decided (a site admin, or ``/-/forgot`` mailing the
    address on record).  Only the token's digest is stored.
    """
    token = secrets.token_urlsafe(32)
    with write_transaction():
        PasswordReset.delete().where(PasswordReset.user == user.id).execute()
        PasswordReset.create(user=user, digest=credentials.token_digest(token),
                             expires=utcnow() + RESET_LIFETIME)
    return token


def issue_reset_link(actor: Actor, name: str) -> str:
    """A reset token for the user ``name`` (site admins only); the URL is ``/-/reset/TOKEN``."""
    _require_site_admin(actor)
    user = get_user(name)
    token = new_reset_token(user)
    with write_transaction():
        audit.record_for(actor, "user.reset-link", user.name)
    return token


def reset_links_for_email(actor: Actor, email: str) -> list[tuple[Owner, str]]:
    """``/-/forgot``: a new reset token for each enabled user whose address on record is
    ``email`` (any case), to be mailed to that address only; usually none or one.

    Anyone may ask: the link goes to the address on record, never to the asker.
    """
    email = check_signup_email(email)
    users = list(Owner.select().where((Owner.kind == "user") & ~Owner.disabled
                                      & (pw_fn.LOWER(Owner.email) == email.lower())))
    return [(user, new_reset_token(user)) for user in users]


def _reset_row(token: str) -> PasswordReset:
    if not token or len(token) > 128:
        raise NotFound(RESET_GONE)
    row = (PasswordReset.select(PasswordReset, Owner).join(Owner)
           .where((PasswordReset.digest == credentials.token_digest(token)) & (PasswordReset.expires > utcnow()))
           .first())
    if row is None:
        raise NotFound(RESET_GONE)
    return row


def reset_link_user(token: str) -> Owner:
    """The user a live reset token is for; NotFound (:data:`RESET_GONE`) otherwise."""
    return _reset_row(token).user


def use_reset_link(token: str, password: str) -> Owner:
    """Set the password of the reset token's user, once; every session of theirs ends.

    The password is checked like ``user passwd`` (:func:`credentials.check_new_password`);
    a bad one leaves the link usable.  Two uses at once: one wins, the other is NotFound.
    """
    user = _reset_row(token).user
    pw_hash = credentials.hash_password(password)
    with write_transaction():
        used = PasswordReset.delete().where(
            (PasswordReset.digest == credentials.token_digest(token)) & (PasswordReset.expires > utcnow())
        ).execute()
        if not used:
            raise NotFound(RESET_GONE)
        PasswordReset.delete().where(PasswordReset.user == user.id).execute()
        Owner.update(password_hash=pw_hash).where(Owner.id == user.id).execute()
        end_logins(user)
        audit.record(user.name, "user.password-reset", user.name)
    return user


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

#: The furthest a token's expiry may be set (days from today).
MAX_TOKEN_DAYS = 3660


def parse_expiry(text: str | None, today: datetime.date | None = None) -> datetime.datetime | None:
    """A token's expiry from ``YYYY-MM-DD`` (empty: never): the token stops working at
    00:00 UTC that day, which must be after today and within :data:`MAX_TOKEN_DAYS`."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            raise ValueError
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise Invalid(f"the expiry date {text[:40]!r} is not a date (YYYY-MM-DD)", "expires") from None
    today = today or utcnow().date()
    if day <= today:
        raise Invalid("the expiry date must be after today", "expires")
    if (day - today).days > MAX_TOKEN_DAYS:
        raise Invalid(f"the expiry date is more than {MAX_TOKEN_DAYS} days away", "expires")
    return datetime.datetime.combine(day, datetime.time())


def check_scope(scope: str) -> str:
    """A token scope (read, write, admin), or Invalid naming ``scope``."""
    try:
        return policy.check_scope(scope)
    except ValueError as e:
        raise Invalid(str(e), "scope") from None


def create_token(actor: Actor, user_name: str, label: str | None = None, scope: str = "write",
                 expires: datetime.datetime | None = None) -> str:
    """Create a token of ``scope`` and return it (shown once); only its digest is stored.

    A token never reaches further than the actor making it: a scoped actor
    (itself a token) creates tokens of its own scope at most.  ``expires`` (from
    :func:`parse_expiry`): the token stops working then; None: never.
    """
    user = _account(actor, user_name, write=True)
    check_scope(scope)
    decision = policy.scope_allows(actor.subject, scope)
    if not decision:
        raise Forbidden(decision.reason)
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
        ApiToken.create(user=user, label=label, digest=credentials.token_digest(token), scope=scope,
                        expires=expires)
        audit.record_for(actor, "token.create", user.name, label=label)
    return token


def list_tokens(actor: Actor, user_name: str) -> list[ApiToken]:
    user = _account(actor, user_name)
    return list(ApiToken.select().where(ApiToken.user == user).order_by(ApiToken.created))


def revoke_token(actor: Actor, user_name: str, label: str) -> None:
    user = _account(actor, user_name, write=True)
    with write_transaction():
        deleted = ApiToken.delete().where((ApiToken.user == user) & (ApiToken.label == label)).execute()
        if not deleted:
            raise NotFound(f"{user.name} has no token labelled {label!r}")
        bump_credentials(user)
        audit.record_for(actor, "token.revoke", user.name, label=label)


# -- SSH keys ----------------------------------------------------------------------------------


def add_ssh_key(actor: Actor, user_name: str, key_text: str) -> SshKey:
    """Register an OpenSSH public key line for a user; a key belongs to one user only."""
    user = _account(actor, user_name, write=True)
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
    user = _account(actor, user_name, write=True)
    with write_transaction():
        deleted = (
            SshKey.delete()
            .where((SshKey.user == user) & (SshKey.fingerprint == fingerprint.strip()))
            .execute()
        )
        if not deleted:
            raise NotFound(f"{user.name} has no key with fingerprint {fingerprint!r}")
        audit.record_for(actor, "ssh-key.remove", user.name, fingerprint=fingerprint.strip())


# -- the signed-in user's own account (/-/settings) ---------------------------------------------


def set_email(actor: Actor, user_name: str, email: str) -> None:
    """Change a user's email address (validated like ``user add --email``)."""
    user = _account(actor, user_name)
    email = check_email(email.strip())
    with write_transaction():
        Owner.update(email=email).where(Owner.id == user.id).execute()
        audit.record_for(actor, "user.email", user.name)


def change_own_password(actor: Actor, current: str, new: str, keep_session: int | None = None) -> None:
    """Change the actor's own password: ``current`` must be right, ``new`` acceptable.

    Every session of the user ends but ``keep_session`` (the one that asked),
    and every cached Basic verification with them.  Slow (two argon2 hashes).
    """
    if actor.user_id is None:
        raise Forbidden(f"{actor.name} has no password to change")
    user = Owner.get_or_none(Owner.id == actor.user_id)
    if user is None:
        raise NotFound(f"no user named {actor.name!r}")
    credentials.check_new_password(new)
    if check_password(user.name, current) is None:
        raise Invalid("the current password is wrong", "current")
    pw_hash = credentials.hash_password(new)
    with write_transaction():
        Owner.update(password_hash=pw_hash, credentials_epoch=Owner.credentials_epoch + 1,
                     login_epoch=Owner.login_epoch + 1).where(Owner.id == user.id).execute()
        epoch = Owner.get_by_id(user.id).login_epoch
        Session.delete().where((Session.user == user.id) & (Session.id != (keep_session or 0))).execute()
        audit.record_for(actor, "user.password", user.name)
        if keep_session is not None:
            Session.update(epoch=epoch).where((Session.id == keep_session) & (Session.user == user.id)).execute()


def _live_sessions(user: Owner):
    return Session.select().where((Session.user == user.id) & (Session.expires > utcnow())
                                  & (Session.epoch == user.login_epoch))


def list_sessions(actor: Actor, user_name: str) -> list[Session]:
    """A user's live browser sessions, the most recently seen first."""
    user = _account(actor, user_name)
    rows = list(_live_sessions(user))
    return sorted(rows, key=lambda s: s.last_seen or s.created, reverse=True)


def end_session(actor: Actor, user_name: str, session_id: int) -> None:
    """End one of a user's sessions (log it out), or NotFound."""
    user = _account(actor, user_name)
    with write_transaction():
        deleted = Session.delete().where((Session.id == session_id) & (Session.user == user.id)).execute()
    if not deleted:
        raise NotFound("no such session (it has ended already)")


def end_other_sessions(actor: Actor, user_name: str, keep_session: int | None) -> int:
    """End every session of a user but ``keep_session``; how many ended."""
    user = _account(actor, user_name)
    with write_transaction():
        return Session.delete().where((Session.user == user.id)
                                      & (Session.id != (keep_session or 0))).execute()


# -- sign-up: invitations and open registration ----------------------------------------------

#: ``[hosting] registration`` values.
REGISTRATION_MODES = ("closed", "invite", "open")
#: How long an invitation and an address check stay valid.
INVITE_DAYS = 7
VERIFY_HOURS = 24
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+\Z")


def check_signup_email(email: str) -> str:
    """The address of a new account: required, one ``@``, a dot in the domain."""
    email = check_email(email.strip())
    if not _EMAIL.match(email):
        raise Invalid("enter an email address (name@example.org)", "email")
    return email


def _spend(kind: str, token: str) -> SignupToken:
    """The live link ``token`` of ``kind``, marked used (inside the caller's transaction), or NotFound."""
    row = _live_link(kind, token)
    spent = SignupToken.update(used=utcnow()).where((SignupToken.id == row.id)
                                                    & SignupToken.used.is_null()).execute()
    if not spent:
        raise NotFound("this link is not valid: it was used already or has expired")
    return row


def _live_link(kind: str, token: str) -> SignupToken:
    if not token or len(token) > 128:
        raise NotFound("this link is not valid: it was used already or has expired")
    row = SignupToken.get_or_none((SignupToken.digest == credentials.token_digest(token))
                                  & (SignupToken.kind == kind))
    if row is None or row.used is not None or row.expires <= utcnow():
        raise NotFound("this link is not valid: it was used already or has expired")
    return row


def create_invite(actor: Actor, email: str = "") -> str:
    """A single-use invitation (site admins); returns its token, for ``/-/join/TOKEN``."""
    _require_site_admin(actor)
    email = check_signup_email(email) if email.strip() else ""
    token = credentials.new_token()
    with write_transaction():
        SignupToken.create(kind="invite", digest=credentials.token_digest(token), email=email,
                           created_by=actor.name,
                           expires=utcnow() + datetime.timedelta(days=INVITE_DAYS))
    return token


def check_invite(mode: str, token: str) -> SignupToken:
    """The invitation ``token`` names while it is unused and unexpired and the site takes
    invitations, else NotFound (read only)."""
    decision = policy.may_register(mode, invited=True)
    if not decision:
        raise NotFound(decision.reason)
    return _live_link("invite", token)


def _check_new_account(name: str, email: str, password: str) -> tuple[str, str]:
    name = name.strip()
    check_new_owner_name(name)
    email = check_signup_email(email)
    credentials.check_new_password(password)
    return name, email


def join(actor: Actor, mode: str, token: str, name: str, email: str, password: str) -> Owner:
    """Create an account with an invitation, spending it (``mode``: ``[hosting] registration``)."""
    decision = policy.may_register(mode, invited=True)
    if not decision:
        raise NotFound(decision.reason)
    name, email = _check_new_account(name, email, password)
    pw_hash = credentials.hash_password(password)
    with write_transaction():
        _spend("invite", token)
        return _create_owner(actor, name, "user", email=email, password_hash=pw_hash)


def register(actor: Actor, mode: str, name: str, email: str, password: str,
             verify: bool) -> Owner | str:
    """Open registration: the new account, or with ``verify`` the token of the
    address check to mail (the account is made when it is followed).

    Anything but ``mode == "open"`` is NotFound: there is no sign-up page.
    """
    decision = policy.may_register(mode, invited=False)
    if not decision:
        raise NotFound(decision.reason)
    name, email = _check_new_account(name, email, password)
    pw_hash = credentials.hash_password(password)
    if not verify:
        return _create_owner(actor, name, "user", email=email, password_hash=pw_hash)
    token = credentials.new_token()
    with write_transaction():
        SignupToken.create(kind="verify", digest=credentials.token_digest(token), email=email, name=name,
                           password_hash=pw_hash,
                           expires=utcnow() + datetime.timedelta(hours=VERIFY_HOURS))
    return token


def confirm_signup(actor: Actor, token: str) -> Owner:
    """Follow a mailed address check: the account it was for is created now."""
    with write_transaction():
        row = _spend("verify", token)
        return _create_owner(actor, row.name, "user", email=row.email, password_hash=row.password_hash)


# -- the site at a glance ----------------------------------------------------------------


def site_summary(actor: Actor, repos_root) -> dict:
    """Counts, the repositories' disk use and the database engine (site admins only).

    Disk use is what the files of ``repos_root`` occupy (allocated blocks, each
    hardlinked file once): ``du -s`` of that directory.
    """
    from ..models import Push, Repository, is_sqlite

    _require_site_admin(actor)
    counts = {
        "users": Owner.select().where(Owner.kind == "user").count(),
        "disabled users": Owner.select().where((Owner.kind == "user") & (Owner.disabled == True)).count(),  # noqa: E712
        "site admins": Owner.select().where((Owner.kind == "user") & Owner.is_admin).count(),
        "teams": Owner.select().where(Owner.kind == "team").count(),
        "repositories": Repository.select().count(),
        "private repositories": Repository.select().where(Repository.private == True).count(),  # noqa: E712
        "pushes": Push.select().where(Push.state == "done").count(),
    }
    return {"counts": counts, "disk_bytes": _disk_used(repos_root),
            "database": "SQLite" if is_sqlite() else "PostgreSQL"}


def _disk_used(root) -> int:
    import os

    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total
