"""Site settings: the one record that says where this deployment is reached from outside."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.models.entities import SITE_FIELDS, SITE_UPDATE, Kind, record_values
from app.models.service import ApiError, ConsoleService, ErrorCode, ServerUnreachable
from app.views.async_tools import run_dialog
from app.views.dialogs import ConflictDialog
from app.views.entity_panel import inline_message, show_inline
from app.views.forms import RecordForm
from app.views.theme import icon


class SitePanel(QWidget):
    def __init__(self, service: ConsoleService, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.service = service
        self.current: BaseModel | None = None
        self.loaded = False
        self.last_dialog: Any = None
        self.setObjectName("panel_site")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        title = QLabel("Site settings")
        title.setObjectName("panelTitle")
        layout.addWidget(title)
        intro = QLabel(
            "Every URL Portico prints (login, callback, sign-out, JWKS) is derived from the base URL in force. "
            "Identity providers such as Cognito accept only https URLs that match exactly, without the default port."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.message = inline_message()
        layout.addWidget(self.message)
        self.form = RecordForm(SITE_FIELDS, update_model=SITE_UPDATE)
        self.form.validity_changed.connect(self._update_buttons)
        self.form.dirty_changed.connect(self._update_buttons)
        layout.addWidget(self.form)
        layout.addStretch(1)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.refresh_button = QPushButton(icon("refresh"), "Reload")
        self.refresh_button.clicked.connect(lambda: self.refresh())
        self.save_button = QPushButton(icon("save"), "Save")
        self.save_button.setObjectName("primary")
        self.save_button.clicked.connect(lambda: self.save())
        buttons.addWidget(self.refresh_button)
        buttons.addWidget(self.save_button)
        layout.addLayout(buttons)
        self._update_buttons()

    def activate(self) -> None:
        if not self.loaded:
            self.loaded = True
            self.refresh()

    def shutdown(self) -> None:
        return None

    def refresh(self) -> asyncio.Task[Any]:
        return self.service.spawn(self._load())

    async def _load(self) -> None:
        try:
            site = await self.service.site()
        except (ApiError, ServerUnreachable) as error:
            show_inline(self.message, "error", f"Could not load the site settings: {getattr(error, 'message', str(error))}")
            return
        self._show(site)

    def _show(self, site: BaseModel, message: str = "") -> None:
        self.current = site
        self.form.load(record_values(SITE_FIELDS, site), mode="edit", version=getattr(site, "version"), message=message)
        self._warn(site)
        self._update_buttons()

    def _warn(self, site: BaseModel) -> None:
        base = str(getattr(site, "base_url", ""))
        problems = []
        if base.startswith("http://") and "localhost" not in base and "127.0.0.1" not in base:
            problems.append("the base URL in force is plain http: Cognito and most providers refuse such callback URLs")
        if base.startswith("https://") and base.split("/")[2].endswith(":443"):
            problems.append("the base URL names the default port 443: Cognito matches callback URLs exactly, without it")
        show_inline(self.message, "warning", "; ".join(problems).capitalize() + "." if problems else "")

    def _update_buttons(self, *_: Any) -> None:
        self.save_button.setEnabled(self.form.mode == "edit" and self.form.valid and self.form.dirty)

    # Shortcuts of the main window.
    def focus_search(self) -> None:
        self.form.editor("production_url").input.setFocus()

    def new_record(self) -> None:
        return None

    def delete_selected(self) -> None:
        return None

    def save(self) -> asyncio.Task[Any] | None:
        if not (self.form.mode == "edit" and self.form.dirty):
            return None
        return self.service.spawn(self._save(self.form.body()))

    async def _save(self, body: dict[str, Any]) -> None:
        errors = self.form.local_errors()
        if errors:
            self.form.show_errors(errors)
            return
        try:
            site = await self.service.update_site(body)
        except ApiError as error:
            if error.code == ErrorCode.VERSION_CONFLICT and error.current is not None:
                labels = {f.name: f.label for f in SITE_FIELDS if f.kind != Kind.READONLY}
                mine = {k: v for k, v in body.items() if k != "version"}
                dialog = ConflictDialog("site settings", labels, mine, error.current, self.form.original, parent=self)
                self.last_dialog = dialog
                choice = await run_dialog(dialog)
                if choice == ConflictDialog.RELOAD:
                    await self._load()
                elif choice == ConflictDialog.KEEP_MINE:
                    await self._save({**mine, "version": error.current.get("version")})
                return
            self.form.show_server_errors([(f.field, f.message) for f in error.fields], error.message)
            show_inline(self.message, "error", f"Not saved: {error.message}")
            return
        except ServerUnreachable as error:
            show_inline(self.message, "error", f"Not saved: {error}")
            return
        self._show(site, message="Saved.")

