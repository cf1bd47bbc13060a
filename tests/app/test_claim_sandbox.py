"""The claim-mapping sandbox against a real embedded server: pasted claims, live (debounced)
evaluation as expressions change, the parser's message at a bad expression, saving."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.app.conftest import EmbeddedChild, Runner, screenshot

pytestmark = pytest.mark.slow
CLAIMS = {"sub": "abc", "cognito:username": "alice", "preferred_username": "alice.a", "email": "alice@hospital.test",
          "given_name": "Alice", "family_name": "Archer", "cognito:groups": ["radiology", "admins"], "custom:dept": "CT"}


def settle(run: Runner, sandbox: Any) -> None:
    run.until(lambda: sandbox.settled)


def test_the_mapping_updates_live_and_is_saved_to_the_provider(sso_window: Any, run: Runner, tmp_path: Path,
                                                               sso_server: EmbeddedChild) -> None:
    with sso_server.api() as api:
        provider = api.post("/providers", json={"name": f"cog-{secrets.token_hex(3)}", "preset": "cognito",
                                                "hostname": "pacs.auth.eu-west-1.amazoncognito.com",
                                                "parameters": {"region": "eu-west-1", "user_pool_id": "eu-west-1_Sand1"}}).json()
        full = api.get(f"/providers/{provider['id']}").json()
    panel = sso_window.show_panel("test-login")
    panel.tabs.setCurrentIndex(3)
    sandbox = panel.sandbox
    sandbox.set_provider(run(sso_window.service.get("providers", provider["id"])))
    sandbox.claims.setPlainText(__import__("json").dumps(CLAIMS))
    settle(run, sandbox)
    assert sandbox.result.username == "alice" and sandbox.result.groups == ["radiology", "admins"]
    assert "Groups: radiology, admins" in sandbox.mapped.text() and "A login would succeed." in sandbox.mapped.text()

    sandbox.expressions["groups"].setText('["custom:dept"]')
    sandbox.expressions["username"].setText("preferred_username")
    assert not sandbox.settled  # debounced: nothing sent yet
    settle(run, sandbox)
    assert (sandbox.result.username, sandbox.result.groups) == ("alice.a", ["CT"])

    sandbox.expressions["username"].setText("cognito:username")  # unquoted ':' is not JMESPath
    settle(run, sandbox)
    assert "not a valid JMESPath expression" in sandbox.errors["username"].text() and sandbox.errors["username"].isVisible()
    assert not sandbox.save_button.isEnabled()
    screenshot(sso_window, tmp_path, "claim-sandbox-error")

    sandbox.expressions["username"].setText("nickname")
    settle(run, sandbox)
    assert sandbox.result.usable is False and "A login would FAIL" in sandbox.mapped.text()

    sandbox.expressions["username"].setText('"cognito:username"')
    settle(run, sandbox)
    assert sandbox.save_button.isEnabled()
    screenshot(sso_window, tmp_path, "claim-sandbox")
    sandbox.save_button.click()
    run.until(lambda: sandbox.save_task is not None and sandbox.save_task.done())
    assert "Saved to provider" in sandbox.message.text()
    with sso_server.api() as api:
        saved = api.get(f"/providers/{provider['id']}").json()
    assert saved["claim_mapping"]["groups"] == '["custom:dept"]' and saved["claim_mapping"]["username"] == '"cognito:username"'
    assert saved["version"] == full["version"] + 1


def test_pasted_claims_that_are_not_json_are_named(sso_window: Any, run: Runner) -> None:
    sandbox = sso_window.show_panel("test-login").sandbox
    sandbox.claims.setPlainText("{not json")
    settle(run, sandbox)
    assert sandbox.mapped.text().startswith("The claims are not JSON")
    assert not sandbox.save_button.isEnabled()  # no provider chosen yet
