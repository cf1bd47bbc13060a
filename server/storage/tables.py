"""SQLAlchemy models of every entity of DESIGN.md §3.

Every mutable record carries ``version`` (SQLAlchemy's version counter): an UPDATE names
the version it read, so a write based on a stale read touches no row and is refused.
Secrets are stored only encrypted (``*_encrypted``) or hashed (``*_hash``).
Times are stored as naive UTC and handed back timezone-aware (see ``UtcDateTime``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Stores naive UTC on every backend; returns aware UTC datetimes."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Versioned:
    """Mixin: surrogate key, timestamps and the optimistic-locking version counter."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.version}


class Provider(Versioned, Base):
    __tablename__ = "providers"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    preset: Mapped[str] = mapped_column(String(32))
    scheme: Mapped[str] = mapped_column(String(8))
    hostname: Mapped[str] = mapped_column(String(253))
    port: Mapped[int | None]
    description: Mapped[str] = mapped_column(Text, default="")
    authorization_endpoint: Mapped[str] = mapped_column(String(2000))
    token_endpoint: Mapped[str] = mapped_column(String(2000))
    revoke_endpoint: Mapped[str | None] = mapped_column(String(2000))
    userinfo_endpoint: Mapped[str | None] = mapped_column(String(2000))
    jwks_uri: Mapped[str | None] = mapped_column(String(2000))
    issuer: Mapped[str | None] = mapped_column(String(2000))
    scopes: Mapped[list[Any]] = mapped_column(JSON)
    login_classes: Mapped[str] = mapped_column(String(200), default="")
    use_state: Mapped[bool] = mapped_column(Boolean, default=True)
    use_nonce: Mapped[bool] = mapped_column(Boolean, default=True)
    use_pkce: Mapped[bool] = mapped_column(Boolean, default=True)
    require_id_token: Mapped[bool] = mapped_column(Boolean, default=True)
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(32))
    claim_mapping: Mapped[dict[str, Any]] = mapped_column(JSON)

    auth_servers: Mapped[list[AuthServer]] = relationship(back_populates="provider", passive_deletes="all")


class AuthServer(Versioned, Base):
    __tablename__ = "auth_servers"
    __table_args__ = (
        # "Exactly one default": at most one row may carry the flag.
        Index(
            "uq_auth_servers_one_default",
            "is_default",
            unique=True,
            sqlite_where=text("is_default"),
            postgresql_where=text("is_default"),
        ),
    )

    token: Mapped[str] = mapped_column(String(16), unique=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id", ondelete="RESTRICT"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    client_id: Mapped[str] = mapped_column(String(255))
    client_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    redirect_urls: Mapped[list[Any]] = mapped_column(JSON)
    accept_idp_tokens: Mapped[bool] = mapped_column(Boolean, default=False)
    group_sync: Mapped[str] = mapped_column(String(16))

    provider: Mapped[Provider] = relationship(back_populates="auth_servers")

    @property
    def client_secret_set(self) -> bool:
        return self.client_secret_encrypted is not None


class Site(Base):
    """A single row (id 1): where this deployment is reached from outside."""

    __tablename__ = "site"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    production_url: Mapped[str] = mapped_column(String(2000))
    development_url: Mapped[str] = mapped_column(String(2000))
    environment: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    @property
    def base_url(self) -> str:
        return self.production_url if self.environment == "production" else self.development_url


class User(Versioned, Base):
    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(150), unique=True)
    # Lower-cased copy: usernames are unique regardless of case ("Alice" vs "alice").
    username_key: Mapped[str] = mapped_column(String(150), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    first_name: Mapped[str] = mapped_column(String(150), default="")
    last_name: Mapped[str] = mapped_column(String(150), default="")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_staff: Mapped[bool] = mapped_column(Boolean, default=False)
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(16), default="database")
    password_hash: Mapped[str | None] = mapped_column(String(255))
    last_login: Mapped[datetime | None]

    grants: Mapped[list[UserPermission]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, lazy="selectin"
    )

    @property
    def has_password(self) -> bool:
        return self.password_hash is not None

    @property
    def permissions(self) -> list[str]:
        return sorted(grant.permission for grant in self.grants)


class UserPermission(Base):
    __tablename__ = "user_permissions"
    __table_args__ = (UniqueConstraint("user_id", "permission"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    permission: Mapped[str] = mapped_column(String(64))


class ExternalIdentity(Versioned, Base):
    __tablename__ = "external_identities"
    __table_args__ = (UniqueConstraint("provider_id", "subject"),)

    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    email: Mapped[str | None] = mapped_column(String(320))


class Group(Versioned, Base):
    __tablename__ = "groups"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    idp_group_name: Mapped[str | None] = mapped_column(String(255), index=True)


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "group_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ImagingServer(Versioned, Base):
    __tablename__ = "imaging_servers"

    token: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    scheme: Mapped[str] = mapped_column(String(8))
    hostname: Mapped[str] = mapped_column(String(253))
    port: Mapped[int | None]
    dicomweb_root: Mapped[str] = mapped_column(String(200))
    viewer_url: Mapped[str | None] = mapped_column(String(2000))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    rest_username: Mapped[str | None] = mapped_column(String(255))
    rest_password_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Rows of [method, uri regex, [capabilities]]; NULL: the plugin's default table.
    permission_table: Mapped[list[Any] | None] = mapped_column(JSON)

    @property
    def rest_password_set(self) -> bool:
        return self.rest_password_encrypted is not None


class AccessRule(Versioned, Base):
    __tablename__ = "access_rules"
    # The decision path's cold look-up goes from a user's memberships to their groups'
    # rules on one imaging server.
    __table_args__ = (Index("ix_access_rules_group_id_imaging_server_id", "group_id", "imaging_server_id"),)

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    imaging_server_id: Mapped[int] = mapped_column(ForeignKey("imaging_servers.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(String(16))
    labels: Mapped[list[Any]] = mapped_column(JSON)
    selectors: Mapped[list[Any]] = mapped_column(JSON)
    capabilities: Mapped[list[Any]] = mapped_column(JSON)
    validity: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime | None]
    description: Mapped[str] = mapped_column(Text, default="")


class Session(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    auth_server_id: Mapped[int | None] = mapped_column(ForeignKey("auth_servers.id", ondelete="SET NULL"))
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(200))
    client_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(500))
    upstream_tokens_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    @property
    def active(self) -> bool:
        return self.revoked_at is None and self.expires_at > utcnow()


class PendingLogin(Base):
    """A browser on its way through the IdP: what the callback must find and check.

    Found by a hash of the secret in the browser's login cookie (so the callback is bound
    to the browser that started it); ``state`` is compared as a hash too.
    """

    __tablename__ = "sso_pending_logins"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie secret
    auth_server_id: Mapped[int] = mapped_column(ForeignKey("auth_servers.id", ondelete="CASCADE"), index=True)
    state_hash: Mapped[str | None] = mapped_column(String(64))
    nonce: Mapped[str | None] = mapped_column(String(64))
    code_verifier_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    callback_url: Mapped[str] = mapped_column(String(2000))  # the redirect_uri sent to the IdP
    redirect_uri: Mapped[str] = mapped_column(String(2000))  # where the one-time code goes
    client_state: Mapped[str | None] = mapped_column(String(500))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    test_login_id: Mapped[str | None] = mapped_column(ForeignKey("sso_test_logins.id", ondelete="CASCADE"))
    code_challenge: Mapped[str | None] = mapped_column(String(64))  # PKCE S256 for Portico's own one-time code
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    finished_at: Mapped[datetime | None]


class ConsoleTestLogin(Base):
    """A login an administrator runs from the console to see every step (the test-login
    panel). Its browser returns to the console's loopback URL, whatever the whitelist says,
    and its report (the timeline) is kept here for the console to read."""

    __tablename__ = "sso_test_logins"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    ticket_hash: Mapped[str] = mapped_column(String(64), unique=True)  # the login link's one-time ticket
    auth_server_id: Mapped[int] = mapped_column(ForeignKey("auth_servers.id", ondelete="CASCADE"), index=True)
    created_by: Mapped[str] = mapped_column(String(150))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    code_challenge: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))  # ok | failed
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class OneTimeCode(Base):
    """The code a viewer exchanges once, at the token endpoint, for its first tokens."""

    __tablename__ = "sso_one_time_codes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the code
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    code_challenge: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class RefreshToken(Base):
    """Opaque, rotated on use; a second use of a used one revokes its session."""

    __tablename__ = "sso_refresh_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the token's public id
    secret_hash: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class Credential(Versioned, Base):
    __tablename__ = "credentials"

    kind: Mapped[str] = mapped_column(String(32))
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    imaging_server_id: Mapped[int | None] = mapped_column(
        ForeignKey("imaging_servers.id", ondelete="CASCADE"), index=True
    )
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]


class Share(Versioned, Base):
    __tablename__ = "shares"

    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))
    resources: Mapped[list[Any]] = mapped_column(JSON)
    imaging_server_id: Mapped[int | None] = mapped_column(
        ForeignKey("imaging_servers.id", ondelete="CASCADE"), index=True
    )
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    expires_at: Mapped[datetime | None]


class SigningKey(Base):
    __tablename__ = "signing_keys"
    # At most one active and one next key, whatever races the code may lose.
    __table_args__ = (
        Index(
            "uq_signing_keys_one_per_live_state",
            "state",
            unique=True,
            sqlite_where=text("state IN ('active', 'next')"),
            postgresql_where=text("state IN ('active', 'next')"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kid: Mapped[str] = mapped_column(String(64), unique=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    private_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]


class AuditEvent(Base):
    """Append-only (database triggers refuse UPDATE and DELETE) and hash-chained."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(150), index=True)
    actor_user_id: Mapped[int | None] = mapped_column(Integer)  # no FK: the user may be deleted later
    action: Mapped[str] = mapped_column(String(100), index=True)
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    target_label: Mapped[str | None] = mapped_column(String(200))
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    client_address: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class Meta(Base):
    """Small key/value facts about the installation (e.g. the encryption-key check)."""

    __tablename__ = "portico_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
