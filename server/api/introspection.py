"""RFC 7662 introspection as a plain ASGI endpoint.

Resource servers ask about the same tokens on every request they serve, so this path skips
FastAPI's middleware and router, like Orthanc's calls do (see ``PorticoApp``); warm answers
come from the ``Introspector``'s memory, on the event loop. The FastAPI route of the same
path stays for the OpenAPI document.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from server.api.middleware import ROUTE_SCOPE_KEY, STATUS_SCOPE_KEY
from server.api.responses import OrjsonResponse
from server.services.orthanc_authz import basic_credentials
from server.services.orthanc_shares import PluginRefusals
from server.services.rfc7662 import Introspector

PATH = "/oauth2/introspect"
NO_STORE = {"Cache-Control": "no-store"}


class _Route:
    path = PATH


class IntrospectionEndpoint:
    counted_only = True  # the Metrics wrapper counts these calls instead of timing each one

    def __init__(self, introspector: Introspector, refusals: PluginRefusals, max_body_bytes: int) -> None:
        self.introspector = introspector
        self.refusals = refusals
        # The admin API's limit: a token too long to be Portico's is inactive (200), a body
        # beyond this is refused (413), as for every other path.
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[ROUTE_SCOPE_KEY] = _Route
        response = await self.answer(Request(scope, receive))
        scope[STATUS_SCOPE_KEY] = response.status_code
        await response(scope, receive, send)

    async def answer(self, request: Request) -> OrjsonResponse:
        if request.method != "POST":
            return OrjsonResponse({"error": "invalid_request", "error_description": "introspection is POST only"},
                                  status_code=405, headers={"Allow": "POST"})
        authorization = request.headers.get("authorization", "")
        known = self.introspector.cached_client(authorization)
        if known is None:
            known = await run_in_threadpool(self.introspector.client, authorization)
        if not known:
            address = request.client.host if request.client else None
            if not self.refusals.allowed(address):
                return OrjsonResponse({"error": "invalid_client", "error_description": "too many refused credentials; try again later"},
                                      status_code=429)
            credentials = basic_credentials(authorization)
            await run_in_threadpool(self.refusals.record, address, PATH, credentials[0] if credentials else "?",
                                    "introspection client refused")
            return OrjsonResponse(
                {"error": "invalid_client", "error_description": "authenticate with HTTP Basic and an imaging server's plugin credential"},
                status_code=401, headers={"WWW-Authenticate": 'Basic realm="portico"'},
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                return OrjsonResponse({"error": "invalid_request", "error_description": f"the body is larger than {self.max_body_bytes} bytes"},
                                      status_code=413)
        form = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        token = (form.get("token") or [""])[0]
        answer = self.introspector.cached(token)
        if answer is None:
            answer = await run_in_threadpool(self.introspector.introspect, token)
        return OrjsonResponse(answer, headers=NO_STORE)
