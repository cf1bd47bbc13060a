"""Connect to server… → "Sign in with single sign-on…": a real browser pane (QtWebEngine) signs
in at the test identity provider through a remote Portico (a second embedded server of its
own), the loopback redirect is intercepted, and the console manages that server with an
ordinary admin session; a user who is not staff gets the server's clear refusal."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.app.conftest import (
    ADMIN,
    ADMIN_PASSWORD,
    EmbeddedChild,
    Runner,
    point_site_at,
    screenshot,
    sign_in_at_idp,
    start_embedded_child,
)
from tests.support.idp import IdPUser, SimulatedBrowser, TestIdP

pytestmark = pytest.mark.slow
SIGN_IN = "http://127.0.0.1/portico-console/sign-in"
SECRET = "sso-connect-secret"


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, console_idp: TestIdP) -> Iterator[EmbeddedChild]:
    """A "remote" Portico with one (hence default) auth server wired to the test IdP."""
    child = start_embedded_child(tmp_path_factory.mktemp("sso-remote"))
    try:
        with child.api() as api:
            created = api.post("/users", json={"username": ADMIN, "password": ADMIN_PASSWORD, "is_superuser": True, "is_staff": True})
            assert created.status_code == 201, created.text
        point_site_at(child)
        with child.api() as api:
            found = api.post("/providers/discover", json={"url": console_idp.issuer, "preset": "cognito"})
            assert found.status_code == 200, found.text
            provider = api.post("/providers", json={**found.json()["provider"], "name": "cognito-remote"})
            assert provider.status_code == 201, provider.text
            client_id = f"client{secrets.token_hex(6)}"
            server = api.post("/auth-servers", json={"provider_id": provider.json()["id"], "client_id": client_id, "client_secret": SECRET})
            assert server.status_code == 201, server.text
            assert server.json()["is_default"] is True
            urls = api.get(f"/auth-servers/{server.json()['id']}/urls").json()
        console_idp.add_client(client_id, SECRET, [urls["callback"]])
        yield child
    finally:
        assert child.stop() == 0


def fresh_user(idp: TestIdP) -> IdPUser:
    name = f"sso-{secrets.token_hex(4)}"
    return idp.add_user(name, f"{name}-password", {
        "cognito:username": name, "email": f"{name}@hospital.test", "given_name": "Sso", "family_name": "Admin",
        "cognito:groups": ["radiology"],
    })


def make_staff(child: EmbeddedChild, user: IdPUser) -> None:
    """Portico links a user by the IdP's subject: sign in once (a browser without the console),
    then an administrator makes the user it created staff, who may view users."""
    from app.oidc.pkce import new_pair

    pair = new_pair()
    query = urlencode({"redirect_uri": SIGN_IN, "code_challenge": pair.challenge, "code_challenge_method": "S256"})
    with SimulatedBrowser(stop_at=SIGN_IN) as browser:
        browser.get(f"{child.url}/auth/openid/?{query}")
        landing = browser.login(user.username, user.password)
    assert landing.stopped and landing.query["code"].startswith("plc_"), landing
    with child.api() as api:
        record = next(item for item in api.get("/users", params={"q": user.username}).json()["items"] if item["username"] == user.username)
        changed = api.patch(f"/users/{record['id']}", json={"version": record["version"], "is_staff": True, "permissions": ["user.view"]})
        assert changed.status_code == 200, changed.text


def wait_dialog(run: Runner, window: Any, kind: type) -> Any:
    run.until(lambda: isinstance(window.last_dialog, kind) and window.last_dialog.isVisible())
    return window.last_dialog


def open_sso(run: Runner, window: Any, url: str) -> tuple[asyncio.Task[Any], Any]:
    from app.views.dialogs import ConnectDialog
    from app.views.sso_sign_in import SsoSignInDialog

    task = asyncio.ensure_future(window.connect_dialog())
    dialog = wait_dialog(run, window, ConnectDialog)
    assert not dialog.sso_button.isEnabled()
    dialog.url.setText(url)
    assert dialog.sso_button.isEnabled() and not dialog.connect_button.isEnabled()  # no password needed
    dialog.sso_button.click()
    return task, wait_dialog(run, window, SsoSignInDialog)


def test_sign_in_with_single_sign_on_manages_the_remote_server(web_engine: None, make_window: Any, run: Runner, tmp_path: Path,
                                                                remote: EmbeddedChild, console_idp: TestIdP) -> None:
    user = fresh_user(console_idp)
    make_staff(remote, user)
    window = make_window("sso-connect")
    task, sso = open_sso(run, window, remote.url)
    assert sso.page.url().toString() == "" or sso.page.url().toString().startswith(f"{remote.url}/auth/openid/")
    sign_in_at_idp(run, sso, user.username, user.password)
    screenshot(sso, tmp_path, "sso-pane-submitted")
    run.until(task.done, timeout=40)
    assert task.result() is True, sso.error.text()
    assert window.service.mode == "remote" and window.service.url == remote.url
    assert remote.url in window.windowTitle() and user.username in window.windowTitle()
    assert remote.url in window.target_label.text()
    panel = window.show_panel("users")
    run.until(lambda: panel.loaded and not panel.model.loading and panel.model.total >= 2)
    assert {ADMIN, user.username} <= {row.username for row in panel.model.rows}
    screenshot(window, tmp_path, "sso-connected-users")
    # Remembered for next time, without any secret.
    recent = window.service.recent_connections()
    assert (recent[0].url, recent[0].username) == (remote.url, user.username)
    config = (tmp_path / "sso-connect-config" / "console.json").read_text()
    assert "pss_" not in config and "plc_" not in config


def test_a_user_who_is_not_staff_is_told_so_in_the_dialog(web_engine: None, make_window: Any, run: Runner, tmp_path: Path,
                                                        remote: EmbeddedChild, console_idp: TestIdP) -> None:
    user = fresh_user(console_idp)  # created (not staff) by this very sign-in
    window = make_window("sso-refused")
    task, sso = open_sso(run, window, remote.url)
    sign_in_at_idp(run, sso, user.username, user.password)
    run.until(lambda: sso.error.isVisible(), timeout=40)
    screenshot(sso, tmp_path, "sso-not-staff")
    assert "only staff and superusers may use the console" in sso.error.text()
    assert user.username in sso.error.text()
    assert sso.isVisible() and not task.done() and window.service.mode != "remote"
    sso.reject()  # back to the Connect dialog, still open; then give up
    from app.views.dialogs import ConnectDialog

    connect = wait_dialog(run, window, ConnectDialog)
    assert connect.url.text() == remote.url
    connect.reject()
    run.until(task.done)
    assert task.result() is False


def test_portico_s_error_page_is_shown_in_the_dialog(web_engine: None, make_window: Any, run: Runner, tmp_path: Path,
                                                    remote: EmbeddedChild) -> None:
    window = make_window("sso-error-page")
    task, sso = open_sso(run, window, remote.url)
    sso.auth_server.setText("no-such-server")
    sso.restart_button.click()
    run.until(lambda: sso.error.isVisible(), timeout=30)
    screenshot(sso, tmp_path, "sso-error-page")
    assert "HTTP 404" in sso.error.text() and "no auth server 'no-such-server' here" in sso.error.text()
    sso.reject()
    from app.views.dialogs import ConnectDialog

    wait_dialog(run, window, ConnectDialog).reject()
    run.until(task.done)
    assert task.result() is False and window.service.mode != "remote"
