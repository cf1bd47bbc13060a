"""The test-login panel through its real browser pane (QtWebEngine) against a real embedded
Portico and the real test identity provider (oidc-provider with Cognito's paths): the
IdP's own form is filled inside the pane, the console redirect is intercepted, and the
timeline must say what happened and, for each failure, what to fix.

Cognito itself cannot be reached from here: the test IdP stands in for it."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.app.conftest import EmbeddedChild, Runner, point_site_at, screenshot, sign_in_at_idp, wait_pane_text
from tests.support.idp import IdPUser, TestIdP

pytestmark = pytest.mark.slow
SECRET = "s3cr+t/with%odd=chars&more"
STEPS = ["discovery", "authorize_redirect", "idp_login", "callback", "code_exchange", "id_token", "userinfo", "claim_mapping",
         "user", "portico_token", "introspection"]


def fresh_user(idp: TestIdP) -> IdPUser:
    name = f"user-{secrets.token_hex(4)}"
    return idp.add_user(name, f"{name}-password", {
        "cognito:username": name, "email": f"{name}@hospital.test", "given_name": "Fresh", "family_name": "User",
        "cognito:groups": ["radiology", "cardiology"],
    })


def wire(child: EmbeddedChild, idp: TestIdP, *, secret: str = SECRET, register: bool = True,
         provider: dict[str, Any] | None = None) -> dict[str, Any]:
    """Provider (from the IdP's discovery, or as given), auth server, callback at the IdP."""
    point_site_at(child)
    with child.api() as api:
        if provider is None:
            found = api.post("/providers/discover", json={"url": idp.issuer, "preset": "cognito"})
            assert found.status_code == 200, found.text
            provider = found.json()["provider"]
        created = api.post("/providers", json={**provider, "name": f"cognito-{secrets.token_hex(3)}"})
        assert created.status_code == 201, created.text
        client_id = f"client{secrets.token_hex(6)}"
        server = api.post("/auth-servers", json={"provider_id": created.json()["id"], "client_id": client_id, "client_secret": secret})
        assert server.status_code == 201, server.text
        urls = api.get(f"/auth-servers/{server.json()['id']}/urls").json()
    if register:
        idp.add_client(client_id, SECRET, [urls["callback"]])
    return {"provider": created.json(), "auth_server": server.json(), "urls": urls, "client_id": client_id}


def user_count(child: EmbeddedChild) -> int:
    with child.api() as api:
        return int(api.get("/users", params={"limit": 1}).json()["total"])


def open_panel(run: Runner, window: Any, auth_server_id: int) -> Any:
    panel = window.show_panel("test-login")
    run(panel.select_auth_server(auth_server_id))
    assert panel.auth_servers.currentData() == auth_server_id
    return panel


def start(run: Runner, panel: Any, *, dry_run: bool = False) -> None:
    (panel.dry_run_button if dry_run else panel.start_button).click()
    run.until(lambda: panel.started is not None or panel.finished, timeout=20)


def statuses(panel: Any) -> dict[str, str]:
    return {name: step.status for name, step in panel.timeline.items()}


def step_text(panel: Any, name: str) -> str:
    step = panel.timeline[name]
    return f"{step.detail}\nFix: {step.fix}"


def tree_text(panel: Any) -> str:
    return str(panel.tree.toPlainText())


def test_a_login_through_the_pane_shows_the_timeline_the_user_and_the_token(sso_window: Any, run: Runner, tmp_path: Path,
                                                                            sso_server: EmbeddedChild, console_idp: TestIdP) -> None:
    wiring = wire(sso_server, console_idp)
    with sso_server.api() as api:
        pacs = api.post("/imaging-servers", json={"token": f"pacs-{secrets.token_hex(3)}", "name": "Main PACS", "hostname": "pacs.hospital.test"})
        assert pacs.status_code == 201, pacs.text
    user = fresh_user(console_idp)
    panel = open_panel(run, sso_window, wiring["auth_server"]["id"])
    start(run, panel)
    wait_pane_text(run, panel, "Test identity provider for")
    assert wiring["client_id"] in wait_pane_text(run, panel, "Sign in")
    screenshot(sso_window, tmp_path, "test-login-idp-page")
    sign_in_at_idp(run, panel, user.username, user.password)
    run.until(lambda: panel.finished, timeout=30)
    screenshot(sso_window, tmp_path, "test-login-success-timeline")

    assert list(panel.timeline) == STEPS
    assert set(statuses(panel).values()) == {"ok"}, tree_text(panel)
    assert "state, nonce, PKCE S256" in step_text(panel, "authorize_redirect")
    assert f"created user “{user.username}”" in step_text(panel, "user")
    assert panel.page.url().toString().startswith("data:") or "127.0.0.1/portico-console" not in panel.page.url().toString()
    assert f"User “{user.username}” was created" in panel.user_text.toPlainText()
    assert "Groups from the IdP: radiology, cardiology" in panel.user_text.toPlainText()
    assert panel.token_claims["username"] == user.username and panel.token_claims["aud"] == "portico"
    assert {"iss", "sub", "exp", "iat", "jti", "sid"} <= set(panel.token_claims)
    assert "signature verified with Portico's JWKS" in step_text(panel, "portico_token")
    assert f"username {user.username}" in step_text(panel, "introspection")
    assert panel.verdict.text().startswith("The login works")
    # The claims went to the sandbox, with the provider to save to.
    assert panel.sandbox.provider.id == wiring["provider"]["id"]
    run.until(lambda: panel.sandbox.settled and panel.sandbox.result is not None)
    assert panel.sandbox.result.username == user.username

    # One click: what could this user do on the chosen imaging server?
    run(panel.refresh())
    panel.imaging_servers.setCurrentIndex(panel.imaging_servers.findData(pacs.json()["id"]))
    panel.tabs.setCurrentIndex(2)
    panel.explain_button.click()
    run.until(lambda: panel.explain_result is not None)
    assert panel.explain_result.subject == user.username
    assert panel.explain_text.toPlainText().startswith(("GRANTED", "DENIED"))
    screenshot(sso_window, tmp_path, "test-login-explain")
    panel.tabs.setCurrentIndex(1)
    screenshot(sso_window, tmp_path, "test-login-token-claims")


def test_a_dry_run_creates_no_user(sso_window: Any, run: Runner, tmp_path: Path, sso_server: EmbeddedChild, console_idp: TestIdP) -> None:
    wiring = wire(sso_server, console_idp)
    user = fresh_user(console_idp)
    before = user_count(sso_server)
    panel = open_panel(run, sso_window, wiring["auth_server"]["id"])
    start(run, panel, dry_run=True)
    sign_in_at_idp(run, panel, user.username, user.password)
    run.until(lambda: panel.finished, timeout=30)
    screenshot(sso_window, tmp_path, "test-login-dry-run")
    assert statuses(panel)["user"] == "ok" and f"would create user “{user.username}”" in step_text(panel, "user")
    assert statuses(panel)["portico_token"] == "skipped" and statuses(panel)["introspection"] == "skipped"
    assert "would be created (dry run: nothing changed)" in panel.user_text.toPlainText()
    assert "Nothing was created or changed" in panel.verdict.text()
    assert panel.access_token is None
    assert user_count(sso_server) == before
    with sso_server.api() as api:
        assert api.get("/users", params={"q": user.username}).json()["total"] == 0


def test_a_wrong_client_secret_is_explained(sso_window: Any, run: Runner, tmp_path: Path, sso_server: EmbeddedChild,
                                            console_idp: TestIdP) -> None:
    wiring = wire(sso_server, console_idp, secret="not-the-app-clients-secret")
    user = fresh_user(console_idp)
    panel = open_panel(run, sso_window, wiring["auth_server"]["id"])
    start(run, panel)
    sign_in_at_idp(run, panel, user.username, user.password)
    run.until(lambda: panel.finished, timeout=30)
    screenshot(sso_window, tmp_path, "test-login-wrong-secret")
    assert statuses(panel)["code_exchange"] == "failed"
    text = step_text(panel, "code_exchange")
    assert "invalid_client" in text and "Copy the secret again from Cognito" in text
    assert "[token_invalid_client]" in panel.verdict.text()
    assert "id_token" not in panel.timeline and panel.access_token is None


def test_a_callback_url_the_idp_does_not_know_is_explained(sso_window: Any, run: Runner, tmp_path: Path, sso_server: EmbeddedChild,
                                                           console_idp: TestIdP) -> None:
    wiring = wire(sso_server, console_idp, register=False)
    console_idp.add_client(wiring["client_id"], SECRET, ["http://127.0.0.1:9/somewhere-else/callback/"])
    panel = open_panel(run, sso_window, wiring["auth_server"]["id"])
    start(run, panel)
    run.until(lambda: panel.finished, timeout=30)
    screenshot(sso_window, tmp_path, "test-login-callback-not-registered")
    assert statuses(panel)["idp_login"] == "failed"
    text = step_text(panel, "idp_login")
    assert "callback URL is not registered" in text
    assert f"Register {wiring['urls']['callback']} in the app client's Allowed callback URLs" in text
    assert "callback" not in panel.timeline  # Portico never heard back


def test_an_unreachable_idp_is_explained(sso_window: Any, run: Runner, tmp_path: Path, sso_server: EmbeddedChild,
                                         console_idp: TestIdP) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    dead = f"http://127.0.0.1:{port}"
    wiring = wire(sso_server, console_idp, register=False, provider={
        "preset": "cognito", "scheme": "http", "hostname": "127.0.0.1", "port": port,
        "parameters": {"region": "eu-west-1", "user_pool_id": "eu-west-1_AbC123xyz"},
        "issuer": dead, "jwks_uri": f"{dead}/.well-known/jwks.json",
    })
    panel = open_panel(run, sso_window, wiring["auth_server"]["id"])
    start(run, panel)
    run.until(lambda: panel.finished, timeout=30)
    screenshot(sso_window, tmp_path, "test-login-idp-unreachable")
    assert statuses(panel)["discovery"] == "failed"
    assert f"Nothing answers at 127.0.0.1:{port} (connection refused)" in step_text(panel, "discovery")
    assert statuses(panel)["idp_login"] == "failed"
    assert f"The sign-in page at 127.0.0.1:{port} did not load: the identity provider cannot be reached" in step_text(panel, "idp_login")


def test_cancelling_at_the_idp_is_explained(sso_window: Any, run: Runner, tmp_path: Path, sso_server: EmbeddedChild,
                                            console_idp: TestIdP) -> None:
    wiring = wire(sso_server, console_idp)
    user = fresh_user(console_idp)
    before = user_count(sso_server)
    panel = open_panel(run, sso_window, wiring["auth_server"]["id"])
    start(run, panel)
    sign_in_at_idp(run, panel, user.username, "", cancel=True)
    run.until(lambda: panel.finished, timeout=30)
    screenshot(sso_window, tmp_path, "test-login-cancelled")
    assert statuses(panel)["idp_login"] == "failed"
    text = step_text(panel, "idp_login")
    assert "cancelled or refused at the identity provider (access_denied" in text and "nothing is wrong with the set-up" in text
    assert "[idp_access_denied]" in panel.verdict.text()
    assert user_count(sso_server) == before


def test_clock_skew_is_explained(sso_window: Any, run: Runner, tmp_path: Path, sso_server: EmbeddedChild, console_idp: TestIdP) -> None:
    wiring = wire(sso_server, console_idp)
    user = fresh_user(console_idp)
    panel = open_panel(run, sso_window, wiring["auth_server"]["id"])
    console_idp.set_faults(id_token="not_yet_valid")
    try:
        start(run, panel)
        sign_in_at_idp(run, panel, user.username, user.password)
        run.until(lambda: panel.finished, timeout=30)
    finally:
        console_idp.reset_faults()
    screenshot(sso_window, tmp_path, "test-login-clock-skew")
    assert statuses(panel)["id_token"] == "failed"
    text = step_text(panel, "id_token")
    assert "not valid yet" in text and "clocks disagree" in text and "NTP" in text
    assert "[id_token_not_yet_valid]" in panel.verdict.text()
