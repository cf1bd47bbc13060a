"""Database users at the admin API: login, bearer tokens, logout, the first superuser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload
from datetime import UTC, datetime, timedelta

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import Connection, Update, bindparam, select, update
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm.attributes import set_committed_value

from server.contract.errors import Conflict, ErrorCode, FieldError, NotAuthenticated, NotFound, RateLimited
from server.domain.vocabulary import AuditOutcome, CredentialKind, EntityType, SessionKind, TokenPrefix, UserSource
from server.services import audit, secrets_tokens
from server.services.audit import Actor
from server.services.authz_state import BOOKKEEPING, ReadConnection
from server.services.passwords import hash_password, needs_rehash, verify_password
from server.services.principal import Principal
from server.storage.database import Database
from server.storage.tables import Credential, Session, User, utcnow

# Writing "last seen" on every request would turn each read into a write; once a minute is enough.
LAST_SEEN_RESOLUTION = timedelta(seconds=60)


class LoginLimiter:
    """Moving-window limits on login attempts, per user and per client address.

    An attempt is counted before its password is checked, so parallel attempts cannot slip
    through while argon2 works; a successful login forgives that user's earlier failures.
    Kept in memory: with several replicas each one counts its own attempts, so the
    effective limit is at most N times the configured one.
    """

    def __init__(self, per_user: str, per_address: str) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_user: RateLimitItem = parse(per_user)
        self._per_address: RateLimitItem = parse(per_address)

    def _checks(self, username_key: str, address: str | None) -> list[tuple[RateLimitItem, str, str]]:
        checks = [(self._per_user, "user", username_key)]
        if address:
            checks.append((self._per_address, "address", address))
        return checks

    def count_attempt(self, username_key: str, address: str | None) -> None:
        for item, kind, key in self._checks(username_key, address):
            if not self._limiter.hit(item, "login", kind, key):
                reset = self._limiter.get_window_stats(item, "login", kind, key).reset_time
                retry_after = max(1, int(reset - utcnow().timestamp()) + 1)
                raise RateLimited(
                    f"too many login attempts for this {kind}; try again in {retry_after} s",
                    headers={"Retry-After": str(retry_after)},
                )

    def forgive(self, username_key: str) -> None:
        self._limiter.clear(self._per_user, "login", "user", username_key)


@dataclass(frozen=True)
class LoginResult:
    token: str
    session: Session
    user: User


def principal_for(user: User, *, session_id: str | None = None, credential_id: int | None = None, address: str | None = None) -> Principal:
    return Principal(
        user_id=user.id,
        username=user.username,
        is_superuser=user.is_superuser,
        is_staff=user.is_staff,
        permissions=frozenset(user.permissions),
        session_id=session_id,
        credential_id=credential_id,
        address=address,
    )


def login(
    db: Database,
    limiter: LoginLimiter,
    username: str,
    password: str,
    *,
    address: str | None,
    user_agent: str | None,
    lifetime: timedelta,
) -> LoginResult:
    username_key = username.strip().lower()
    actor = Actor(name=username[:150], address=address)
    try:
        limiter.count_attempt(username_key, address)
    except RateLimited:
        with db.writing() as session:
            audit.record(session, actor, "auth.login", outcome=AuditOutcome.DENIED, detail="rate limited")
        raise
    # argon2 takes ~0.1 s: check the password outside any write transaction, so that other
    # writers (on SQLite, every writer) do not queue behind a login.
    with db.reading() as session:
        found = session.execute(
            select(User.id, User.password_hash, User.is_active).where(User.username_key == username_key)
        ).first()
    password_ok = verify_password(found.password_hash if found else None, password)
    with db.writing() as session:
        user = session.get(User, found.id) if found is not None else None
        # Re-read in the write transaction: the user may have changed during the check.
        if user is not None and password_ok and user.is_active and user.password_hash == found.password_hash:  # type: ignore[union-attr]
            limiter.forgive(username_key)
            return _open_session(session, user, password, address, user_agent, lifetime)
        reason = "unknown user" if user is None else ("wrong password" if not password_ok else "inactive user")
        audit.record(
            session,
            Actor(name=username[:150], user_id=user.id if user else None, address=address),
            "auth.login",
            target_type=EntityType.USER.value if user else None,
            target_id=user.id if user else None,
            outcome=AuditOutcome.FAILURE,
            detail=reason,
        )
    # Raised after the transaction committed, so the failure stays in the audit trail.
    # One message for every cause: the API does not reveal which usernames exist.
    raise NotAuthenticated("wrong username or password, or the account is inactive")


def _open_session(
    session: DbSession, user: User, password: str, address: str | None, user_agent: str | None, lifetime: timedelta
) -> LoginResult:
    # Bookkeeping goes through bulk UPDATEs that leave the user's version alone: a login
    # must not make an administrator's pending edit of this user conflict.
    bookkeeping: dict[str, object] = {"last_login": utcnow()}
    if user.password_hash and needs_rehash(user.password_hash):
        bookkeeping["password_hash"] = hash_password(password)
    session.execute(update(User).where(User.id == user.id).values(**bookkeeping).execution_options(**{BOOKKEEPING: True}))
    for name, value in bookkeeping.items():
        set_committed_value(user, name, value)
    issued = secrets_tokens.issue(TokenPrefix.ADMIN_SESSION)
    now = utcnow()
    row = Session(
        id=issued.public_id,
        user_id=user.id,
        kind=SessionKind.ADMIN.value,
        secret_hash=issued.secret_hash,
        created_at=now,
        last_seen_at=now,
        expires_at=now + lifetime,
        client_address=address,
        user_agent=(user_agent or "")[:500] or None,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        Actor(name=user.username, user_id=user.id, address=address),
        "auth.login",
        target_type=EntityType.SESSION.value,
        target_id=row.id,
        target_label=user.username,
    )
    return LoginResult(token=issued.token, session=row, user=user)


@dataclass(frozen=True)
class UserToken:
    """A verified user token: an admin session (``pss_``) or an API token (``pat_``)."""

    user_id: int
    expires_at: datetime | None
    session_id: str | None = None
    credential_id: int | None = None
    last_used: datetime | None = None


# One indexed query each, built once: this runs for every first-seen token.
_SESSION_TOKEN = (
    select(Session.kind, Session.secret_hash, Session.revoked_at, Session.expires_at, Session.user_id, Session.last_seen_at, User.is_active)
    .join(User, User.id == Session.user_id)
    .where(Session.id == bindparam("public_id"))
)
_API_TOKEN = (
    select(Credential.id, Credential.kind, Credential.secret_hash, Credential.expires_at, Credential.user_id, Credential.last_used_at, User.is_active)
    .join(User, User.id == Credential.user_id)
    .where(Credential.public_id == bindparam("public_id"))
)


def verify_user_token(connection: DbSession | Connection | ReadConnection, token: str, now: datetime) -> UserToken | None:
    """The one check of a user's opaque token, for the admin API and Orthanc's calls alike:
    right secret, not revoked, not expired, its user active."""
    presented = secrets_tokens.parse(token)
    if presented is None:
        return None
    if presented.prefix == TokenPrefix.ADMIN_SESSION:
        row = connection.execute(_SESSION_TOKEN, {"public_id": presented.public_id}).first()
        if (
            row is None
            or row.kind != SessionKind.ADMIN
            or row.secret_hash is None
            or not secrets_tokens.matches(presented.secret, row.secret_hash)
            or row.revoked_at is not None
            or _aware(row.expires_at) <= now
            or not row.is_active
        ):
            return None
        return UserToken(row.user_id, _aware(row.expires_at), session_id=presented.public_id, last_used=_aware(row.last_seen_at))
    if presented.prefix == TokenPrefix.API_TOKEN:
        credential = connection.execute(_API_TOKEN, {"public_id": f"{presented.prefix}_{presented.public_id}"}).first()
        if (
            credential is None
            or credential.kind != CredentialKind.API_TOKEN
            or credential.user_id is None
            or not secrets_tokens.matches(presented.secret, credential.secret_hash)
            or (credential.expires_at is not None and _aware(credential.expires_at) <= now)
            or not credential.is_active
        ):
            return None
        return UserToken(
            credential.user_id, _aware(credential.expires_at), credential_id=credential.id, last_used=_aware(credential.last_used_at)
        )
    return None


@overload
def _aware(moment: datetime) -> datetime: ...
@overload
def _aware(moment: None) -> None: ...
def _aware(moment: datetime | None) -> datetime | None:
    # Columns read through a Core connection skip the ORM's UTC type on some backends.
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def authenticate(db: Database, token: str, address: str | None) -> Principal:
    """A bearer token (admin session or API token) -> the principal, or 401."""
    now = utcnow()
    with db.reading() as session:
        verified = verify_user_token(session, token, now)
        if verified is None:
            raise NotAuthenticated(
                "the bearer token is not valid (expired, revoked, or malformed); log in again",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        user = session.get(User, verified.user_id)
        assert user is not None
        principal = principal_for(user, session_id=verified.session_id, credential_id=verified.credential_id, address=address)
        # Bookkeeping by bulk UPDATE, at most once a minute: it must not bump versions.
        touch: Update | None = None
        if verified.last_used is None or now - verified.last_used > LAST_SEEN_RESOLUTION:
            if verified.session_id is not None:
                touch = update(Session).where(Session.id == verified.session_id).values(last_seen_at=now)
            else:
                touch = update(Credential).where(Credential.id == verified.credential_id).values(last_used_at=now)
            touch = touch.execution_options(**{BOOKKEEPING: True})
    if touch is not None:
        with db.writing() as session:
            session.execute(touch)
    return principal


def revoke_session(session: DbSession, actor: Actor, session_id: str, reason: str, action: str = "session.revoke") -> Session:
    row = session.get(Session, session_id)
    if row is None:
        raise NotFound(f"no session with id {session_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        row.revoked_reason = reason
        session.flush()
        audit.record(
            session,
            actor,
            action,
            target_type=EntityType.SESSION.value,
            target_id=row.id,
            target_label=f"session of user {row.user_id}",
            changes={"revoked_at": [None, row.revoked_at], "revoked_reason": [None, reason]},
        )
    return row


def create_superuser(db: Database, username: str, password: str, email: str | None = None, *, actor: Actor | None = None) -> User:
    with db.writing() as session:
        key = username.strip().lower()
        if session.scalar(select(User.id).where(User.username_key == key)) is not None:
            raise Conflict(
                f"a user named {username!r} already exists",
                code=ErrorCode.DUPLICATE,
                fields=[FieldError(field="username", message="already taken")],
            )
        user = User(
            username=username.strip(),
            username_key=key,
            email=email,
            is_active=True,
            is_staff=True,
            is_superuser=True,
            source=UserSource.DATABASE.value,
            password_hash=hash_password(password),
        )
        session.add(user)
        session.flush()
        audit.record(
            session,
            actor or Actor.system("createsuperuser"),
            "user.create",
            target_type=EntityType.USER.value,
            target_id=user.id,
            target_label=user.username,
            changes={"username": [None, user.username], "is_superuser": [None, True], "password_hash": [None, audit.MASK]},
        )
        return user


def has_active_superuser(db: Database) -> bool:
    with db.reading() as session:
        return session.scalar(select(User.id).where(User.is_superuser, User.is_active).limit(1)) is not None


def session_expiry(lifetime_seconds: int) -> datetime:
    return utcnow() + timedelta(seconds=lifetime_seconds)
