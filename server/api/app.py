"""The ASGI application: admin API, operations endpoints, error handling, metrics."""

from __future__ import annotations

import gc
import logging

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from server import __version__
from server.api import admin, errors, orthanc, sso
from server.api.introspection import PATH as INTROSPECTION_PATH
from server.api.introspection import IntrospectionEndpoint
from server.services import rfc7662
from server.api.middleware import BodyLimit, HttpSeries, Metrics
from server.api.responses import OrjsonResponse
from server.contract.errors import ServiceUnavailable
from server.services.orthanc_shares import PluginRefusals, ShareService
from server.services.portico import Portico
from server.storage import migrate

log = logging.getLogger("portico.api")


def create_app(portico: Portico) -> PorticoApp:
    app = FastAPI(
        title="Portico",
        version=__version__,
        description="Identity and access for medical imaging: admin API, SSO broker, token and Orthanc authorization services.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.portico = portico
    registry = CollectorRegistry()
    refusals = PluginRefusals(portico.db)
    errors.install(app)
    app.include_router(admin.router)
    app.include_router(sso.build_router(portico))

    @app.get("/healthz", tags=["Operations"], summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["Operations"], summary="The database answers and its schema is current")
    def readyz() -> OrjsonResponse:
        try:
            with portico.db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            revision = migrate.current_revision(portico.db.engine)
        except Exception as error:  # any failure here means "not ready", never a 500 page
            log.warning("readiness check failed: %s", error)
            raise ServiceUnavailable("the database is not reachable") from None
        if revision != migrate.head_revision():
            raise ServiceUnavailable(f"the database schema is at {revision}, expected {migrate.head_revision()}")
        return OrjsonResponse({"status": "ready", "schema": revision})

    @app.get("/.well-known/jwks.json", tags=["Token services"], summary="The keys that verify Portico's tokens")
    def jwks() -> OrjsonResponse:
        return OrjsonResponse(portico.keys.jwks(), headers={"Cache-Control": "public, max-age=300"})

    @app.get("/.well-known/openid-configuration", tags=["Token services"], summary="Where Portico's token services are")
    def openid_configuration() -> OrjsonResponse:
        issuer = portico.tokens.issuer.rstrip("/")
        return OrjsonResponse(
            {
                "issuer": portico.tokens.issuer,
                "jwks_uri": f"{issuer}/.well-known/jwks.json",
                "authorization_endpoint": f"{issuer}/auth/openid/",
                "token_endpoint": f"{issuer}/auth/openid/token/",
                "introspection_endpoint": f"{issuer}/oauth2/introspect",
                "revocation_endpoint": f"{issuer}/oauth2/revoke",
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "response_types_supported": ["code"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "subject_types_supported": ["public"],
            }
        )

    introspection = IntrospectionEndpoint(
        rfc7662.Introspector(portico.db, portico.authorizer, portico.tokens, portico.generation,
                             idp_tokens=portico.sso.introspect_idp_token), refusals,
        portico.settings.max_body_bytes,
    )

    @app.post(
        "/oauth2/introspect", tags=["Token services"], summary="RFC 7662 token introspection (HTTP Basic client authentication)"
    )
    async def introspection_route(request: Request) -> Response:
        # Documents the endpoint; requests are answered by PorticoApp's direct route to it.
        return await introspection.answer(request)

    @app.get("/metrics", tags=["Operations"], summary="Prometheus metrics", response_class=Response)
    def metrics(_request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    series = HttpSeries(registry)
    app.add_middleware(Metrics, series=series)
    app.add_middleware(BodyLimit, max_bytes=portico.settings.max_body_bytes)
    service = orthanc.OrthancService(portico.authorizer, ShareService(portico.db), refusals)
    plugin_service = Metrics(service, series)
    # What start-up built lives as long as the process: keep it out of the collector's full
    # passes, which otherwise cost a first-seen token's decision a third of its CPU.
    gc.collect()
    gc.freeze()
    return PorticoApp(app, plugin_service, Metrics(introspection, series))


class PorticoApp:
    """Orthanc's calls and introspection go straight to small ASGI endpoints; everything else to FastAPI.

    The plugin calls on every request Orthanc serves: it should not pay for FastAPI's
    middleware stack and for matching the ~80 admin routes first (measured: 275 -> ~110 µs
    of server CPU per validate call, bench/validate.py).
    """

    def __init__(self, api: FastAPI, plugin_service: ASGIApp, introspection: ASGIApp) -> None:
        self.api = api
        self.plugin_service = plugin_service
        self.introspection = introspection
        self.state = api.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/orthanc/"):
            await self.plugin_service(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == INTROSPECTION_PATH:
            # Resource servers introspect on every request: the same short path as Orthanc's.
            await self.introspection(scope, receive, send)
        else:
            await self.api(scope, receive, send)
