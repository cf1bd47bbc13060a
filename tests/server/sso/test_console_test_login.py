"""Console test logins: the browser pane's flow, its timeline, and the dry run."""

from __future__ import annotations

from typing import Any

import httpx

from tests.server.api.support import API
from tests.server.sso.conftest import Wiring, wire
from tests.support.idp import IdPUser, SimulatedBrowser, pkce_pair

CONSOLE_REDIRECT = "http://127.0.0.1/portico-console/test-login"
STEPS = ["callback", "code_exchange", "id_token", "userinfo", "claim_mapping", "user"]


VERIFIER, CHALLENGE = pkce_pair()


def _start(wiring: Wiring, *, dry_run: bool) -> dict[str, Any]:
    body = {"dry_run": dry_run} if dry_run else {"dry_run": False, "code_challenge": CHALLENGE}
    response = wiring.api.post(f"{API}/auth-servers/{wiring.auth_server['id']}/test-logins", json=body)
    assert response.status_code == 201, response.text
    started: dict[str, Any] = response.json()
    assert started["redirect_prefix"] == CONSOLE_REDIRECT
    return started


def _run(wiring: Wiring, started: dict[str, Any], user: IdPUser) -> tuple[Any, dict[str, Any]]:
    with SimulatedBrowser(stop_at=CONSOLE_REDIRECT) as pane:
        pane.get(started["login_url"])
        landing = pane.login(user.username, user.password)
    assert landing.stopped, landing
    assert landing.query["test_login"] == started["id"]
    return landing, wiring.api.get(f"{API}/test-logins/{started['id']}").json()


def test_a_test_login_returns_to_the_console_with_its_timeline(cognito: Wiring, fresh_user: IdPUser) -> None:
    started = _start(cognito, dry_run=False)
    landing, test = _run(cognito, started, fresh_user)
    assert landing.query["outcome"] == "ok" and landing.query["code"].startswith("plc_")
    assert test["outcome"] == "ok" and test["finished_at"] is not None and test["created_by"] == "admin"
    report = test["report"]
    assert [step["name"] for step in report["steps"]] == STEPS
    assert all(step["status"] == "ok" and step["duration_ms"] >= 0 for step in report["steps"])
    assert report["mapped"]["username"] == fresh_user.username and report["created"] is True
    id_token = next(step for step in report["steps"] if step["name"] == "id_token")
    assert id_token["data"]["claims"]["cognito:username"] == fresh_user.username

    # The code alone is useless (anything on the machine could read the loopback URL)...
    assert cognito.tokens(landing.query["code"], redirect_uri=CONSOLE_REDIRECT).status_code == 400
    # ...with the console's verifier it gives the tokens.
    grant = httpx.post(cognito.urls["token"], data={"grant_type": "authorization_code", "code": landing.query["code"],
                                                    "redirect_uri": CONSOLE_REDIRECT, "code_verifier": VERIFIER})
    assert grant.status_code == 200, grant.text
    introspection = cognito.api.post(f"{API}/introspect", json={"token": grant.json()["access_token"]}).json()
    assert introspection["active"] is True and introspection["username"] == fresh_user.username


def test_a_dry_run_creates_nothing(cognito: Wiring, fresh_user: IdPUser) -> None:
    users, sessions = cognito.user_count(), cognito.sso_session_count()
    landing, test = _run(cognito, _start(cognito, dry_run=True), fresh_user)
    assert landing.query["outcome"] == "ok" and "code" not in landing.query
    report = test["report"]
    assert report["dry_run"] is True and report["created"] is True  # "would create"
    assert report["username"] == fresh_user.username
    assert cognito.user(fresh_user.username) is None
    assert (cognito.user_count(), cognito.sso_session_count()) == (users, sessions)


def test_a_failing_test_login_returns_its_explanation_to_the_console(portico, idp, fresh_user: IdPUser) -> None:  # type: ignore[no-untyped-def]
    wrong = wire(portico, idp, preset="cognito", secret="not-the-secret", auth_server_overrides={"is_default": False})
    landing, test = _run(wrong, _start(wrong, dry_run=False), fresh_user)
    assert landing.query["outcome"] == "failed" and "code" not in landing.query
    error = test["report"]["error"]
    assert error["code"] == "token_invalid_client" and "client secret" in error["message"]
    assert [step["status"] for step in test["report"]["steps"]] == ["ok", "failed"]


def test_a_test_login_link_works_once(cognito: Wiring, fresh_user: IdPUser) -> None:
    started = _start(cognito, dry_run=True)
    _run(cognito, started, fresh_user)
    again = httpx.get(started["login_url"])
    assert again.status_code == 400 and "test_login_used" in again.text


def test_the_console_redirect_is_not_open_to_ordinary_logins(cognito: Wiring) -> None:
    response = httpx.get(cognito.login_url, params={"redirect_uri": CONSOLE_REDIRECT})
    assert response.status_code == 400 and "redirect_uri_not_allowed" in response.text


def test_a_test_login_that_hands_out_a_code_needs_a_pkce_challenge(cognito: Wiring) -> None:
    response = cognito.api.post(f"{API}/auth-servers/{cognito.auth_server['id']}/test-logins", json={"dry_run": False})
    assert response.status_code == 422 and response.json()["error"]["fields"][0]["field"] == "code_challenge"


def test_test_logins_need_an_administrator(cognito: Wiring) -> None:
    with cognito.portico.anonymous() as anonymous:
        assert anonymous.post(f"{API}/auth-servers/{cognito.auth_server['id']}/test-logins", json={}).status_code == 401
        assert anonymous.get(f"{API}/test-logins/abc").status_code == 401
        assert anonymous.post(f"{API}/introspect", json={"token": "x"}).status_code == 401
    assert cognito.api.get(f"{API}/test-logins/abc").status_code == 404
    assert cognito.api.get(f"{API}/test-logins/not-hex").status_code == 422
