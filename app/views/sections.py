"""Parts of an entity panel below its form that follow the shown record.

- Memberships, from either side: a user's groups, a group's members; several at a time.
- A user's active sessions (revoke) and linked identity-provider identities (unlink).
- Session: revoke it.
- Imaging server: the copy-ready Orthanc configuration block.
- Group: its access as a matrix of imaging servers × capabilities (scope, validity).
- Auth server: the login, callback and sign-out URLs to register at the provider, with
  the server's warnings when the Site would make them unacceptable (Cognito: https only).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import BaseModel
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.models.access_matrix import CAPABILITIES, SCOPES, Cell, Change, ChangeKind, diff
from app.models.access_matrix import Column as MatrixColumn
from app.models.service import ApiError, ConsoleService, ErrorCode, ServerUnreachable
from app.views.async_tools import Debouncer, run_dialog
from app.views.dialogs import ConfirmDialog, PickDialog, TextDialog
from app.views.entity_panel import EntityPanel, access_change_sentence, counted, inline_message, show_inline
from app.views.theme import icon

SHOWN_LIMIT = 500


def _error_text(error: Exception) -> str:
    return getattr(error, "message", None) or str(error)


class UserPickDialog(PickDialog):
    """Pick users by searching the server (there may be 100,000 of them)."""

    def __init__(self, service: ConsoleService, exclude: set[int], parent: QWidget | None = None) -> None:
        super().__init__("Add users to the group", {}, parent)
        self.service = service
        self.exclude = exclude
        self.filter.setPlaceholderText("Search users by name or email")
        self.filter.textChanged.disconnect()
        self._debounce = Debouncer(250, self._search, self)
        self.filter.textChanged.connect(self._debounce.trigger)
        self._task: asyncio.Task[Any] | None = None
        self._search()

    def _search(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()  # latest wins
        self._task = self.service.spawn(self._load(self.filter.text().strip()))

    async def _load(self, text: str) -> None:
        page = await self.service.list_page("users", {"q": text or None, "limit": 100})
        chosen = {item.data(Qt.ItemDataRole.UserRole) for item in self.list.selectedItems()}
        self.list.clear()
        for user in page.items:
            if user.id in self.exclude:
                continue
            item = QListWidgetItem(f"{user.username}" + (f" <{user.email}>" if user.email else ""))
            item.setData(Qt.ItemDataRole.UserRole, user.id)
            self.list.addItem(item)
            item.setSelected(user.id in chosen)
        self.loaded_text = text


def _summary_and_list(box: QWidget, *, max_height: int) -> tuple[QVBoxLayout, QLabel, QListWidget]:
    """How every section under a form starts: a help line, then a multi-select list."""
    layout = QVBoxLayout(box)
    summary = QLabel()
    summary.setObjectName("fieldHelp")
    layout.addWidget(summary)
    records = QListWidget()
    records.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
    records.setMaximumHeight(max_height)
    layout.addWidget(records)
    return layout, summary, records


class MembershipSection(QGroupBox):
    """A user's groups (anchor "users") or a group's members (anchor "groups")."""

    def __init__(self, panel: EntityPanel, service: ConsoleService) -> None:
        super().__init__("Groups" if panel.spec.key == "users" else "Members")
        self.panel = panel
        self.service = service
        self.anchor = panel.spec.key
        self.record: BaseModel | None = None
        self.members: dict[int, str] = {}
        self.last_dialog: Any = None
        self._task: asyncio.Task[Any] | None = None
        layout, self.summary, self.list = _summary_and_list(self, max_height=140)
        buttons = QHBoxLayout()
        self.add_button = QPushButton(icon("add"), "Add groups…" if self.anchor == "users" else "Add users…")
        self.remove_button = QPushButton(icon("delete"), "Remove selected")
        self.add_button.clicked.connect(lambda: self.service.spawn(self.add()))
        self.remove_button.clicked.connect(lambda: self.service.spawn(self.remove(self.selected())))
        self.list.itemSelectionChanged.connect(self._update)
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.remove_button.setEnabled(False)
        panel.record_shown.connect(self._record_shown)
        self.hide()

    def _record_shown(self, record: BaseModel | None) -> None:
        self.record = record
        self.setVisible(record is not None)
        if record is not None:
            self.reload()  # also after a save or a refresh: memberships may have changed elsewhere

    def reload(self) -> asyncio.Task[Any] | None:
        if self.record is None:
            return None
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = self.service.spawn(self._load(getattr(self.record, "id")))
        return self._task

    async def _load(self, record_id: int) -> None:
        if self.anchor == "users":
            page = await self.service.list_page("groups", {"user_id": record_id, "limit": SHOWN_LIMIT})
            members = {group.id: group.name for group in page.items}
        else:
            page = await self.service.list_page("users", {"group_id": record_id, "limit": SHOWN_LIMIT})
            members = {user.id: user.username for user in page.items}
        if self.record is None or getattr(self.record, "id") != record_id:
            return
        self.members = members
        self.list.clear()
        for member_id, label in sorted(members.items(), key=lambda item: item[1].lower()):
            item = QListWidgetItem(label)
            item.setData(Qt.ItemDataRole.UserRole, member_id)
            self.list.addItem(item)
        noun = "group" if self.anchor == "users" else "member"
        more = f" (the first {SHOWN_LIMIT} shown)" if page.total > len(members) else ""
        self.summary.setText(counted(page.total, noun + "s") + more)
        self._update()

    def _update(self) -> None:
        self.remove_button.setEnabled(bool(self.list.selectedItems()))

    def selected(self) -> list[int]:
        return [int(item.data(Qt.ItemDataRole.UserRole)) for item in self.list.selectedItems()]

    async def add(self) -> None:
        if self.record is None:
            return
        if self.anchor == "users":
            groups = await self.service.labels("groups", refresh=True)
            dialog: PickDialog = PickDialog("Add the user to groups", {k: v for k, v in groups.items() if k not in self.members}, self)
        else:
            dialog = UserPickDialog(self.service, set(self.members), self)
        self.last_dialog = dialog
        if await run_dialog(dialog) != PickDialog.DialogCode.Accepted:
            return
        await self.change(dialog.chosen(), add=True)

    async def remove(self, ids: list[int]) -> None:
        if not ids or self.record is None:
            return
        names = ", ".join(self.members.get(i, f"#{i}") for i in ids[:5]) + ("…" if len(ids) > 5 else "")
        label = self.panel.spec.label(self.record)
        text = (
            f"Remove “{label}” from {counted(len(ids), 'groups')} ({names})? Their access rules stop applying to this user."
            if self.anchor == "users"
            else f"Remove {counted(len(ids), 'users')} ({names}) from the group “{label}”? The group's access rules stop applying to them."
        )
        dialog = ConfirmDialog("Remove memberships?", text, "Remove", danger=True, parent=self)
        self.last_dialog = dialog
        if await run_dialog(dialog) != ConfirmDialog.DialogCode.Accepted:
            return
        await self.change(ids, add=False)

    async def change(self, ids: list[int], *, add: bool) -> None:
        if not ids or self.record is None:
            return
        record_id = int(getattr(self.record, "id"))
        try:
            if self.anchor == "users":
                result = await self.service.change_user_groups(record_id, ids, add=add)
            else:
                result = await self.service.change_group_members(record_id, ids, add=add)
        except (ApiError, ServerUnreachable) as error:
            self.summary.setText(f"Not changed: {_error_text(error)}")
            return
        await self._load(record_id)
        verb = "added" if add else "removed"
        self.summary.setText(self.summary.text() + f" — {counted(result.changed, 'memberships')} {verb}")


class SessionSection(QWidget):
    """Revoke the shown session at once (its tokens stop working)."""

    def __init__(self, panel: EntityPanel, service: ConsoleService) -> None:
        super().__init__()
        self.panel = panel
        self.service = service
        self.record: BaseModel | None = None
        self.last_dialog: Any = None
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.reason = QLineEdit("revoked by an administrator")
        self.revoke_button = QPushButton(icon("revoke"), "Revoke session")
        self.revoke_button.setObjectName("danger")
        self.revoke_button.clicked.connect(lambda: self.service.spawn(self.revoke()))
        layout.addWidget(QLabel("Reason"))
        layout.addWidget(self.reason, 1)
        layout.addWidget(self.revoke_button)
        panel.record_shown.connect(self._record_shown)
        self.hide()

    def _record_shown(self, record: BaseModel | None) -> None:
        self.record = record
        self.setVisible(record is not None)
        self.revoke_button.setEnabled(bool(record is not None and getattr(record, "active", False)))

    async def revoke(self) -> None:
        record = self.record
        if record is None:
            return
        dialog = ConfirmDialog(
            "Revoke session?",
            f"Revoke this {getattr(record, 'kind').value} session? Its tokens stop working at once "
            "(at Orthanc within the validity Portico returned).",
            "Revoke",
            danger=True,
            parent=self,
        )
        self.last_dialog = dialog
        if await run_dialog(dialog) != ConfirmDialog.DialogCode.Accepted:
            return
        try:
            revoked = await self.service.revoke_session(str(getattr(record, "id")), self.reason.text().strip() or "revoked")
        except (ApiError, ServerUnreachable) as error:
            self.panel.form.message.setText(f"Not revoked: {_error_text(error)}")
            return
        self.panel.model.replace_record(revoked)
        self.panel.show_record(revoked, message="Session revoked.")


class OrthancConfigSection(QWidget):
    """The imaging server's 'Authorization' block for Orthanc, with a new plugin credential."""

    def __init__(self, panel: EntityPanel, service: ConsoleService) -> None:
        super().__init__()
        self.panel = panel
        self.service = service
        self.record: BaseModel | None = None
        self.last_dialog: Any = None
        self.block: dict[str, Any] | None = None
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.button = QPushButton(icon("imaging-server"), "Orthanc configuration…")
        self.button.setToolTip("Make a plugin credential and show the configuration block to paste into Orthanc")
        self.button.clicked.connect(lambda: self.service.spawn(self.show_configuration()))
        layout.addStretch(1)
        layout.addWidget(self.button)
        panel.record_shown.connect(self._record_shown)
        self.hide()

    def _record_shown(self, record: BaseModel | None) -> None:
        self.record = record
        self.setVisible(record is not None)

    async def show_configuration(self) -> None:
        if self.record is None:
            return
        try:
            self.block = await self.service.orthanc_config(int(getattr(self.record, "id")))
        except (ApiError, ServerUnreachable) as error:
            self.panel.form.message.setText(f"No configuration: {_error_text(error)}")
            return
        dialog = TextDialog(
            "Orthanc configuration",
            "Paste this into Orthanc's configuration. It holds a new plugin credential whose password is "
            "shown only now; Portico keeps a hash.",
            json.dumps(self.block, indent=2),
            parent=self,
        )
        self.last_dialog = dialog
        await run_dialog(dialog)


class _UserListSection(QGroupBox):
    """A list of records that belong to the shown user, with one action on the selected ones."""

    title_text = ""
    singular = ""
    action_text = ""

    def __init__(self, panel: EntityPanel, service: ConsoleService) -> None:
        super().__init__(self.title_text)
        self.panel = panel
        self.service = service
        self.record: BaseModel | None = None
        self.items: dict[Any, BaseModel] = {}
        self.last_dialog: Any = None
        self._task: asyncio.Task[Any] | None = None
        layout, self.summary, self.list = _summary_and_list(self, max_height=100)
        buttons = QHBoxLayout()
        self.action_button = QPushButton(icon("revoke"), self.action_text)
        self.action_button.setObjectName("danger")
        self.action_button.clicked.connect(lambda: self.service.spawn(self.act(self.selected())))
        self.list.itemSelectionChanged.connect(lambda: self.action_button.setEnabled(bool(self.list.selectedItems())))
        buttons.addWidget(self.action_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        panel.record_shown.connect(self._record_shown)
        self.hide()

    def _record_shown(self, record: BaseModel | None) -> None:
        self.record = record
        if record is None:
            self.hide()
        else:
            self.reload()

    def reload(self) -> asyncio.Task[Any] | None:
        if self.record is None:
            return None
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = self.service.spawn(self._load(int(getattr(self.record, "id"))))
        return self._task

    async def fetch(self, user_id: int) -> list[BaseModel]:
        raise NotImplementedError

    def describe(self, item: BaseModel) -> str:
        raise NotImplementedError

    async def _load(self, user_id: int) -> None:
        items = await self.fetch(user_id)
        if self.record is None or getattr(self.record, "id") != user_id:
            return
        self.items = {getattr(item, "id"): item for item in items}
        self.list.clear()
        for item in items:
            row = QListWidgetItem(self.describe(item))
            row.setData(Qt.ItemDataRole.UserRole, getattr(item, "id"))
            self.list.addItem(row)
        self.summary.setText(f"{len(items)} " + (self.singular if len(items) == 1 else self.title_text.lower()))
        self.action_button.setEnabled(False)
        self.setVisible(bool(items))  # nothing to show: no empty box

    def selected(self) -> list[Any]:
        return [item.data(Qt.ItemDataRole.UserRole) for item in self.list.selectedItems()]

    async def act(self, ids: list[Any]) -> None:
        raise NotImplementedError


class UserSessionsSection(_UserListSection):
    """The shown user's active sessions, to revoke."""

    title_text = "Active sessions"
    singular = "active session"
    action_text = "Revoke selected"

    async def fetch(self, user_id: int) -> list[BaseModel]:
        page = await self.service.list_page("sessions", {"user_id": user_id, "active": True, "limit": SHOWN_LIMIT})
        return list(page.items)

    def describe(self, item: BaseModel) -> str:
        seen = getattr(item, "last_seen_at", None) or getattr(item, "created_at")
        where = getattr(item, "client_address", None) or "unknown address"
        return f"{getattr(item, 'kind').value} session from {where}, last seen {seen.astimezone():%Y-%m-%d %H:%M}"

    async def act(self, ids: list[Any]) -> None:
        if not ids:
            return
        dialog = ConfirmDialog("Revoke sessions?", f"Revoke {counted(len(ids), 'sessions')} of this user? Their tokens stop working at once.", "Revoke", danger=True, parent=self)
        self.last_dialog = dialog
        if await run_dialog(dialog) != ConfirmDialog.DialogCode.Accepted:
            return
        for session_id in ids:
            try:
                await self.service.revoke_session(str(session_id), "revoked by an administrator")
            except (ApiError, ServerUnreachable) as error:
                self.summary.setText(f"Not revoked: {_error_text(error)}")
                return
        if self.record is not None:
            await self._load(int(getattr(self.record, "id")))


class IdentitiesSection(_UserListSection):
    """The identities at identity providers linked to the shown user."""

    title_text = "Linked identities"
    singular = "linked identity"
    action_text = "Unlink selected"

    async def fetch(self, user_id: int) -> list[BaseModel]:
        self.providers = await self.service.labels("providers")
        page = await self.service.list_page("external-identities", {"user_id": user_id, "limit": SHOWN_LIMIT})
        return list(page.items)

    def describe(self, item: BaseModel) -> str:
        provider = self.providers.get(getattr(item, "provider_id"), f"provider #{getattr(item, 'provider_id')}")
        email = getattr(item, "email", None)
        return f"{provider}: {getattr(item, 'subject')}" + (f" ({email})" if email else "")

    async def act(self, ids: list[Any]) -> None:
        if not ids:
            return
        dialog = ConfirmDialog(
            "Unlink identities?",
            f"Unlink {len(ids)} {'identity' if len(ids) == 1 else 'identities'}? The user can no longer sign in with them; the next "
            "sign-in through the provider creates or links a user again.",
            "Unlink", danger=True, parent=self,
        )
        self.last_dialog = dialog
        if await run_dialog(dialog) != ConfirmDialog.DialogCode.Accepted:
            return
        for identity_id in ids:
            try:
                await self.service.delete("external-identities", identity_id, getattr(self.items[identity_id], "version", None))
            except (ApiError, ServerUnreachable) as error:
                self.summary.setText(f"Not unlinked: {_error_text(error)}")
                return
        if self.record is not None:
            await self._load(int(getattr(self.record, "id")))


class AuthServerUrlsSection(QGroupBox):
    """The URLs to register at the identity provider for the shown auth server, as the
    server derives them from the Site, each with Copy; its warnings come first."""

    URLS = (
        ("callback", "Callback URL", "register as an allowed callback (redirect) URL"),
        ("logout", "Sign-out URL", "register as an allowed sign-out URL"),
        ("login", "Login URL", "where viewers start a sign-in"),
        ("default_login", "Short login URL", "the default auth server's login URL"),
    )

    def __init__(self, panel: EntityPanel, service: ConsoleService) -> None:
        super().__init__("URLs to register at the provider")
        self.panel = panel
        self.service = service
        self.record: BaseModel | None = None
        self.urls: Any = None
        self._task: asyncio.Task[Any] | None = None
        self._headline = ""  # what this section put in the panel's message, to take back
        layout = QVBoxLayout(self)
        self.warnings = inline_message()
        self.warnings.setObjectName("inlineMessage")
        layout.addWidget(self.warnings)
        grid = QGridLayout()
        self.fields: dict[str, QLineEdit] = {}
        self.copy_buttons: dict[str, QPushButton] = {}
        self.labels: dict[str, QLabel] = {}
        for row, (key, label, tip) in enumerate(self.URLS):
            line = QLineEdit()
            line.setReadOnly(True)
            line.setObjectName(f"url_{key}")
            line.setToolTip(tip)
            button = QPushButton(icon("duplicate"), "Copy")
            button.setObjectName(f"copy_{key}")
            button.setToolTip(f"Copy the {label.lower()}")
            button.clicked.connect(lambda _checked=False, k=key: self.copy(k))
            button.setText("Copied")
            button.setMinimumWidth(button.sizeHint().width())  # "Copied" is not cut short
            button.setText("Copy")
            caption = QLabel(label)
            grid.addWidget(caption, row, 0)
            grid.addWidget(line, row, 1)
            grid.addWidget(button, row, 2)
            self.fields[key], self.copy_buttons[key], self.labels[key] = line, button, caption
        grid.setColumnStretch(1, 1)
        layout.addLayout(grid)
        self.policy = QLabel()
        self.policy.setObjectName("fieldHelp")
        self.policy.setWordWrap(True)
        self.policy.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.policy)
        panel.record_shown.connect(self._record_shown)
        service.site_changed.connect(self._site_changed)
        self.hide()

    def _record_shown(self, record: BaseModel | None) -> None:
        self.record = record
        self.setVisible(record is not None)
        if record is not None:
            self.reload()  # after a save too: the token (and so every URL) may have changed
        else:
            self._set_headline("")

    def _site_changed(self, _site: Any = None) -> None:
        if self.record is not None:
            self.reload()

    def reload(self) -> asyncio.Task[Any] | None:
        if self.record is None:
            return None
        if self._task is not None and not self._task.done():
            self._task.cancel()  # latest wins
        self._task = self.service.spawn(self._load(int(getattr(self.record, "id"))))
        return self._task

    async def _load(self, auth_server_id: int) -> None:
        try:
            urls = await self.service.auth_server_urls(auth_server_id)
        except (ApiError, ServerUnreachable) as error:
            if self.record is not None and getattr(self.record, "id") == auth_server_id:
                show_inline(self.warnings, "error", f"Could not read the URLs: {_error_text(error)}")
            return
        if self.record is None or getattr(self.record, "id") != auth_server_id:
            return
        self.show_urls(urls)

    def show_urls(self, urls: Any) -> None:
        self.urls = urls
        for key, line in self.fields.items():
            value = getattr(urls, key, None) or ""
            line.setText(value)
            line.setCursorPosition(0)
            line.setToolTip(value)  # the whole URL, where the field is narrow
            shown = bool(value)
            for widget in (line, self.copy_buttons[key], self.labels[key]):
                widget.setVisible(shown)
            self.copy_buttons[key].setText("Copy")
        if urls.warnings:
            show_inline(self.warnings, "error", "\n".join(f"⚠ {text}" for text in urls.warnings))
        else:
            show_inline(self.warnings, "info", "")
        self.policy.setText(urls.policy)
        # The form is long and this section sits below it: a refusal to come is also said
        # at the top of the panel, where it cannot be missed.
        self._set_headline(
            f"The provider will refuse this auth server's URLs: {urls.warnings[0].rstrip('.')}"
            + (f" — and {counted(len(urls.warnings) - 1, 'more warnings')} with the URLs below the form." if len(urls.warnings) > 1 else " — see the URLs below the form.")
            if urls.warnings else ""
        )

    def _set_headline(self, text: str) -> None:
        message = self.panel.message
        if text:
            show_inline(message, "warning", text)
        elif self._headline and message.text() == self._headline:
            show_inline(message, "info", "")
        self._headline = text

    def copy(self, key: str) -> None:
        QGuiApplication.clipboard().setText(self.fields[key].text())
        for name, button in self.copy_buttons.items():
            button.setText("Copied" if name == key else "Copy")


def _done(sentence: str) -> str:
    """A previewed change ("X will gain view on S...") as done ("X gained view on S...")."""
    for future, past in ((" will gain ", " gained "), (" will lose ", " lost "), (" and lose ", " and lost "), (" will keep ", " keeps ")):
        sentence = sentence.replace(future, past)
    return sentence


class AccessMatrixSection(QGroupBox):
    """The shown group's access: imaging servers (columns) × capabilities (rows), with each
    server's scope and validity. Apply previews the change in words, then creates, updates
    and deletes the rules that differ."""

    SCOPE_ROW, TEXT_ROW, VALIDITY_ROW = 0, 1, 2
    FIRST_CAPABILITY_ROW = 3

    def __init__(self, panel: EntityPanel, service: ConsoleService) -> None:
        super().__init__("Access by imaging server")
        self.panel = panel
        self.service = service
        self.record: BaseModel | None = None
        self.columns: list[MatrixColumn] = []
        self.loaded: dict[int, Cell] = {}
        self.last_dialog: Any = None
        self._task: asyncio.Task[Any] | None = None
        self.apply_task: asyncio.Task[Any] | None = None
        self._filling = False
        layout = QVBoxLayout(self)
        self.summary = QLabel()
        self.summary.setObjectName("fieldHelp")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        self.message = inline_message()
        layout.addWidget(self.message)
        self.table = QTableWidget(0, 0)
        self.table.setObjectName("accessMatrix")
        self.table.setVerticalHeaderLabels([])
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setDefaultSectionSize(120)
        self.table.verticalHeader().setDefaultSectionSize(24)
        self.table.itemChanged.connect(lambda _item: self._changed())
        layout.addWidget(self.table)
        buttons = QHBoxLayout()
        self.revert_button = QPushButton(icon("revert"), "Revert")
        self.revert_button.clicked.connect(lambda: self.reload())
        self.apply_button = QPushButton(icon("save"), "Apply…")
        self.apply_button.setObjectName("primary")
        self.apply_button.setToolTip("Preview the change in words, then create, change or delete the rules")
        self.apply_button.clicked.connect(lambda: self.apply())
        buttons.addStretch(1)
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.apply_button)
        layout.addLayout(buttons)
        panel.record_shown.connect(self._record_shown)
        self.hide()

    def _record_shown(self, record: BaseModel | None) -> None:
        self.record = record
        self.setVisible(record is not None)
        if record is not None:
            self.reload()

    def reload(self, keep: dict[int, Cell] | None = None) -> asyncio.Task[Any] | None:
        if self.record is None:
            return None
        if self._task is not None and not self._task.done():
            self._task.cancel()  # latest wins
        self._task = self.service.spawn(self._load(int(getattr(self.record, "id")), keep or {}))
        return self._task

    async def _load(self, group_id: int, keep: dict[int, Cell]) -> None:
        try:
            servers, rules = await self.service.group_access(group_id)
        except (ApiError, ServerUnreachable) as error:
            show_inline(self.message, "error", f"Could not load the group's access: {_error_text(error)}")
            return
        if self.record is None or getattr(self.record, "id") != group_id:
            return
        by_server: dict[int, list[Any]] = {}
        for rule in rules:
            by_server.setdefault(int(getattr(rule, "imaging_server_id")), []).append(rule)
        self.columns = [MatrixColumn(int(getattr(server, "id")), str(getattr(server, "name")), by_server.get(int(getattr(server, "id")), [])) for server in servers]
        self.loaded = {column.server_id: column.cell() for column in self.columns}
        self._fill({**self.loaded, **{k: v for k, v in keep.items() if k in self.loaded}})
        with_rules = sum(1 for column in self.columns if column.rules)
        several = [column.name for column in self.columns if not column.editable]
        text = f"{counted(len(rules), 'access rules')} on {counted(with_rules, 'imaging servers')}. Tick what the group may do on each server."
        if several:
            text += f" Several rules on {', '.join(several)}: edit those in the Access Rules panel."
        self.summary.setText(text)
        self._changed()

    def _fill(self, cells: dict[int, Cell]) -> None:
        self._filling = True
        self.table.clear()
        self.table.setRowCount(self.FIRST_CAPABILITY_ROW + len(CAPABILITIES))
        self.table.setColumnCount(len(self.columns))
        self.table.setVerticalHeaderLabels(["Scope", "Labels / selectors", "Validity (s)", *CAPABILITIES])
        self.table.setHorizontalHeaderLabels([column.name for column in self.columns])
        for index, column in enumerate(self.columns):
            cell = cells.get(column.server_id, Cell(column.server_id))
            scope = QComboBox()
            for choice in SCOPES:
                scope.addItem(choice, choice)
            scope.setCurrentIndex(max(0, scope.findData(cell.scope)))
            scope.currentIndexChanged.connect(lambda _i: self._changed())
            text = QLineEdit(cell.scope_text)
            text.setCursorPosition(0)
            text.setPlaceholderText("research, teaching")
            text.setToolTip("Labels, or selectors as kind=value (patient-id, study-instance-uid, orthanc-id), separated by commas")
            text.textChanged.connect(lambda _t: self._changed())
            validity = QSpinBox()
            validity.setRange(0, 86400)
            validity.setValue(cell.validity)
            validity.setToolTip("How long Orthanc may cache an answer, in seconds")
            validity.valueChanged.connect(lambda _v: self._changed())
            for row, widget in ((self.SCOPE_ROW, scope), (self.TEXT_ROW, text), (self.VALIDITY_ROW, validity)):
                widget.setEnabled(column.editable)
                self.table.setCellWidget(row, index, widget)
            for offset, capability in enumerate(CAPABILITIES):
                item = QTableWidgetItem()
                flags = Qt.ItemFlag.ItemIsUserCheckable | (Qt.ItemFlag.ItemIsEnabled if column.editable else Qt.ItemFlag.NoItemFlags)
                item.setFlags(flags)
                item.setCheckState(Qt.CheckState.Checked if capability in cell.capabilities else Qt.CheckState.Unchecked)
                item.setToolTip(f"{capability} on {column.name}")
                self.table.setItem(self.FIRST_CAPABILITY_ROW + offset, index, item)
        # Every row visible (the form's scroll area scrolls); only the servers scroll sideways.
        self.table.setFixedHeight(
            self.table.horizontalHeader().sizeHint().height() + self.table.verticalHeader().length()
            + self.table.horizontalScrollBar().sizeHint().height() + 2 * self.table.frameWidth() + 2
        )
        self._filling = False

    def column_of(self, server_id: int) -> int:
        return next(index for index, column in enumerate(self.columns) if column.server_id == server_id)

    def set_capability(self, server_id: int, capability: str, on: bool) -> None:
        item = self.table.item(self.FIRST_CAPABILITY_ROW + CAPABILITIES.index(capability), self.column_of(server_id))
        assert item is not None
        item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def set_scope(self, server_id: int, scope: str, text: str = "") -> None:
        index = self.column_of(server_id)
        combo = self.table.cellWidget(self.SCOPE_ROW, index)
        assert isinstance(combo, QComboBox)
        combo.setCurrentIndex(combo.findData(scope))
        line = self.table.cellWidget(self.TEXT_ROW, index)
        assert isinstance(line, QLineEdit)
        line.setText(text)

    def cells(self) -> dict[int, Cell]:
        found: dict[int, Cell] = {}
        for index, column in enumerate(self.columns):
            scope = self.table.cellWidget(self.SCOPE_ROW, index)
            text = self.table.cellWidget(self.TEXT_ROW, index)
            validity = self.table.cellWidget(self.VALIDITY_ROW, index)
            if not isinstance(scope, QComboBox) or not isinstance(text, QLineEdit) or not isinstance(validity, QSpinBox):
                continue
            ticked = {
                capability for offset, capability in enumerate(CAPABILITIES)
                if (item := self.table.item(self.FIRST_CAPABILITY_ROW + offset, index)) is not None and item.checkState() == Qt.CheckState.Checked
            }
            found[column.server_id] = Cell(column.server_id, ticked, str(scope.currentData()), text.text().strip(), validity.value())
        return found

    def changes(self) -> list[Change]:
        if self.record is None:
            return []
        return diff(int(getattr(self.record, "id")), self.columns, self.cells())

    def _changed(self) -> None:
        if self._filling:
            return
        pending = self.changes()
        busy = self.apply_task is not None and not self.apply_task.done()
        self.apply_button.setEnabled(bool(pending) and not busy)
        self.revert_button.setEnabled(bool(pending) and not busy)
        self.apply_button.setText(f"Apply {counted(len(pending), 'changes')}…" if pending else "Apply…")

    # ------------------------------------------------------------ apply

    def apply(self) -> asyncio.Task[Any] | None:
        if self.apply_task is not None and not self.apply_task.done():
            return self.apply_task
        self.apply_task = self.service.spawn(self._apply())
        return self.apply_task

    async def describe(self, change: Change) -> str:
        sentence = await access_change_sentence(self.service, change.old, change.new)
        if sentence is None:  # only how long Orthanc may cache the answers changes
            group = self.panel.spec.label(self.record) if self.record is not None else "The group"
            sentence = f"{group} keeps its access on {change.server_name}; Orthanc may cache answers for {change.new['validity']} s (was {change.old.get('validity')} s)."
        return sentence

    async def _apply(self) -> None:
        changes = self.changes()
        if not changes:
            show_inline(self.message, "info", "Nothing to apply: the matrix says what the rules say.")
            return
        problems = [f"{change.server_name}: " + "; ".join(f"{name}: {text}" if name else text for name, text in change.errors.items()) for change in changes if change.errors]
        if problems:
            show_inline(self.message, "error", "Not applied. " + " ".join(problems))
            return
        try:
            sentences = [await self.describe(change) for change in changes]
        except (ApiError, ServerUnreachable) as error:
            show_inline(self.message, "error", f"Could not preview the change: {_error_text(error)}")
            return
        dialog = ConfirmDialog("Apply these access changes?", "\n\n".join(sentences), f"Apply {counted(len(changes), 'changes')}", parent=self)
        self.last_dialog = dialog
        if await run_dialog(dialog) != ConfirmDialog.DialogCode.Accepted:
            return
        wanted = self.cells()
        applied: list[Change] = []
        for change in changes:
            try:
                if change.kind == ChangeKind.CREATE:
                    await self.service.create("access-rules", change.body)
                elif change.kind == ChangeKind.UPDATE:
                    assert change.rule_id is not None
                    await self.service.update("access-rules", change.rule_id, change.body)
                else:
                    assert change.rule_id is not None
                    await self.service.delete("access-rules", change.rule_id, change.version)
            except (ApiError, ServerUnreachable) as error:
                conflict = isinstance(error, ApiError) and error.code in (ErrorCode.VERSION_CONFLICT, ErrorCode.NOT_FOUND)
                left = [c.server_id for c in changes if c not in applied and not (conflict and c is change)]
                done = f" Applied before it: {', '.join(c.server_name for c in applied)}." if applied else ""
                if conflict:
                    text = (f"Not applied on {change.server_name}: someone changed the group's rule there meanwhile. "
                            f"The matrix now shows that rule as it is on the server; your other changes are kept — look and apply again.{done}")
                else:
                    text = f"Not applied on {change.server_name}: {_error_text(error)}. Your changes are kept.{done}"
                await self._after_apply({k: wanted[k] for k in left if k in wanted})
                show_inline(self.message, "warning" if conflict else "error", text)
                return
            applied.append(change)
        await self._after_apply({})
        show_inline(self.message, "info", "Applied. " + " ".join(_done(sentence) for sentence in sentences))

    async def _after_apply(self, keep: dict[int, Cell]) -> None:
        task = self.reload(keep)
        if task is not None:
            await asyncio.wait([task])


SECTIONS: dict[str, tuple[type, ...]] = {
    "auth-servers": (AuthServerUrlsSection,),
    "users": (MembershipSection, UserSessionsSection, IdentitiesSection),
    "groups": (MembershipSection, AccessMatrixSection),
    "sessions": (SessionSection,),
    "imaging-servers": (OrthancConfigSection,),
}
