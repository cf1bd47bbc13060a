"""Each entity panel against a real embedded server: list, search, create, edit, delete,
validation at the field, server field errors, conflicts, duplicate, export."""

from __future__ import annotations

import csv
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PySide6.QtCore import Qt

from tests.app.conftest import Runner, screenshot


def unique(stem: str) -> str:
    return f"{stem}-{secrets.token_hex(3)}"


def created(api: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = api.post(f"/{path}", json=body)
    assert answer.status_code == 201, answer.text
    record: dict[str, Any] = answer.json()
    return record.get("credential", record)


def enter(panel: Any, values: dict[str, Any]) -> None:
    """Type into the detail form, as a person would (every change is signalled)."""
    for name, value in values.items():
        editor = panel.form.editor(name)
        editor.set_value(value)
        editor.changed.emit()


def wait_dialog(run: Runner, owner: Any, kind: type) -> Any:
    run.until(lambda: isinstance(owner.last_dialog, kind) and owner.last_dialog.isVisible())
    return owner.last_dialog


def search(run: Runner, panel: Any, text: str) -> None:
    panel.search.setText(text)  # debounced: the request goes out 250 ms later
    run.until(lambda: panel.model.search == text.strip() and not panel.model.loading and not panel._debounce.pending)


def listed(panel: Any, field_name: str) -> list[Any]:
    return [getattr(record, field_name) for record in panel.model.rows]


@dataclass
class Case:
    key: str
    label_field: str  # the field searched for and shown
    create: Callable[[httpx.Client, str], dict[str, Any]]  # form values of a new record
    edit: dict[str, Any]  # a change made in the form
    prepare: Callable[[httpx.Client], dict[str, Any]] = lambda api: {}
    expect_after_edit: dict[str, Any] = field(default_factory=dict)


def _provider(api: httpx.Client) -> dict[str, Any]:
    return created(api, "providers", {"name": unique("idp"), "hostname": "idp.example.org", "authorization_endpoint": "/authorize", "token_endpoint": "/token"})


def _group_and_server(api: httpx.Client) -> dict[str, Any]:
    group = created(api, "groups", {"name": unique("grp")})
    server = created(api, "imaging-servers", {"token": unique("srv"), "name": unique("PACS"), "hostname": "pacs.example.org"})
    return {"group": group, "server": server}


CASES = [
    Case(
        "providers", "name",
        lambda api, name: {"name": name, "hostname": "login.example.org", "authorization_endpoint": "/oauth2/authorize", "token_endpoint": "/oauth2/token"},
        {"description": "the hospital's IdP", "scopes": ["openid", "email"]},
    ),
    Case(
        "auth-servers", "client_id",
        lambda api, name: {"provider_id": _provider(api)["id"], "client_id": name, "redirect_urls": ["https://viewer.example.org/callback"]},
        {"description": "OHIF", "group_sync": "add"},
    ),
    Case(
        "users", "username",
        lambda api, name: {"username": name, "email": f"{name}@example.org", "first_name": "Ada", "password": "a long password"},
        {"last_name": "Lovelace", "is_staff": True},
    ),
    Case("groups", "name", lambda api, name: {"name": name, "idp_group_name": name.upper()}, {"description": "reading room"}),
    Case(
        "imaging-servers", "name",
        lambda api, name: {"name": name, "token": name.lower(), "hostname": "orthanc.example.org", "port": 8042},
        {"dicomweb_root": "/dicom-web2/", "is_active": False},
    ),
    Case(
        "access-rules", "description",
        lambda api, name: (lambda ids: {"group_id": ids["group"]["id"], "imaging_server_id": ids["server"]["id"], "capabilities": ["view", "download"], "description": name})(_group_and_server(api)),
        {"validity": 120, "scope": "labels", "labels": ["research"]},
    ),
    Case(
        "credentials", "description",
        lambda api, name: {"kind": "orthanc-plugin", "imaging_server_id": _group_and_server(api)["server"]["id"], "description": name},
        {"description": "rotated"},
        expect_after_edit={"description": "rotated"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.key for case in CASES])
def test_list_search_create_edit_delete(case: Case, window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    from app.views.dialogs import ConfirmDialog, MessageDialog

    panel = window.show_panel(case.key)
    run.until(lambda: panel.loaded and not panel.model.loading)
    name = unique(case.key.rstrip("s"))
    values = case.create(api, name)
    # The reference combos were loaded before these records existed: reload them.
    panel.refresh()
    run.until(lambda: not panel.model.loading)
    run(panel._load_references())

    # Create through the form.
    panel.new_record()
    assert panel.form.mode == "create"
    enter(panel, values)
    assert panel.form.valid, panel.form.local_errors()
    assert panel.save_button.isEnabled()
    panel.save()
    if case.key == "access-rules":  # a change of access is previewed in words first
        wait_dialog(run, panel, ConfirmDialog).accept()
    if case.key == "credentials":  # the secret is shown once
        dialog = wait_dialog(run, panel, MessageDialog)
        assert dialog.secret.text()
        screenshot(dialog, tmp_path, f"{case.key}-secret")
        dialog.accept()
    run.until(lambda: panel.current is not None and getattr(panel.current, case.label_field) == values[case.label_field])
    record_id = panel.current.id
    on_server = api.get(f"/{case.key}/{record_id}").json()
    assert on_server[case.label_field] == values[case.label_field]

    # Search finds it, and only what matches.
    search(run, panel, name)
    assert listed(panel, "id") == [record_id]
    search(run, panel, "no-such-" + name)
    assert panel.model.rows == []
    search(run, panel, "")
    assert panel.model.total >= 1

    # Edit: only the changed fields are sent, with the version read.
    search(run, panel, name)
    assert panel.select_record(record_id)
    enter(panel, case.edit)
    assert panel.form.dirty and panel.form.valid, panel.form.local_errors()
    panel.save()
    if case.key == "access-rules":
        wait_dialog(run, panel, ConfirmDialog).accept()
    run.until(lambda: panel.form.message.text().startswith("Saved"))
    on_server = api.get(f"/{case.key}/{record_id}").json()
    for key, value in (case.expect_after_edit or case.edit).items():
        assert on_server[key] == value, key
    screenshot(window, tmp_path, f"{case.key}-edited")

    # Delete, after a confirmation that names the record.
    panel.delete_selected()
    dialog = wait_dialog(run, panel, ConfirmDialog)
    assert "Delete the" in dialog.text.text()
    screenshot(dialog, tmp_path, f"{case.key}-delete")
    dialog.accept()
    run.until(lambda: panel.model.row_of(record_id) < 0 and panel.current is None)
    assert api.get(f"/{case.key}/{record_id}").status_code == 404


def test_validation_errors_are_shown_at_the_field(window: Any, run: Runner, tmp_path: Path) -> None:
    panel = window.show_panel("users")
    run.until(lambda: panel.loaded and not panel.model.loading)
    panel.new_record()
    enter(panel, {"username": "has space", "password": "short", "email": "not-an-email"})
    assert not panel.form.valid
    assert not panel.save_button.isEnabled()
    assert "not allowed" in panel.form.editor("username").error.text()
    assert "at least 8" in panel.form.editor("password").error.text()
    assert panel.form.editor("email").error.text()
    assert panel.form.editor("email").error.isVisible()
    screenshot(window, tmp_path, "users-invalid")
    enter(panel, {"username": unique("fixed"), "password": "long enough now", "email": "ok@example.org"})
    assert panel.form.valid
    assert not panel.form.editor("username").error.isVisible()


def test_server_field_errors_are_shown_at_the_field(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    taken = created(api, "groups", {"name": unique("taken")})
    panel = window.show_panel("groups")
    run.until(lambda: panel.loaded and not panel.model.loading)
    panel.new_record()
    enter(panel, {"name": taken["name"]})
    assert panel.form.valid  # nothing the form can know
    panel.save()
    run.until(lambda: panel.form.editor("name").error.isVisible())
    assert "taken" in panel.form.editor("name").error.text() or "exists" in panel.form.editor("name").error.text()
    assert panel.message.isVisible() and "Not saved" in panel.message.text()
    assert panel.form.mode == "create"  # what was typed is still there
    screenshot(window, tmp_path, "groups-duplicate")


def _edit_behind_the_back(run: Runner, panel: Any, api: httpx.Client, path: str, record: dict[str, Any], theirs: dict[str, Any], mine: dict[str, Any]) -> Any:
    from app.views.dialogs import ConflictDialog

    panel.refresh()
    run.until(lambda: panel.model.row_of(record["id"]) >= 0)
    assert panel.select_record(record["id"])
    enter(panel, mine)
    changed = api.patch(f"/{path}/{record['id']}", json={**theirs, "version": record["version"]})
    assert changed.status_code == 200, changed.text
    panel.save()
    return wait_dialog(run, panel, ConflictDialog)


def test_conflict_offers_reload_and_compare(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    from app.views.dialogs import ConflictDialog

    group = created(api, "groups", {"name": unique("conflict"), "description": "first"})
    panel = window.show_panel("groups")
    dialog = _edit_behind_the_back(run, panel, api, "groups", group, {"description": "theirs"}, {"description": "mine"})
    cells = {dialog.table.item(row, 0).text(): (dialog.table.item(row, 1).text(), dialog.table.item(row, 2).text()) for row in range(dialog.table.rowCount())}
    assert cells["Description"] == ("mine", "theirs")
    screenshot(dialog, tmp_path, "groups-conflict")
    dialog.done(ConflictDialog.RELOAD)
    run.until(lambda: panel.form.editor("description").value() == "theirs")
    assert not panel.form.dirty
    assert api.get(f"/groups/{group['id']}").json()["description"] == "theirs"


def test_conflict_can_apply_mine_on_top_when_asked(window: Any, run: Runner, api: httpx.Client) -> None:
    from app.views.dialogs import ConflictDialog

    group = created(api, "groups", {"name": unique("conflict"), "description": "first"})
    panel = window.show_panel("groups")
    dialog = _edit_behind_the_back(run, panel, api, "groups", group, {"idp_group_name": "THEIRS"}, {"description": "mine"})
    dialog.done(ConflictDialog.KEEP_MINE)
    run.until(lambda: panel.form.message.text().startswith("Saved"))
    final = api.get(f"/groups/{group['id']}").json()
    assert final["description"] == "mine" and final["idp_group_name"] == "THEIRS"  # both kept


def test_conflict_kept_editing_saves_nothing(window: Any, run: Runner, api: httpx.Client) -> None:
    group = created(api, "groups", {"name": unique("conflict"), "description": "first"})
    panel = window.show_panel("groups")
    dialog = _edit_behind_the_back(run, panel, api, "groups", group, {"description": "theirs"}, {"description": "mine"})
    dialog.reject()
    run.until(lambda: "Not saved" in panel.message.text())
    assert panel.form.editor("description").value() == "mine"
    assert api.get(f"/groups/{group['id']}").json()["description"] == "theirs"


def test_delete_confirmation_names_what_else_goes(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    from app.views.dialogs import ConfirmDialog

    ids = _group_and_server(api)
    group = ids["group"]
    created(api, "access-rules", {"group_id": group["id"], "imaging_server_id": ids["server"]["id"], "capabilities": ["view"]})
    users = [created(api, "users", {"username": unique("member")}) for _ in range(2)]
    api.post(f"/groups/{group['id']}/members/add", json={"user_ids": [user["id"] for user in users]}).raise_for_status()
    panel = window.show_panel("groups")
    search(run, panel, group["name"])
    assert panel.select_record(group["id"])
    panel.delete_selected()
    dialog = wait_dialog(run, panel, ConfirmDialog)
    text = dialog.text.text()
    assert "2 memberships" in text and "1 access rule" in text, text
    screenshot(dialog, tmp_path, "groups-delete-impact")
    dialog.reject()  # cancelled: nothing is deleted
    run.until(lambda: not dialog.isVisible())
    assert api.get(f"/groups/{group['id']}").status_code == 200


def test_duplicate_copies_into_a_new_record(window: Any, run: Runner, api: httpx.Client) -> None:
    server = created(api, "imaging-servers", {"token": unique("dup"), "name": unique("Dup"), "hostname": "dup.example.org", "port": 4242})
    panel = window.show_panel("imaging-servers")
    search(run, panel, server["name"])
    assert panel.select_record(server["id"])
    panel.duplicate_record()
    assert panel.form.mode == "create"
    values = panel.form.values()
    assert values["name"] == f"{server['name']} (copy)" and values["token"] == f"{server['token']}-copy" and values["port"] == 4242
    panel.save()
    run.until(lambda: panel.current is not None and panel.current.name == f"{server['name']} (copy)")
    assert panel.current.id != server["id"]


def test_search_is_debounced_and_the_latest_wins(window: Any, run: Runner, api: httpx.Client) -> None:
    stem = unique("typing")
    for suffix in ("a", "ab", "abc"):
        created(api, "groups", {"name": f"{stem}-{suffix}"})
    panel = window.show_panel("groups")
    run.until(lambda: panel.loaded and not panel.model.loading)
    requests: list[dict[str, Any]] = []
    real = panel.model._fetch

    async def counting(params: dict[str, Any]) -> Any:
        requests.append(params)
        return await real(params)

    panel.model._fetch = counting
    for text in (f"{stem}-a", f"{stem}-ab", f"{stem}-abc"):  # typed quickly
        panel.search.setText(text)
    run.until(lambda: not panel._debounce.pending and not panel.model.loading and panel.model.search == f"{stem}-abc")
    assert [params.get("q") for params in requests] == [f"{stem}-abc"]  # one request, for the last text
    assert listed(panel, "name") == [f"{stem}-abc"]


def test_filters_and_server_sorting(window: Any, run: Runner, api: httpx.Client) -> None:
    stem = unique("filter")
    group = created(api, "groups", {"name": stem})
    inside = created(api, "users", {"username": f"{stem}-b-in"})
    created(api, "users", {"username": f"{stem}-a-out", "is_active": False})
    api.post(f"/groups/{group['id']}/members/add", json={"user_ids": [inside["id"]]}).raise_for_status()
    panel = window.show_panel("users")
    search(run, panel, stem)
    assert listed(panel, "username") == [f"{stem}-a-out", f"{stem}-b-in"]
    panel.table.sortByColumn(0, Qt.SortOrder.DescendingOrder)
    run.until(lambda: panel.model.sort_key == "-username" and not panel.model.loading)
    assert listed(panel, "username") == [f"{stem}-b-in", f"{stem}-a-out"]
    active = panel.filter_widgets["is_active"]
    active.setCurrentIndex(active.findData(True))
    run.until(lambda: panel.model.filters.get("is_active") is True and not panel.model.loading)
    assert listed(panel, "username") == [f"{stem}-b-in"]
    active.setCurrentIndex(0)
    run(panel._load_references())
    groups = panel.filter_widgets["group_id"]
    groups.setCurrentIndex(groups.findData(group["id"]))
    run.until(lambda: panel.model.filters.get("group_id") == group["id"] and not panel.model.loading)
    assert listed(panel, "username") == [f"{stem}-b-in"]


def test_csv_export_of_the_listed_records(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    stem = unique("export")
    for index in range(3):
        created(api, "groups", {"name": f"{stem}-{index}", "description": f"line {index}"})
    panel = window.show_panel("groups")
    search(run, panel, stem)
    path = tmp_path / "groups.csv"
    assert run(panel.export_csv(path)) == 3
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["name"] for row in rows) == [f"{stem}-0", f"{stem}-1", f"{stem}-2"]
    assert {row["description"] for row in rows} == {"line 0", "line 1", "line 2"}


def test_granting_superuser_asks_first(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    from app.views.dialogs import ConfirmDialog

    user = created(api, "users", {"username": unique("promote")})
    panel = window.show_panel("users")
    search(run, panel, user["username"])
    assert panel.select_record(user["id"])
    enter(panel, {"is_superuser": True, "is_staff": True})
    panel.save()
    dialog = wait_dialog(run, panel, ConfirmDialog)
    assert "superuser" in dialog.text.text()
    screenshot(dialog, tmp_path, "users-grant-superuser")
    dialog.reject()
    run.until(lambda: panel._save_task.done())
    assert api.get(f"/users/{user['id']}").json()["is_superuser"] is False
    panel.save()
    dialog = wait_dialog(run, panel, ConfirmDialog)
    dialog.accept()
    run.until(lambda: panel.form.message.text().startswith("Saved"))
    assert api.get(f"/users/{user['id']}").json()["is_superuser"] is True


def test_sessions_are_listed_read_only(window: Any, run: Runner, api: httpx.Client, shared_server: Any, tmp_path: Path) -> None:
    from tests.app.conftest import ADMIN, ADMIN_PASSWORD

    login = httpx.post(f"{shared_server.url}/api/v1/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD})
    assert login.status_code == 200
    session_id = login.json()["session_id"]
    panel = window.show_panel("sessions")
    run.until(lambda: panel.loaded and not panel.model.loading and panel.model.row_of(session_id) >= 0)
    assert not panel.new_button.isVisible() and not panel.save_button.isVisible()
    assert panel.select_record(session_id)
    assert panel.form.mode == "view"
    assert panel.form.editor("id").input.isReadOnly()
    screenshot(window, tmp_path, "sessions")


def test_audit_log_filters(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    name = unique("audited")
    created(api, "groups", {"name": name})
    panel = window.show_panel("audit-events")
    run.until(lambda: panel.loaded and not panel.model.loading)
    action = panel.filter_widgets["action"]
    action.setText("group.create")
    run.until(lambda: panel.model.filters.get("action") == "group.create" and not panel.model.loading)
    assert panel.model.rows and {record.action for record in panel.model.rows} == {"group.create"}
    search(run, panel, name)
    assert len(panel.model.rows) == 1
    assert panel.select_record(panel.model.rows[0].id)
    changes = panel.form.editor("changes").input
    assert changes.rowCount() >= 1
    names = {changes.item(row, 0).text(): changes.item(row, 2).text() for row in range(changes.rowCount())}
    assert names["name"] == name
    screenshot(window, tmp_path, "audit-log")


def test_site_settings_edit_and_validate(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    panel = window.show_panel("site")
    run.until(lambda: panel.current is not None)
    enter(panel, {"production_url": "not a url"})
    assert panel.form.editor("production_url").error.isVisible()
    assert not panel.save_button.isEnabled()
    enter(panel, {"production_url": "https://portico.hospital.example"})
    assert panel.save_button.isEnabled()
    panel.save()
    run.until(lambda: panel.form.message.text() == "Saved.")
    assert api.get("/site").json()["production_url"] == "https://portico.hospital.example"
    screenshot(window, tmp_path, "site")


def test_unsaved_changes_are_not_dropped_silently(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    from app.views.dialogs import ConfirmDialog

    stem = unique("unsaved")
    first = created(api, "groups", {"name": f"{stem}-1"})
    second = created(api, "groups", {"name": f"{stem}-2"})
    panel = window.show_panel("groups")
    search(run, panel, stem)
    assert panel.select_record(first["id"])
    enter(panel, {"description": "typed, not saved"})
    panel.table.selectRow(panel.model.row_of(second["id"]))  # a click on another row
    dialog = wait_dialog(run, panel, ConfirmDialog)
    assert f"{stem}-1" in dialog.text.text()
    assert panel.current.id == first["id"]  # still on the record being edited
    screenshot(dialog, tmp_path, "groups-discard")
    dialog.reject()
    run.until(lambda: not dialog.isVisible())
    assert panel.form.editor("description").value() == "typed, not saved"
    assert panel.table.currentIndex().row() == panel.model.row_of(first["id"])

    panel.new_record()  # Ctrl+N asks too
    dialog = wait_dialog(run, panel, ConfirmDialog)
    dialog.accept()
    run.until(lambda: panel.form.mode == "create")
    assert panel.form.editor("description").value() == ""
    assert api.get(f"/groups/{first['id']}").json()["description"] == ""


def test_access_changes_are_previewed_in_words(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    from app.views.dialogs import ConfirmDialog

    ids = _group_and_server(api)
    group, server = ids["group"], ids["server"]
    members = [created(api, "users", {"username": unique("viewer")}) for _ in range(2)]
    api.post(f"/groups/{group['id']}/members/add", json={"user_ids": [m["id"] for m in members]}).raise_for_status()
    panel = window.show_panel("access-rules")
    run.until(lambda: panel.loaded and not panel.model.loading)
    run(panel._load_references())
    panel.new_record()
    enter(panel, {"group_id": group["id"], "imaging_server_id": server["id"], "capabilities": ["view", "download"]})
    panel.save()
    dialog = wait_dialog(run, panel, ConfirmDialog)
    text = dialog.text.text()
    assert text == f"{group['name']} will gain download and view on {server['name']} for all studies; 2 users affected.", text
    screenshot(dialog, tmp_path, "access-rule-preview")
    dialog.accept()
    run.until(lambda: panel.current is not None and panel.form.mode == "edit")
    rule_id = panel.current.id

    enter(panel, {"capabilities": ["view"], "scope": "labels", "labels": ["research"]})
    panel.save()
    dialog = wait_dialog(run, panel, ConfirmDialog)
    assert dialog.text.text() == f"{group['name']} will lose download on {server['name']} for studies labelled “research”; 2 users affected."
    dialog.reject()  # nothing applied
    run.until(lambda: panel._save_task.done())
    assert api.get(f"/access-rules/{rule_id}").json()["capabilities"] == ["view", "download"]
