"""Introspection of an identity provider's own JWT access tokens, for auth servers that
accept them: verified against the provider's JWKS and mapped to the linked user."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.server.api.support import API, create
from tests.server.sso.conftest import CLIENT_SECRET, Wiring, wire
from tests.support.idp import IdPUser, SimulatedBrowser, form_encoded_basic_auth

RESOURCE = "urn:portico:test-api"


@pytest.fixture(scope="module")
def accepting(portico, idp) -> Wiring:  # type: ignore[no-untyped-def]
    return wire(portico, idp, preset="cognito", auth_server_overrides={"accept_idp_tokens": True, "is_default": False})


@pytest.fixture(scope="module")
def plugin_auth(portico) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    server = create(portico.client, "imaging-servers", {"token": portico.unique("pacs"), "name": portico.unique("PACS"), "hostname": "pacs"})
    credential = create(portico.client, "credentials", {"kind": "orthanc-plugin", "imaging_server_id": server["id"]})
    return credential["username"], credential["secret"]


def _idp_access_token(wiring: Wiring, user: IdPUser) -> str:
    """What an API behind the IdP receives: a JWT access token for a resource (RFC 8707/9068)."""
    client_id = wiring.auth_server["client_id"]
    url = wiring.idp.authorize_url(client_id, redirect_uri=wiring.urls["callback"], state="s", nonce="n", resource=RESOURCE)
    with SimulatedBrowser(stop_at=wiring.urls["callback"]) as browser:
        browser.get(url)
        landing = browser.login(user.username, user.password)
    response = httpx.post(wiring.idp.token_endpoint, data={
        "grant_type": "authorization_code", "code": landing.query["code"], "redirect_uri": wiring.urls["callback"], "resource": RESOURCE,
    }, headers={"Authorization": form_encoded_basic_auth(client_id, CLIENT_SECRET)})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    assert token.count(".") == 2, "the IdP did not issue a JWT access token"
    return token


def _introspect(wiring: Wiring, auth: tuple[str, str], token: str) -> dict[str, Any]:
    response = httpx.post(f"{wiring.portico.url}/oauth2/introspect", data={"token": token}, auth=auth)
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_a_linked_users_idp_token_is_active(accepting: Wiring, plugin_auth, fresh_user: IdPUser) -> None:  # type: ignore[no-untyped-def]
    _, landing = accepting.login(fresh_user.username, fresh_user.password)  # links the identity
    portico_user = accepting.decode(accepting.tokens(landing.query["code"]).json()["access_token"])
    token = _idp_access_token(accepting, fresh_user)
    answer = _introspect(accepting, plugin_auth, token)
    assert answer["active"] is True and answer["token_type"] == "idp_access_token"
    assert answer["sub"] == portico_user["sub"] and answer["username"] == fresh_user.username
    assert answer["iss"] == accepting.idp.issuer

    # Turning the option off takes effect at the next call (the remembered answer is dropped).
    stored = accepting.api.get(f"{API}/auth-servers/{accepting.auth_server['id']}").json()
    assert accepting.api.patch(f"{API}/auth-servers/{stored['id']}", json={"version": stored["version"], "accept_idp_tokens": False}).status_code == 200
    try:
        assert _introspect(accepting, plugin_auth, token) == {"active": False}
    finally:
        stored = accepting.api.get(f"{API}/auth-servers/{stored['id']}").json()
        accepting.api.patch(f"{API}/auth-servers/{stored['id']}", json={"version": stored["version"], "accept_idp_tokens": True})


def test_an_idp_token_of_an_unlinked_or_deactivated_user_is_inactive(accepting: Wiring, plugin_auth, fresh_user: IdPUser) -> None:  # type: ignore[no-untyped-def]
    token = _idp_access_token(accepting, fresh_user)
    assert _introspect(accepting, plugin_auth, token) == {"active": False}  # never logged in through Portico

    _, landing = accepting.login(fresh_user.username, fresh_user.password)
    user_id = accepting.decode(accepting.tokens(landing.query["code"]).json()["access_token"])["sub"]
    assert _introspect(accepting, plugin_auth, token)["active"] is True
    user = accepting.api.get(f"{API}/users/{user_id}").json()
    assert accepting.api.patch(f"{API}/users/{user_id}", json={"version": user["version"], "is_active": False}).status_code == 200
    assert _introspect(accepting, plugin_auth, token) == {"active": False}


def test_idp_tokens_are_refused_where_the_auth_server_does_not_accept_them(cognito: Wiring, plugin_auth, fresh_user: IdPUser) -> None:  # type: ignore[no-untyped-def]
    assert cognito.auth_server["accept_idp_tokens"] is False
    _, landing = cognito.login(fresh_user.username, fresh_user.password)
    assert cognito.tokens(landing.query["code"]).status_code == 200
    assert _introspect(cognito, plugin_auth, _idp_access_token(cognito, fresh_user)) == {"active": False}


def test_a_tampered_idp_token_is_inactive(accepting: Wiring, plugin_auth, fresh_user: IdPUser) -> None:  # type: ignore[no-untyped-def]
    _, landing = accepting.login(fresh_user.username, fresh_user.password)
    accepting.tokens(landing.query["code"])
    header, payload, signature = _idp_access_token(accepting, fresh_user).split(".")
    forged = ".".join((header, payload, signature[:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB")))
    assert _introspect(accepting, plugin_auth, forged) == {"active": False}
