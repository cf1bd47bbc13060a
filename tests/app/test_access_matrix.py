"""A group's access as a matrix of imaging servers × capabilities in the Groups panel:
ticked capabilities become rules, a change is previewed in words before it applies,
and a rule changed meanwhile is not overwritten."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.app.conftest import Runner, screenshot
from tests.app.support import created, unique


def wait_dialog(run: Runner, owner: Any, kind: type) -> Any:
    run.until(lambda: isinstance(owner.last_dialog, kind) and owner.last_dialog.isVisible())
    return owner.last_dialog


def rules_of(api: httpx.Client, group_id: int) -> dict[int, dict[str, Any]]:
    items = api.get("/access-rules", params={"group_id": group_id, "limit": 500}).json()["items"]
    return {rule["imaging_server_id"]: rule for rule in items}


def _matrix(run: Runner, window: Any, api: httpx.Client) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
    group = created(api, "groups", {"name": unique("Radiology")})
    servers = [created(api, "imaging-servers", {"token": unique(f"pacs{n}"), "name": unique(f"PACS-{n}"), "hostname": f"pacs{n}.example.org"}) for n in (1, 2)]
    members = [created(api, "users", {"username": unique("reader")}) for _ in range(3)]
    api.post(f"/groups/{group['id']}/members/add", json={"user_ids": [m["id"] for m in members]}).raise_for_status()
    panel = window.show_panel("groups")
    run.until(lambda: panel.loaded and not panel.model.loading)
    panel.search.setText(group["name"])
    run.until(lambda: panel.model.row_of(group["id"]) >= 0 and not panel.model.loading)
    assert panel.select_record(group["id"])
    section = next(s for s in panel.sections if type(s).__name__ == "AccessMatrixSection")
    run.until(lambda: section.isVisible() and any(c.server_id == servers[1]["id"] for c in section.columns))
    return group, servers, section


def test_the_matrix_creates_updates_and_deletes_rules_after_a_preview(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    from app.views.dialogs import ConfirmDialog

    group, (pacs1, pacs2), section = _matrix(run, window, api)
    assert not section.apply_button.isEnabled()
    section.set_capability(pacs1["id"], "view", True)
    section.set_capability(pacs1["id"], "download", True)
    section.set_capability(pacs2["id"], "view", True)
    section.set_capability(pacs2["id"], "send", True)
    section.set_scope(pacs2["id"], "labels", "research, teaching")
    assert section.apply_button.isEnabled() and section.apply_button.text() == "Apply 2 changes…"
    section.apply()
    dialog = wait_dialog(run, section, ConfirmDialog)
    assert [line for line in dialog.text.text().splitlines() if line] == [
        f"{group['name']} will gain download and view on {pacs1['name']} for all studies; 3 users affected.",
        f"{group['name']} will gain send and view on {pacs2['name']} for studies labelled “research” and “teaching”; 3 users affected.",
    ]
    screenshot(dialog, tmp_path, "matrix-preview-gain")
    dialog.accept()
    run.until(lambda: section.apply_task.done())
    rules = rules_of(api, group["id"])
    assert sorted(rules[pacs1["id"]]["capabilities"]) == ["download", "view"] and rules[pacs1["id"]]["scope"] == "all"
    assert sorted(rules[pacs2["id"]]["capabilities"]) == ["send", "view"] and rules[pacs2["id"]]["labels"] == ["research", "teaching"]
    run.until(lambda: not section.apply_button.isEnabled())  # reloaded: the matrix says what the rules say
    assert section.message.text().startswith(f"Applied. {group['name']} gained download and view on {pacs1['name']}")
    screenshot(window, tmp_path, "matrix-applied")
    screenshot(section, tmp_path, "matrix-applied-section")

    section.set_capability(pacs1["id"], "download", False)  # one capability less
    section.set_capability(pacs2["id"], "view", False)
    section.set_capability(pacs2["id"], "send", False)  # nothing left on PACS-2: its rule goes
    section.apply()
    dialog = wait_dialog(run, section, ConfirmDialog)
    lines = [line for line in dialog.text.text().splitlines() if line]
    assert lines[0] == f"{group['name']} will lose download on {pacs1['name']} for all studies; 3 users affected."
    assert lines[1] == f"{group['name']} will lose send and view on {pacs2['name']} for studies labelled “research” and “teaching”; 3 users affected."
    screenshot(dialog, tmp_path, "matrix-preview-lose")
    dialog.reject()  # nothing applied
    run.until(lambda: section.apply_task.done())
    assert sorted(rules_of(api, group["id"])[pacs1["id"]]["capabilities"]) == ["download", "view"]
    section.apply()
    dialog = wait_dialog(run, section, ConfirmDialog)
    dialog.accept()
    run.until(lambda: section.apply_task.done())
    rules = rules_of(api, group["id"])
    assert rules[pacs1["id"]]["capabilities"] == ["view"] and pacs2["id"] not in rules


def test_a_bad_scope_is_refused_before_anything_is_sent(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    group, (pacs1, _pacs2), section = _matrix(run, window, api)
    section.set_capability(pacs1["id"], "view", True)
    section.set_scope(pacs1["id"], "labels", "")
    run(section.apply())
    assert section.message.isVisible() and "needs at least one label" in section.message.text()
    section.set_scope(pacs1["id"], "resources", "patient-id:P1, series=2")
    run(section.apply())
    assert "“series=2” is not kind=value" in section.message.text()
    assert rules_of(api, group["id"]) == {}
    screenshot(window, tmp_path, "matrix-invalid-scope")


def test_a_rule_changed_meanwhile_is_not_overwritten(window: Any, run: Runner, api: httpx.Client) -> None:
    from app.views.dialogs import ConfirmDialog

    group, (pacs1, pacs2), section = _matrix(run, window, api)
    rule = created(api, "access-rules", {"group_id": group["id"], "imaging_server_id": pacs1["id"], "capabilities": ["view"]})
    section.reload()
    run.until(lambda: bool(section.columns) and bool(section.columns[section.column_of(pacs1["id"])].rules))
    section.set_capability(pacs1["id"], "download", True)
    section.set_capability(pacs2["id"], "view", True)
    changed = api.patch(f"/access-rules/{rule['id']}", json={"version": rule["version"], "capabilities": ["view", "upload"]})
    assert changed.status_code == 200, changed.text
    section.apply()
    dialog = wait_dialog(run, section, ConfirmDialog)
    dialog.accept()
    run.until(lambda: section.apply_task.done())
    assert "someone changed the group's rule there meanwhile" in section.message.text()
    rules = rules_of(api, group["id"])
    assert sorted(rules[pacs1["id"]]["capabilities"]) == ["upload", "view"]  # theirs, not overwritten
    run.until(lambda: section._task is None or section._task.done())
    cells = section.cells()
    assert cells[pacs1["id"]].capabilities == {"view", "upload"}  # the matrix shows theirs
    # The change on the other server was either applied before or is still waiting in the matrix.
    assert pacs2["id"] in rules or cells[pacs2["id"]].capabilities == {"view"}
