"""The URLs to register for an auth server, under its form: as the API derives them from
the Site, each copyable, with the server's warnings when the Site makes them unacceptable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from PySide6.QtGui import QGuiApplication

from tests.app.conftest import Runner, screenshot
from tests.app.support import created, unique


def _cognito_auth_server(api: httpx.Client) -> dict[str, Any]:
    provider = created(api, "providers", {
        "name": unique("cog"), "preset": "cognito", "hostname": "pacs.auth.eu-west-1.amazoncognito.com",
        "parameters": {"region": "eu-west-1", "user_pool_id": "eu-west-1_Urls123"},
    })
    return created(api, "auth-servers", {"provider_id": provider["id"], "client_id": unique("client"), "client_secret": "s3cret"})


def _shown(run: Runner, window: Any, auth_server: dict[str, Any]) -> tuple[Any, Any]:
    panel = window.show_panel("auth-servers")
    run.until(lambda: panel.loaded and not panel.model.loading)
    panel.search.setText(auth_server["token"])
    run.until(lambda: panel.model.row_of(auth_server["id"]) >= 0 and not panel.model.loading)
    assert panel.select_record(auth_server["id"])
    section = next(s for s in panel.sections if type(s).__name__ == "AuthServerUrlsSection")
    return panel, section


def test_the_urls_to_register_are_shown_and_copied(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    auth_server = _cognito_auth_server(api)
    expected = api.get(f"/auth-servers/{auth_server['id']}/urls").json()
    panel, section = _shown(run, window, auth_server)
    run.until(lambda: section.isVisible() and section.fields["callback"].text() == expected["callback"])
    assert section.fields["login"].text() == expected["login"]
    assert section.fields["logout"].text() == expected["logout"]
    assert section.policy.text() == expected["policy"] and "register them exactly" in section.policy.text()
    assert expected["warnings"] == [] and not section.warnings.isVisible()  # loopback http is fine
    section.copy_buttons["callback"].click()
    assert QGuiApplication.clipboard().text() == expected["callback"]
    assert section.copy_buttons["callback"].text() == "Copied"
    section.copy_buttons["logout"].click()
    assert QGuiApplication.clipboard().text() == expected["logout"]
    assert section.copy_buttons["callback"].text() == "Copy"
    screenshot(window, tmp_path, "auth-server-urls")
    screenshot(section, tmp_path, "auth-server-urls-section")
    assert not panel.message.isVisible()


def test_a_plain_http_site_shows_cognitos_refusal(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    from tests.app.test_entity_panels import enter

    auth_server = _cognito_auth_server(api)
    before = api.get("/site").json()
    try:
        panel, section = _shown(run, window, auth_server)
        run.until(lambda: section.fields["callback"].text() != "")
        site = window.show_panel("site")  # the Site changed in the console: the section follows
        run.until(lambda: site.current is not None)
        enter(site, {"production_url": "http://portico.hospital.test", "environment": "production"})
        site.save()
        run.until(lambda: site.form.message.text() == "Saved.")
        window.show_panel("auth-servers")
        run.until(lambda: section.fields["callback"].text().startswith("http://portico.hospital.test/"))
        run.until(lambda: section.warnings.isVisible())
        assert "Cognito refuses callback URLs that are not https" in section.warnings.text()
        assert section.warnings.property("level") == "error"
        assert panel.message.isVisible() and "Cognito refuses" in panel.message.text()  # at the top too
        screenshot(window, tmp_path, "auth-server-urls-http-warning")
        screenshot(section, tmp_path, "auth-server-urls-http-warning-section")
    finally:
        current = api.get("/site").json()
        restored = api.patch("/site", json={"version": current["version"], "production_url": before["production_url"],
                                            "environment": before["environment"]})
        assert restored.status_code == 200, restored.text
