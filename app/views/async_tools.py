"""Small async helpers for views: awaited dialogs and debouncing.

Dialogs are opened with ``open()`` and awaited through their ``finished`` signal, never
run in a nested ``exec()`` loop inside async code (see STYLE.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QDialog, QWidget


async def run_dialog(dialog: QDialog) -> int:
    """Show a window-modal dialog and wait for its result without blocking the loop."""
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def finished(result: int) -> None:
        if not future.done():
            future.set_result(result)

    dialog.finished.connect(finished)
    dialog.open()
    try:
        return await future
    finally:
        dialog.finished.disconnect(finished)
        if future.cancelled() and dialog.isVisible():
            dialog.reject()


class Debouncer(QObject):
    """Calls ``callback`` once, ``delay_ms`` after the last ``trigger`` (search as you type)."""

    def __init__(self, delay_ms: int, callback: Callable[[], Any], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(delay_ms)
        self._timer.timeout.connect(callback)

    def trigger(self, *_: Any) -> None:
        self._timer.start()

    def flush(self) -> None:
        if self._timer.isActive():
            self._timer.stop()
            self._timer.timeout.emit()

    @property
    def pending(self) -> bool:
        return self._timer.isActive()


def visible_dialogs(kind: type[QDialog] = QDialog) -> list[QDialog]:
    """The dialogs on screen now (tests and the main window's bookkeeping)."""
    from PySide6.QtWidgets import QApplication

    found: list[QDialog] = []
    for widget in QApplication.topLevelWidgets():
        if isinstance(widget, kind) and widget.isVisible():
            found.append(widget)
    return found


def focus_first(widget: QWidget) -> None:
    widget.setFocus()
