"""The single-sign-on broker's HTTP face: login, callback, token, logout (browsers and
viewers), and RFC 7009 revocation. Thin: the protocol lives in services/sso.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from server.api.deps import client_address
from server.api.responses import OrjsonResponse
from server.services.oidc_rp import IdPError
from server.services.portico import Portico
from server.services.sso import BROKER_PATH, LOGIN_COOKIE, GrantRefused, LoginFailed

TEMPLATES = Path(__file__).resolve().parents[2] / "resources" / "templates"
MAX_FORM_BYTES = 64 * 1024
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

_pages = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), auto_reload=False)


def page(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    body = _pages.get_template(template).render(**values)
    # The pages load nothing from elsewhere, and may not be framed.
    headers = {**NO_STORE, "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
               "X-Content-Type-Options": "nosniff"}
    return HTMLResponse(body, status_code=status, headers=headers)


def error_page(error: IdPError, login_url: str | None = None) -> HTMLResponse:
    return page("sso_error.html", status=error.status, message=error.message, step=error.step, code=error.code,
                login_url=login_url, at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in parsed.items()}


def _oauth_error(refused: GrantRefused) -> OrjsonResponse:
    return OrjsonResponse({"error": refused.error, "error_description": refused.description}, status_code=refused.status, headers=NO_STORE)


def build_router(portico: Portico) -> APIRouter:
    router = APIRouter(tags=["Single sign-on"])
    sso = portico.sso

    async def login(request: Request, token: str | None) -> Response:
        query = request.query_params
        try:
            started = await run_in_threadpool(
                sso.start, token, redirect_uri=query.get("redirect_uri"), client_state=query.get("state"),
                test_ticket=query.get("test_login"), code_challenge=query.get("code_challenge"),
                code_challenge_method=query.get("code_challenge_method"))
        except IdPError as error:
            return error_page(error)
        response = RedirectResponse(started.authorize_url, status_code=302, headers=NO_STORE)
        # One cookie per auth server (its path is the auth server's, under the Site's own path
        # prefix): two logins through two auth servers in one browser do not collide.
        response.set_cookie(LOGIN_COOKIE, started.cookie_secret, max_age=portico.settings.pending_login_seconds,
                            path=started.cookie_path, httponly=True, samesite="lax", secure=started.secure_cookie)
        return response

    @router.get(BROKER_PATH, summary="Log in through the default auth server", response_class=HTMLResponse)
    async def login_default(request: Request) -> Response:
        return await login(request, None)

    @router.get(BROKER_PATH + "{token}/", summary="Log in through this auth server", response_class=HTMLResponse)
    async def login_through(request: Request, token: str) -> Response:
        return await login(request, token)

    @router.get(BROKER_PATH + "{token}/callback/", summary="Where the identity provider sends the browser back",
                response_class=HTMLResponse)
    async def callback(request: Request, token: str) -> Response:
        params = {name: request.query_params[name] for name in request.query_params}
        try:
            finished = await run_in_threadpool(
                sso.finish, token, request.cookies.get(LOGIN_COOKIE), params,
                address=client_address(request), user_agent=request.headers.get("user-agent"))
        except LoginFailed as failed:
            consumed = failed.report.consumed
            if failed.redirect_to is not None:  # a console test login: the console shows the timeline
                response: Response = RedirectResponse(failed.redirect_to, status_code=302, headers=NO_STORE)
            else:
                response = error_page(failed.error, login_url=None)
        else:
            consumed = True
            if finished.redirect_to is None:
                response = page("sso_message.html", title="Dry run finished", message="Nothing was created or changed.")
            else:
                response = RedirectResponse(finished.redirect_to, status_code=302, headers=NO_STORE)
        # A refusal before the login was used up (a forged state) leaves the cookie: the
        # browser's real answer from the IdP may still arrive.
        cookie_path = await run_in_threadpool(sso.cookie_path, token) if consumed else None
        if cookie_path is not None:
            response.delete_cookie(LOGIN_COOKIE, path=cookie_path)
        return response

    async def token_endpoint(request: Request) -> Response:
        form = await _form(request)
        grant_type = form.get("grant_type")
        address = client_address(request)
        try:
            if grant_type == "authorization_code":
                if not form.get("code") or not form.get("redirect_uri"):
                    raise GrantRefused("invalid_request", "code and redirect_uri are required")
                grant = await run_in_threadpool(sso.exchange_login_code, form["code"], form["redirect_uri"], address,
                                                form.get("code_verifier"))
            elif grant_type == "refresh_token":
                if not form.get("refresh_token"):
                    raise GrantRefused("invalid_request", "refresh_token is required")
                grant = await run_in_threadpool(sso.refresh, form["refresh_token"], address)
            else:
                raise GrantRefused("unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
        except GrantRefused as refused:
            return _oauth_error(refused)
        return OrjsonResponse(grant.as_response(), headers=NO_STORE)

    router.add_api_route(BROKER_PATH + "token/", token_endpoint, methods=["POST"],
                         summary="Exchange a one-time code or a refresh token for Portico tokens")
    router.add_api_route(BROKER_PATH + "{token}/token/", token_endpoint, methods=["POST"],
                         summary="The same token endpoint, under an auth server's path")

    async def logout(request: Request) -> Response:
        form = await _form(request)
        authorization = request.headers.get("authorization", "")
        token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else form.get("token", "")
        if not token:
            return OrjsonResponse({"error": "invalid_request", "error_description": "send the access or refresh token "
                                   "(Authorization: Bearer, or a 'token' form field)"}, status_code=400, headers=NO_STORE)
        result = await run_in_threadpool(sso.logout, token, client_address(request))
        return OrjsonResponse(result, headers=NO_STORE)

    async def signed_out(_request: Request) -> Response:
        # Where an identity provider sends the browser after its own sign-out (the sign-out
        # URL registered there): the Portico session was ended by the viewer's POST.
        return page("sso_message.html", title="Signed out", message="You are signed out. You may close this window.")

    router.add_api_route(BROKER_PATH + "logout/", signed_out, methods=["GET"], response_class=HTMLResponse,
                         summary="The page an identity provider returns to after signing out")
    router.add_api_route(BROKER_PATH + "{token}/logout/", signed_out, methods=["GET"], response_class=HTMLResponse,
                         summary="The same page, under an auth server's path")
    router.add_api_route(BROKER_PATH + "logout/", logout, methods=["POST"], summary="End the Portico session (and the IdP's tokens)")
    router.add_api_route(BROKER_PATH + "{token}/logout/", logout, methods=["POST"], summary="The same logout, under an auth server's path")

    @router.post("/oauth2/revoke", tags=["Token services"], summary="RFC 7009 token revocation")
    async def revoke(request: Request) -> Response:
        form = await _form(request)
        if "token" not in form:
            return OrjsonResponse({"error": "invalid_request", "error_description": "the 'token' parameter is required"},
                                  status_code=400, headers=NO_STORE)
        if form["token"]:
            await run_in_threadpool(sso.revoke_token, form["token"], client_address(request))
        # RFC 7009 §2.2: 200 whether or not the token was known.
        return Response(status_code=200, headers=NO_STORE)

    return router
