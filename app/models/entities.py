"""What each entity panel shows: columns, filters and the fields of its detail form.

Declarative and Qt-free: the generic panel (app.views.entity_panel) and form
(app.views.forms) are built from these descriptions, and validation as you type uses the
server's own request models (``server.contract.schemas``) through ``validate``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import pydantic
from pydantic import BaseModel

from app import client as api
from server.contract.schemas import ExplainRequest, SiteUpdate
from server.domain.vocabulary import (
    ALL_PERMISSIONS,
    AuditOutcome,
    Capability,
    CredentialKind,
    GroupSync,
    ProviderPreset,
    ScopeKind,
    SessionKind,
    SiteEnvironment,
    TokenEndpointAuthMethod,
    UserSource,
)


class Kind(Enum):
    TEXT = "text"
    MULTILINE = "multiline"
    SECRET = "secret"  # write-only: empty means "leave as it is"
    BOOL = "bool"
    INT = "int"
    CHOICE = "choice"
    LINES = "lines"  # a list of strings, one a line
    MULTI = "multi"  # a list of strings from a fixed set (check boxes)
    REFERENCE = "reference"  # the id of another record
    DATETIME = "datetime"
    JSON = "json"
    READONLY = "readonly"
    CHANGES = "changes"  # an audit event's field -> [old, new]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    label: str
    kind: Kind = Kind.TEXT
    choices: tuple[str, ...] = ()
    reference: str | None = None  # endpoint path of a REFERENCE
    optional: bool = False  # empty means null
    create_only: bool = False  # cannot be changed after creation
    placeholder: str = ""
    help: str = ""
    duplicate: Callable[[Any], Any] | None = None  # how "Duplicate" changes the value (None: copy)
    copy_on_duplicate: bool = True


@dataclass(frozen=True)
class Column:
    field: str
    title: str
    sort: str | None = None  # the server's sort key; None: not sortable
    reference: str | None = None  # show the referenced record's label instead of its id
    width: int = 0


@dataclass(frozen=True)
class FilterSpec:
    name: str  # the list query parameter
    label: str
    kind: str  # "bool" | "choice" | "reference" | "text" | "date"
    choices: tuple[str, ...] = ()
    reference: str | None = None


@dataclass(frozen=True)
class EntitySpec:
    key: str
    title: str
    noun: str
    icon: str
    endpoint: api.Endpoint[Any]
    columns: tuple[Column, ...]
    fields: tuple[FieldSpec, ...]
    label: Callable[[Any], str]
    filters: tuple[FilterSpec, ...] = ()
    creatable: bool = True
    editable: bool = True
    default_sort: str | None = None
    search_hint: str = "Search"
    references: tuple[str, ...] = ()

    @property
    def deletable(self) -> bool:
        return self.endpoint.deletable and self.creatable

    def field(self, name: str) -> FieldSpec:
        return next(item for item in self.fields if item.name == name)


def _values(enum: type[Enum]) -> tuple[str, ...]:
    return tuple(str(member.value) for member in enum)


def _copy_name(value: Any) -> Any:
    return f"{value} (copy)" if isinstance(value, str) and value else value


def _copy_token(value: Any) -> Any:
    return f"{value}-copy" if isinstance(value, str) and value else value


# Labels of records that others refer to, for reference columns, combos and confirmations.
LABELS: dict[str, Callable[[Any], str]] = {
    "providers": lambda r: r.name,
    "auth-servers": lambda r: f"{r.client_id} ({r.token})",
    "users": lambda r: r.username,
    "groups": lambda r: r.name,
    "imaging-servers": lambda r: r.name,
}

PROVIDERS = EntitySpec(
    key="providers",
    title="OpenID Providers",
    noun="OpenID provider",
    icon="provider",
    endpoint=api.PROVIDERS,
    label=LABELS["providers"],
    search_hint="Search providers by name or host",
    columns=(
        Column("name", "Name", "name", width=180),
        Column("preset", "Preset", "preset"),
        Column("hostname", "Host", "hostname", width=200),
        Column("issuer", "Issuer"),
        Column("updated_at", "Changed", "updated_at"),
    ),
    filters=(FilterSpec("preset", "Preset", "choice", _values(ProviderPreset)),),
    fields=(
        FieldSpec("name", "Name", duplicate=_copy_name),
        FieldSpec("preset", "Preset", Kind.CHOICE, _values(ProviderPreset)),
        FieldSpec("scheme", "Scheme", Kind.CHOICE, ("https", "http")),
        FieldSpec("hostname", "Host name", placeholder="cognito-idp.eu-west-1.amazonaws.com"),
        FieldSpec("port", "Port", Kind.INT, optional=True, placeholder="default for the scheme"),
        FieldSpec("description", "Description", Kind.MULTILINE),
        FieldSpec("authorization_endpoint", "Authorization endpoint", placeholder="/oauth2/authorize or https://..."),
        FieldSpec("token_endpoint", "Token endpoint", placeholder="/oauth2/token"),
        FieldSpec("revoke_endpoint", "Revoke endpoint", optional=True),
        FieldSpec("userinfo_endpoint", "Userinfo endpoint", optional=True),
        FieldSpec("jwks_uri", "JWKS URI", optional=True),
        FieldSpec("issuer", "Issuer", optional=True),
        FieldSpec("scopes", "Scopes", Kind.LINES, help="one scope a line"),
        FieldSpec("login_classes", "Login button classes"),
        FieldSpec("use_state", "Send state", Kind.BOOL),
        FieldSpec("use_nonce", "Send nonce", Kind.BOOL),
        FieldSpec("use_pkce", "Use PKCE (S256)", Kind.BOOL),
        FieldSpec("require_id_token", "Require an ID token", Kind.BOOL),
        FieldSpec("token_endpoint_auth_method", "Token endpoint authentication", Kind.CHOICE, _values(TokenEndpointAuthMethod)),
        FieldSpec("claim_mapping", "Claim mapping (JMESPath)", Kind.JSON, optional=True, help="username, email, first_name, last_name, groups"),
    ),
)

AUTH_SERVERS = EntitySpec(
    key="auth-servers",
    title="Auth Servers",
    noun="auth server",
    icon="auth-server",
    endpoint=api.AUTH_SERVERS,
    label=LABELS["auth-servers"],
    search_hint="Search auth servers by token, client id or description",
    references=("providers",),
    columns=(
        Column("token", "Token", "token", width=170),
        Column("provider_id", "Provider", reference="providers", width=160),
        Column("client_id", "Client id", "client_id", width=200),
        Column("is_default", "Default", "is_default"),
        Column("group_sync", "Group sync"),
        Column("description", "Description"),
    ),
    filters=(FilterSpec("provider_id", "Provider", "reference", reference="providers"), FilterSpec("is_default", "Default", "bool")),
    fields=(
        FieldSpec("token", "Token (public id)", optional=True, create_only=True, placeholder="generated when empty", copy_on_duplicate=False),
        FieldSpec("provider_id", "Provider", Kind.REFERENCE, reference="providers"),
        FieldSpec("client_id", "Client id"),
        FieldSpec("client_secret", "Client secret", Kind.SECRET, optional=True, help="write-only; empty keeps the current one"),
        FieldSpec("description", "Description", Kind.MULTILINE),
        FieldSpec("is_default", "Default auth server", Kind.BOOL, copy_on_duplicate=False),
        FieldSpec("redirect_urls", "Redirect URL whitelist", Kind.LINES, help="one absolute URL a line, matched exactly"),
        FieldSpec("accept_idp_tokens", "Accept IdP tokens at introspection", Kind.BOOL),
        FieldSpec("group_sync", "Group sync", Kind.CHOICE, _values(GroupSync)),
    ),
)

USERS = EntitySpec(
    key="users",
    title="Users",
    noun="user",
    icon="user",
    endpoint=api.USERS,
    label=LABELS["users"],
    search_hint="Search users by name or email",
    columns=(
        Column("username", "Username", "username", width=160),
        Column("email", "Email", "email", width=220),
        Column("first_name", "First name", "first_name"),
        Column("last_name", "Last name", "last_name"),
        Column("is_active", "Active", "is_active"),
        Column("is_staff", "Staff"),
        Column("is_superuser", "Superuser"),
        Column("source", "Source"),
        Column("last_login", "Last login", "last_login"),
    ),
    filters=(
        FilterSpec("group_id", "Group", "reference", reference="groups"),
        FilterSpec("is_active", "Active", "bool"),
        FilterSpec("is_staff", "Staff", "bool"),
        FilterSpec("is_superuser", "Superuser", "bool"),
        FilterSpec("source", "Source", "choice", _values(UserSource)),
    ),
    fields=(
        FieldSpec("username", "Username", duplicate=_copy_token, help="letters, digits and _ . @ + - (no spaces)"),
        FieldSpec("email", "Email", optional=True, copy_on_duplicate=False),
        FieldSpec("first_name", "First name"),
        FieldSpec("last_name", "Last name"),
        FieldSpec("is_active", "Active", Kind.BOOL),
        FieldSpec("is_staff", "Staff (may use the console)", Kind.BOOL),
        FieldSpec("is_superuser", "Superuser (may do everything)", Kind.BOOL),
        FieldSpec("password", "Password", Kind.SECRET, optional=True, help="at least 8 characters; empty keeps the current one", copy_on_duplicate=False),
        FieldSpec("permissions", "Staff permissions", Kind.MULTI, tuple(sorted(ALL_PERMISSIONS))),
    ),
)

GROUPS = EntitySpec(
    key="groups",
    title="Groups",
    noun="group",
    icon="group",
    endpoint=api.GROUPS,
    label=LABELS["groups"],
    search_hint="Search groups by name",
    columns=(
        Column("name", "Name", "name", width=200),
        Column("idp_group_name", "IdP group", "idp_group_name", width=200),
        Column("description", "Description"),
        Column("updated_at", "Changed", "updated_at"),
    ),
    filters=(FilterSpec("user_id", "Member", "reference", reference="users"),),
    fields=(
        FieldSpec("name", "Name", duplicate=_copy_name),
        FieldSpec("description", "Description", Kind.MULTILINE),
        FieldSpec("idp_group_name", "IdP group name", optional=True, help="the group name in the identity provider, for group sync", copy_on_duplicate=False),
    ),
)

IMAGING_SERVERS = EntitySpec(
    key="imaging-servers",
    title="Imaging Servers",
    noun="imaging server",
    icon="imaging-server",
    endpoint=api.IMAGING_SERVERS,
    label=LABELS["imaging-servers"],
    search_hint="Search imaging servers by name, token or host",
    columns=(
        Column("name", "Name", "name", width=160),
        Column("token", "Token (server-id)", "token", width=150),
        Column("hostname", "Host", "hostname", width=180),
        Column("port", "Port"),
        Column("is_active", "Active", "is_active"),
        Column("is_default", "Default"),
    ),
    filters=(FilterSpec("is_active", "Active", "bool"),),
    fields=(
        FieldSpec("name", "Name", duplicate=_copy_name),
        FieldSpec("token", "Token (server-id Orthanc sends)", duplicate=_copy_token),
        FieldSpec("scheme", "Scheme", Kind.CHOICE, ("https", "http")),
        FieldSpec("hostname", "Host name"),
        FieldSpec("port", "Port", Kind.INT, optional=True),
        FieldSpec("dicomweb_root", "DICOMweb root"),
        FieldSpec("viewer_url", "Viewer URL", optional=True),
        FieldSpec("is_active", "Active", Kind.BOOL),
        FieldSpec("is_default", "Default", Kind.BOOL, copy_on_duplicate=False),
        FieldSpec("rest_username", "REST username", optional=True),
        FieldSpec("rest_password", "REST password", Kind.SECRET, optional=True, help="write-only; empty keeps the current one"),
        FieldSpec("permission_table", "Permission table (JSON)", Kind.JSON, optional=True, help="empty: the plugin's default table"),
    ),
)

ACCESS_RULES = EntitySpec(
    key="access-rules",
    title="Access Rules",
    noun="access rule",
    icon="access-rule",
    endpoint=api.ACCESS_RULES,
    label=lambda r: f"rule {r.id}",
    search_hint="Search access rules by description",
    references=("groups", "imaging-servers"),
    columns=(
        Column("group_id", "Group", "group_id", reference="groups", width=160),
        Column("imaging_server_id", "Imaging server", "imaging_server_id", reference="imaging-servers", width=160),
        Column("scope", "Scope", "scope"),
        Column("capabilities", "Capabilities", width=260),
        Column("validity", "Validity (s)", "validity"),
        Column("expires_at", "Expires", "expires_at"),
        Column("description", "Description"),
    ),
    filters=(
        FilterSpec("group_id", "Group", "reference", reference="groups"),
        FilterSpec("imaging_server_id", "Imaging server", "reference", reference="imaging-servers"),
        FilterSpec("scope", "Scope", "choice", _values(ScopeKind)),
    ),
    fields=(
        FieldSpec("group_id", "Group", Kind.REFERENCE, reference="groups"),
        FieldSpec("imaging_server_id", "Imaging server", Kind.REFERENCE, reference="imaging-servers"),
        FieldSpec("scope", "Scope", Kind.CHOICE, _values(ScopeKind)),
        FieldSpec("labels", "Labels", Kind.LINES, help="for scope 'labels': one label a line"),
        FieldSpec("selectors", "Selectors (JSON)", Kind.JSON, optional=True, help='for scope \'resources\': [{"kind": "patient-id", "value": "..."}]'),
        FieldSpec("capabilities", "Capabilities", Kind.MULTI, _values(Capability)),
        FieldSpec("validity", "Validity (s)", Kind.INT, help="how long Orthanc may cache the answer"),
        FieldSpec("expires_at", "Expires at", Kind.DATETIME, optional=True, placeholder="2027-01-31T23:59:00Z"),
        FieldSpec("description", "Description", Kind.MULTILINE),
    ),
)

SESSIONS = EntitySpec(
    key="sessions",
    title="Sessions",
    noun="session",
    icon="session",
    endpoint=api.SESSIONS,
    label=lambda r: f"{r.kind.value} session {r.id}",
    creatable=False,
    editable=False,
    search_hint="Search sessions by id, address or browser",
    references=("users",),
    columns=(
        Column("user_id", "User", "user_id", reference="users", width=140),
        Column("kind", "Kind"),
        Column("active", "Active"),
        Column("created_at", "Created", "created_at"),
        Column("last_seen_at", "Last seen", "last_seen_at"),
        Column("expires_at", "Expires", "expires_at"),
        Column("client_address", "Address"),
        Column("revoked_reason", "Revoked because"),
    ),
    filters=(
        FilterSpec("user_id", "User", "reference", reference="users"),
        FilterSpec("kind", "Kind", "choice", _values(SessionKind)),
        FilterSpec("active", "Active", "bool"),
    ),
    fields=(
        FieldSpec("id", "Session id", Kind.READONLY),
        FieldSpec("user_id", "User", Kind.READONLY),
        FieldSpec("kind", "Kind", Kind.READONLY),
        FieldSpec("created_at", "Created", Kind.READONLY),
        FieldSpec("last_seen_at", "Last seen", Kind.READONLY),
        FieldSpec("expires_at", "Expires", Kind.READONLY),
        FieldSpec("revoked_at", "Revoked at", Kind.READONLY),
        FieldSpec("revoked_reason", "Revoked because", Kind.READONLY),
        FieldSpec("client_address", "Client address", Kind.READONLY),
        FieldSpec("user_agent", "Browser", Kind.READONLY),
    ),
)

CREDENTIALS = EntitySpec(
    key="credentials",
    title="Credentials",
    noun="credential",
    icon="credential",
    endpoint=api.CREDENTIALS,
    label=lambda r: r.public_id,
    search_hint="Search credentials by public id or description",
    references=("users", "imaging-servers"),
    columns=(
        Column("public_id", "Public id", width=200),
        Column("kind", "Kind", "kind"),
        Column("user_id", "Owner", reference="users"),
        Column("imaging_server_id", "Imaging server", reference="imaging-servers"),
        Column("description", "Description", width=200),
        Column("last_used_at", "Last used", "last_used_at"),
        Column("expires_at", "Expires", "expires_at"),
    ),
    filters=(
        FilterSpec("kind", "Kind", "choice", _values(CredentialKind)),
        FilterSpec("imaging_server_id", "Imaging server", "reference", reference="imaging-servers"),
    ),
    fields=(
        FieldSpec("kind", "Kind", Kind.CHOICE, _values(CredentialKind), create_only=True),
        FieldSpec("user_id", "Owner (API token)", Kind.REFERENCE, reference="users", optional=True, create_only=True),
        FieldSpec("imaging_server_id", "Imaging server (plugin credential)", Kind.REFERENCE, reference="imaging-servers", optional=True, create_only=True),
        FieldSpec("description", "Description", Kind.MULTILINE),
        FieldSpec("expires_at", "Expires at", Kind.DATETIME, optional=True, placeholder="2027-01-31T23:59:00Z"),
    ),
)

AUDIT_EVENTS = EntitySpec(
    key="audit-events",
    title="Audit Log",
    noun="audit event",
    icon="audit",
    endpoint=api.AUDIT_EVENTS,
    label=lambda r: f"{r.action} #{r.id}",
    creatable=False,
    editable=False,
    search_hint="Search the audit log (action, actor, target)",
    columns=(
        Column("at", "When", "at", width=150),
        Column("actor", "Actor", "actor", width=140),
        Column("action", "Action", "action", width=150),
        Column("target_type", "Target type"),
        Column("target_label", "Target", width=160),
        Column("outcome", "Outcome"),
        Column("detail", "Detail"),
        Column("client_address", "Address"),
    ),
    filters=(
        FilterSpec("actor", "Actor", "text"),
        FilterSpec("action", "Action", "text"),
        FilterSpec("outcome", "Outcome", "choice", _values(AuditOutcome)),
        FilterSpec("since", "Since", "date"),
        FilterSpec("until", "Until", "date"),
    ),
    fields=(
        FieldSpec("at", "When", Kind.READONLY),
        FieldSpec("actor", "Actor", Kind.READONLY),
        FieldSpec("action", "Action", Kind.READONLY),
        FieldSpec("target_type", "Target type", Kind.READONLY),
        FieldSpec("target_id", "Target id", Kind.READONLY),
        FieldSpec("target_label", "Target", Kind.READONLY),
        FieldSpec("outcome", "Outcome", Kind.READONLY),
        FieldSpec("detail", "Detail", Kind.READONLY),
        FieldSpec("client_address", "Client address", Kind.READONLY),
        FieldSpec("changes", "Changes (old → new)", Kind.CHANGES),
        FieldSpec("hash", "Hash", Kind.READONLY),
    ),
)

PANELS: tuple[EntitySpec, ...] = (
    PROVIDERS, AUTH_SERVERS, USERS, GROUPS, IMAGING_SERVERS, ACCESS_RULES, SESSIONS, CREDENTIALS, AUDIT_EVENTS,
)
BY_KEY: dict[str, EntitySpec] = {spec.key: spec for spec in PANELS}

SITE_UPDATE = SiteUpdate
EXPLAIN_REQUEST = ExplainRequest
SITE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("production_url", "Production URL", placeholder="https://portico.hospital.example"),
    FieldSpec("development_url", "Development URL", placeholder="http://localhost:8000"),
    FieldSpec("environment", "Environment in force", Kind.CHOICE, _values(SiteEnvironment)),
    FieldSpec("base_url", "Base URL in force", Kind.READONLY),
)


# ---------------------------------------------------------------- values and validation


def plain(value: Any) -> Any:
    """A record's value as the form holds it (JSON-like)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def display(value: Any) -> str:
    """A value as one line of a table cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "✓" if value else ""
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M")
    if isinstance(value, list):
        return ", ".join(display(item) for item in value)
    if isinstance(value, BaseModel):
        return json.dumps(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def record_values(spec_fields: tuple[FieldSpec, ...], record: BaseModel) -> dict[str, Any]:
    return {item.name: plain(getattr(record, item.name, None)) for item in spec_fields}


def duplicate_values(spec: EntitySpec, record: BaseModel) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in spec.fields:
        if item.kind in (Kind.SECRET, Kind.READONLY, Kind.CHANGES) or not item.copy_on_duplicate:
            continue
        value = plain(getattr(record, item.name, None))
        values[item.name] = item.duplicate(value) if item.duplicate is not None else value
    return values


_NAMED = re.compile(r"^(?P<field>[a-z_][a-z0-9_.]*): (?P<message>.+)$", re.DOTALL)


def _field_errors(error: pydantic.ValidationError, known: set[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in error.errors():
        location = [str(part) for part in item.get("loc", ())]
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        name = location[0] if location else ""
        named = _NAMED.match(message)
        if not location and named:  # a whole-model check names its field (see the contract)
            name, message = named["field"].split(".")[0], named["message"]
        if item.get("type") == "missing":
            message = "required"
        elif item.get("type") == "string_pattern_mismatch":
            message = "has characters that are not allowed here"
        if name not in known:
            name = "" if not name else name
        found.setdefault(name, message)
    return found


def changed_values(fields: tuple[FieldSpec, ...], original: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields whose value differs from the record as read (secrets: when given)."""
    changed: dict[str, Any] = {}
    for item in fields:
        if item.name not in values or item.kind in (Kind.READONLY, Kind.CHANGES) or item.create_only:
            continue
        value = values[item.name]
        if item.kind == Kind.SECRET:
            if value:
                changed[item.name] = value
            continue
        if value != original.get(item.name):
            changed[item.name] = value
    return changed


def creation_body(fields: tuple[FieldSpec, ...], values: Mapping[str, Any]) -> dict[str, Any]:
    """What a create sends: optional fields left empty are left out (server defaults)."""
    body: dict[str, Any] = {}
    for item in fields:
        if item.name not in values or item.kind in (Kind.READONLY, Kind.CHANGES):
            continue
        value = values[item.name]
        if value is None or (item.kind == Kind.SECRET and not value):
            continue
        body[item.name] = value
    return body


def validate(model: type[BaseModel] | None, fields: tuple[FieldSpec, ...], body: Mapping[str, Any]) -> dict[str, str]:
    """Field -> message, by the server's own request model ('' for a whole-record problem)."""
    if model is None:
        return {}
    try:
        model.model_validate(dict(body))
    except pydantic.ValidationError as error:
        return _field_errors(error, {item.name for item in fields})
    return {}
