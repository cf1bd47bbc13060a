"""The console signs an administrator in to a remote Portico through single sign-on: a
loopback redirect with PKCE, then the Portico access token exchanged for an admin session."""

from __future__ import annotations

import httpx

from tests.server.api.support import API
from tests.server.sso.conftest import Wiring
from tests.support.idp import IdPUser, SimulatedBrowser, pkce_pair

SIGN_IN = "http://127.0.0.1/portico-console/sign-in"


def _access_token(wiring: Wiring, user: IdPUser) -> str:
    verifier, challenge = pkce_pair()
    with SimulatedBrowser(stop_at=SIGN_IN) as pane:
        pane.get(str(httpx.URL(wiring.login_url, params={
            "redirect_uri": SIGN_IN, "code_challenge": challenge, "code_challenge_method": "S256"})))
        landing = pane.login(user.username, user.password)
    assert landing.stopped, landing
    grant = httpx.post(wiring.urls["token"], data={"grant_type": "authorization_code", "code": landing.query["code"],
                                                   "redirect_uri": SIGN_IN, "code_verifier": verifier})
    assert grant.status_code == 200, grant.text
    return str(grant.json()["access_token"])


def _exchange(wiring: Wiring, token: str) -> httpx.Response:
    return httpx.post(f"{wiring.portico.url}{API}/auth/sso-exchange", json={"access_token": token})


def test_staff_sign_in_to_the_console_through_sso(cognito: Wiring, fresh_user: IdPUser) -> None:
    token = _access_token(cognito, fresh_user)
    refused = _exchange(cognito, token)
    assert refused.status_code == 403 and "only staff and superusers may use the console" in refused.json()["error"]["message"]

    user = cognito.user(fresh_user.username)
    assert user is not None
    assert cognito.api.patch(f"{API}/users/{user['id']}", json={"version": user["version"], "is_staff": True}).status_code == 200
    granted = _exchange(cognito, token)
    assert granted.status_code == 200, granted.text
    session = granted.json()
    assert session["token"].startswith("pss_") and session["user"]["username"] == fresh_user.username
    me = httpx.get(f"{cognito.portico.url}{API}/auth/me", headers={"Authorization": f"Bearer {session['token']}"})
    assert me.status_code == 200 and me.json()["id"] == user["id"]


def test_the_console_redirect_needs_pkce(cognito: Wiring) -> None:
    response = httpx.get(cognito.login_url, params={"redirect_uri": SIGN_IN})
    assert response.status_code == 400 and "redirect_uri_not_allowed" in response.text


def test_a_revoked_or_forged_token_gets_no_console_session(cognito: Wiring, fresh_user: IdPUser) -> None:
    token = _access_token(cognito, fresh_user)
    user = cognito.user(fresh_user.username)
    assert user is not None
    cognito.api.patch(f"{API}/users/{user['id']}", json={"version": user["version"], "is_staff": True})
    session_id = cognito.decode(token)["sid"]
    assert cognito.api.post(f"{API}/sessions/{session_id}/revoke", json={}).status_code == 200
    assert _exchange(cognito, token).status_code == 401
    assert _exchange(cognito, token[:-4] + "AAAA").status_code == 401
    assert _exchange(cognito, "pss_not_a_jwt").status_code == 401
