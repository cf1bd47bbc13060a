"""The document of ``portico export`` / ``portico import``: the whole configuration as JSON.

Records refer to each other by natural key (provider name, auth server token, group
name, username, imaging server token), never by database id, so a document moves
between installations. Secrets appear only when exported with ``--include-secrets``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from server.contract import schemas as s
from server.domain.vocabulary import Capability, GroupSync, ScopeKind, SiteEnvironment

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiteDoc(_Strict):
    production_url: s.AbsoluteUrl
    development_url: s.AbsoluteUrl
    environment: SiteEnvironment


class ProviderDoc(s.ProviderCreate):
    pass


class AuthServerDoc(_Strict):
    token: s.AuthServerToken
    provider: s.Name
    description: s.Description = ""
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    client_secret: Annotated[str, StringConstraints(max_length=1024)] | None = None
    is_default: bool = False
    redirect_urls: list[s.AbsoluteUrl] = Field(default_factory=list)
    accept_idp_tokens: bool = False
    group_sync: GroupSync = GroupSync.OFF


class GroupDoc(_Strict):
    name: s.Name
    description: s.Description = ""
    idp_group_name: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None


class UserDoc(_Strict):
    username: s.Username
    email: EmailStr | None = None
    first_name: s.ShortText = ""
    last_name: s.ShortText = ""
    is_active: bool = True
    is_staff: bool = False
    is_superuser: bool = False
    permissions: list[s.PermissionName] = Field(default_factory=list)
    groups: list[s.Name] = Field(default_factory=list, description="Added to; existing memberships are kept.")
    password_hash: Annotated[str, StringConstraints(pattern=r"^\$argon2(id|i|d)\$")] | None = None


class ImagingServerDoc(_Strict):
    token: s.ServerToken
    name: s.Name
    scheme: s.Scheme = "https"
    hostname: s.Hostname
    port: s.Port | None = None
    dicomweb_root: str = "/dicom-web/"
    viewer_url: s.AbsoluteUrl | None = None
    is_active: bool = True
    is_default: bool = False
    rest_username: str | None = None
    rest_password: Annotated[str, StringConstraints(max_length=1024)] | None = None
    permission_table: s.PermissionTable | None = None


class AccessRuleDoc(s.AccessRuleScope):
    group: s.Name
    imaging_server: s.ServerToken
    scope: ScopeKind = ScopeKind.ALL
    labels: list[s.Label] = Field(default_factory=list)
    selectors: list[s.Selector] = Field(default_factory=list)
    capabilities: list[Capability] = Field(min_length=1)
    validity: s.Validity = 60
    expires_at: AwareDatetime | None = None
    description: s.Description = ""


class ConfigurationDocument(_Strict):
    format: Literal["portico-configuration"] = "portico-configuration"
    format_version: Literal[1] = 1
    exported_at: datetime | None = None
    includes_secrets: bool = False
    site: SiteDoc | None = None
    providers: list[ProviderDoc] = Field(default_factory=list)
    auth_servers: list[AuthServerDoc] = Field(default_factory=list)
    groups: list[GroupDoc] = Field(default_factory=list)
    users: list[UserDoc] = Field(default_factory=list)
    imaging_servers: list[ImagingServerDoc] = Field(default_factory=list)
    access_rules: list[AccessRuleDoc] = Field(default_factory=list)
