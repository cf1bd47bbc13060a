"""Memberships from both sides, revoking a session, Orthanc's configuration block, and the
permission explainer, against a real embedded server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.app.conftest import ADMIN, ADMIN_PASSWORD, Runner, screenshot
from tests.app.support import created, unique


def section_of(panel: Any, kind: str) -> Any:
    return next(section for section in panel.sections if type(section).__name__ == kind)


def wait_dialog(run: Runner, owner: Any, kind: type) -> Any:
    run.until(lambda: isinstance(owner.last_dialog, kind) and owner.last_dialog.isVisible())
    return owner.last_dialog


def member_ids(api: httpx.Client, group_id: int) -> set[int]:
    return {user["id"] for user in api.get("/users", params={"group_id": group_id, "limit": 500}).json()["items"]}


def test_a_users_groups_are_edited_from_the_user(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    from app.views.dialogs import ConfirmDialog, PickDialog

    user = created(api, "users", {"username": unique("member")})
    groups = [created(api, "groups", {"name": unique(f"team{n}")}) for n in range(3)]
    panel = window.show_panel("users")
    run.until(lambda: panel.loaded and not panel.model.loading)
    panel.search.setText(user["username"])
    run.until(lambda: panel.model.row_of(user["id"]) >= 0 and not panel.model.loading)
    assert panel.select_record(user["id"])
    section = section_of(panel, "MembershipSection")
    run.until(lambda: section.isVisible() and section.summary.text().startswith("0 groups"))
    section.add_button.click()
    dialog = wait_dialog(run, section, PickDialog)
    dialog.select_labels([groups[0]["name"], groups[1]["name"]])  # several at once
    screenshot(dialog, tmp_path, "user-add-groups")
    dialog.accept()
    run.until(lambda: section.list.count() == 2)
    assert user["id"] in member_ids(api, groups[0]["id"]) and user["id"] in member_ids(api, groups[1]["id"])
    assert "2 memberships added" in section.summary.text()
    screenshot(window, tmp_path, "user-groups")

    section.list.item(0).setSelected(True)
    removed_label = section.list.item(0).text()
    section.remove_button.click()
    confirm = wait_dialog(run, section, ConfirmDialog)
    assert removed_label in confirm.text.text()
    confirm.accept()
    run.until(lambda: section.list.count() == 1)
    removed = next(group for group in groups if group["name"] == removed_label)
    assert user["id"] not in member_ids(api, removed["id"])


def test_a_groups_members_are_edited_from_the_group(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    from app.views.sections import UserPickDialog

    stem = unique("crew")
    group = created(api, "groups", {"name": stem})
    users = [created(api, "users", {"username": f"{stem}-{n}"}) for n in range(3)]
    panel = window.show_panel("groups")
    run.until(lambda: panel.loaded and not panel.model.loading)
    panel.search.setText(stem)
    run.until(lambda: panel.model.row_of(group["id"]) >= 0 and not panel.model.loading)
    assert panel.select_record(group["id"])
    section = section_of(panel, "MembershipSection")
    run.until(lambda: section.isVisible() and section.summary.text().startswith("0 members"))
    section.add_button.click()
    dialog = wait_dialog(run, section, UserPickDialog)
    dialog.filter.setText(stem)  # searched on the server
    run.until(lambda: getattr(dialog, "loaded_text", None) == stem and dialog.list.count() == 3)
    dialog.select_labels([users[0]["username"], users[2]["username"]])
    screenshot(dialog, tmp_path, "group-add-users")
    dialog.accept()
    run.until(lambda: section.list.count() == 2)
    assert member_ids(api, group["id"]) == {users[0]["id"], users[2]["id"]}
    screenshot(window, tmp_path, "group-members")


def test_revoke_a_session(window: Any, run: Runner, api: httpx.Client, shared_server: Any, tmp_path: Path) -> None:
    from app.views.dialogs import ConfirmDialog

    login = httpx.post(f"{shared_server.url}/api/v1/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD}).json()
    session_id, token = login["session_id"], login["token"]
    panel = window.show_panel("sessions")
    run.until(lambda: panel.loaded and not panel.model.loading and panel.model.row_of(session_id) >= 0)
    assert panel.select_record(session_id)
    section = section_of(panel, "SessionSection")
    assert section.isVisible() and section.revoke_button.isEnabled()
    section.reason.setText("laptop lost")
    section.revoke_button.click()
    dialog = wait_dialog(run, section, ConfirmDialog)
    dialog.accept()
    run.until(lambda: panel.current is not None and panel.current.revoked_at is not None)
    assert not section.revoke_button.isEnabled()
    assert api.get(f"/sessions/{session_id}").json()["revoked_reason"] == "laptop lost"
    assert httpx.get(f"{shared_server.url}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    screenshot(window, tmp_path, "session-revoked")


def test_orthanc_configuration_block(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    from app.views.dialogs import TextDialog

    server = created(api, "imaging-servers", {"token": unique("orthanc"), "name": unique("Orthanc"), "hostname": "orthanc.example.org"})
    panel = window.show_panel("imaging-servers")
    run.until(lambda: panel.loaded and not panel.model.loading)
    panel.search.setText(server["name"])
    run.until(lambda: panel.model.row_of(server["id"]) >= 0 and not panel.model.loading)
    assert panel.select_record(server["id"])
    section = section_of(panel, "OrthancConfigSection")
    section.button.click()
    dialog = wait_dialog(run, section, TextDialog)
    block = json.loads(dialog.text.toPlainText())
    assert block == section.block
    text = json.dumps(block)
    assert server["token"] in text
    credentials = api.get("/credentials", params={"imaging_server_id": server["id"]}).json()
    assert credentials["total"] == 1 and credentials["items"][0]["public_id"] in text
    screenshot(dialog, tmp_path, "orthanc-config")
    dialog.accept()


def test_permission_explainer(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    group = created(api, "groups", {"name": unique("readers")})
    server = created(api, "imaging-servers", {"token": unique("pacs"), "name": unique("PACS"), "hostname": "pacs.example.org"})
    rule = created(api, "access-rules", {"group_id": group["id"], "imaging_server_id": server["id"], "capabilities": ["view"]})
    reader = created(api, "users", {"username": unique("reader")})
    outsider = created(api, "users", {"username": unique("outsider")})
    api.post(f"/groups/{group['id']}/members/add", json={"user_ids": [reader["id"]]}).raise_for_status()

    panel = window.show_panel("explain")
    run.until(lambda: panel.server.findData(server["id"]) >= 0)
    panel.server.setCurrentIndex(panel.server.findData(server["id"]))
    panel.subject.setText(reader["username"])
    panel.resource.setText("1.2.840.113619.2.55.3.1")
    run(panel.explain())
    assert panel.result.granted and panel.verdict.text() == "Granted"
    assert rule["id"] in panel.result.matched_rules
    assert panel.trace.count() == len(panel.result.trace) >= 1
    assert reader["username"] in panel.details.text()
    screenshot(window, tmp_path, "explain-granted")

    panel.subject.setText(outsider["username"])
    run(panel.explain())
    assert not panel.result.granted and panel.verdict.text() == "Denied"
    screenshot(window, tmp_path, "explain-denied")

    panel.resource.setText("")  # a resource-level question needs a resource
    run(panel.explain())
    assert panel.message.isVisible() and "resource" in panel.message.text()


def test_a_users_sessions_and_linked_identities(window: Any, run: Runner, api: httpx.Client, shared_server: Any, tmp_path: Path) -> None:
    from app.views.dialogs import ConfirmDialog

    user = created(api, "users", {"username": unique("idp-user"), "password": "a long password", "is_staff": True})
    provider = created(api, "providers", {"name": unique("Keycloak"), "hostname": "kc.example.org", "authorization_endpoint": "/auth", "token_endpoint": "/token"})
    identity = created(api, "external-identities", {"provider_id": provider["id"], "subject": "f3c1-77", "user_id": user["id"], "email": "idp@example.org"})
    login = httpx.post(f"{shared_server.url}/api/v1/auth/login", json={"username": user["username"], "password": "a long password"}).json()
    panel = window.show_panel("users")
    run.until(lambda: panel.loaded and not panel.model.loading)
    panel.search.setText(user["username"])
    run.until(lambda: panel.model.search == user["username"] and not panel.model.loading and panel.model.row_of(user["id"]) >= 0)
    assert panel.select_record(user["id"])
    sessions = section_of(panel, "UserSessionsSection")
    identities = section_of(panel, "IdentitiesSection")
    run.until(lambda: sessions.isVisible() and identities.isVisible())
    assert sessions.list.count() == 1
    assert identities.list.item(0).text() == f"{provider['name']}: f3c1-77 (idp@example.org)"
    screenshot(window, tmp_path, "user-sessions-identities")

    sessions.list.item(0).setSelected(True)
    sessions.action_button.click()
    wait_dialog(run, sessions, ConfirmDialog).accept()
    run.until(lambda: not sessions.isVisible())
    assert api.get(f"/sessions/{login['session_id']}").json()["active"] is False

    identities.list.item(0).setSelected(True)
    identities.action_button.click()
    wait_dialog(run, identities, ConfirmDialog).accept()
    run.until(lambda: not identities.isVisible())
    assert api.get(f"/external-identities/{identity['id']}").status_code == 404
