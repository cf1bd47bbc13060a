"""The Cognito wizard page by page against a real embedded Portico and the real test
identity provider (Cognito's paths, http on loopback through the advanced domain field),
ending in a test login through the real browser pane. Cognito itself cannot be reached
from here: the test IdP stands in for it."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QWizard

from app.views.cognito_wizard import PAGE_CLIENT, PAGE_DOMAIN, PAGE_POOL, PAGE_PORTICO, PAGE_TEST, PAGE_URLS
from tests.app.conftest import EmbeddedChild, Runner, point_site_at, screenshot, sign_in_at_idp
from tests.support.idp import TestIdP

pytestmark = pytest.mark.slow
SECRET = "w1zard+secret/with%odd=chars"
NEXT = QWizard.WizardButton.NextButton


def shot(wizard: Any, tmp_path: Path, name: str) -> None:
    screenshot(wizard, tmp_path, name)


def test_the_wizard_sets_cognito_up_and_the_test_login_works(sso_window: Any, run: Runner, tmp_path: Path,
                                                            sso_server: EmbeddedChild, console_idp: TestIdP) -> None:
    point_site_at(sso_server, "http://localhost:8000")  # the default Site: not where this server answers
    window = sso_window
    window.service.discard_cognito_draft()
    wizard = window.open_cognito_wizard()
    run.until(wizard.isVisible)
    next_button = wizard.button(NEXT)

    # 1. User pool: the format is checked, the URLs are derived.
    assert wizard.currentId() == PAGE_POOL
    pool = wizard.pool_page
    pool.pool_id.setText("eu-west-1_not valid")
    assert pool.region.text() == "eu-west-1"  # taken from the pool id
    assert "is not a user pool id" in pool.pool_error.text() and not next_button.isEnabled()
    shot(wizard, tmp_path, "wizard-1-user-pool-invalid")
    pool.pool_id.setText("eu-west-1_AbC123xyz")
    assert pool.pool_error.text() == "" and next_button.isEnabled()
    assert pool.issuer.text() == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123xyz"
    assert pool.discovery.text().endswith("eu-west-1_AbC123xyz/.well-known/openid-configuration")
    shot(wizard, tmp_path, "wizard-1-user-pool")
    wizard.next()

    # 2. App client: id and secret (kept in memory only).
    assert wizard.currentId() == PAGE_CLIENT
    client_id = f"client{secrets.token_hex(6)}"
    wizard.client_page.client_id.setText(client_id)
    assert not next_button.isEnabled()  # no secret yet
    wizard.client_page.secret.setText(SECRET)
    assert next_button.isEnabled()
    shot(wizard, tmp_path, "wizard-2-app-client")
    wizard.next()
    draft_text = window.service.cognito_draft_path().read_text()
    assert client_id in draft_text and SECRET not in draft_text and "secret" not in draft_text.lower()

    # 3. Domain: a prefix is checked against Cognito's rules; the advanced URL reaches the test IdP.
    assert wizard.currentId() == PAGE_DOMAIN
    domain = wizard.domain_page
    domain.prefix.setText("my-aws-login")
    assert "Cognito does not allow “aws”" in domain.error.text() and not next_button.isEnabled()
    domain.prefix.setText("hospital-pacs")
    assert "hospital-pacs.auth.eu-west-1.amazoncognito.com" in domain.resolved.text()
    domain.url_button.setChecked(True)
    domain.url.setText(console_idp.issuer)
    domain.check_button.click()
    run.until(lambda: wizard.check_task is not None and wizard.check_task.done())
    results = domain.results.text()
    assert results.startswith("The provider is ready."), results
    assert next_button.isEnabled()
    assert f"The document names the expected issuer {console_idp.issuer}" in results
    assert "Endpoints found: authorization, token, userinfo, JWKS" in results and "signing key(s)" in results
    shot(wizard, tmp_path, "wizard-3-domain-checked")
    wizard.next()

    # 4. Portico's side: a preview of exactly what will be created, then created.
    assert wizard.currentId() == PAGE_PORTICO
    portico = wizard.portico_page
    name = f"Cognito {secrets.token_hex(3)}"
    portico.name.setText(name)
    portico.is_default.setChecked(False)
    preview = portico.preview.toPlainText()
    assert f'"name": "{name}"' in preview and f'"hostname": "127.0.0.1"' in preview and f'"issuer": "{console_idp.issuer}"' in preview
    assert f'"client_id": "{client_id}"' in preview and SECRET not in preview and "kept in memory only" in preview
    assert not next_button.isEnabled()  # nothing created yet
    shot(wizard, tmp_path, "wizard-4-portico-preview")
    portico.create_button.click()
    run.until(lambda: wizard.save_task is not None and wizard.save_task.done())
    assert wizard.saved and next_button.isEnabled(), portico.message.text()
    assert "Saved: provider" in portico.message.text()
    provider, auth_server = wizard.provider, wizard.auth_server
    assert provider.name == name and str(getattr(provider.preset, "value", provider.preset)) == "cognito"
    assert provider.claim_mapping.groups == '"cognito:groups"' and provider.userinfo_endpoint == "/oauth2/userInfo"
    assert auth_server.client_id == client_id and auth_server.client_secret_set
    shot(wizard, tmp_path, "wizard-4-portico-created")
    wizard.next()

    # 5. URLs: the Site does not point at this server — blocked, fixed with one button.
    assert wizard.currentId() == PAGE_URLS
    urls = wizard.urls_page
    run.until(lambda: wizard.urls_task is not None and wizard.urls_task.done())
    assert urls.blocking and "port does not match the Site's connect port" in urls.warnings.text()
    assert urls.fix_row.isVisible() and urls.site_url.text() == sso_server.url
    urls.confirmed.setChecked(True)
    assert not next_button.isEnabled()
    shot(wizard, tmp_path, "wizard-5-urls-blocked")
    urls.fix_button.click()
    run.until(lambda: wizard.fix_task is not None and wizard.fix_task.done())
    callback = urls.fields["callback"].text()
    assert callback == f"{sso_server.url}/auth/openid/{auth_server.token}/callback/"
    assert urls.blocking == [] and next_button.isEnabled()
    urls.copy_buttons["callback"].click()
    assert QGuiApplication.clipboard().text() == callback and urls.copy_buttons["callback"].text() == "Copied"
    shot(wizard, tmp_path, "wizard-5-urls")
    console_idp.add_client(client_id, SECRET, [callback])  # what the administrator pastes into Cognito
    wizard.next()

    # 6. Test: hands over to the test-login panel.
    assert wizard.currentId() == PAGE_TEST
    assert auth_server.token in wizard.test_page.summary.text()
    shot(wizard, tmp_path, "wizard-6-test")
    wizard.button(QWizard.WizardButton.FinishButton).click()
    run.until(lambda: "test-login" in window.panels and window.panels["test-login"].auth_servers.currentData() == auth_server.id)
    assert not window.service.cognito_draft_path().exists()
    panel = window.panels["test-login"]
    assert window.current_panel() is panel

    user = console_idp.add_user("wizard-user", "wizard-password", {
        "cognito:username": "wizard-user", "email": "wizard@hospital.test", "given_name": "Wiz", "family_name": "Ard",
        "cognito:groups": ["radiology"]})
    panel.start_button.click()
    sign_in_at_idp(run, panel, user.username, user.password)
    run.until(lambda: panel.finished, timeout=30)
    screenshot(window, tmp_path, "wizard-test-login-timeline")
    assert all(step.status == "ok" for step in panel.timeline.values()), [(s.name, s.status, s.detail) for s in panel.timeline.values()]
    assert list(panel.timeline)[-2:] == ["portico_token", "introspection"]
    assert "User “wizard-user” was created" in panel.user_text.toPlainText()
    assert panel.token_claims["username"] == "wizard-user" and panel.token_claims["email"] == "wizard@hospital.test"


def test_the_wizard_resumes_without_the_secret(sso_window: Any, run: Runner, tmp_path: Path) -> None:
    window = sso_window
    window.service.discard_cognito_draft()
    wizard = window.open_cognito_wizard()
    wizard.pool_page.pool_id.setText("us-east-1_Resume1")
    wizard.next()
    wizard.client_page.client_id.setText("resumeclient")
    wizard.client_page.secret.setText("typed-secret")
    wizard.next()
    assert wizard.currentId() == PAGE_DOMAIN
    wizard.domain_page.prefix.setText("resume-pacs")
    wizard.button(QWizard.WizardButton.CancelButton).click()  # "continue later"
    run.until(lambda: not wizard.isVisible())
    assert "typed-secret" not in window.service.cognito_draft_path().read_text()

    again = window.open_cognito_wizard()
    run.until(again.isVisible)
    assert again.currentId() == PAGE_CLIENT  # the secret must be typed again
    assert again.pool_page.pool_id.text() == "us-east-1_Resume1" and again.client_page.client_id.text() == "resumeclient"
    assert again.client_page.secret.text() == "" and "Enter the client secret again" in again.client_page.welcome_back.text()
    assert again.domain_page.prefix.text() == "resume-pacs"
    shot(again, tmp_path, "wizard-resumed")
    again.button(QWizard.WizardButton.CustomButton1).click()  # Discard
    run.until(lambda: not again.isVisible())
    assert not window.service.cognito_draft_path().exists()


def test_the_wizard_edits_an_existing_cognito_provider(sso_window: Any, run: Runner, tmp_path: Path, sso_server: EmbeddedChild) -> None:
    with sso_server.api() as api:
        provider = api.post("/providers", json={"name": f"cog-{secrets.token_hex(3)}", "preset": "cognito",
                                                "hostname": "pacs.auth.eu-west-1.amazoncognito.com",
                                                "parameters": {"region": "eu-west-1", "user_pool_id": "eu-west-1_Edit123"}}).json()
        server = api.post("/auth-servers", json={"provider_id": provider["id"], "client_id": "editclient", "client_secret": "x"}).json()
    panel = sso_window.show_panel("providers")
    run.until(lambda: panel.loaded and not panel.model.loading)
    panel.refresh()
    run.until(lambda: panel.model.row_of(provider["id"]) >= 0)
    assert panel.select_record(provider["id"])
    button = next(widget for widget in panel.findChildren(type(sso_window.restart_button)) if widget.objectName() == "cognitoWizardButton")
    run.until(lambda: button.text() == "Edit with the Cognito wizard…")
    button.click()
    wizard = sso_window.last_dialog
    run.until(lambda: wizard.load_task is not None and wizard.load_task.done())
    assert wizard.pool_page.pool_id.text() == "eu-west-1_Edit123" and wizard.pool_page.region.text() == "eu-west-1"
    assert wizard.domain_page.prefix.text() == "pacs" and wizard.client_page.client_id.text() == "editclient"
    wizard.next()
    assert wizard.client_page.isComplete()  # the stored secret is kept when left empty
    wizard.next()
    wizard.domain_page.prefix.setText("radiology")
    wizard.next()
    assert wizard.portico_page.create_button.text() == "Save changes in Portico"
    assert "Update the OpenID provider" in wizard.portico_page.preview.toPlainText()
    wizard.portico_page.create_button.click()
    run.until(lambda: wizard.save_task is not None and wizard.save_task.done())
    assert wizard.saved, wizard.portico_page.message.text()
    shot(wizard, tmp_path, "wizard-edit-saved")
    assert wizard.provider.id == provider["id"] and wizard.provider.hostname == "radiology.auth.eu-west-1.amazoncognito.com"
    assert wizard.auth_server.id == server["id"]
    wizard.discard()
