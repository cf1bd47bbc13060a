"""The console's Qt-free client of Portico's admin API.

One ``httpx.AsyncClient`` per connection; typed methods return the server's own pydantic
models (``server.contract.schemas``) and raise the server's own typed errors
(``server.contract.errors``), rebuilt from the response body::

    ClientError                 anything this module raises
    ├── ServerUnreachable       no answer at all (refused, reset, timed out, not HTTP)
    └── (wrapped) PorticoError  every answer in ``{"error": {...}}`` form, by status:
        NotAuthenticated 401, PermissionDenied 403, NotFound 404,
        Conflict 409 (``.current`` holds the record as it is now on a version conflict),
        ValidationFailed 422 (``.fields`` names each offending field), ...

``ApiError`` is ``PorticoError``: callers catch it by class or look at ``.code``.
"""

from __future__ import annotations

import builtins  # the client's `list` method shadows the builtin in annotations
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, SecretStr, TypeAdapter

from server.contract import schemas as s
from server.contract.errors import (
    Conflict,
    ErrorCode,
    NotAuthenticated,
    PorticoError,
    ValidationFailed,
    error_from_body,
)

__all__ = [
    "ApiError",
    "ClientError",
    "ConflictError",
    "Endpoint",
    "ENDPOINTS",
    "ErrorCode",
    "NotAuthenticatedError",
    "PorticoClient",
    "ServerUnreachable",
    "ValidationError",
]

ApiError = PorticoError
ConflictError = Conflict
NotAuthenticatedError = NotAuthenticated
ValidationError = ValidationFailed

R = TypeVar("R", bound=BaseModel)
API = "/api/v1"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class ClientError(Exception):
    """Base of the client's own errors (server errors are ``ApiError``)."""


class ServerUnreachable(ClientError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"The Portico server at {url} is unreachable ({reason}).")
        self.url = url
        self.reason = reason


@dataclass(frozen=True)
class Endpoint(Generic[R]):
    """One entity of the admin API: its path and its contract models."""

    path: str
    read: type[R]
    list_query: type[s.ListQuery]
    create: type[BaseModel] | None = None
    update: type[BaseModel] | None = None
    created: type[BaseModel] | None = None  # a create that answers with more than the record
    deletable: bool = True


PROVIDERS = Endpoint("providers", s.ProviderRead, s.ProviderListQuery, s.ProviderCreate, s.ProviderUpdate)
AUTH_SERVERS = Endpoint("auth-servers", s.AuthServerRead, s.AuthServerListQuery, s.AuthServerCreate, s.AuthServerUpdate)
USERS = Endpoint("users", s.UserRead, s.UserListQuery, s.UserCreate, s.UserUpdate)
EXTERNAL_IDENTITIES = Endpoint(
    "external-identities", s.ExternalIdentityRead, s.ExternalIdentityListQuery, s.ExternalIdentityCreate, s.ExternalIdentityUpdate
)
GROUPS = Endpoint("groups", s.GroupRead, s.GroupListQuery, s.GroupCreate, s.GroupUpdate)
MEMBERSHIPS = Endpoint("memberships", s.MembershipRead, s.MembershipListQuery, s.MembershipCreate)
IMAGING_SERVERS = Endpoint(
    "imaging-servers", s.ImagingServerRead, s.ImagingServerListQuery, s.ImagingServerCreate, s.ImagingServerUpdate
)
ACCESS_RULES = Endpoint("access-rules", s.AccessRuleRead, s.AccessRuleListQuery, s.AccessRuleCreate, s.AccessRuleUpdate)
SESSIONS = Endpoint("sessions", s.SessionRead, s.SessionListQuery, deletable=False)
CREDENTIALS = Endpoint(
    "credentials", s.CredentialRead, s.CredentialListQuery, s.CredentialCreate, s.CredentialUpdate, created=s.CredentialCreated
)
SHARES = Endpoint("shares", s.ShareRead, s.ShareListQuery, s.ShareCreate, s.ShareUpdate, created=s.ShareCreated)
SIGNING_KEYS = Endpoint("signing-keys", s.SigningKeyRead, s.SigningKeyListQuery, deletable=False)
AUDIT_EVENTS = Endpoint("audit-events", s.AuditEventRead, s.AuditEventListQuery, deletable=False)

ENDPOINTS: dict[str, Endpoint[Any]] = {
    endpoint.path: endpoint
    for endpoint in (
        PROVIDERS, AUTH_SERVERS, USERS, EXTERNAL_IDENTITIES, GROUPS, MEMBERSHIPS, IMAGING_SERVERS,
        ACCESS_RULES, SESSIONS, CREDENTIALS, SHARES, SIGNING_KEYS, AUDIT_EVENTS,
    )
}


def wire(value: Any) -> Any:
    """A request value as JSON: models dumped with their secrets revealed (we are sending
    them on purpose), enums by value, unset fields left out."""
    if isinstance(value, BaseModel):
        return {name: wire(getattr(value, name)) for name in value.model_fields_set}
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): wire(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [wire(item) for item in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _params(query: Mapping[str, Any] | BaseModel | None) -> dict[str, str]:
    if query is None:
        return {}
    values = wire(query) if isinstance(query, BaseModel) else dict(query)
    params: dict[str, str] = {}
    for key, value in values.items():
        if value is None or value == "":
            continue
        if isinstance(value, bool):
            params[key] = "true" if value else "false"
        elif isinstance(value, Enum):
            params[key] = str(value.value)
        elif hasattr(value, "isoformat"):
            params[key] = value.isoformat()
        else:
            params[key] = str(value)
    return params


class PorticoClient:
    """The admin API of one Portico server, as one bearer-token holder sees it."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # No proxies from the environment: the embedded server is on loopback, and a remote
        # one is named explicitly by the administrator.
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout, trust_env=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def closed(self) -> bool:
        return self._http.is_closed

    def set_token(self, token: str | None) -> None:
        if token:
            self._http.headers["Authorization"] = f"Bearer {token}"
        else:
            self._http.headers.pop("Authorization", None)

    # ------------------------------------------------------------ transport

    async def request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None) -> Any:
        """One call; the decoded JSON answer (None for 204), or a typed error."""
        try:
            response = await self._http.request(method, f"{API}{path}", json=json, params=params)
        except httpx.TimeoutException:
            raise ServerUnreachable(self.base_url, "no answer in time") from None
        except httpx.TransportError as error:
            raise ServerUnreachable(self.base_url, str(error) or type(error).__name__) from None
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            if body is None:
                raise ServerUnreachable(self.base_url, f"HTTP {response.status_code} without a JSON body: not a Portico server?")
            return body
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            try:
                raise error_from_body(response.status_code, body)
            except (KeyError, ValueError, TypeError) as malformed:
                raise PorticoError(f"HTTP {response.status_code}: {malformed}") from None
        if response.status_code in (502, 503, 504):
            raise ServerUnreachable(self.base_url, f"HTTP {response.status_code} from a proxy")
        failure = PorticoError(f"HTTP {response.status_code} {response.reason_phrase}")
        failure.status = response.status_code  # type: ignore[misc]
        raise failure

    # ------------------------------------------------------------ entities

    async def list(self, endpoint: Endpoint[R], query: Mapping[str, Any] | BaseModel | None = None) -> s.Page[R]:
        body = await self.request("GET", f"/{endpoint.path}", params=_params(query))
        return s.Page[endpoint.read].model_validate(body)  # type: ignore[name-defined]

    async def get(self, endpoint: Endpoint[R], record_id: int | str) -> R:
        return endpoint.read.model_validate(await self.request("GET", f"/{endpoint.path}/{record_id}"))

    async def create(self, endpoint: Endpoint[R], body: BaseModel | Mapping[str, Any]) -> R:
        record, _created = await self.create_returning(endpoint, body)
        return record

    async def create_returning(self, endpoint: Endpoint[R], body: BaseModel | Mapping[str, Any]) -> tuple[R, BaseModel | None]:
        """Create; for credentials and shares also the whole answer, which holds the secret
        that is shown this once."""
        answer = await self.request("POST", f"/{endpoint.path}", json=wire(body))
        if endpoint.created is None:
            return endpoint.read.model_validate(answer), None
        created = endpoint.created.model_validate(answer)
        inner = next(value for value in answer.values() if isinstance(value, dict))
        return endpoint.read.model_validate(inner), created

    async def update(self, endpoint: Endpoint[R], record_id: int | str, body: BaseModel | Mapping[str, Any]) -> R:
        return endpoint.read.model_validate(await self.request("PATCH", f"/{endpoint.path}/{record_id}", json=wire(body)))

    async def delete(self, endpoint: Endpoint[Any], record_id: int | str, version: int | None) -> None:
        params = {"version": str(version)} if version is not None else None
        await self.request("DELETE", f"/{endpoint.path}/{record_id}", params=params)

    async def delete_impact(self, endpoint: Endpoint[Any], record_id: int | str) -> s.DeleteImpact:
        return s.DeleteImpact.model_validate(await self.request("GET", f"/{endpoint.path}/{record_id}/delete-impact"))

    # ------------------------------------------------------------ the rest of the API

    async def login(self, username: str, password: str) -> s.LoginResponse:
        answer = await self.request("POST", "/auth/login", json={"username": username, "password": password})
        result = s.LoginResponse.model_validate(answer)
        self.set_token(result.token)
        return result

    async def sso_exchange(self, access_token: str) -> s.LoginResponse:
        """A Portico access token (from single sign-on) for an admin session, as a password login gives one."""
        answer = await self.request("POST", "/auth/sso-exchange", json={"access_token": access_token})
        result = s.LoginResponse.model_validate(answer)
        self.set_token(result.token)
        return result

    async def logout(self) -> None:
        await self.request("POST", "/auth/logout")
        self.set_token(None)

    async def me(self) -> s.UserRead:
        return s.UserRead.model_validate(await self.request("GET", "/auth/me"))

    async def site(self) -> s.SiteRead:
        return s.SiteRead.model_validate(await self.request("GET", "/site"))

    async def update_site(self, body: BaseModel | Mapping[str, Any]) -> s.SiteRead:
        return s.SiteRead.model_validate(await self.request("PATCH", "/site", json=wire(body)))

    async def explain(self, body: BaseModel | Mapping[str, Any]) -> s.ExplainResponse:
        return s.ExplainResponse.model_validate(await self.request("POST", "/explain", json=wire(body)))

    async def revoke_session(self, session_id: str, reason: str = "revoked by an administrator") -> s.SessionRead:
        return s.SessionRead.model_validate(await self.request("POST", f"/sessions/{session_id}/revoke", json={"reason": reason}))

    async def change_group_members(self, group_id: int, user_ids: builtins.list[int], *, add: bool) -> s.MembershipChange:
        answer = await self.request("POST", f"/groups/{group_id}/members/{'add' if add else 'remove'}", json={"user_ids": user_ids})
        return s.MembershipChange.model_validate(answer)

    async def change_user_groups(self, user_id: int, group_ids: builtins.list[int], *, add: bool) -> s.MembershipChange:
        answer = await self.request("POST", f"/users/{user_id}/groups/{'add' if add else 'remove'}", json={"group_ids": group_ids})
        return s.MembershipChange.model_validate(answer)

    async def orthanc_config(self, imaging_server_id: int) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request("POST", f"/imaging-servers/{imaging_server_id}/orthanc-config")
        return answer

    async def default_permission_table(self) -> builtins.list[s.PermissionRow]:
        return TypeAdapter(builtins.list[s.PermissionRow]).validate_python(await self.request("GET", "/orthanc-permission-table"))

    async def healthy(self) -> bool:
        try:
            response = await self._http.get("/healthz")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    # ------------------------------------------------------------ single sign-on set-up and test logins

    async def provider_presets(self) -> list[s.PresetRead]:
        return TypeAdapter(list[s.PresetRead]).validate_python(await self.request("GET", "/provider-presets"))

    async def discover_provider(self, url: str, preset: str = "generic") -> s.DiscoveryResponse:
        answer = await self.request("POST", "/providers/discover", json={"url": url, "preset": preset})
        return s.DiscoveryResponse.model_validate(answer)

    async def evaluate_claim_mapping(self, mapping: Mapping[str, str], claims: Mapping[str, Any]) -> s.MappedUserRead:
        answer = await self.request("POST", "/claim-mapping/evaluate", json={"mapping": dict(mapping), "claims": dict(claims)})
        return s.MappedUserRead.model_validate(answer)

    async def auth_server_urls(self, auth_server_id: int) -> s.AuthServerUrls:
        return s.AuthServerUrls.model_validate(await self.request("GET", f"/auth-servers/{auth_server_id}/urls"))

    async def start_test_login(self, auth_server_id: int, *, dry_run: bool, code_challenge: str | None = None) -> s.TestLoginStarted:
        body: dict[str, Any] = {"dry_run": dry_run}
        if code_challenge is not None:
            body["code_challenge"] = code_challenge
        answer = await self.request("POST", f"/auth-servers/{auth_server_id}/test-logins", json=body)
        return s.TestLoginStarted.model_validate(answer)

    async def test_login(self, test_login_id: str) -> s.TestLoginRead:
        return s.TestLoginRead.model_validate(await self.request("GET", f"/test-logins/{test_login_id}"))

    async def introspect(self, token: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request("POST", "/introspect", json={"token": token})
        return answer

    async def exchange_login_code(self, code: str, redirect_uri: str, code_verifier: str | None = None) -> dict[str, Any]:
        """A one-time login code for Portico tokens, as a viewer exchanges it (form-encoded,
        without the administrator's bearer token: the code and its PKCE verifier are the credential)."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier is not None:
            form["code_verifier"] = code_verifier
        request = self._http.build_request("POST", "/auth/openid/token/", data=form)
        request.headers.pop("Authorization", None)
        try:
            response = await self._http.send(request)
        except httpx.TransportError as error:
            raise ServerUnreachable(self.base_url, str(error) or type(error).__name__) from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if response.status_code != 200:
            error = str(body.get("error", f"HTTP {response.status_code}"))
            raise PorticoError(f"the token endpoint refused the code: {error}: {body.get('error_description', '')}".rstrip(": "))
        return body

    async def jwks(self) -> dict[str, Any]:
        """The keys Portico signs its tokens with (what resource servers verify them with)."""
        try:
            response = await self._http.get("/.well-known/jwks.json")
        except httpx.TransportError as error:
            raise ServerUnreachable(self.base_url, str(error) or type(error).__name__) from None
        body: dict[str, Any] = response.json()
        return body
