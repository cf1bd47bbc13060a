"""Starting and connecting: the embedded server's life with the console, the first superuser,
a remote server, and what the console remembers."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.conftest import ADMIN, ADMIN_PASSWORD, Runner, screenshot

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _wait_dialog(run: Runner, window: Any, kind: type) -> Any:
    run.until(lambda: isinstance(window.last_dialog, kind) and window.last_dialog.isVisible())
    return window.last_dialog


def test_first_start_asks_for_the_first_superuser_and_closing_stops_the_server(make_window: Any, run: Runner, tmp_path: Path) -> None:
    from app.views.dialogs import FirstSuperuserDialog

    window = make_window()
    run(window.start_embedded(tmp_path / "data"), timeout=60)
    service = window.service
    assert service.mode == "embedded" and service.url.startswith("http://127.0.0.1:")
    assert str(tmp_path / "data") in window.windowTitle()
    assert str(tmp_path / "data") in window.target_label.text()
    dialog = _wait_dialog(run, window, FirstSuperuserDialog)
    dialog.username.setText("chief")
    dialog.password.setText("a long password")
    dialog.again.setText("a different one")
    assert not dialog.create_button.isEnabled()
    assert dialog.problem() == "The two passwords differ."
    dialog.again.setText("a long password")
    assert dialog.create_button.isEnabled()
    screenshot(window, tmp_path, "first-superuser-window")
    screenshot(dialog, tmp_path, "first-superuser")
    dialog.create_button.click()
    run.until(lambda: window.first_start.done())
    assert not dialog.isVisible()
    superusers = run(service.list_page("users", {"is_superuser": True}))
    assert [user.username for user in superusers.items] == ["chief"]
    # The superuser signs in with the password, like any other administrator.
    login = httpx.post(f"{service.url}/api/v1/auth/login", json={"username": "chief", "password": "a long password"})
    assert login.status_code == 200
    panel = window.show_panel("users")
    run.until(lambda: panel.model.total == 1)
    screenshot(window, tmp_path, "embedded-users")

    pid = service.embedded.pid
    assert pid is not None and _alive(pid)
    window.close()
    run.until(lambda: window.closed, timeout=30)
    run.until(lambda: not _alive(pid))
    assert service.embedded.returncode == 0  # a graceful stop


def test_killed_server_shows_a_message_and_restarts_without_losing_anything(make_window: Any, run: Runner, tmp_path: Path) -> None:
    from app.views.dialogs import FirstSuperuserDialog

    window = make_window()
    run(window.start_embedded(tmp_path / "data"), timeout=60)
    _wait_dialog(run, window, FirstSuperuserDialog).reject()  # "Later"
    run.until(lambda: window.first_start.done())
    panel = window.show_panel("groups")
    run.until(lambda: panel.loaded and not panel.model.loading)
    panel.new_record()
    panel.form.editor("name").input.setText("Radiology")
    panel.save()
    run.until(lambda: panel.current is not None and panel.current.name == "Radiology")
    # An edit in progress when the server dies.
    panel.form.editor("description").input.setPlainText("reading room 2")
    assert panel.form.dirty

    old_pid = window.service.embedded.pid
    window.service.embedded.kill()
    run.until(lambda: window.banner.isVisible())
    assert "stopped unexpectedly (it was killed" in window.banner_text.text()
    assert window.restart_button.isVisible()
    screenshot(window, tmp_path, "server-died")
    panel.save()
    run.until(lambda: "Not saved" in panel.message.text())
    assert panel.form.editor("description").value() == "reading room 2"  # still in the form

    window.restart_button.click()
    run.until(lambda: not window.banner.isVisible() and window.service.server_alive, timeout=60)
    assert window.service.embedded.pid != old_pid
    _wait_dialog(run, window, FirstSuperuserDialog).reject()
    run.until(lambda: not panel.model.loading and panel.model.total == 1)
    assert [group.name for group in panel.model.rows] == ["Radiology"]  # what was saved is there
    assert panel.form.editor("description").value() == "reading room 2"
    panel.save()
    run.until(lambda: panel.form.message.text().startswith("Saved"))
    assert panel.current.description == "reading room 2"
    screenshot(window, tmp_path, "server-restarted")


def test_connect_to_a_remote_server_by_url_and_password(make_window: Any, run: Runner, shared_server: Any, api: httpx.Client, tmp_path: Path) -> None:
    from app.views.dialogs import ConnectDialog

    window = make_window()
    task = asyncio.ensure_future(window.connect_dialog())
    dialog = _wait_dialog(run, window, ConnectDialog)
    assert not dialog.connect_button.isEnabled()
    dialog.url.setText(shared_server.url)
    dialog.username.setText(ADMIN)
    dialog.password.setText("wrong password")
    dialog.connect_button.click()
    run.until(lambda: dialog.error.isVisible() and dialog.isVisible())
    assert "wrong username or password" in dialog.error.text()
    screenshot(dialog, tmp_path, "connect-refused")
    dialog.password.setText(ADMIN_PASSWORD)
    dialog.connect_button.click()
    run.until(task.done)
    assert task.result() is True
    assert window.service.mode == "remote"
    assert shared_server.url in window.windowTitle() and ADMIN in window.windowTitle()
    assert shared_server.url in window.target_label.text()
    panel = window.show_panel("users")
    run.until(lambda: panel.loaded and not panel.model.loading and panel.model.total >= 1)
    screenshot(window, tmp_path, "remote-users")
    # Remembered for next time, without the password.
    config = (tmp_path / "console-config" / "console.json").read_text()
    assert shared_server.url in config and ADMIN in config
    assert ADMIN_PASSWORD not in config
    recent = window.service.recent_connections()
    assert (recent[0].url, recent[0].username) == (shared_server.url, ADMIN)
    again = asyncio.ensure_future(window.connect_dialog())
    second = _wait_dialog(run, window, ConnectDialog)
    assert second is not dialog
    second.recent.setCurrentIndex(1)  # the recent connection fills the form
    assert (second.url.text(), second.username.text()) == (shared_server.url, ADMIN)
    assert second.password.text() == ""  # no keyring here: never stored anywhere
    assert not second.remember.isVisible()
    second.reject()
    run.until(again.done)
    assert again.result() is False and window.service.mode == "remote"
    # Its changes are audited as that user, not as the console's owner.
    group = panel.service.create("groups", {"name": f"remote-{os.getpid()}-{id(task)}"})
    record = run(group)
    events = api.get("/audit-events", params={"action": "group.create", "target_id": str(record.id)}).json()["items"]
    assert events[0]["actor"] == ADMIN


def test_window_geometry_is_remembered(make_window: Any, run: Runner) -> None:
    first = make_window("geometry")
    first.resize(720, 520)  # within the offscreen screen (800 x 600)
    run.until(lambda: first.width() == 720)
    first.close()
    run.until(lambda: first.closed)
    second = make_window("geometry")
    assert (second.width(), second.height()) == (720, 520)


def test_busy_indicator_only_for_slow_calls(window: Any, run: Runner) -> None:
    service = window.service
    seen: list[bool] = []
    service.busy_changed.connect(seen.append)
    run(service.list_page("groups", {"limit": 1}))
    assert seen == []  # fast: no flicker

    async def slow() -> None:
        async with service._tracked():
            await asyncio.sleep(0.6)

    task = asyncio.ensure_future(slow())
    run.until(lambda: window.busy_bar.isVisible())
    run.until(task.done)
    assert seen == [True, False]
    assert not window.busy_bar.isVisible()


def test_unhandled_errors_are_shown_not_lost(window: Any, run: Runner) -> None:
    from app.views.application import install_excepthook
    from app.views.dialogs import MessageDialog

    seen: list[BaseException] = []
    previous = install_excepthook(seen.append)
    try:
        sys.excepthook(asyncio.CancelledError, asyncio.CancelledError(), None)
        assert seen == []  # a cancellation is normal
        error = RuntimeError("boom")
        sys.excepthook(RuntimeError, error, None)
        assert seen == [error]
    finally:
        sys.excepthook = previous

    async def failing() -> None:
        raise RuntimeError("a bug in a background task")

    window.service.spawn(failing())
    run.until(lambda: isinstance(window.last_dialog, MessageDialog) and window.last_dialog.isVisible())
    assert "a bug in a background task" in window.statusBar().currentMessage()
    window.last_dialog.close()


def test_keyboard_switches_panels(window: Any, run: Runner, qtbot: Any) -> None:
    from PySide6.QtCore import Qt

    with qtbot.waitActive(window):  # shortcuts go to the active window
        window.activateWindow()
    window.navigation.setFocus()
    qtbot.keyClick(window, Qt.Key.Key_3, Qt.KeyboardModifier.ControlModifier)
    run.until(lambda: window.current_panel() is window.panels.get("users"))
    qtbot.keyClick(window, Qt.Key.Key_0, Qt.KeyboardModifier.ControlModifier)
    run.until(lambda: window.current_panel() is window.panels.get("site"))
    qtbot.keyClick(window, Qt.Key.Key_4, Qt.KeyboardModifier.ControlModifier)
    panel = window.panels["groups"]
    run.until(lambda: window.current_panel() is panel and panel.loaded)
    qtbot.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert panel.form.mode == "create"
    qtbot.keyClick(window, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    run.until(lambda: panel.search.hasFocus())


def test_paged_model_fetches_more_and_drops_stale_pages(window: Any, run: Runner, api: httpx.Client) -> None:
    from app.models.entities import GROUPS
    from app.models.paged_table import PagedTableModel

    stem = f"paged-{os.getpid()}-{id(window)}"
    for index in range(450):
        api.post("/groups", json={"name": f"{stem}-{index:03d}"}).raise_for_status()
    service = window.service
    delays: list[float] = []

    async def fetch(params: dict[str, Any]) -> Any:
        if delays:
            await asyncio.sleep(delays.pop(0))
        return await service.list_page("groups", params)

    model = PagedTableModel(GROUPS.columns, fetch, page_size=200)
    model.search = stem
    run(model.reload())
    assert (len(model.rows), model.total) == (200, 450)
    assert model.canFetchMore()
    assert model.data(model.index(0, 0)) == f"{stem}-000"
    model.fetchMore()
    run(model._more)
    model.fetchMore()
    run(model._more)
    assert len(model.rows) == 450 and not model.canFetchMore()
    assert model.data(model.index(449, 0)) == f"{stem}-449"
    # Latest wins: a slow answer to an older search never replaces a newer one.
    delays.extend([0.5, 0.0])
    older = model.set_search(f"{stem}-00")
    newer = model.set_search(f"{stem}-449")
    run(newer)
    run.until(older.done)
    assert [row.name for row in model.rows] == [f"{stem}-449"]
    model.sort(0, __import__("PySide6.QtCore", fromlist=["Qt"]).Qt.SortOrder.DescendingOrder)
    assert model.sort_key == "-name"


def test_dark_theme(window: Any, run: Runner, tmp_path: Path) -> None:
    from PySide6.QtWidgets import QApplication

    panel = window.show_panel("users")
    run.until(lambda: panel.loaded and not panel.model.loading and bool(panel.model.rows))
    panel.select_record(panel.model.rows[0].id)
    window.set_theme("dark")
    try:
        assert QApplication.instance().property("porticoTheme") == "dark"
        assert window.settings.value("theme") == "dark"
        image = window.grab().toImage()
        background = image.pixelColor(5, image.height() // 2)  # the navigation's background
        assert background.lightness() < 80
        screenshot(window, tmp_path, "dark-users")
    finally:
        window.set_theme("light")


def test_closing_with_unsaved_changes_asks_first(make_window: Any, run: Runner, shared_server: Any, tmp_path: Path) -> None:
    from app.views.dialogs import ConfirmDialog

    window = make_window("unsaved")
    run(window.attach(shared_server.url, shared_server.token))
    panel = window.show_panel("groups")
    run.until(lambda: panel.loaded and not panel.model.loading)
    window.show_panel("users")
    panel.new_record()
    panel.form.editor("name").input.setText("half typed")
    window.close()
    dialog = _wait_dialog(run, panel, ConfirmDialog)
    assert window.current_panel() is panel  # the panel with the changes is shown
    dialog.reject()
    run.until(lambda: window._closing is None)
    assert not window.closed and window.isVisible()
    assert panel.form.editor("name").value() == "half typed"
    window.close()
    _wait_dialog(run, panel, ConfirmDialog).accept()
    run.until(lambda: window.closed)
