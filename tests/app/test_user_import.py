"""File → Import users…: a CSV previewed row by row (the contract's validator, group
names, duplicates, existing users), imported through the API with a per-row result,
cancellable, and the failed rows exported with their reason."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import httpx

from tests.app.conftest import Runner, screenshot
from tests.app.support import created, unique


def user_named(api: httpx.Client, username: str) -> dict[str, Any] | None:
    page = api.get("/users", params={"q": username, "limit": 50}).json()
    return next((user for user in page["items"] if user["username"] == username), None)


def group_names(api: httpx.Client, user_id: int) -> set[str]:
    return {group["name"] for group in api.get("/groups", params={"user_id": user_id, "limit": 500}).json()["items"]}


def write(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_import_previews_each_row_then_imports_with_a_result_per_row(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    stem = unique("imp")
    radiology, cardiology = created(api, "groups", {"name": f"{stem}-radiology"}), created(api, "groups", {"name": f"{stem}-cardiology"})
    existing = created(api, "users", {"username": f"{stem}-erin", "first_name": "Old"})
    path = write(tmp_path / "users.csv", [
        ["username", "email", "first_name", "last_name", "is_active", "is_staff", "groups", "password"],
        [f"{stem}-alice", "alice@hospital.org", "Alice", "Archer", "yes", "no", f"{radiology['name']};{cardiology['name']}", ""],  # line 2
        [f"{stem}-bob", "bob@hospital.org", "Bob", "", "", "yes", "", "a long enough password"],  # line 3
        [f"{stem}-carol", "not-an-email", "Carol", "", "", "", "", ""],  # line 4: bad email
        [f"{stem}-dave", "", "Dave", "", "", "", f"{radiology['name']};no-such-group-{stem}", ""],  # line 5: unknown group
        [f"{stem}-ALICE", "", "Alice again", "", "", "", "", ""],  # line 6: duplicate of line 2 (case does not matter)
        [existing["username"], "", "New", "", "", "", radiology["name"], ""],  # line 7: exists
        [f"{stem}-frank", "", "Frank", "", "", "", "", ""],  # line 8: created behind the console's back after the preview
    ])
    dialog = window.open_user_import()
    run(dialog.load(path))
    assert dialog.status_of(2) == ("create", "")
    assert dialog.status_of(3) == ("create", "")
    status, message = dialog.status_of(4)
    assert status == "invalid" and message.startswith("email:") and "valid email" in message
    assert dialog.status_of(5) == ("invalid", f"unknown group: no-such-group-{stem}")
    assert dialog.status_of(6) == ("invalid", "duplicate username: also on line 2")
    assert dialog.status_of(7) == ("update", "")
    assert dialog.summary.text() == "7 rows: 3 to create, 1 to update, 3 invalid"
    dialog.policy.setCurrentIndex(dialog.policy.findData("skip"))
    assert dialog.status_of(7) == ("skip", "")
    assert dialog.import_button.text() == "Import 3 users"
    screenshot(dialog, tmp_path, "import-preview-skip")
    dialog.policy.setCurrentIndex(dialog.policy.findData("update"))
    assert dialog.status_of(7) == ("update", "") and dialog.import_button.text() == "Import 4 users"
    screenshot(dialog, tmp_path, "import-preview")

    created(api, "users", {"username": f"{stem}-frank"})  # another administrator was quicker
    run(dialog.start_import())
    assert dialog.status_of(2)[0] == "created" and "2 groups added" in dialog.status_of(2)[1]
    assert dialog.status_of(3)[0] == "created"
    assert dialog.status_of(4)[0] == "failed" and "valid email" in dialog.status_of(4)[1]
    assert dialog.status_of(5) == ("failed", f"unknown group: no-such-group-{stem}")
    assert dialog.status_of(6)[0] == "failed"
    assert dialog.status_of(7) == ("updated", "1 group added")
    status, message = dialog.status_of(8)
    assert status == "failed" and "username" in message, message  # the server's own words
    assert dialog.summary.text() == "Imported: 2 created, 1 updated, 4 failed"
    assert not dialog.import_button.isEnabled() and dialog.export_button.isEnabled()
    dialog.table.setCurrentCell(6, 0)  # line 8: the message in full below the table
    assert dialog.detail.text() == f"Line 8: failed — {dialog.status_of(8)[1]}"
    screenshot(dialog, tmp_path, "import-results")

    alice = user_named(api, f"{stem}-alice")
    assert alice is not None and alice["email"] == "alice@hospital.org" and alice["first_name"] == "Alice" and alice["is_active"] is True
    assert group_names(api, alice["id"]) == {radiology["name"], cardiology["name"]}
    bob = user_named(api, f"{stem}-bob")
    assert bob is not None and bob["is_staff"] is True
    login = httpx.post(f"{api.base_url.scheme}://{api.base_url.netloc.decode()}/api/v1/auth/login",
                       json={"username": f"{stem}-bob", "password": "a long enough password"})
    assert login.status_code == 200, login.text  # the password column was used
    erin = api.get(f"/users/{existing['id']}").json()
    assert erin["first_name"] == "New" and group_names(api, erin["id"]) == {radiology["name"]}
    for name in ("carol", "dave"):
        assert user_named(api, f"{stem}-{name}") is None

    failed = tmp_path / "failed.csv"
    assert dialog.export_failed(failed) == 4
    with failed.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["username"] for row in rows] == [f"{stem}-carol", f"{stem}-dave", f"{stem}-ALICE", f"{stem}-frank"]
    assert "valid email" in rows[0]["error"] and rows[0]["email"] == "not-an-email"  # as the file had it, to fix
    assert rows[1]["error"] == f"unknown group: no-such-group-{stem}" and rows[1]["groups"] == f"{radiology['name']};no-such-group-{stem}"
    assert rows[3]["error"] == dialog.status_of(8)[1]
    dialog.close()


def test_a_file_without_usernames_is_refused_as_a_whole(window: Any, run: Runner, tmp_path: Path) -> None:
    path = write(tmp_path / "wrong.csv", [["login", "mail"], ["x", "y"]])
    dialog = window.open_user_import()
    run(dialog.load(path))
    assert dialog.message.isVisible() and "no “username” column" in dialog.message.text()
    assert dialog.table.rowCount() == 0 and not dialog.import_button.isEnabled()
    screenshot(dialog, tmp_path, "import-wrong-file")
    dialog.close()


def test_an_import_can_be_cancelled_and_the_rest_exported(window: Any, run: Runner, api: httpx.Client, tmp_path: Path) -> None:
    stem = unique("cancel")
    path = write(tmp_path / "many.csv", [["username"]] + [[f"{stem}-{n:03}"] for n in range(60)])
    dialog = window.open_user_import()
    run(dialog.load(path))
    assert dialog.import_button.text() == "Import 60 users"
    task = dialog.start_import()
    run.until(lambda: dialog.progress.value() >= 3)
    assert dialog.cancel_button.isVisible() and dialog.progress.isVisible()
    screenshot(dialog, tmp_path, "import-running")
    dialog.cancel_button.click()
    run.until(task.done)
    done = [row for row in dialog.plan.rows if row.outcome is not None and row.outcome.value == "created"]
    left = [row for row in dialog.plan.rows if row.outcome is not None and row.outcome.value == "not imported"]
    assert 3 <= len(done) < 60 and len(done) + len(left) == 60
    assert "cancelled" in dialog.message.text()
    total = api.get("/users", params={"q": stem, "limit": 1}).json()["total"]
    assert total in (len(done), len(done) + 1)  # the row in flight may have gone in
    assert dialog.export_failed(tmp_path / "rest.csv") == len(left)
    screenshot(dialog, tmp_path, "import-cancelled")
    dialog.close()
