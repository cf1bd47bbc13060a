"""The generic panel of one entity: a server-paged table, search, filters and a detail form.

Searching is debounced (``SEARCH_DELAY_MS``) and "latest wins" (the model drops stale
pages). Saving sends only the changed fields with the version that was read; a version
conflict opens a comparison and never overwrites silently. Deleting first asks the server
what else goes with the record and names it in the confirmation.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.models.csv_files import write_csv
from app.models.entities import EntitySpec, FilterSpec, Kind, display, duplicate_values, plain, record_values
from app.models.paged_table import PagedTableModel
from app.models.service import ApiError, ConsoleService, ErrorCode, ServerUnreachable
from app.views.async_tools import Debouncer, run_dialog
from app.views.dialogs import ConfirmDialog, ConflictDialog, MessageDialog
from app.views.forms import RecordForm
from app.views.theme import icon

SEARCH_DELAY_MS = 250


def inline_message() -> QLabel:
    label = QLabel()
    label.setObjectName("inlineMessage")
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.hide()
    return label


def show_inline(label: QLabel, level: str, text: str) -> None:
    label.setProperty("level", level)
    label.setText(text)
    label.setVisible(bool(text))
    label.style().unpolish(label)
    label.style().polish(label)


def counted(count: int, name: str) -> str:
    name = name.replace("_", " ")
    return f"{count:,} {name[:-1] if count == 1 and name.endswith('s') else name}"


def impact_sentence(target: str, noun: str, removes: dict[str, int]) -> str:
    parts = [counted(count, name) for name, count in removes.items() if count]
    if not parts:
        return f"Delete the {noun} “{target}”? Nothing else is removed with it."
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"Delete the {noun} “{target}”? This also removes {listed}."


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _scope_words(values: dict[str, Any]) -> str:
    scope = values.get("scope") or "all"
    if scope == "labels":
        labels = values.get("labels") or []
        return "studies labelled " + _listed([f"“{label}”" for label in labels]) if labels else "labelled studies"
    if scope == "resources":
        selectors = values.get("selectors") or []
        return counted(len(selectors), "selected resources") if isinstance(selectors, list) else "selected resources"
    return "all studies"


async def access_change_sentence(service: ConsoleService, old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """A rule's change in words: "Radiology will gain download on PACS-2 for all studies;
    12 users affected." None when nothing about access changes."""
    groups = await service.labels("groups")
    servers = await service.labels("imaging-servers")
    if new.get("group_id") not in groups or new.get("imaging_server_id") not in servers:  # made since
        groups = await service.labels("groups", refresh=True)
        servers = await service.labels("imaging-servers", refresh=True)
    group = groups.get(new.get("group_id") or 0, "the group")
    server = servers.get(new.get("imaging_server_id") or 0, "the imaging server")
    same_target = old.get("group_id") == new.get("group_id") and old.get("imaging_server_id") == new.get("imaging_server_id")
    before = set(old.get("capabilities") or []) if same_target else set()
    after = set(new.get("capabilities") or [])
    gained, lost = sorted(after - before), sorted(before - after)
    scope_changed = same_target and (old.get("scope"), old.get("labels"), old.get("selectors")) != (new.get("scope"), new.get("labels"), new.get("selectors"))
    if not gained and not lost and not scope_changed and same_target and old:
        return None
    parts = []
    if gained:
        parts.append(f"gain {_listed(gained)}")
    if lost:
        parts.append(f"lose {_listed(lost)}")
    if not parts:
        parts.append(f"keep {_listed(sorted(after))}")
    page = await service.list_page("users", {"group_id": new.get("group_id"), "limit": 1}) if new.get("group_id") else None
    affected = counted(page.total, "users") + " affected" if page is not None else "no user affected"
    sentence = f"{group} will {' and '.join(parts)} on {server} for {_scope_words(new)}; {affected}."
    if old and not same_target:
        old_group = groups.get(old.get("group_id") or 0, "the group")
        old_server = servers.get(old.get("imaging_server_id") or 0, "the imaging server")
        sentence += f" {old_group} loses this rule on {old_server}."
    return sentence


class EntityPanel(QWidget):
    record_saved = Signal(object)
    record_shown = Signal(object)  # the record in the form (edit/view), or None
    record_deleted = Signal(object)

    def __init__(self, spec: EntitySpec, service: ConsoleService, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.spec = spec
        self.service = service
        self.current: BaseModel | None = None
        self.loaded = False
        self._save_task: asyncio.Task[Any] | None = None
        self.last_dialog: Any = None
        self._announced: Any = None
        self.setObjectName(f"panel_{spec.key}")

        self.model = PagedTableModel(spec.columns, self._fetch, parent=self)
        self.model.loading_changed.connect(self._loading_changed)
        self.model.total_changed.connect(self._total_changed)
        self.model.load_failed.connect(self._load_failed)
        self.model.reset_done.connect(self._after_reset)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(10, 8, 10, 8)
        header = QHBoxLayout()
        self.title = QLabel(spec.title)
        self.title.setObjectName("panelTitle")
        self.count = QLabel("")
        self.count.setObjectName("panelCount")
        header.addWidget(self.title)
        header.addWidget(self.count)
        header.addStretch(1)
        outer.addLayout(header)

        toolbar = QHBoxLayout()
        self.search = QLineEdit()
        self.search.setObjectName("search")
        self.search.setPlaceholderText(f"{spec.search_hint} (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.addAction(icon("search"), QLineEdit.ActionPosition.LeadingPosition)
        self.search.setMinimumWidth(220)
        self._debounce = Debouncer(SEARCH_DELAY_MS, self._search_now, self)
        self.search.textChanged.connect(self._debounce.trigger)
        self.search.returnPressed.connect(self._debounce.flush)
        toolbar.addWidget(self.search, 2)
        self.filter_widgets: dict[str, QWidget] = {}
        # Filters on a row of their own: the window stays usable on a 1280-pixel screen.
        filters = QHBoxLayout()
        for spec_filter in spec.filters:
            filters.addWidget(self._filter_widget(spec_filter))
        filters.addStretch(1)
        toolbar.addStretch(1)
        self.new_button = self._button("add", "New", "Create a new record (Ctrl+N)", self.new_record)
        self.duplicate_button = self._button("duplicate", "Duplicate", "Copy the selected record into a new one", self.duplicate_record)
        self.delete_button = self._button("delete", "Delete", "Delete the selected record (Del)", self.delete_selected)
        self.delete_button.setObjectName("danger")
        self.refresh_button = self._button("refresh", "", "Reload from the server (F5)", self.refresh)
        self.export_button = self._button("export", "CSV", "Export the listed records as CSV", self.export_csv_dialog)
        for button in (self.new_button, self.duplicate_button, self.delete_button):
            button.setVisible(spec.creatable)
            toolbar.addWidget(button)
        toolbar.addWidget(self.refresh_button)
        toolbar.addWidget(self.export_button)
        outer.addLayout(toolbar)
        if spec.filters:
            outer.addLayout(filters)

        self.message = inline_message()
        outer.addWidget(self.message)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        self.table = QTableView()
        self.table.setObjectName("table")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        # No column sorted at first: the server's default order (enabling sorting would
        # otherwise sort by the first column at once, descending).
        self.table.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.table.setSortingEnabled(True)
        self.table.horizontalHeader().setSortIndicatorShown(True)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(24)
        self.table.setWordWrap(False)
        for column, spec_column in enumerate(spec.columns):
            if spec_column.width:
                self.table.setColumnWidth(column, spec_column.width)
        self.table.selectionModel().currentRowChanged.connect(self._row_changed)
        delete_key = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.table)
        delete_key.setContext(Qt.ShortcutContext.WidgetShortcut)
        delete_key.activated.connect(self.delete_selected)
        splitter.addWidget(self.table)

        detail = QWidget()
        detail_layout = QVBoxLayout(detail)
        detail_layout.setContentsMargins(0, 0, 0, 0)
        self.form = RecordForm(spec.fields, create_model=spec.endpoint.create, update_model=spec.endpoint.update)
        self.form.validity_changed.connect(self._update_buttons)
        self.form.dirty_changed.connect(self._update_buttons)
        # The form and the sections below it scroll together: a long form never squeezes them.
        body = QWidget()
        body_layout = QVBoxLayout(body)
        body_layout.setContentsMargins(0, 0, 4, 0)
        body_layout.addWidget(self.form)
        self.extra = QVBoxLayout()
        body_layout.addLayout(self.extra)
        body_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        detail_layout.addWidget(scroll, 1)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.revert_button = self._button("revert", "Revert", "Drop the changes in the form", self.revert)
        self.save_button = self._button("save", "Save", "Save (Ctrl+S)", self.save)
        self.save_button.setObjectName("primary")
        self.revert_button.setVisible(spec.editable or spec.creatable)
        self.save_button.setVisible(spec.editable or spec.creatable)
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.save_button)
        detail_layout.addLayout(buttons)
        splitter.addWidget(detail)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([640, 420])
        outer.addWidget(splitter, 1)
        self._update_buttons()

    # ------------------------------------------------------------ building blocks

    def _button(self, icon_name: str, text: str, tip: str, slot: Any) -> QPushButton:
        button = QPushButton(icon(icon_name), text)
        button.setToolTip(tip)
        button.clicked.connect(lambda _checked=False: slot())
        return button

    def _filter_widget(self, spec_filter: FilterSpec) -> QWidget:
        if spec_filter.kind in ("text", "date"):
            line = QLineEdit()
            line.setPlaceholderText(spec_filter.label + (" (YYYY-MM-DD)" if spec_filter.kind == "date" else ""))
            line.setMaximumWidth(150)
            debounce = Debouncer(SEARCH_DELAY_MS, lambda: self._filter_text(spec_filter, line.text()), self)
            line.textChanged.connect(debounce.trigger)
            self.filter_widgets[spec_filter.name] = line
            return line
        combo = QComboBox()
        combo.setToolTip(spec_filter.label)
        combo.addItem(f"{spec_filter.label}: any", None)
        if spec_filter.kind == "bool":
            combo.addItem(f"{spec_filter.label}: yes", True)
            combo.addItem(f"{spec_filter.label}: no", False)
        for choice in spec_filter.choices:
            combo.addItem(f"{spec_filter.label}: {choice}", choice)
        combo.currentIndexChanged.connect(lambda _index: self.model.set_filter(spec_filter.name, combo.currentData()))
        self.filter_widgets[spec_filter.name] = combo
        return combo

    def _filter_text(self, spec_filter: FilterSpec, text: str) -> None:
        value: str | None = text.strip() or None
        if value and spec_filter.kind == "date":
            if len(value) != 10:
                show_inline(self.message, "warning", f"{spec_filter.label}: write the date as YYYY-MM-DD")
                return
            value = f"{value}T00:00:00Z" if spec_filter.name != "until" else f"{value}T23:59:59Z"
        show_inline(self.message, "info", "")
        self.model.set_filter(spec_filter.name, value)

    async def _fetch(self, params: dict[str, Any]) -> Any:
        return await self.service.list_page(self.spec.key, params)

    # ------------------------------------------------------------ loading

    def activate(self) -> None:
        """Shown for the first time (or after a reconnection): load."""
        if not self.loaded:
            self.loaded = True
            self.refresh()

    def shutdown(self) -> None:
        self.model.cancel()

    def refresh(self) -> None:
        self.model.reload()
        self._announced = None  # the sections below the form reload too
        self._announce()
        if self.spec.references or any(f.kind == "reference" for f in self.spec.filters) or any(f.kind == Kind.REFERENCE for f in self.spec.fields):
            self.service.spawn(self._load_references())

    async def _load_references(self) -> None:
        needed = set(self.spec.references)
        needed.update(f.reference for f in self.spec.filters if f.reference)
        needed.update(f.reference for f in self.spec.fields if f.reference)
        labels: dict[str, dict[int, str]] = {}
        for key in sorted(k for k in needed if k):
            try:
                labels[key] = await self.service.labels(key, refresh=True)
            except (ApiError, ServerUnreachable):
                labels[key] = {}
        self.model.set_labels(labels)
        for spec_field in self.spec.fields:
            if spec_field.kind == Kind.REFERENCE and spec_field.reference:
                self.form.editor(spec_field.name).set_options(labels.get(spec_field.reference, {}))
        for spec_filter in self.spec.filters:
            if spec_filter.kind == "reference" and spec_filter.reference:
                combo = self.filter_widgets[spec_filter.name]
                assert isinstance(combo, QComboBox)
                chosen = combo.currentData()
                combo.blockSignals(True)
                combo.clear()
                combo.addItem(f"{spec_filter.label}: any", None)
                for record_id, label in sorted(labels.get(spec_filter.reference, {}).items(), key=lambda item: item[1].lower()):
                    combo.addItem(f"{spec_filter.label}: {label}", record_id)
                combo.setCurrentIndex(max(0, combo.findData(chosen)))
                combo.blockSignals(False)

    def _search_now(self) -> None:
        self.model.set_search(self.search.text())

    def _loading_changed(self, loading: bool) -> None:
        if loading:
            self.count.setText("loading…")
        else:
            self._total_changed(self.model.total)

    def _total_changed(self, total: int) -> None:
        shown = len(self.model.rows)
        noun = self.spec.noun + ("" if total == 1 else "s")
        self.count.setText(f"{total:,} {noun}" + (f" (first {shown:,} loaded)" if shown < total else ""))

    def _load_failed(self, error: Exception) -> None:
        text = str(error) if isinstance(error, ServerUnreachable) else getattr(error, "message", str(error))
        show_inline(self.message, "error", f"Could not load the {self.spec.noun}s: {text}")

    def _after_reset(self) -> None:
        if self.message.property("level") == "error" and self.message.text().startswith("Could not load"):
            show_inline(self.message, "info", "")
        # Keep the record in the form selected if it is still listed.
        if self.current is not None and self.form.mode in ("edit", "view"):
            row = self.model.row_of(getattr(self.current, "id", None))
            if row >= 0:
                self.table.blockSignals(True)
                self.table.selectRow(row)
                self.table.blockSignals(False)

    # ------------------------------------------------------------ selection and form

    def _row_changed(self, current: Any, _previous: Any) -> None:
        record = self.model.record(current.row()) if current.isValid() else None
        if record is None:
            return
        if self.current is not None and getattr(record, "id", None) == getattr(self.current, "id", None) and self.form.mode in ("edit", "view"):
            return
        if self.form.dirty and self.form.mode in ("create", "edit"):
            # Never drop typed changes silently: go back to the record being edited and ask.
            self._reselect_current()
            self.service.spawn(self._switch_after_asking(record))
            return
        self.show_record(record)

    def _reselect_current(self) -> None:
        selection = self.table.selectionModel()
        selection.blockSignals(True)
        row = self.model.row_of(getattr(self.current, "id", None)) if self.current is not None and self.form.mode == "edit" else -1
        if row >= 0:
            self.table.selectRow(row)
        else:
            self.table.clearSelection()
        selection.blockSignals(False)

    async def ask_discard(self) -> bool:
        """True when there is nothing unsaved, or the person chose to drop it."""
        if not (self.form.dirty and self.form.mode in ("create", "edit")):
            return True
        what = f"the {self.spec.noun} “{self.spec.label(self.current)}”" if self.form.mode == "edit" and self.current is not None else f"the new {self.spec.noun}"
        dialog = ConfirmDialog("Discard changes?", f"You have unsaved changes to {what}. Discard them?", "Discard changes", danger=True, parent=self)
        self.last_dialog = dialog
        return await run_dialog(dialog) == ConfirmDialog.DialogCode.Accepted

    async def _switch_after_asking(self, record: BaseModel) -> None:
        if not await self.ask_discard():
            return
        self.show_record(record)
        self.select_record(getattr(record, "id", None))

    def show_record(self, record: BaseModel, message: str = "") -> None:
        self.current = record
        mode = "edit" if self.spec.editable else "view"
        self.form.load(
            record_values(self.spec.fields, record), mode=mode, version=getattr(record, "version", None),
            message=message or f"{self.spec.noun.capitalize()} “{self.spec.label(record)}”",
        )
        self._update_buttons()

    def select_record(self, record_id: Any) -> bool:
        row = self.model.row_of(record_id)
        if row < 0:
            return False
        self.table.selectRow(row)
        record = self.model.record(row)
        if record is not None:
            self.show_record(record)
        return True

    def add_section(self, section: QWidget) -> None:
        """A part below the form that follows the shown record (memberships, actions)."""
        self.extra.addWidget(section)

    def _announce(self) -> None:
        shown = self.current if self.current is not None and self.form.mode in ("edit", "view") else None
        key = (getattr(shown, "id", None), getattr(shown, "version", None)) if shown is not None else None
        if key != self._announced:
            self._announced = key
            self.record_shown.emit(shown)

    def _update_buttons(self, *_: Any) -> None:
        self._announce()
        has_record = self.current is not None and self.form.mode in ("edit", "view")
        self.duplicate_button.setEnabled(has_record and self.spec.creatable)
        self.delete_button.setEnabled(has_record and self.spec.deletable)
        self.save_button.setEnabled(self.form.mode in ("create", "edit") and self.form.valid and self.form.dirty)
        self.revert_button.setEnabled(self.form.mode in ("create", "edit") and self.form.dirty)

    def focus_search(self) -> None:
        self.search.setFocus()
        self.search.selectAll()

    def new_record(self) -> None:
        if not self.spec.creatable:
            return
        if self.form.dirty and self.form.mode in ("create", "edit"):
            self.service.spawn(self._new_after_asking())
            return
        self._new_record()

    async def _new_after_asking(self) -> None:
        if await self.ask_discard():
            self._new_record()

    def _new_record(self) -> None:
        self.current = None
        self.table.clearSelection()
        defaults = self._defaults()
        self.form.load(defaults, mode="create", message=f"New {self.spec.noun}")
        first = next((e for e in self.form.editors.values() if e.spec.kind not in (Kind.READONLY,)), None)
        if first is not None:
            first.input.setFocus()
        self._update_buttons()

    def _defaults(self) -> dict[str, Any]:
        """The create model's defaults, so the form starts where the server would."""
        model = self.spec.endpoint.create
        values: dict[str, Any] = {}
        if model is None:
            return values
        for name, info in model.model_fields.items():
            if info.is_required():
                continue
            default = info.get_default(call_default_factory=True)
            values[name] = plain(default)
        return values

    def duplicate_record(self) -> None:
        if self.current is None or not self.spec.creatable:
            return
        source = self.current
        self.current = None
        self.table.clearSelection()
        self.form.load(duplicate_values(self.spec, source), mode="create", message=f"New {self.spec.noun}, copied from “{self.spec.label(source)}”")
        self._update_buttons()

    def revert(self) -> None:
        if self.form.mode == "edit" and self.current is not None:
            self.show_record(self.current)
        elif self.form.mode == "create":
            self._new_record()

    # ------------------------------------------------------------ save

    def save(self) -> asyncio.Task[Any] | None:
        if self.form.mode not in ("create", "edit") or not self.form.dirty:
            return None
        if self._save_task is not None and not self._save_task.done():
            return self._save_task
        self._save_task = self.service.spawn(self._save())
        return self._save_task

    async def _confirm_sensitive(self, body: dict[str, Any]) -> bool:
        """Granting superuser is confirmed on its own (it grants everything); a change of
        access is previewed in words before it applies."""
        if self.spec.key == "access-rules":
            return await self._confirm_access_change()
        if self.spec.key != "users" or body.get("is_superuser") is not True:
            return True
        if self.form.mode == "edit" and self.form.original.get("is_superuser"):
            return True
        name = self.form.values().get("username") or "this user"
        dialog = ConfirmDialog(
            "Grant superuser?",
            f"“{name}” will be a superuser: they may change every setting, user and rule of this Portico, "
            "including other superusers. Grant it?",
            "Grant superuser",
            danger=True,
            parent=self,
        )
        self.last_dialog = dialog
        return await run_dialog(dialog) == ConfirmDialog.DialogCode.Accepted

    async def _confirm_access_change(self) -> bool:
        new = self.form.values()
        old = self.form.original if self.form.mode == "edit" else {}
        try:
            text = await access_change_sentence(self.service, old, new)
        except (ApiError, ServerUnreachable):
            return True  # the preview is a courtesy; the save itself reports the problem
        if text is None:
            return True
        dialog = ConfirmDialog("Apply this access change?", text, "Apply", parent=self)
        self.last_dialog = dialog
        return await run_dialog(dialog) == ConfirmDialog.DialogCode.Accepted

    async def _save(self) -> None:
        errors = self.form.local_errors()
        if errors:
            self.form.show_errors(errors)
            show_inline(self.message, "error", "Some fields need attention before saving.")
            return
        body = self.form.body()
        if not await self._confirm_sensitive(body):
            return
        if self.form.mode == "create":
            await self._create(body)
        else:
            await self._update(body)

    async def _create(self, body: dict[str, Any]) -> None:
        try:
            record, created = await self.service.create_returning(self.spec.key, body)
        except ApiError as error:
            self._show_api_error(error)
            return
        except ServerUnreachable as error:
            show_inline(self.message, "error", f"Not saved: {error}")
            return
        # The inserted row shifts the current index onto another record: that is no choice
        # of the person's (it would ask to discard the form being saved), so it is not signalled.
        selection = self.table.selectionModel()
        selection.blockSignals(True)
        self.model.insert_record(record)
        self.table.selectRow(0)
        selection.blockSignals(False)
        self.show_record(record, message=f"Created {self.spec.noun} “{self.spec.label(record)}”.")
        show_inline(self.message, "info", "")
        self.record_saved.emit(record)
        secret = getattr(created, "secret", None) or getattr(created, "token", None)
        if isinstance(secret, str):
            username = getattr(created, "username", None)
            extra = f" Its username (WebServiceUsername) is {username}." if username else ""
            dialog = MessageDialog(
                "Copy the secret now",
                f"This is the only time Portico shows this secret; it keeps only a hash.{extra}",
                secret=secret,
                parent=self,
            )
            self.last_dialog = dialog
            await run_dialog(dialog)

    async def _update(self, body: dict[str, Any]) -> None:
        assert self.current is not None
        record_id = getattr(self.current, "id")
        try:
            record = await self.service.update(self.spec.key, record_id, body)
        except ApiError as error:
            if error.code == ErrorCode.VERSION_CONFLICT and error.current is not None:
                await self._resolve_conflict(body, error.current)
                return
            self._show_api_error(error)
            return
        except ServerUnreachable as error:
            show_inline(self.message, "error", f"Not saved (your changes are still in the form): {error}")
            return
        self.model.replace_record(record)
        self.show_record(record, message=f"Saved {self.spec.noun} “{self.spec.label(record)}”.")
        show_inline(self.message, "info", "")
        self.record_saved.emit(record)

    async def _resolve_conflict(self, body: dict[str, Any], current: dict[str, Any]) -> None:
        mine = {key: value for key, value in body.items() if key != "version"}
        labels = {f.name: f.label for f in self.spec.fields if f.kind not in (Kind.CHANGES,)}
        dialog = ConflictDialog(self.spec.noun, labels, mine, current, self.form.original, parent=self)
        self.last_dialog = dialog
        choice = await run_dialog(dialog)
        theirs = self.spec.endpoint.read.model_validate(current)
        if choice == ConflictDialog.RELOAD:
            self.model.replace_record(theirs)
            self.show_record(theirs, message="Reloaded: the form shows the version now on the server.")
            show_inline(self.message, "info", "Your changes were dropped; the version now on the server is shown.")
        elif choice == ConflictDialog.KEEP_MINE:
            # Explicitly chosen: re-apply the changed fields on top of the current version.
            self.current = theirs
            self.form.original = record_values(self.spec.fields, theirs)
            self.form.version = getattr(theirs, "version", None)
            await self._update({**mine, "version": self.form.version})
        else:
            show_inline(self.message, "warning", "Not saved: this record was changed by someone else. Save again to compare.")

    def _show_api_error(self, error: ApiError) -> None:
        fields = [(item.field, item.message) for item in error.fields]
        self.form.show_server_errors(fields, error.message)
        show_inline(self.message, "error", f"Not saved: {error.message}")

    # ------------------------------------------------------------ delete

    def delete_selected(self) -> asyncio.Task[Any] | None:
        if self.current is None or not self.spec.deletable or self.form.mode != "edit":
            return None
        return self.service.spawn(self._delete(self.current))

    async def _delete(self, record: BaseModel) -> None:
        record_id = getattr(record, "id")
        try:
            impact = await self.service.delete_impact(self.spec.key, record_id)
        except (ApiError, ServerUnreachable) as error:
            show_inline(self.message, "error", f"Cannot delete: {getattr(error, 'message', str(error))}")
            return
        label = self.spec.label(record)
        if impact.blocked_by:
            blocked = ", ".join(counted(count, name) for name, count in impact.blocked_by.items())
            refusal = MessageDialog("Cannot delete", f"The {self.spec.noun} “{label}” is still used by {blocked}; change those first.", parent=self)
            self.last_dialog = refusal
            await run_dialog(refusal)
            return
        dialog = ConfirmDialog(f"Delete {self.spec.noun}?", impact_sentence(label, self.spec.noun, impact.removes), "Delete", danger=True, parent=self)
        self.last_dialog = dialog
        if await run_dialog(dialog) != ConfirmDialog.DialogCode.Accepted:
            return
        try:
            await self.service.delete(self.spec.key, record_id, getattr(record, "version", None))
        except ApiError as error:
            if error.code == ErrorCode.VERSION_CONFLICT:
                show_inline(self.message, "warning", "Not deleted: it was changed meanwhile. Look at the new version and delete again if you still want to.")
                if error.current is not None:
                    theirs = self.spec.endpoint.read.model_validate(error.current)
                    self.model.replace_record(theirs)
                    self.show_record(theirs)
                return
            show_inline(self.message, "error", f"Not deleted: {error.message}")
            return
        except ServerUnreachable as error:
            show_inline(self.message, "error", f"Not deleted: {error}")
            return
        self.model.remove_record(record_id)
        self.current = None
        self.form.clear(f"Deleted {self.spec.noun} “{label}”.")
        self._update_buttons()
        self.record_deleted.emit(record)

    # ------------------------------------------------------------ export

    def export_csv_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Export {self.spec.title}", f"{self.spec.key}.csv", "CSV files (*.csv)")
        if path:
            self.service.spawn(self.export_csv(Path(path)))

    async def export_csv(self, path: Path) -> int:
        """Every record matching the current search and filters (not only the loaded pages)."""
        params = {key: value for key, value in self.model.params().items() if key not in ("offset", "limit")}
        records = await self.service.all_records(self.spec.key, params)
        names = [name for name in type(records[0]).model_fields] if records else [c.field for c in self.spec.columns]
        write_csv(path, names, ([_csv_cell(getattr(record, name, None)) for name in names] for record in records))
        show_inline(self.message, "info", f"Exported {len(records):,} {self.spec.noun}s to {path}.")
        return len(records)


def _csv_cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, list | dict | BaseModel):
        import json

        return json.dumps(plain(value))
    if hasattr(value, "isoformat"):
        return str(plain(value))
    return display(value)
