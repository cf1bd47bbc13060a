"""The description of every entity for the generic record service, and their own rules."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

from sqlalchemy import func, select, text

from server.contract.errors import Conflict, ErrorCode, FieldError, PermissionDenied, ValidationFailed
from server.domain.presets import PRESETS, fill, origin
from server.domain.vocabulary import (
    Action,
    CredentialKind,
    EntityType,
    ProviderPreset,
    ScopeKind,
    TokenPrefix,
    UserSource,
)
from server.services import secrets_tokens
from server.services.passwords import hash_password
from server.services.principal import NO_USER
from server.services.records import Dependent, EntitySpec, Reference, Values, WriteContext
from server.storage.tables import (
    AccessRule,
    AuditEvent,
    AuthServer,
    Credential,
    ExternalIdentity,
    Group,
    ImagingServer,
    Membership,
    Provider,
    Session,
    Share,
    SigningKey,
    User,
    UserPermission,
    utcnow,
)


def _common_sort(table: Any, *names: str) -> dict[str, Any]:
    return {name: getattr(table, name) for name in ("id", "created_at", "updated_at", *names)}


# ---------------------------------------------------------------- providers


def _provider_before_create(_ctx: WriteContext, _row: Any, values: Values) -> None:
    """Fill what the administrator left out from the preset; refuse what is still missing."""
    preset = PRESETS[ProviderPreset(values["preset"])]
    parameters: dict[str, str] = values.pop("parameters", None) or {}
    parameters["origin"] = origin(values["scheme"], values["hostname"], values.get("port"))
    missing: list[FieldError] = []
    # Without a JWKS URI and an issuer no ID token can be checked: every login would fail
    # after spending the IdP's code. Refuse such a provider when it requires ID tokens.
    needed = {"authorization_endpoint", "token_endpoint"} | ({"jwks_uri", "issuer"} if values.get("require_id_token", True) else set())
    for name, template in preset.endpoint_fields.items():
        if values.get(name) is not None:
            continue
        filled, unfilled = fill(template, parameters)
        if unfilled:
            already = {error.field for error in missing}
            if name in needed and f"parameters.{unfilled[0]}" not in already:
                missing.append(FieldError(
                    field=f"parameters.{unfilled[0]}",
                    message=f"the {preset.title} preset needs {', '.join(unfilled)} to build {name}; give it, or give the endpoint",
                ))
            continue  # optional endpoints stay empty until the administrator fills them
        values[name] = filled
    for name in ("authorization_endpoint", "token_endpoint"):
        if values.get(name) is None and not any(error.field.startswith("parameters.") for error in missing):
            missing.append(FieldError(field=name, message="required for a generic provider (or import it from a discovery URL)"))
    if missing:
        raise ValidationFailed("the provider is missing endpoints", fields=missing)
    if values.get("scopes") is None:
        values["scopes"] = list(preset.scopes)
    if values.get("login_classes") is None:
        values["login_classes"] = preset.login_classes
    if values.get("token_endpoint_auth_method") is None:
        values["token_endpoint_auth_method"] = preset.token_endpoint_auth_method.value
    if values.get("claim_mapping") is None:
        values["claim_mapping"] = dataclasses.asdict(preset.claim_mapping)


PROVIDERS: EntitySpec[Provider] = EntitySpec(
    entity=EntityType.PROVIDER,
    table=Provider,
    noun="OpenID provider",
    label=lambda row: row.name,
    search=(Provider.name, Provider.hostname, Provider.description),
    sort=_common_sort(Provider, "name", "preset", "hostname"),
    default_sort="name",
    filters={"preset": lambda value: Provider.preset == value},
    unique={"name": Provider.name},
    cascades=(Dependent("external identities", ExternalIdentity.provider_id),),
    blockers=(Dependent("auth servers", AuthServer.provider_id),),
    virtual=frozenset({"parameters"}),
    before_create=_provider_before_create,
)


# ---------------------------------------------------------------- auth servers


def _new_auth_server_token() -> str:
    return secrets.token_urlsafe(12)  # 16 url-safe characters


def _auth_server_before_create(ctx: WriteContext, _row: Any, values: Values) -> None:
    values["token"] = values.get("token") or _new_auth_server_token()
    has_default = ctx.session.scalar(select(AuthServer.id).where(AuthServer.is_default).limit(1)) is not None
    if not has_default:
        values["is_default"] = True  # the first auth server is the default one
    elif values.get("is_default"):
        _clear_default(ctx, AuthServer)


def _auth_server_before_update(ctx: WriteContext, row: AuthServer, values: Values) -> None:
    if values.get("is_default") is False and row.is_default:
        raise ValidationFailed.on_field(
            "is_default", "there must be one default auth server: make another one the default instead"
        )
    if values.get("is_default") and not row.is_default:
        _clear_default(ctx, AuthServer)


def _auth_server_before_delete(ctx: WriteContext, row: AuthServer) -> None:
    if row.is_default:
        successor = ctx.session.scalar(
            select(AuthServer).where(AuthServer.id != row.id).order_by(AuthServer.id).limit(1)
        )
        if successor is not None:
            # Two flushes: the one-default index must never see two defaults at once.
            row.is_default = False
            ctx.session.flush()
            successor.is_default = True
            ctx.session.flush()


def _clear_default(ctx: WriteContext, table: Any) -> None:
    # Through the ORM so each row's version moves on: a concurrent edit of it then conflicts.
    for other in ctx.session.scalars(select(table).where(table.is_default)):
        other.is_default = False
    ctx.session.flush()


AUTH_SERVERS: EntitySpec[AuthServer] = EntitySpec(
    entity=EntityType.AUTH_SERVER,
    table=AuthServer,
    noun="auth server",
    label=lambda row: f"{row.token} ({row.client_id})",
    search=(AuthServer.token, AuthServer.client_id, AuthServer.description),
    sort=_common_sort(AuthServer, "token", "client_id", "is_default"),
    filters={
        "provider_id": lambda value: AuthServer.provider_id == value,
        "is_default": lambda value: AuthServer.is_default == value,
    },
    unique={"token": AuthServer.token},
    references={"provider_id": Reference(Provider, "OpenID provider")},
    secrets={"client_secret": "client_secret_encrypted"},
    cascades=(Dependent("sessions (their auth server is cleared)", Session.auth_server_id),),
    before_create=_auth_server_before_create,
    before_update=_auth_server_before_update,
    before_delete=_auth_server_before_delete,
)


# ---------------------------------------------------------------- users


_PG_SUPERUSER_LOCK = 0x53555052  # "SUPR"


def active_superusers(session: Any, *, excluding: int | None = None) -> int:
    """Active superusers (but ``excluding``), counted under a lock: two transactions each
    demoting the other superuser must not both see one left (PostgreSQL reads do not block;
    SQLite's writers are serial anyway)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SUPERUSER_LOCK})
    statement = select(func.count()).select_from(User).where(User.is_superuser, User.is_active)
    if excluding is not None:
        statement = statement.where(User.id != excluding)
    return session.scalar(statement) or 0


_ROLE_FIELDS = ("is_superuser", "is_staff", "permissions")


def _user_guard(ctx: WriteContext, row: User | None, values: Values) -> None:
    """Only superusers grant roles or touch superusers and other staff: a staff member can
    neither raise themselves nor take over a colleague (e.g. by setting their password)."""
    if ctx.principal.is_superuser:
        return
    for name in _ROLE_FIELDS:
        if name in values and (row is None or values[name] != getattr(row, name)) and values[name]:
            raise PermissionDenied.on_field(name, "only a superuser may grant roles or permissions")
    if row is not None and row.is_superuser:
        raise PermissionDenied("only a superuser may change a superuser")
    if row is not None and row.is_staff and row.id != ctx.principal.user_id:
        raise PermissionDenied("only a superuser may change another staff member")


def guard_linked_user(ctx: WriteContext, user_id: int | None) -> None:
    """Linking an IdP identity to a user lets whoever controls it log in as that user."""
    if user_id is None or ctx.principal.is_superuser:
        return
    user = ctx.session.get(User, user_id)
    if user is not None and (user.is_superuser or (user.is_staff and user.id != ctx.principal.user_id)):
        raise PermissionDenied.on_field("user_id", "only a superuser may link an identity to a superuser or another staff member")


def _user_values(values: Values) -> None:
    if "username" in values and values["username"] is not None:
        values["username_key"] = values["username"].lower()
    if "password" in values:
        password = values.pop("password")
        values["password_hash"] = None if password is None else hash_password(password.get_secret_value())
    if "email" in values and values["email"] is not None:
        values["email"] = str(values["email"])


def _user_before_create(ctx: WriteContext, row: User | None, values: Values) -> None:
    _user_guard(ctx, None, values)
    _user_values(values)
    values["source"] = UserSource.DATABASE.value


def _user_before_update(ctx: WriteContext, row: User, values: Values) -> None:
    _user_guard(ctx, row, values)
    _user_values(values)
    loses_superuser = values.get("is_superuser") is False or values.get("is_active") is False
    if row.is_superuser and row.is_active and loses_superuser and active_superusers(ctx.session, excluding=row.id) == 0:
        field = "is_superuser" if values.get("is_superuser") is False else "is_active"
        raise Conflict(
            f"{row.username!r} is the last active superuser and cannot be demoted or deactivated",
            code=ErrorCode.LAST_SUPERUSER,
            fields=[FieldError(field=field, message="the last active superuser must stay an active superuser")],
        )


def _user_after_write(ctx: WriteContext, row: User, values: Values) -> None:
    if "permissions" not in values:
        return
    wanted = set(values["permissions"] or [])
    row.grants[:] = [grant for grant in row.grants if grant.permission in wanted]
    held = {grant.permission for grant in row.grants}
    row.grants.extend(UserPermission(permission=name) for name in sorted(wanted - held))
    if wanted != held:
        # A change of grants is a change of the user: bump its version too.
        row.updated_at = utcnow()


def _user_before_delete(ctx: WriteContext, row: User) -> None:
    _user_guard(ctx, row, {})
    if row.id == ctx.principal.user_id:
        raise Conflict("you cannot delete your own account", code=ErrorCode.IN_USE)
    if row.is_superuser and row.is_active and active_superusers(ctx.session, excluding=row.id) == 0:
        raise Conflict(
            f"{row.username!r} is the last active superuser and cannot be deleted", code=ErrorCode.LAST_SUPERUSER
        )


USERS: EntitySpec[User] = EntitySpec(
    entity=EntityType.USER,
    table=User,
    noun="user",
    label=lambda row: row.username,
    search=(User.username, User.email, User.first_name, User.last_name),
    sort=_common_sort(User, "username", "email", "first_name", "last_name", "last_login", "is_active"),
    default_sort="username",
    filters={
        "is_active": lambda value: User.is_active == value,
        "is_staff": lambda value: User.is_staff == value,
        "is_superuser": lambda value: User.is_superuser == value,
        "source": lambda value: User.source == value,
        "group_id": lambda value: User.id.in_(select(Membership.user_id).where(Membership.group_id == value)),
    },
    unique={"username": User.username_key},
    virtual=frozenset({"permissions"}),
    cascades=(
        Dependent("memberships", Membership.user_id),
        Dependent("sessions", Session.user_id),
        Dependent("credentials", Credential.user_id),
        Dependent("external identities", ExternalIdentity.user_id),
    ),
    before_create=_user_before_create,
    before_update=_user_before_update,
    after_write=_user_after_write,
    before_delete=_user_before_delete,
    snapshot_extra=lambda row: {"permissions": row.permissions},
)


# ---------------------------------------------------------------- external identities

EXTERNAL_IDENTITIES: EntitySpec[ExternalIdentity] = EntitySpec(
    entity=EntityType.EXTERNAL_IDENTITY,
    table=ExternalIdentity,
    noun="external identity",
    label=lambda row: row.subject,
    search=(ExternalIdentity.subject, ExternalIdentity.email),
    sort=_common_sort(ExternalIdentity, "subject", "email"),
    filters={
        "provider_id": lambda value: ExternalIdentity.provider_id == value,
        "user_id": lambda value: ExternalIdentity.user_id == value,
    },
    references={"provider_id": Reference(Provider, "OpenID provider"), "user_id": Reference(User, "user")},
    before_create=lambda ctx, row, values: _unique_identity(ctx, values),
    before_update=lambda ctx, row, values: _relink_identity(ctx, row, values),
    before_delete=lambda ctx, row: guard_linked_user(ctx, row.user_id),
)


def _relink_identity(ctx: WriteContext, row: ExternalIdentity, values: Values) -> None:
    guard_linked_user(ctx, row.user_id)
    guard_linked_user(ctx, values.get("user_id"))
    if values.get("email") is not None:
        values["email"] = str(values["email"])


def _unique_identity(ctx: WriteContext, values: Values) -> None:
    guard_linked_user(ctx, values.get("user_id"))
    taken = ctx.session.scalar(
        select(ExternalIdentity.id).where(
            ExternalIdentity.provider_id == values["provider_id"], ExternalIdentity.subject == values["subject"]
        )
    )
    if taken is not None:
        raise Conflict(
            "this provider's subject is already linked to a user",
            code=ErrorCode.DUPLICATE,
            fields=[FieldError(field="subject", message="already linked for this provider")],
        )
    if values.get("email") is not None:
        values["email"] = str(values["email"])


# ---------------------------------------------------------------- groups

GROUPS: EntitySpec[Group] = EntitySpec(
    entity=EntityType.GROUP,
    table=Group,
    noun="group",
    label=lambda row: row.name,
    search=(Group.name, Group.description, Group.idp_group_name),
    sort=_common_sort(Group, "name", "idp_group_name"),
    default_sort="name",
    filters={"user_id": lambda value: Group.id.in_(select(Membership.group_id).where(Membership.user_id == value))},
    unique={"name": Group.name},
    cascades=(Dependent("memberships", Membership.group_id), Dependent("access rules", AccessRule.group_id)),
)


# ---------------------------------------------------------------- memberships


def _membership_before_create(ctx: WriteContext, _row: Any, values: Values) -> None:
    taken = ctx.session.scalar(
        select(Membership.id).where(Membership.user_id == values["user_id"], Membership.group_id == values["group_id"])
    )
    if taken is not None:
        raise Conflict(
            "the user is already a member of this group",
            code=ErrorCode.DUPLICATE,
            fields=[FieldError(field="group_id", message="already a member")],
        )


MEMBERSHIPS: EntitySpec[Membership] = EntitySpec(
    entity=EntityType.MEMBERSHIP,
    table=Membership,
    noun="membership",
    label=lambda row: f"user {row.user_id} in group {row.group_id}",
    sort={"id": Membership.id, "created_at": Membership.created_at, "user_id": Membership.user_id, "group_id": Membership.group_id},
    filters={
        "user_id": lambda value: Membership.user_id == value,
        "group_id": lambda value: Membership.group_id == value,
    },
    references={"user_id": Reference(User, "user"), "group_id": Reference(Group, "group")},
    before_create=_membership_before_create,
)


# ---------------------------------------------------------------- imaging servers


def _imaging_server_default(ctx: WriteContext, row: ImagingServer | None, values: Values) -> None:
    if values.get("is_default") and (row is None or not row.is_default):
        _clear_default(ctx, ImagingServer)


_ADDRESS_FIELDS = ("scheme", "hostname", "port")


def _imaging_server_before_update(ctx: WriteContext, row: ImagingServer, values: Values) -> None:
    _imaging_server_default(ctx, row, values)
    moved = any(name in values and values[name] != getattr(row, name) for name in _ADDRESS_FIELDS)
    if moved and "rest_password_encrypted" not in values and row.rest_password_encrypted is not None:
        # The stored password was given for the old address: never send it to a new one.
        values["rest_password_encrypted"] = None


IMAGING_SERVERS: EntitySpec[ImagingServer] = EntitySpec(
    entity=EntityType.IMAGING_SERVER,
    table=ImagingServer,
    noun="imaging server",
    label=lambda row: row.name,
    search=(ImagingServer.name, ImagingServer.token, ImagingServer.hostname),
    sort=_common_sort(ImagingServer, "name", "token", "hostname", "is_active"),
    default_sort="name",
    filters={"is_active": lambda value: ImagingServer.is_active == value},
    unique={"token": ImagingServer.token, "name": ImagingServer.name},
    secrets={"rest_password": "rest_password_encrypted"},
    cascades=(
        Dependent("access rules", AccessRule.imaging_server_id),
        Dependent("plugin credentials", Credential.imaging_server_id),
        Dependent("shares", Share.imaging_server_id),
    ),
    before_create=_imaging_server_default,
    before_update=_imaging_server_before_update,
)


# ---------------------------------------------------------------- access rules


def _rule_scope_is_coherent(ctx: WriteContext, row: AccessRule, values: Values) -> None:
    scope = values.get("scope", row.scope)
    labels = values.get("labels", row.labels) or []
    selectors = values.get("selectors", row.selectors) or []
    if scope == ScopeKind.LABELS and not labels:
        raise ValidationFailed.on_field("labels", "scope 'labels' needs at least one label")
    if scope == ScopeKind.RESOURCES and not selectors:
        raise ValidationFailed.on_field("selectors", "scope 'resources' needs at least one selector")
    if scope != ScopeKind.LABELS and labels:
        raise ValidationFailed.on_field("labels", f"only allowed with scope 'labels', not {scope!r}")
    if scope != ScopeKind.RESOURCES and selectors:
        raise ValidationFailed.on_field("selectors", f"only allowed with scope 'resources', not {scope!r}")


ACCESS_RULES: EntitySpec[AccessRule] = EntitySpec(
    entity=EntityType.ACCESS_RULE,
    table=AccessRule,
    noun="access rule",
    label=lambda row: f"group {row.group_id} on imaging server {row.imaging_server_id}",
    search=(AccessRule.description,),
    sort=_common_sort(AccessRule, "group_id", "imaging_server_id", "scope", "validity", "expires_at"),
    filters={
        "group_id": lambda value: AccessRule.group_id == value,
        "imaging_server_id": lambda value: AccessRule.imaging_server_id == value,
        "scope": lambda value: AccessRule.scope == value,
    },
    references={"group_id": Reference(Group, "group"), "imaging_server_id": Reference(ImagingServer, "imaging server")},
    before_update=_rule_scope_is_coherent,
)


# ---------------------------------------------------------------- sessions (read and revoke only)

SESSIONS: EntitySpec[Session] = EntitySpec(
    entity=EntityType.SESSION,
    table=Session,
    noun="session",
    label=lambda row: f"{row.kind} session of user {row.user_id}",
    search=(Session.id, Session.client_address, Session.user_agent),
    sort={
        "created_at": Session.created_at,
        "last_seen_at": Session.last_seen_at,
        "expires_at": Session.expires_at,
        "user_id": Session.user_id,
    },
    default_sort="-created_at",
    filters={
        "user_id": lambda value: Session.user_id == value,
        "kind": lambda value: Session.kind == value,
        "active": lambda value: (Session.revoked_at.is_(None) & (Session.expires_at > utcnow()))
        if value
        else (Session.revoked_at.is_not(None) | (Session.expires_at <= utcnow())),
    },
)


# ---------------------------------------------------------------- credentials


def _credential_before_create(ctx: WriteContext, _row: Any, values: Values) -> None:
    if values["kind"] == CredentialKind.API_TOKEN:
        values["user_id"] = values.get("user_id") or ctx.principal.user_id
        if values["user_id"] == NO_USER:
            raise ValidationFailed.on_field("user_id", "an API token belongs to a user: name the user it is for "
                                            "(the console's local owner is not a user)")
        if values["user_id"] != ctx.principal.user_id and not ctx.principal.is_superuser:
            raise PermissionDenied.on_field("user_id", "only a superuser may create an API token for another user")
        prefix = TokenPrefix.API_TOKEN
    else:
        if values.get("user_id") is not None:
            raise ValidationFailed.on_field("user_id", "an orthanc-plugin credential has no owner user")
        # A plugin credential speaks for the imaging server (it can mint share links).
        if not ctx.principal.may(EntityType.IMAGING_SERVER, Action.CHANGE):
            raise PermissionDenied.on_field("kind", "creating an orthanc-plugin credential needs imaging-server.change")
        prefix = TokenPrefix.ORTHANC_PLUGIN
    issued = secrets_tokens.issue(prefix)
    values["public_id"] = f"{prefix.value}_{issued.public_id}"
    values["secret_hash"] = issued.secret_hash
    # An API token is presented whole; a plugin credential is Basic username + password.
    ctx.issued_secret = issued.token if prefix == TokenPrefix.API_TOKEN else issued.secret


CREDENTIALS: EntitySpec[Credential] = EntitySpec(
    entity=EntityType.CREDENTIAL,
    table=Credential,
    noun="credential",
    label=lambda row: row.public_id,
    search=(Credential.public_id, Credential.description),
    sort=_common_sort(Credential, "kind", "last_used_at", "expires_at"),
    default_sort="-created_at",
    filters={
        "kind": lambda value: Credential.kind == value,
        "user_id": lambda value: Credential.user_id == value,
        "imaging_server_id": lambda value: Credential.imaging_server_id == value,
    },
    references={"user_id": Reference(User, "user"), "imaging_server_id": Reference(ImagingServer, "imaging server")},
    before_create=_credential_before_create,
)


# ---------------------------------------------------------------- shares


def _share_before_create(ctx: WriteContext, _row: Any, values: Values) -> None:
    issued = secrets_tokens.issue(TokenPrefix.SHARE)
    values["public_id"] = issued.public_id
    values["secret_hash"] = issued.secret_hash
    # The console's local owner is no user: its shares have no creator.
    values["created_by_id"] = None if ctx.principal.user_id == NO_USER else ctx.principal.user_id
    ctx.issued_secret = issued.token


SHARES: EntitySpec[Share] = EntitySpec(
    entity=EntityType.SHARE,
    table=Share,
    noun="share",
    label=lambda row: f"{row.type} {row.public_id}",
    search=(Share.public_id, Share.type),
    sort=_common_sort(Share, "type", "expires_at"),
    default_sort="-created_at",
    filters={
        "type": lambda value: Share.type == value,
        "imaging_server_id": lambda value: Share.imaging_server_id == value,
    },
    references={"imaging_server_id": Reference(ImagingServer, "imaging server")},
    before_create=_share_before_create,
)


# ---------------------------------------------------------------- read-only


SIGNING_KEYS: EntitySpec[SigningKey] = EntitySpec(
    entity=EntityType.SIGNING_KEY,
    table=SigningKey,
    noun="signing key",
    label=lambda row: row.kid,
    search=(SigningKey.kid,),
    sort={"id": SigningKey.id, "created_at": SigningKey.created_at, "state": SigningKey.state},
    default_sort="-created_at",
    filters={"state": lambda value: SigningKey.state == value},
)


def _action_filter(value: str) -> Any:
    if value.endswith("."):
        return AuditEvent.action.startswith(value, autoescape=True)
    return AuditEvent.action == value


AUDIT_EVENTS: EntitySpec[AuditEvent] = EntitySpec(
    entity=EntityType.AUDIT_EVENT,
    table=AuditEvent,
    noun="audit event",
    label=lambda row: f"{row.action} #{row.id}",
    search=(AuditEvent.actor, AuditEvent.action, AuditEvent.target_label, AuditEvent.detail),
    sort={"id": AuditEvent.id, "at": AuditEvent.at, "actor": AuditEvent.actor, "action": AuditEvent.action},
    default_sort="-id",
    filters={
        "actor": lambda value: AuditEvent.actor == value,
        "action": _action_filter,
        "target_type": lambda value: AuditEvent.target_type == value,
        "target_id": lambda value: AuditEvent.target_id == value,
        "outcome": lambda value: AuditEvent.outcome == value,
        "since": lambda value: AuditEvent.at >= value,
        "until": lambda value: AuditEvent.at < value,
    },
)
