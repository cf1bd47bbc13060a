"""The whole single-sign-on flow against a real IdP, as a browser and a viewer drive it."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx

from tests.server.api.support import API
from tests.server.sso.conftest import VIEWER_URL, Wiring


def test_cognito_login_creates_the_user_and_hands_the_viewer_tokens(cognito: Wiring) -> None:
    browser, landing = cognito.login("alice", "alice-password")
    hops = browser.urls
    authorize = next(url for url in hops if "/oauth2/authorize" in url)
    sent = parse_qs(urlsplit(authorize).query)
    assert sent["code_challenge_method"] == ["S256"] and sent["state"] and sent["nonce"]
    assert sent["redirect_uri"] == [cognito.urls["callback"]]
    assert landing.stopped and landing.url.startswith(VIEWER_URL)
    assert landing.query["state"] == "viewer-state"
    code = landing.query["code"]
    assert code.startswith("plc_")

    response = cognito.tokens(code)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    grant = response.json()
    assert grant["token_type"] == "Bearer" and grant["expires_in"] > 0
    assert grant["refresh_token"].startswith("prt_")
    claims = cognito.decode(grant["access_token"])
    assert claims["username"] == "alice" and claims["email"] == "alice@hospital.test"
    assert claims["name"] == "Alice Archer"

    user = cognito.user("alice")
    assert user is not None and user["source"] == "idp" and str(user["id"]) == claims["sub"]
    identities = cognito.api.get(f"{API}/external-identities", params={"user_id": user["id"]}).json()["items"]
    assert [identity["provider_id"] for identity in identities] == [cognito.provider["id"]]
    me = httpx.get(f"{cognito.portico.url}{API}/auth/me", headers={"Authorization": f"Bearer {grant['access_token']}"})
    assert me.status_code in (200, 401, 403)


def test_a_second_login_links_to_the_same_user(cognito: Wiring, fresh_user) -> None:  # type: ignore[no-untyped-def]
    users_before = cognito.user_count()
    _, first = cognito.login(fresh_user.username, fresh_user.password)
    _, second = cognito.login(fresh_user.username, fresh_user.password)
    first_claims = cognito.decode(cognito.tokens(first.query["code"]).json()["access_token"])
    second_claims = cognito.decode(cognito.tokens(second.query["code"]).json()["access_token"])
    assert first_claims["sub"] == second_claims["sub"]
    assert first_claims["sid"] != second_claims["sid"]  # two logins, two sessions
    assert cognito.user_count() == users_before + 1


def test_keycloak_style_claims_map_through_the_keycloak_defaults(portico, idp) -> None:  # type: ignore[no-untyped-def]
    from tests.server.sso.conftest import wire

    keycloak = wire(portico, idp, preset="keycloak")
    assert keycloak.provider["claim_mapping"]["username"] == "preferred_username"
    _, landing = keycloak.login("bob", "bob-password")
    claims = keycloak.decode(keycloak.tokens(landing.query["code"]).json()["access_token"])
    assert claims["username"] == "bob" and claims["name"] == "Bob Baker"


def test_pkce_can_be_turned_off_per_provider(portico, idp, fresh_user) -> None:  # type: ignore[no-untyped-def]
    from tests.server.sso.conftest import wire

    without_pkce = wire(portico, idp, preset="cognito", provider_overrides={"use_pkce": False})
    browser, landing = without_pkce.login(fresh_user.username, fresh_user.password)
    authorize = next(url for url in browser.urls if "/oauth2/authorize" in url)
    assert "code_challenge" not in parse_qs(urlsplit(authorize).query)
    assert without_pkce.tokens(landing.query["code"]).status_code == 200


def test_a_taken_username_gets_a_deterministic_suffix_and_it_is_recorded(cognito: Wiring, idp) -> None:  # type: ignore[no-untyped-def]
    from tests.server.api.support import create

    name = cognito.portico.unique("clash")
    create(cognito.api, "users", {"username": name, "password": "local-password-123"})
    create(cognito.api, "users", {"username": f"{name}-2", "password": "local-password-123"})
    idp.add_user(name, "clash-password", {"cognito:username": name, "email": f"{name}@idp.test"})
    _, landing = cognito.login(name, "clash-password")
    claims = cognito.decode(cognito.tokens(landing.query["code"]).json()["access_token"])
    assert claims["username"] == f"{name}-3"
    events = cognito.api.get(f"{API}/audit-events", params={"action": "user.create", "target_id": claims["sub"]}).json()["items"]
    assert len(events) == 1 and f"the username '{name}' was taken" in events[0]["detail"]


def test_the_default_auth_server_answers_at_the_short_url(portico, idp) -> None:  # type: ignore[no-untyped-def]
    from tests.server.sso.conftest import wire

    default = wire(portico, idp, preset="cognito", auth_server_overrides={"is_default": True})
    assert default.auth_server["is_default"]
    assert default.urls["default_login"] == f"{portico.url}/auth/openid/"
    browser = default.browser()
    browser.get(str(httpx.URL(default.urls["default_login"], params={"redirect_uri": VIEWER_URL})))
    sent = parse_qs(urlsplit(next(url for url in browser.urls if "/oauth2/authorize" in url)).query)
    assert sent["client_id"] == [default.auth_server["client_id"]]
    landing = browser.login("alice", "alice-password")
    assert landing.stopped and default.tokens(landing.query["code"]).status_code == 200
