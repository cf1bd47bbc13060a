"""The admin API under /api/v1: thin adapters from HTTP to the record services.

(No ``from __future__ import annotations`` here: FastAPI reads the handlers' annotations,
and the route factory's annotations are local variables.)
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel

from server.contract import schemas as s
from server.contract.errors import ErrorBody, ValidationFailed
from server.domain.vocabulary import Action, CredentialKind, EntityType
from server.domain.orthanc import DEFAULT_PERMISSION_TABLE
from server.services import accounts, entities, explanation, memberships, records, rfc7662, site, sso_setup
from server.services.sso import CONSOLE_TEST_REDIRECT
from server.services.orthanc_config import orthanc_configuration
from server.services.principal import Principal
from server.services.records import EntitySpec, WriteContext
from server.api.deps import PorticoDep, PrincipalDep, client_address, require

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": description}
    for code, description in {
        400: "Malformed request (bad JSON or UTF-8)",
        401: "Not authenticated",
        403: "Not allowed",
        404: "Not found",
        409: "Version conflict, duplicate, or still in use",
        413: "Body too large",
        422: "Invalid field values (each named in error.fields)",
    }.items()
}

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
PathId = Annotated[int, Path(ge=1, le=s.MAX_ID)]


def _read(model: type[BaseModel], row: Any) -> dict[str, Any]:
    return model.model_validate(row).model_dump(mode="json")


def entity_routes(
    path: str,
    spec: EntitySpec[Any],
    *,
    read: type[BaseModel],
    list_query: type[s.ListQuery],
    create: type[BaseModel] | None = None,
    update: type[BaseModel] | None = None,
    created: Any = None,
    id_type: type = int,
    deletable: bool = True,
    tag: str,
) -> None:
    """Register list, get, create, update, delete and delete-impact for one entity."""
    entity = spec.entity
    if id_type is int:
        RecordId: Any = Annotated[int, Path(ge=1, le=s.MAX_ID, description=f"The {spec.noun}'s id")]
    else:
        RecordId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description=f"The {spec.noun}'s id")]

    def current(row: Any) -> dict[str, Any]:
        return _read(read, row)

    def list_handler(
        query: Annotated[list_query, Query()],  # type: ignore[valid-type]
        portico: PorticoDep,
        _: Annotated[Principal, Depends(require(entity, Action.VIEW))],
    ) -> Any:
        with portico.db.reading() as session:
            page: s.ListQuery = query
            rows, total = records.list_records(session, spec, page)
            return {"items": [read.model_validate(row) for row in rows], "total": total, "offset": page.offset, "limit": page.limit}

    router.add_api_route(
        f"/{path}", list_handler, methods=["GET"], response_model=s.Page[read],  # type: ignore[valid-type]
        summary=f"List, search, filter and sort {spec.noun}s", tags=[tag], name=f"list_{entity.value}",
    )

    def get_handler(
        record_id: RecordId,
        portico: PorticoDep,
        _: Annotated[Principal, Depends(require(entity, Action.VIEW))],
    ) -> Any:
        with portico.db.reading() as session:
            return read.model_validate(records.get_record(session, spec, record_id))

    router.add_api_route(
        f"/{path}/{{record_id}}", get_handler, methods=["GET"], response_model=read,
        summary=f"Read one {spec.noun}", tags=[tag], name=f"get_{entity.value}",
    )

    if create is not None:

        def create_handler(
            body: create,  # type: ignore[valid-type]
            portico: PorticoDep,
            principal: Annotated[Principal, Depends(require(entity, Action.ADD))],
        ) -> Any:
            with portico.db.writing() as session:
                ctx = WriteContext(session=session, principal=principal, box=portico.box)
                row = records.create_record(spec, body, ctx)
                result = created(row, ctx) if created is not None else read.model_validate(row)
            return result

        router.add_api_route(
            f"/{path}", create_handler, methods=["POST"], status_code=status.HTTP_201_CREATED,
            response_model=created.__annotations__["return"] if created is not None else read,
            summary=f"Create a {spec.noun}", tags=[tag], name=f"create_{entity.value}",
        )

    if update is not None:

        def update_handler(
            record_id: RecordId,
            body: update,  # type: ignore[valid-type]
            portico: PorticoDep,
            principal: Annotated[Principal, Depends(require(entity, Action.CHANGE))],
        ) -> Any:
            with portico.db.writing() as session:
                ctx = WriteContext(session=session, principal=principal, box=portico.box)
                row = records.update_record(spec, record_id, body, ctx, current)
                result = read.model_validate(row)
            return result

        router.add_api_route(
            f"/{path}/{{record_id}}", update_handler, methods=["PATCH"], response_model=read,
            summary=f"Change a {spec.noun} (send the version you read; a stale one gets 409)",
            tags=[tag], name=f"update_{entity.value}",
        )

    if deletable:

        def delete_handler(
            record_id: RecordId,
            portico: PorticoDep,
            principal: Annotated[Principal, Depends(require(entity, Action.DELETE))],
            version: Annotated[int | None, Query(ge=1, description="Refuse with 409 unless the record is still at this version")] = None,
        ) -> Response:
            with portico.db.writing() as session:
                ctx = WriteContext(session=session, principal=principal, box=portico.box)
                records.delete_record(spec, record_id, version, ctx, current)
            return Response(status_code=status.HTTP_204_NO_CONTENT)

        router.add_api_route(
            f"/{path}/{{record_id}}", delete_handler, methods=["DELETE"], status_code=204,
            response_class=Response, summary=f"Delete a {spec.noun}", tags=[tag], name=f"delete_{entity.value}",
        )

        def impact_handler(
            record_id: RecordId,
            portico: PorticoDep,
            _: Annotated[Principal, Depends(require(entity, Action.VIEW))],
        ) -> Any:
            with portico.db.reading() as session:
                return records.delete_impact(session, spec, record_id)

        router.add_api_route(
            f"/{path}/{{record_id}}/delete-impact", impact_handler, methods=["GET"], response_model=s.DeleteImpact,
            summary=f"What deleting this {spec.noun} would also remove", tags=[tag], name=f"impact_{entity.value}",
        )


def _credential_created(row: Any, ctx: WriteContext) -> s.CredentialCreated:
    assert ctx.issued_secret is not None
    return s.CredentialCreated(
        credential=s.CredentialRead.model_validate(row),
        secret=ctx.issued_secret,
        username=row.public_id if row.kind == CredentialKind.ORTHANC_PLUGIN else None,
    )


def _share_created(row: Any, ctx: WriteContext) -> s.ShareCreated:
    assert ctx.issued_secret is not None
    return s.ShareCreated(share=s.ShareRead.model_validate(row), token=ctx.issued_secret)


entity_routes("providers", entities.PROVIDERS, read=s.ProviderRead, create=s.ProviderCreate, update=s.ProviderUpdate, list_query=s.ProviderListQuery, tag="OpenID providers")
entity_routes("auth-servers", entities.AUTH_SERVERS, read=s.AuthServerRead, create=s.AuthServerCreate, update=s.AuthServerUpdate, list_query=s.AuthServerListQuery, tag="Auth servers")
entity_routes("users", entities.USERS, read=s.UserRead, create=s.UserCreate, update=s.UserUpdate, list_query=s.UserListQuery, tag="Users")
entity_routes("external-identities", entities.EXTERNAL_IDENTITIES, read=s.ExternalIdentityRead, create=s.ExternalIdentityCreate, update=s.ExternalIdentityUpdate, list_query=s.ExternalIdentityListQuery, tag="Users")
entity_routes("groups", entities.GROUPS, read=s.GroupRead, create=s.GroupCreate, update=s.GroupUpdate, list_query=s.GroupListQuery, tag="Groups")
entity_routes("memberships", entities.MEMBERSHIPS, read=s.MembershipRead, create=s.MembershipCreate, list_query=s.MembershipListQuery, tag="Groups")
entity_routes("imaging-servers", entities.IMAGING_SERVERS, read=s.ImagingServerRead, create=s.ImagingServerCreate, update=s.ImagingServerUpdate, list_query=s.ImagingServerListQuery, tag="Imaging servers")
entity_routes("access-rules", entities.ACCESS_RULES, read=s.AccessRuleRead, create=s.AccessRuleCreate, update=s.AccessRuleUpdate, list_query=s.AccessRuleListQuery, tag="Access rules")
entity_routes("sessions", entities.SESSIONS, read=s.SessionRead, list_query=s.SessionListQuery, id_type=str, deletable=False, tag="Sessions")
entity_routes("credentials", entities.CREDENTIALS, read=s.CredentialRead, create=s.CredentialCreate, update=s.CredentialUpdate, list_query=s.CredentialListQuery, created=_credential_created, tag="Credentials")
entity_routes("shares", entities.SHARES, read=s.ShareRead, create=s.ShareCreate, update=s.ShareUpdate, list_query=s.ShareListQuery, created=_share_created, tag="Shares")
entity_routes("signing-keys", entities.SIGNING_KEYS, read=s.SigningKeyRead, list_query=s.SigningKeyListQuery, deletable=False, tag="Signing keys")
entity_routes("audit-events", entities.AUDIT_EVENTS, read=s.AuditEventRead, list_query=s.AuditEventListQuery, deletable=False, tag="Audit log")


# ---------------------------------------------------------------- sessions: revoke


@router.post("/sessions/{session_id}/revoke", response_model=s.SessionRead, tags=["Sessions"], summary="Revoke a session at once")
def revoke_session(
    session_id: Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")],
    body: s.SessionRevoke,
    portico: PorticoDep,
    principal: Annotated[Principal, Depends(require(EntityType.SESSION, Action.CHANGE))],
) -> Any:
    with portico.db.writing() as session:
        row = accounts.revoke_session(session, principal.actor, session_id, body.reason)
        return s.SessionRead.model_validate(row)


# ---------------------------------------------------------------- memberships from either side


@router.post("/groups/{group_id}/members/add", response_model=s.MembershipChange, tags=["Groups"], summary="Add users to a group")
def add_members(group_id: PathId, body: s.MemberIds, portico: PorticoDep, principal: Annotated[Principal, Depends(require(EntityType.MEMBERSHIP, Action.ADD))]) -> Any:
    with portico.db.writing() as session:
        return memberships.change_memberships(session, principal.actor, group_ids=[group_id], user_ids=body.user_ids, add=True, anchor=EntityType.GROUP, anchor_id=group_id)


@router.post("/groups/{group_id}/members/remove", response_model=s.MembershipChange, tags=["Groups"], summary="Remove users from a group")
def remove_members(group_id: PathId, body: s.MemberIds, portico: PorticoDep, principal: Annotated[Principal, Depends(require(EntityType.MEMBERSHIP, Action.DELETE))]) -> Any:
    with portico.db.writing() as session:
        return memberships.change_memberships(session, principal.actor, group_ids=[group_id], user_ids=body.user_ids, add=False, anchor=EntityType.GROUP, anchor_id=group_id)


@router.post("/users/{user_id}/groups/add", response_model=s.MembershipChange, tags=["Users"], summary="Add a user to groups")
def add_groups(user_id: PathId, body: s.GroupIds, portico: PorticoDep, principal: Annotated[Principal, Depends(require(EntityType.MEMBERSHIP, Action.ADD))]) -> Any:
    with portico.db.writing() as session:
        return memberships.change_memberships(session, principal.actor, group_ids=body.group_ids, user_ids=[user_id], add=True, anchor=EntityType.USER, anchor_id=user_id)


@router.post("/users/{user_id}/groups/remove", response_model=s.MembershipChange, tags=["Users"], summary="Remove a user from groups")
def remove_groups(user_id: PathId, body: s.GroupIds, portico: PorticoDep, principal: Annotated[Principal, Depends(require(EntityType.MEMBERSHIP, Action.DELETE))]) -> Any:
    with portico.db.writing() as session:
        return memberships.change_memberships(session, principal.actor, group_ids=body.group_ids, user_ids=[user_id], add=False, anchor=EntityType.USER, anchor_id=user_id)


# ---------------------------------------------------------------- Orthanc: explain, configuration


@router.post("/explain", response_model=s.ExplainResponse, tags=["Imaging authorization"],
             summary="Would this user (or token) be granted this call on this imaging server, and why")
def explain(body: s.ExplainRequest, portico: PorticoDep, _: Annotated[Principal, Depends(require(EntityType.ACCESS_RULE, Action.VIEW))]) -> Any:
    return explanation.explain(portico.db, portico.authorizer, body)


@router.post("/imaging-servers/{record_id}/orthanc-config", tags=["Imaging servers"],
             summary="The Orthanc 'Authorization' configuration block, with a freshly minted plugin credential")
def orthanc_config(
    record_id: PathId,
    portico: PorticoDep,
    principal: Annotated[Principal, Depends(require(EntityType.CREDENTIAL, Action.ADD))],
) -> dict[str, Any]:
    with portico.db.writing() as session:
        server = records.get_record(session, entities.IMAGING_SERVERS, record_id)
        ctx = WriteContext(session=session, principal=principal, box=portico.box)
        return orthanc_configuration(ctx, server)


@router.get("/orthanc-permission-table", response_model=list[s.PermissionRow], tags=["Imaging authorization"],
            summary="The default permission table (method + URI regex -> capabilities), used when a server has none")
def default_permission_table(_: Annotated[Principal, Depends(require(EntityType.IMAGING_SERVER, Action.VIEW))]) -> Any:
    return [
        {"method": entry.method.value, "pattern": entry.pattern, "capabilities": sorted(c.value for c in entry.capabilities)}
        for entry in DEFAULT_PERMISSION_TABLE
    ]


# ---------------------------------------------------------------- site


@router.get("/site", response_model=s.SiteRead, tags=["Site"], summary="Where this deployment is reached from outside")
def get_site(portico: PorticoDep, _: Annotated[Principal, Depends(require(EntityType.SITE, Action.VIEW))]) -> Any:
    with portico.db.reading() as session:
        return site.site_read(site.get_site(session))


@router.patch("/site", response_model=s.SiteRead, tags=["Site"], summary="Change the Site settings")
def update_site(body: s.SiteUpdate, portico: PorticoDep, principal: Annotated[Principal, Depends(require(EntityType.SITE, Action.CHANGE))]) -> Any:
    with portico.db.writing() as session:
        return site.site_read(site.update_site(session, principal.actor, body))


# ---------------------------------------------------------------- single sign-on set-up


@router.get("/provider-presets", response_model=list[s.PresetRead], tags=["OpenID providers"],
            summary="What each provider preset fills in")
def provider_presets(_: Annotated[Principal, Depends(require(EntityType.PROVIDER, Action.VIEW))]) -> Any:
    return sso_setup.presets()


@router.post("/providers/discover", response_model=s.DiscoveryResponse, tags=["OpenID providers"],
             summary="Read a provider's discovery document into provider fields, saying what is missing")
def discover_provider(body: s.DiscoveryRequest, portico: PorticoDep,
                      _: Annotated[Principal, Depends(require(EntityType.PROVIDER, Action.ADD))]) -> Any:
    return sso_setup.discover(body, portico.settings.idp_timeout_seconds)


@router.post("/claim-mapping/evaluate", response_model=s.MappedUserRead, tags=["OpenID providers"],
             summary="What a claim mapping makes of a set of claims (the console's sandbox)")
def evaluate_claim_mapping(body: s.ClaimMappingEvaluation,
                           _: Annotated[Principal, Depends(require(EntityType.PROVIDER, Action.VIEW))]) -> Any:
    return sso_setup.evaluate(body)


@router.get("/auth-servers/{record_id}/urls", response_model=s.AuthServerUrls, tags=["Auth servers"],
            summary="The login, callback and sign-out URLs to register at the identity provider")
def auth_server_urls(record_id: PathId, portico: PorticoDep,
                     _: Annotated[Principal, Depends(require(EntityType.AUTH_SERVER, Action.VIEW))]) -> Any:
    with portico.db.reading() as session:
        return sso_setup.urls(session, record_id)


@router.post("/auth-servers/{record_id}/test-logins", response_model=s.TestLoginStarted, status_code=201, tags=["Auth servers"],
             summary="Start a login from the console's browser pane, with its timeline kept")
def start_test_login(record_id: PathId, body: s.TestLoginCreate, portico: PorticoDep,
                     principal: Annotated[Principal, Depends(require(EntityType.AUTH_SERVER, Action.CHANGE))]) -> Any:
    test_id, login_url = portico.sso.create_test_login(record_id, principal.actor, dry_run=body.dry_run,
                                                       code_challenge=body.code_challenge)
    return s.TestLoginStarted(id=test_id, login_url=login_url, redirect_prefix=CONSOLE_TEST_REDIRECT)


@router.get("/test-logins/{test_login_id}", response_model=s.TestLoginRead, tags=["Auth servers"],
            summary="The timeline of a console test login")
def read_test_login(test_login_id: Annotated[str, Path(max_length=32, pattern="^[0-9a-f]{1,32}$")], portico: PorticoDep,
                    _: Annotated[Principal, Depends(require(EntityType.AUTH_SERVER, Action.VIEW))]) -> Any:
    return s.TestLoginRead.model_validate(portico.sso.test_login(test_login_id), from_attributes=True)


@router.post("/introspect", tags=["Authentication"], summary="RFC 7662 introspection for administrators (the console)")
def introspect_for_admins(body: s.IntrospectRequest, portico: PorticoDep,
                          _: Annotated[Principal, Depends(require(EntityType.SESSION, Action.VIEW))]) -> Any:
    return rfc7662.introspect(portico.db, portico.authorizer, portico.tokens, body.token, portico.sso.introspect_idp_token)


# ---------------------------------------------------------------- login, logout, me


@router.post("/auth/login", response_model=s.LoginResponse, tags=["Authentication"], summary="Username + password -> bearer token")
def login(body: s.LoginRequest, request: Request, portico: PorticoDep) -> Any:
    result = accounts.login(
        portico.db,
        portico.limiter,
        body.username,
        body.password.get_secret_value(),
        address=client_address(request),
        user_agent=request.headers.get("user-agent"),
        lifetime=portico.admin_session_lifetime,
    )
    return s.LoginResponse(
        token=result.token,
        session_id=result.session.id,
        expires_at=result.session.expires_at,
        user=s.UserRead.model_validate(result.user),
    )


@router.post("/auth/sso-exchange", response_model=s.LoginResponse, tags=["Authentication"],
             summary="A Portico access token (single sign-on) -> an admin-API bearer token, for staff")
def sso_exchange(body: s.SsoExchange, request: Request, portico: PorticoDep) -> Any:
    result = portico.sso.console_session(body.access_token, address=client_address(request),
                                         user_agent=request.headers.get("user-agent"), lifetime=portico.admin_session_lifetime)
    return s.LoginResponse(token=result.token, session_id=result.session.id, expires_at=result.session.expires_at,
                           user=s.UserRead.model_validate(result.user))


@router.post("/auth/logout", status_code=204, response_class=Response, tags=["Authentication"], summary="End this session")
def logout(principal: PrincipalDep, portico: PorticoDep) -> Response:
    if principal.session_id is None:
        raise ValidationFailed("an API token has no session to log out of; delete the credential instead")
    with portico.db.writing() as session:
        accounts.revoke_session(session, principal.actor, principal.session_id, "logged out", action="auth.logout")
    return Response(status_code=204)


@router.get("/auth/me", response_model=s.UserRead, tags=["Authentication"], summary="The signed-in user")
def me(principal: PrincipalDep, portico: PorticoDep) -> Any:
    with portico.db.reading() as session:
        return s.UserRead.model_validate(records.get_record(session, entities.USERS, principal.user_id))
