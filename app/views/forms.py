"""Detail forms built from declarative field descriptions (app.models.entities).

Each field shows its own error right under it: while typing, from the server's request
model (validated locally), and after a save, from the server's 422 ``fields``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
    QAbstractItemView,
    QHeaderView,
)

from app.models.entities import FieldSpec, Kind, changed_values, creation_body, display, validate
from app.views.theme import restyle

NOT_JSON = object()


class FieldEditor(QWidget):
    """One field: its input widget, an optional help line and its error line."""

    changed = Signal()

    def __init__(self, spec: FieldSpec, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.spec = spec
        self._options: dict[int, str] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self.input = self._make_input()
        self.input.setObjectName(f"field_{spec.name}")
        layout.addWidget(self.input)
        if spec.help:
            help_label = QLabel(spec.help)
            help_label.setObjectName("fieldHelp")
            help_label.setWordWrap(True)
            layout.addWidget(help_label)
        self.error = QLabel()
        self.error.setObjectName("fieldError")
        self.error.setWordWrap(True)
        self.error.hide()
        layout.addWidget(self.error)

    def _make_input(self) -> QWidget:
        kind = self.spec.kind
        if kind == Kind.BOOL:
            box = QCheckBox()
            box.toggled.connect(self.changed)
            return box
        if kind in (Kind.CHOICE, Kind.REFERENCE):
            combo = QComboBox()
            if kind == Kind.CHOICE:
                for choice in self.spec.choices:
                    combo.addItem(choice, choice)
            combo.currentIndexChanged.connect(self.changed)
            return combo
        if kind in (Kind.MULTILINE, Kind.LINES, Kind.JSON):
            text = QPlainTextEdit()
            text.setTabChangesFocus(True)
            text.setFixedHeight(110 if kind == Kind.JSON else 64)
            if self.spec.placeholder:
                text.setPlaceholderText(self.spec.placeholder)
            text.textChanged.connect(self.changed)
            return text
        if kind == Kind.MULTI:
            items = QListWidget()
            for choice in self.spec.choices:
                item = QListWidgetItem(choice)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Unchecked)
                items.addItem(item)
            items.setFixedHeight(min(150, 22 * max(1, len(self.spec.choices)) + 6))
            items.itemChanged.connect(self.changed)
            return items
        if kind == Kind.CHANGES:
            table = QTableWidget(0, 3)
            table.setHorizontalHeaderLabels(["Field", "Old", "New"])
            table.verticalHeader().hide()
            table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
            table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
            table.setFixedHeight(160)
            return table
        line = QLineEdit()
        if kind == Kind.SECRET:
            line.setEchoMode(QLineEdit.EchoMode.Password)
        if kind == Kind.READONLY:
            line.setReadOnly(True)
        if self.spec.placeholder:
            line.setPlaceholderText(self.spec.placeholder)
        line.textChanged.connect(self.changed)
        return line

    # ------------------------------------------------------------ options of a reference

    def set_options(self, options: Mapping[int, str]) -> None:
        combo = self.input
        assert isinstance(combo, QComboBox)
        current = self.value()
        self._options = dict(options)
        combo.blockSignals(True)
        combo.clear()
        if self.spec.optional:
            combo.addItem("—", 0)
        for record_id, label in sorted(self._options.items(), key=lambda item: item[1].lower()):
            combo.addItem(label, record_id)
        combo.blockSignals(False)
        self.set_value(current)

    # ------------------------------------------------------------ value

    def value(self) -> Any:
        widget = self.input
        kind = self.spec.kind
        if isinstance(widget, QCheckBox):
            return widget.isChecked()
        if isinstance(widget, QComboBox):
            data = widget.currentData()
            if kind == Kind.REFERENCE:
                return int(data) if data else None
            return data
        if isinstance(widget, QListWidget):
            return [widget.item(row).text() for row in range(widget.count()) if widget.item(row).checkState() == Qt.CheckState.Checked]
        if isinstance(widget, QTableWidget):
            return None
        if isinstance(widget, QPlainTextEdit):
            text = widget.toPlainText()
            if kind == Kind.LINES:
                return [line.strip() for line in text.splitlines() if line.strip()]
            if kind == Kind.JSON:
                if not text.strip():
                    return None
                try:
                    return json.loads(text)
                except ValueError:
                    return NOT_JSON
            return text
        assert isinstance(widget, QLineEdit)
        text = widget.text()
        if kind == Kind.INT:
            if not text.strip():
                return None
            try:
                return int(text.strip())
            except ValueError:
                return text  # the model says why it is not a number
        if kind == Kind.SECRET:
            return text or None
        if self.spec.optional and not text.strip():
            return None
        return text

    def set_value(self, value: Any) -> None:
        widget = self.input
        kind = self.spec.kind
        widget.blockSignals(True)
        try:
            if isinstance(widget, QCheckBox):
                widget.setChecked(bool(value))
            elif isinstance(widget, QComboBox):
                if kind == Kind.REFERENCE:
                    if value and widget.findData(value) < 0:
                        widget.addItem(f"#{value}", value)
                    index = widget.findData(value if value else 0)
                else:
                    index = widget.findData(value)
                widget.setCurrentIndex(max(0, index) if widget.count() else -1)
            elif isinstance(widget, QListWidget):
                chosen = set(value or [])
                for row in range(widget.count()):
                    item = widget.item(row)
                    item.setCheckState(Qt.CheckState.Checked if item.text() in chosen else Qt.CheckState.Unchecked)
            elif isinstance(widget, QTableWidget):
                changes = value or {}
                widget.setRowCount(len(changes))
                for row, (name, pair) in enumerate(sorted(changes.items())):
                    old, new = (pair + [None, None])[:2] if isinstance(pair, list) else (None, pair)
                    for column, text in enumerate((name, display(old), display(new))):
                        widget.setItem(row, column, QTableWidgetItem(text))
            elif isinstance(widget, QPlainTextEdit):
                if kind == Kind.LINES:
                    widget.setPlainText("\n".join(str(item) for item in (value or [])))
                elif kind == Kind.JSON:
                    widget.setPlainText("" if value is None else json.dumps(value, indent=2))
                else:
                    widget.setPlainText("" if value is None else str(value))
            elif isinstance(widget, QLineEdit):
                if value is None:
                    widget.setText("")
                elif isinstance(value, str):
                    widget.setText(value)
                else:
                    widget.setText(display(value) if kind == Kind.READONLY else str(value))
        finally:
            widget.blockSignals(False)

    def set_read_only(self, read_only: bool) -> None:
        widget = self.input
        if isinstance(widget, QLineEdit | QPlainTextEdit):
            widget.setReadOnly(read_only or self.spec.kind == Kind.READONLY)
        else:
            widget.setEnabled(not read_only)

    def set_error(self, message: str | None) -> None:
        self.error.setText(message or "")
        self.error.setVisible(bool(message))
        self.input.setProperty("invalid", bool(message))
        restyle(self.input)

    @property
    def error_text(self) -> str:
        return self.error.text() if self.error.isVisible() or self.error.text() else ""


class RecordForm(QWidget):
    """The detail form of one record: create, edit, or view (read-only)."""

    validity_changed = Signal(bool)
    dirty_changed = Signal(bool)

    def __init__(self, fields: tuple[FieldSpec, ...], *, create_model: Any = None, update_model: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.fields = fields
        self.create_model = create_model
        self.update_model = update_model
        self.mode = "empty"  # "create" | "edit" | "view" | "empty"
        self.original: dict[str, Any] = {}
        self.version: int | None = None
        self.valid = False
        self.dirty = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.message = QLabel()
        self.message.setObjectName("formMessage")
        self.message.setWordWrap(True)
        layout.addWidget(self.message)
        self.form_error = QLabel()
        self.form_error.setObjectName("fieldError")
        self.form_error.setWordWrap(True)
        self.form_error.hide()
        layout.addWidget(self.form_error)
        self.body_widget = QWidget()
        form = QFormLayout(self.body_widget)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
        self.editors: dict[str, FieldEditor] = {}
        for spec in fields:
            editor = FieldEditor(spec)
            editor.changed.connect(self._changed)
            self.editors[spec.name] = editor
            form.addRow(spec.label, editor)
        layout.addWidget(self.body_widget)
        self.clear()

    # ------------------------------------------------------------ loading

    def clear(self, message: str = "Select a record, or press Ctrl+N to create one.") -> None:
        self.mode = "empty"
        self.original = {}
        self.version = None
        for editor in self.editors.values():
            editor.set_value(None)
            editor.set_error(None)
            editor.set_read_only(True)
        self.message.setText(message)
        self.body_widget.hide()  # no record: no fields to look at
        self._set_state(valid=False, dirty=False)
        self.form_error.hide()

    def load(self, values: Mapping[str, Any], *, mode: str, version: int | None = None, message: str = "") -> None:
        """Show values: ``edit`` and ``view`` of a record as read, ``create`` of a new one."""
        self.mode = mode
        self.original = dict(values) if mode != "create" else {}
        self.version = version
        for spec in self.fields:
            editor = self.editors[spec.name]
            editor.set_value(values.get(spec.name))
            editor.set_error(None)
            editor.set_read_only(mode == "view" or (mode == "edit" and spec.create_only) or spec.kind in (Kind.READONLY, Kind.CHANGES))
        self.message.setText(message)
        self.form_error.hide()
        self.body_widget.show()
        self._changed()

    # ------------------------------------------------------------ values and validation

    def values(self) -> dict[str, Any]:
        return {name: editor.value() for name, editor in self.editors.items() if editor.spec.kind not in (Kind.CHANGES,)}

    def changes(self) -> dict[str, Any]:
        return changed_values(self.fields, self.original, self.values())

    def body(self) -> dict[str, Any]:
        """What a save would send (create: the new record; edit: the changes and the version)."""
        if self.mode == "create":
            return creation_body(self.fields, self.values())
        return {**self.changes(), "version": self.version}

    def local_errors(self) -> dict[str, str]:
        values = self.values()
        errors = {name: "not valid JSON" for name, value in values.items() if value is NOT_JSON}
        if errors:
            return errors
        if self.mode == "create":
            return validate(self.create_model, self.fields, self.body())
        if self.mode == "edit":
            return validate(self.update_model, self.fields, self.body())
        return {}

    def _changed(self) -> None:
        if self.mode in ("empty", "view"):
            self._set_state(valid=False, dirty=False)
            return
        errors = self.local_errors()
        self.show_errors(errors)
        dirty = self.mode == "create" or bool(self.changes())
        self._set_state(valid=not errors, dirty=dirty)

    def show_errors(self, errors: Mapping[str, str]) -> None:
        """Errors by field name ('' or an unknown name: about the whole record)."""
        general: list[str] = []
        for name, editor in self.editors.items():
            editor.set_error(errors.get(name))
        for name, message in errors.items():
            base = name.split(".")[0]
            if base in self.editors and base != name:
                self.editors[base].set_error(f"{name}: {message}")
            elif base not in self.editors:
                general.append(f"{name}: {message}" if name else message)
        self.form_error.setText("\n".join(general))
        self.form_error.setVisible(bool(general))

    def show_server_errors(self, fields: list[tuple[str, str]], message: str) -> None:
        errors: dict[str, str] = {}
        for name, text in fields:
            errors.setdefault(name, text)
        if not fields:
            errors[""] = message
        self.show_errors(errors)

    def _set_state(self, *, valid: bool, dirty: bool) -> None:
        if valid != self.valid:
            self.valid = valid
            self.validity_changed.emit(valid)
        if dirty != self.dirty:
            self.dirty = dirty
            self.dirty_changed.emit(dirty)

    def editor(self, name: str) -> FieldEditor:
        return self.editors[name]
