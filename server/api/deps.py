"""Dependencies shared by the admin API's routes: the running Portico, the caller, permissions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server.contract.errors import NotAuthenticated, PermissionDenied
from server.domain.vocabulary import Action, EntityType
from server.services import accounts
from server.services.console_credential import ConsoleCredential
from server.services.principal import Principal
from server.services.portico import Portico
from server.services.records import WriteContext

# auto_error=False: a missing header is answered by our own typed 401, not FastAPI's.
_bearer = HTTPBearer(auto_error=False, description="`pss_...` from POST /api/v1/auth/login, or an API token `pat_...`")


def get_portico(request: Request) -> Portico:
    portico: Portico = request.app.state.portico
    return portico


PorticoDep = Annotated[Portico, Depends(get_portico)]


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def get_principal(
    request: Request,
    portico: PorticoDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise NotAuthenticated(
            "authentication required: send 'Authorization: Bearer <token>' (log in at POST /api/v1/auth/login)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # Set only by `portico serve --embedded`: the console that started this process.
    console: ConsoleCredential | None = getattr(request.app.state, "console_credential", None)
    if console is not None and console.matches(credentials.credentials):
        return console.principal(client_address(request))
    return accounts.authenticate(portico.db, credentials.credentials, client_address(request))


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(entity: EntityType, action: Action) -> Callable[[Principal], Principal]:
    def check(principal: PrincipalDep) -> Principal:
        if not principal.may(entity, action):
            raise PermissionDenied(
                f"you may not {action.value} {entity.value} records"
                + ("" if principal.is_staff else " (only staff and superusers use the admin API)")
            )
        return principal

    return check


def write_context(portico: Portico, session: object, principal: Principal) -> WriteContext:
    return WriteContext(session=session, principal=principal, box=portico.box)  # type: ignore[arg-type]
