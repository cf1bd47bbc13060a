"""Where the console's resources are (source tree or PyInstaller bundle), themes and icons."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

THEMES = ("light", "dark")


def resources_dir() -> Path:
    bundle = getattr(sys, "_MEIPASS", None)  # PyInstaller unpacks data files here
    if bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parents[2] / "resources"


@lru_cache(maxsize=None)
def icon(name: str) -> QIcon:
    path = resources_dir() / "icons" / f"{name}.svg"
    return QIcon(str(path)) if path.exists() else QIcon()


def stylesheet(theme: str) -> str:
    path = resources_dir() / "themes" / f"{theme if theme in THEMES else 'light'}.qss"
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def apply_theme(app: QApplication, theme: str) -> None:
    app.setStyleSheet(stylesheet(theme))
    app.setProperty("porticoTheme", theme if theme in THEMES else "light")


def restyle(widget: object) -> None:
    """Re-apply the stylesheet after a dynamic property (e.g. ``invalid``) changed."""
    style = getattr(widget, "style", None)
    if style is None:
        return
    current = style()
    current.unpolish(widget)
    current.polish(widget)
