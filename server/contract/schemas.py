"""Request and response models of the admin API, one group per entity.

Conventions that hold for every entity:

- ``XCreate`` is the body of ``POST /api/v1/x``; unknown fields are refused.
- ``XUpdate`` is the body of ``PATCH /api/v1/x/{id}``: every field optional except
  ``version``, the version the client last read. A stale version is refused with 409.
- ``XRead`` is what the API returns. Secrets never appear in it: a write-only secret is
  reported only as ``<name>_set: bool``.
- ``XListQuery`` holds the query parameters of ``GET /api/v1/x``: search text ``q``,
  ``sort`` (comma-separated fields, ``-`` for descending), ``offset``, ``limit`` and the
  entity's filters. Unknown parameters are refused, so a typo never silently widens a list.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import jmespath
import jmespath.exceptions
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from server.contract.errors import FieldError
from server.domain.vocabulary import (
    ALL_PERMISSIONS,
    AuditOutcome,
    Capability,
    CredentialKind,
    GroupSync,
    ProviderPreset,
    ScopeKind,
    SelectorKind,
    SessionKind,
    SigningKeyState,
    SiteEnvironment,
    TokenEndpointAuthMethod,
    UserSource,
)

# ---------------------------------------------------------------- shared field types

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Description = Annotated[str, StringConstraints(max_length=2000)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=150)]
Hostname = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=253,
        pattern=r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$|^\[[0-9A-Fa-f:.]+\]$",
    ),
]
Port = Annotated[int, Field(ge=1, le=65535)]
Scheme = Literal["https", "http"]
Username = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=150, pattern=r"^[A-Za-z0-9_.@+-]+$")
]
def _password(value: SecretStr) -> SecretStr:
    length = len(value.get_secret_value())
    if length < 8:
        raise ValueError(f"must be at least 8 characters long (it has {length})")
    if length > 1024:
        raise ValueError("must be at most 1024 characters long")
    return value


Password = Annotated[SecretStr, AfterValidator(_password)]
ServerToken = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
]
Label = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
]
Validity = Annotated[int, Field(ge=0, le=86400, description="Seconds Orthanc may cache the answer.")]
# Record ids: positive and within a 32-bit column on every database.
MAX_ID = 2**31 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


def _absolute_http_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/?#]+(?:[/?#][^\s]*)?$", value):
        raise ValueError("must be an absolute http:// or https:// URL without spaces")
    return value


def _endpoint(value: str) -> str:
    if value.startswith("/"):
        if re.search(r"\s", value):
            raise ValueError("must not contain spaces")
        return value
    return _absolute_http_url(value)


AbsoluteUrl = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000), AfterValidator(_absolute_http_url)]
Endpoint = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=2000),
    AfterValidator(_endpoint),
]


def _jmespath(value: str) -> str:
    try:
        jmespath.compile(value)
    except jmespath.exceptions.JMESPathError as error:
        # The parser's own message says where the expression went wrong.
        raise ValueError(f"not a valid JMESPath expression: {error}") from None
    return value


JmesPath = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), AfterValidator(_jmespath)]


def _permission(value: str) -> str:
    if value not in ALL_PERMISSIONS:
        raise ValueError(f"unknown permission {value!r}; expected '<entity>.<view|add|change|delete>'")
    return value


PermissionName = Annotated[str, AfterValidator(_permission)]


def _nul_path(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _nul_path(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


class Strict(BaseModel):
    """Base of every request body and query: unknown fields are an error, not silently
    dropped, and no text may hold a NUL character (PostgreSQL cannot store one, SQLite
    would cut a search at it)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, data: Any) -> Any:
        where = _nul_path(data, "")
        if where:
            raise ValueError(f"{where}: must not contain NUL (\\x00) characters")
        return data


class Record(BaseModel):
    """Base of every response record."""

    model_config = ConfigDict(from_attributes=True)


class Versioned(Record):
    id: int
    version: int
    created_at: datetime
    updated_at: datetime


class UpdateBase(Strict):
    version: int = Field(ge=1, description="The record's version as last read; a stale one is refused with 409.")


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int


class ListQuery(Strict):
    q: Annotated[str | None, Field(max_length=200, description="Search text (case-insensitive substring).")] = None
    sort: Annotated[str | None, Field(max_length=200, description="Fields, comma-separated; '-' for descending.")] = None
    offset: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    limit: Annotated[int, Field(ge=1, le=500)] = 50


# ---------------------------------------------------------------- OpenID providers


class ClaimMapping(Strict):
    """JMESPath expressions over the ID-token claims merged with userinfo."""

    username: JmesPath = "preferred_username || username || sub"
    email: JmesPath = "email"
    first_name: JmesPath = "given_name"
    last_name: JmesPath = "family_name"
    groups: JmesPath = "groups"


Scope = Annotated[str, StringConstraints(pattern=r"^[\x21\x23-\x5B\x5D-\x7E]{1,100}$")]
PresetParameter = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^/?#\s]+$")]


class ProviderCreate(Strict):
    """A new provider. Fields left out (or null) take the preset's defaults; endpoints with
    placeholders (a Keycloak realm, an Entra tenant, a Cognito pool) are filled from
    ``parameters``."""

    name: Name
    preset: ProviderPreset = ProviderPreset.GENERIC
    scheme: Scheme = "https"
    hostname: Hostname
    port: Port | None = None
    description: Description = ""
    parameters: dict[Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,40}$")], PresetParameter] = Field(
        default_factory=dict, max_length=10, description="Values for the preset's placeholders, e.g. {\"realm\": \"hospital\"}."
    )
    authorization_endpoint: Endpoint | None = None
    token_endpoint: Endpoint | None = None
    revoke_endpoint: Endpoint | None = None
    userinfo_endpoint: Endpoint | None = None
    jwks_uri: Endpoint | None = None
    issuer: Annotated[str, StringConstraints(max_length=2000)] | None = None
    scopes: list[Scope] | None = Field(None, max_length=30)
    login_classes: Annotated[str, StringConstraints(max_length=200)] | None = None
    use_state: bool = True
    use_nonce: bool = True
    use_pkce: bool = True
    require_id_token: bool = True
    token_endpoint_auth_method: TokenEndpointAuthMethod | None = None
    claim_mapping: ClaimMapping | None = None


class ProviderUpdate(UpdateBase):
    name: Name | None = None
    preset: ProviderPreset | None = None
    scheme: Scheme | None = None
    hostname: Hostname | None = None
    port: Port | None = None
    description: Description | None = None
    authorization_endpoint: Endpoint | None = None
    token_endpoint: Endpoint | None = None
    revoke_endpoint: Endpoint | None = None
    userinfo_endpoint: Endpoint | None = None
    jwks_uri: Endpoint | None = None
    issuer: Annotated[str, StringConstraints(max_length=2000)] | None = None
    scopes: list[Scope] | None = Field(None, max_length=30)
    login_classes: Annotated[str, StringConstraints(max_length=200)] | None = None
    use_state: bool | None = None
    use_nonce: bool | None = None
    use_pkce: bool | None = None
    require_id_token: bool | None = None
    token_endpoint_auth_method: TokenEndpointAuthMethod | None = None
    claim_mapping: ClaimMapping | None = None


class ProviderRead(Versioned):
    name: str
    preset: ProviderPreset
    scheme: str
    hostname: str
    port: int | None
    description: str
    authorization_endpoint: str
    token_endpoint: str
    revoke_endpoint: str | None
    userinfo_endpoint: str | None
    jwks_uri: str | None
    issuer: str | None
    scopes: list[str]
    login_classes: str
    use_state: bool
    use_nonce: bool
    use_pkce: bool
    require_id_token: bool
    token_endpoint_auth_method: TokenEndpointAuthMethod
    claim_mapping: ClaimMapping


class ProviderListQuery(ListQuery):
    preset: ProviderPreset | None = None


# ---------------------------------------------------------------- auth servers

AuthServerToken = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{16}$")]


class AuthServerCreate(Strict):
    token: AuthServerToken | None = Field(None, description="Public id; generated when omitted.")
    provider_id: Id
    description: Description = ""
    client_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
    client_secret: Annotated[SecretStr, Field(max_length=1024)] | None = None
    is_default: bool = False
    redirect_urls: list[AbsoluteUrl] = Field(default_factory=list, max_length=100)
    accept_idp_tokens: bool = False
    group_sync: GroupSync = GroupSync.OFF


class AuthServerUpdate(UpdateBase):
    provider_id: Id | None = None
    description: Description | None = None
    client_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)] | None = None
    client_secret: Annotated[SecretStr, Field(max_length=1024)] | None = None
    is_default: bool | None = None
    redirect_urls: list[AbsoluteUrl] | None = None
    accept_idp_tokens: bool | None = None
    group_sync: GroupSync | None = None


class AuthServerRead(Versioned):
    token: str
    provider_id: Id
    description: str
    client_id: str
    client_secret_set: bool
    is_default: bool
    redirect_urls: list[str]
    accept_idp_tokens: bool
    group_sync: GroupSync


class AuthServerListQuery(ListQuery):
    provider_id: Id | None = None
    is_default: bool | None = None


# ---------------------------------------------------------------- site


class SiteUpdate(UpdateBase):
    production_url: AbsoluteUrl | None = None
    development_url: AbsoluteUrl | None = None
    environment: SiteEnvironment | None = None


class SiteRead(Record):
    version: int
    production_url: str
    development_url: str
    environment: SiteEnvironment
    base_url: str = Field(description="The URL in force for the current environment.")
    updated_at: datetime


# ---------------------------------------------------------------- users


class UserCreate(Strict):
    username: Username
    email: EmailStr | None = None
    first_name: ShortText = ""
    last_name: ShortText = ""
    is_active: bool = True
    is_staff: bool = False
    is_superuser: bool = False
    password: Password | None = None
    permissions: list[PermissionName] = Field(default_factory=list, max_length=100)


class UserUpdate(UpdateBase):
    username: Username | None = None
    email: EmailStr | None = None
    first_name: ShortText | None = None
    last_name: ShortText | None = None
    is_active: bool | None = None
    is_staff: bool | None = None
    is_superuser: bool | None = None
    password: Password | None = None
    permissions: list[PermissionName] | None = None


class UserRead(Versioned):
    username: str
    email: str | None
    first_name: str
    last_name: str
    is_active: bool
    is_staff: bool
    is_superuser: bool
    source: UserSource
    has_password: bool
    permissions: list[str]
    last_login: datetime | None


class UserListQuery(ListQuery):
    is_active: bool | None = None
    is_staff: bool | None = None
    is_superuser: bool | None = None
    source: UserSource | None = None
    group_id: Id | None = Field(None, description="Only members of this group.")


# ---------------------------------------------------------------- external identities


class ExternalIdentityCreate(Strict):
    provider_id: Id
    subject: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    user_id: Id
    email: EmailStr | None = None


class ExternalIdentityUpdate(UpdateBase):
    user_id: Id | None = None
    email: EmailStr | None = None


class ExternalIdentityRead(Versioned):
    provider_id: Id
    subject: str
    user_id: Id
    email: str | None


class ExternalIdentityListQuery(ListQuery):
    provider_id: Id | None = None
    user_id: Id | None = None


# ---------------------------------------------------------------- groups


class GroupCreate(Strict):
    name: Name
    description: Description = ""
    idp_group_name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)] | None = None


class GroupUpdate(UpdateBase):
    name: Name | None = None
    description: Description | None = None
    idp_group_name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)] | None = None


class GroupRead(Versioned):
    name: str
    description: str
    idp_group_name: str | None


class GroupListQuery(ListQuery):
    user_id: Id | None = Field(None, description="Only groups this user belongs to.")


# ---------------------------------------------------------------- memberships


class MembershipCreate(Strict):
    user_id: Id
    group_id: Id


class MembershipRead(Record):
    id: int
    version: int
    user_id: Id
    group_id: Id
    created_at: datetime


class MembershipListQuery(ListQuery):
    user_id: Id | None = None
    group_id: Id | None = None


class MemberIds(Strict):
    user_ids: list[Id] = Field(min_length=1, max_length=10_000)


class GroupIds(Strict):
    group_ids: list[Id] = Field(min_length=1, max_length=10_000)


class MembershipChange(BaseModel):
    changed: int = Field(description="Memberships added or removed.")
    unchanged: int = Field(description="Already in (or already out of) the requested state.")


# ---------------------------------------------------------------- imaging servers


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as error:
        raise ValueError(f"not a valid regular expression: {error}") from None
    return value


class PermissionRow(Strict):
    """One row of an imaging server's permission table: first match wins."""

    method: Literal["get", "post", "put", "delete"]
    pattern: Annotated[str, StringConstraints(min_length=1, max_length=500), AfterValidator(_regex)]
    capabilities: list[Capability] = Field(default_factory=list, description="Any one of them suffices; empty: no permission needed.")


PermissionTable = Annotated[list[PermissionRow], Field(max_length=500)]


class ImagingServerCreate(Strict):
    token: ServerToken = Field(description="The WebServiceIdentifier (server-id) Orthanc sends.")
    name: Name
    scheme: Scheme = "https"
    hostname: Hostname
    port: Port | None = None
    dicomweb_root: Annotated[str, StringConstraints(max_length=200, pattern=r"^/[^\s]*$")] = "/dicom-web/"
    viewer_url: AbsoluteUrl | None = None
    is_active: bool = True
    is_default: bool = False
    rest_username: Annotated[str, StringConstraints(max_length=255)] | None = None
    rest_password: Annotated[SecretStr, Field(max_length=1024)] | None = None
    permission_table: PermissionTable | None = Field(None, description="null: the plugin's default table")


class ImagingServerUpdate(UpdateBase):
    token: ServerToken | None = None
    name: Name | None = None
    scheme: Scheme | None = None
    hostname: Hostname | None = None
    port: Port | None = None
    dicomweb_root: Annotated[str, StringConstraints(max_length=200, pattern=r"^/[^\s]*$")] | None = None
    viewer_url: AbsoluteUrl | None = None
    is_active: bool | None = None
    is_default: bool | None = None
    rest_username: Annotated[str, StringConstraints(max_length=255)] | None = None
    rest_password: Annotated[SecretStr, Field(max_length=1024)] | None = None
    permission_table: PermissionTable | None = None


class ImagingServerRead(Versioned):
    token: str
    name: str
    scheme: str
    hostname: str
    port: int | None
    dicomweb_root: str
    viewer_url: str | None
    is_active: bool
    is_default: bool
    rest_username: str | None
    rest_password_set: bool
    permission_table: list[PermissionRow] | None


class ImagingServerListQuery(ListQuery):
    is_active: bool | None = None


# ---------------------------------------------------------------- access rules


class Selector(Strict):
    kind: SelectorKind
    value: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")]


class AccessRuleScope(Strict):
    @model_validator(mode="after")
    def _scope_matches_its_values(self) -> Any:
        scope = getattr(self, "scope", None)
        labels = getattr(self, "labels", None) or []
        selectors = getattr(self, "selectors", None) or []
        if scope is None:
            return self
        # "field: message": the API names that field in the error (see api.errors).
        if scope == ScopeKind.LABELS and not labels:
            raise ValueError("labels: scope 'labels' needs at least one label")
        if scope == ScopeKind.RESOURCES and not selectors:
            raise ValueError("selectors: scope 'resources' needs at least one selector")
        if scope != ScopeKind.LABELS and labels:
            raise ValueError(f"labels: only allowed with scope 'labels', not {scope.value!r}")
        if scope != ScopeKind.RESOURCES and selectors:
            raise ValueError(f"selectors: only allowed with scope 'resources', not {scope.value!r}")
        return self


class AccessRuleCreate(AccessRuleScope):
    group_id: Id
    imaging_server_id: Id
    scope: ScopeKind = ScopeKind.ALL
    labels: list[Label] = Field(default_factory=list, max_length=100)
    selectors: list[Selector] = Field(default_factory=list, max_length=1000)
    capabilities: list[Capability] = Field(min_length=1, max_length=len(Capability))
    validity: Validity = 60
    expires_at: AwareDatetime | None = None
    description: Description = ""

    @field_validator("capabilities")
    @classmethod
    def _no_duplicate_capabilities(cls, value: list[Capability]) -> list[Capability]:
        return sorted(set(value), key=list(Capability).index)


class AccessRuleUpdate(UpdateBase):
    group_id: Id | None = None
    imaging_server_id: Id | None = None
    scope: ScopeKind | None = None
    labels: list[Label] | None = None
    selectors: list[Selector] | None = None
    capabilities: Annotated[list[Capability], Field(min_length=1)] | None = None
    validity: Validity | None = None
    expires_at: AwareDatetime | None = None
    description: Description | None = None


class AccessRuleRead(Versioned):
    group_id: Id
    imaging_server_id: Id
    scope: ScopeKind
    labels: list[str]
    selectors: list[Selector]
    capabilities: list[Capability]
    validity: int
    expires_at: datetime | None
    description: str


class AccessRuleListQuery(ListQuery):
    group_id: Id | None = None
    imaging_server_id: Id | None = None
    scope: ScopeKind | None = None


# ---------------------------------------------------------------- sessions


class SessionRead(Record):
    id: str
    version: int
    user_id: Id
    kind: SessionKind
    auth_server_id: Id | None
    created_at: datetime
    last_seen_at: datetime | None
    expires_at: datetime
    revoked_at: datetime | None
    revoked_reason: str | None
    client_address: str | None
    user_agent: str | None
    active: bool


class SessionListQuery(ListQuery):
    user_id: Id | None = None
    kind: SessionKind | None = None
    active: bool | None = None


class SessionRevoke(Strict):
    reason: Annotated[str, StringConstraints(max_length=200)] = "revoked by an administrator"


# ---------------------------------------------------------------- credentials


class CredentialCreate(Strict):
    kind: CredentialKind
    description: Description = ""
    user_id: Id | None = Field(None, description="Owner of an API token; the caller when omitted.")
    imaging_server_id: Id | None = Field(None, description="Required for an Orthanc plugin credential.")
    expires_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _binding_fits_kind(self) -> CredentialCreate:
        if self.kind == CredentialKind.ORTHANC_PLUGIN and self.imaging_server_id is None:
            raise ValueError("imaging_server_id: an orthanc-plugin credential must name its imaging server")
        if self.kind == CredentialKind.API_TOKEN and self.imaging_server_id is not None:
            raise ValueError("imaging_server_id: an api-token credential is not bound to an imaging server")
        return self


class CredentialUpdate(UpdateBase):
    description: Description | None = None
    expires_at: AwareDatetime | None = None


class CredentialRead(Versioned):
    kind: CredentialKind
    public_id: str
    description: str
    user_id: Id | None
    imaging_server_id: Id | None
    last_used_at: datetime | None
    expires_at: datetime | None


class CredentialCreated(BaseModel):
    credential: CredentialRead
    secret: str = Field(description="Shown this once and never again; Portico keeps only a hash.")
    username: str | None = Field(None, description="For an Orthanc plugin credential: the WebServiceUsername.")


class CredentialListQuery(ListQuery):
    kind: CredentialKind | None = None
    user_id: Id | None = None
    imaging_server_id: Id | None = None


# ---------------------------------------------------------------- shares

ShareType = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")]


class ShareResource(Strict):
    level: Literal["patient", "study", "series", "instance"]
    orthanc_id: Annotated[str, StringConstraints(max_length=128)] | None = None
    dicom_uid: Annotated[str, StringConstraints(max_length=128)] | None = None
    url: Annotated[str, StringConstraints(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _names_something(self) -> ShareResource:
        if not (self.orthanc_id or self.dicom_uid or self.url):
            raise ValueError("a resource needs orthanc_id, dicom_uid or url")
        return self


class ShareCreate(Strict):
    type: ShareType
    resources: list[ShareResource] = Field(min_length=1, max_length=1000)
    imaging_server_id: Id | None = None
    expires_at: AwareDatetime | None = None


class ShareUpdate(UpdateBase):
    expires_at: AwareDatetime | None = None


class ShareRead(Versioned):
    public_id: str
    type: str
    resources: list[ShareResource]
    imaging_server_id: Id | None
    created_by_id: Id | None
    expires_at: datetime | None


class ShareCreated(BaseModel):
    share: ShareRead
    token: str = Field(description="Shown this once; Portico keeps only a hash.")


class ShareListQuery(ListQuery):
    type: ShareType | None = None
    imaging_server_id: Id | None = None


# ---------------------------------------------------------------- signing keys


class SigningKeyRead(Record):
    id: int
    kid: str
    algorithm: str
    public_jwk: dict[str, Any]
    state: SigningKeyState
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None


class SigningKeyListQuery(ListQuery):
    state: SigningKeyState | None = None


# ---------------------------------------------------------------- audit


class AuditEventRead(Record):
    id: int
    at: datetime
    actor: str
    actor_user_id: Id | None
    action: str
    target_type: str | None
    target_id: str | None
    target_label: str | None
    changes: dict[str, list[Any]] = Field(description="field -> [old, new]; secrets masked.")
    outcome: AuditOutcome
    detail: str
    client_address: str | None
    prev_hash: str
    hash: str


class AuditEventListQuery(ListQuery):
    actor: str | None = None
    action: str | None = Field(None, max_length=100, description="Exact action, or a prefix ending in '.'.")
    target_type: str | None = None
    target_id: str | None = None
    outcome: AuditOutcome | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None


# ---------------------------------------------------------------- admin login


class LoginRequest(Strict):
    username: Annotated[str, StringConstraints(min_length=1, max_length=150)]
    password: Annotated[SecretStr, Field(min_length=1, max_length=1024)]


class LoginResponse(BaseModel):
    token: str
    token_type: Literal["bearer"] = "bearer"
    session_id: str
    expires_at: datetime
    user: UserRead


class ExplainRequest(Strict):
    """Who (a user, or a token as Orthanc would send it), where, and what."""

    user_id: Id | None = None
    username: str | None = None
    token: Annotated[str, StringConstraints(max_length=4096)] | None = None
    imaging_server_id: Id
    method: Literal["get", "post", "put", "delete"] = "get"
    level: Literal["patient", "study", "series", "instance", "system"]
    orthanc_id: Annotated[str, StringConstraints(max_length=128)] | None = None
    dicom_uid: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        None, description="PatientID, StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID, by level"
    )
    labels: list[Annotated[str, StringConstraints(max_length=64)]] = Field(default_factory=list, max_length=100)
    uri: Annotated[str, StringConstraints(max_length=2000)] | None = Field(None, description="For level 'system'")

    @model_validator(mode="after")
    def _one_subject(self) -> ExplainRequest:
        given = [name for name in ("user_id", "username", "token") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"{given[1] if len(given) > 1 else 'user_id'}: name exactly one of user_id, username or token")
        if self.level == "system" and not self.uri:
            raise ValueError("uri: a system-level question needs the 'uri'")
        if self.level != "system" and not (self.orthanc_id or self.dicom_uid):
            raise ValueError("orthanc_id: a resource-level question needs 'orthanc_id' or 'dicom_uid'")
        return self


class ExplainResponse(BaseModel):
    granted: bool
    validity: int = Field(description="What Portico answers Orthanc: seconds it may cache this decision")
    subject: str | None = Field(description="The user (or share) the question was decided for; null if the token is not valid")
    trace: list[str] = Field(description="Each step of the decision, in plain words")
    matched_rules: list[int]
    considered_rules: list[int]


class DeleteImpact(BaseModel):
    """What else a delete removes, so a confirmation can name it."""

    target: str
    removes: dict[str, int]
    blocked_by: dict[str, int] = Field(default_factory=dict)


# ---------------------------------------------------------------- single sign-on helpers


class PresetRead(BaseModel):
    preset: ProviderPreset
    title: str
    hostname_hint: str
    parameters: list[str] = Field(description="Placeholders to give in ProviderCreate.parameters.")
    authorization_endpoint: str | None
    token_endpoint: str | None
    revoke_endpoint: str | None
    userinfo_endpoint: str | None
    jwks_uri: str | None
    issuer: str | None
    scopes: list[str]
    login_classes: str
    token_endpoint_auth_method: TokenEndpointAuthMethod
    claim_mapping: ClaimMapping
    notes: str


class DiscoveryRequest(Strict):
    url: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)] = Field(
        description="The issuer URL or its /.well-known/openid-configuration."
    )
    preset: ProviderPreset = ProviderPreset.GENERIC


class DiscoveryResponse(BaseModel):
    discovery_url: str
    provider: dict[str, Any] = Field(description="Fields for ProviderCreate (add a name).")
    missing: list[FieldError]
    warnings: list[str]


class ClaimMappingEvaluation(Strict):
    mapping: ClaimMapping
    claims: dict[str, Any] = Field(description="ID-token claims merged with userinfo, as a JSON object.")


class MappedUserRead(BaseModel):
    username: str | None
    email: str | None
    first_name: str
    last_name: str
    groups: list[str]
    usable: bool
    problems: list[FieldError]


class AuthServerUrls(BaseModel):
    login: str
    callback: str
    logout: str
    token: str
    default_login: str | None = Field(description="The short login URL, for the default auth server only.")
    warnings: list[str]
    policy: str


class TestLoginCreate(Strict):
    __test__ = False  # not a pytest test class, whatever its name

    dry_run: bool = Field(False, description="Run the whole flow, but create or change no user, group or session.")
    code_challenge: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{43}$")] | None = Field(
        None, description="PKCE S256 challenge: the one-time code can then be exchanged only with its verifier."
    )


class TestLoginStarted(BaseModel):
    __test__ = False  # not a pytest test class, whatever its name

    id: str
    login_url: str = Field(description="Open this in the console's browser pane.")
    redirect_prefix: str = Field(description="The pane intercepts the navigation to this URL; its query has test_login, outcome and (unless dry run) code.")


class TestLoginRead(BaseModel):
    __test__ = False  # not a pytest test class, whatever its name

    id: str
    auth_server_id: int
    created_by: str
    dry_run: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str | None
    report: dict[str, Any] | None = Field(description="The timeline: steps with durations, mapped user, groups, error.")


class IntrospectRequest(Strict):
    token: Annotated[str, StringConstraints(max_length=8192)]


class SsoExchange(Strict):
    access_token: Annotated[str, StringConstraints(min_length=1, max_length=8192)] = Field(
        description="A Portico access token from the single-sign-on token endpoint."
    )
