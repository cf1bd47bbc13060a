"""The console's dialogs. Each is opened with ``await run_dialog(dialog)``, never ``exec()``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.models.entities import display
from app.views.theme import icon


def _error_label() -> QLabel:
    label = QLabel()
    label.setObjectName("fieldError")
    label.setWordWrap(True)
    label.hide()
    return label


class ConfirmDialog(QDialog):
    """A question with a named action ("Delete", "Grant superuser"), never just "OK"."""

    def __init__(self, title: str, text: str, action: str, *, danger: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setWindowModality(Qt.WindowModality.WindowModal)
        layout = QVBoxLayout(self)
        self.text = QLabel(text)
        self.text.setWordWrap(True)
        self.text.setMinimumWidth(380)
        layout.addWidget(self.text)
        buttons = QDialogButtonBox()
        self.accept_button = buttons.addButton(action, QDialogButtonBox.ButtonRole.AcceptRole)
        self.accept_button.setObjectName("danger" if danger else "primary")
        self.cancel_button = buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.cancel_button.setDefault(True)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)


class MessageDialog(QDialog):
    """Information that needs to be read (a secret shown once, a refusal), with Copy."""

    def __init__(self, title: str, text: str, *, secret: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setWindowModality(Qt.WindowModality.WindowModal)
        layout = QVBoxLayout(self)
        label = QLabel(text)
        label.setWordWrap(True)
        label.setMinimumWidth(420)
        layout.addWidget(label)
        self.secret = QLineEdit(secret or "")
        self.secret.setReadOnly(True)
        self.secret.setVisible(secret is not None)
        layout.addWidget(self.secret)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        if secret is not None:
            copy = buttons.addButton("Copy", QDialogButtonBox.ButtonRole.ActionRole)
            copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(secret))
        buttons.rejected.connect(self.accept)
        buttons.accepted.connect(self.accept)
        layout.addWidget(buttons)


class FirstSuperuserDialog(QDialog):
    """The first start on an empty database: who administers it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Create the first superuser")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        layout = QVBoxLayout(self)
        intro = QLabel(
            "This Portico database has no superuser yet. Create one: it signs in to this console "
            "from other machines and to the admin API, and may do everything."
        )
        intro.setWordWrap(True)
        intro.setMinimumWidth(420)
        layout.addWidget(intro)
        form = QFormLayout()
        self.username = QLineEdit()
        self.username.setObjectName("username")
        self.email = QLineEdit()
        self.email.setPlaceholderText("optional")
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.again = QLineEdit()
        self.again.setEchoMode(QLineEdit.EchoMode.Password)
        form.addRow("Username", self.username)
        form.addRow("Email", self.email)
        form.addRow("Password", self.password)
        form.addRow("Password (again)", self.again)
        layout.addLayout(form)
        self.error = _error_label()
        layout.addWidget(self.error)
        self.buttons = QDialogButtonBox()
        self.create_button = self.buttons.addButton("Create superuser", QDialogButtonBox.ButtonRole.AcceptRole)
        self.create_button.setObjectName("primary")
        self.later_button = self.buttons.addButton("Later", QDialogButtonBox.ButtonRole.RejectRole)
        self.buttons.accepted.connect(self._check)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        for line in (self.username, self.password, self.again):
            line.textChanged.connect(self._update)
        self._update()

    def problem(self) -> str | None:
        if not self.username.text().strip():
            return "Enter a username."
        if len(self.password.text()) < 8:
            return "The password needs at least 8 characters."
        if self.password.text() != self.again.text():
            return "The two passwords differ."
        return None

    def _update(self) -> None:
        self.create_button.setEnabled(self.problem() is None)

    def _check(self) -> None:
        problem = self.problem()
        if problem:
            self.show_error(problem)
            return
        self.accept()

    def show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.setVisible(bool(message))


class ConnectDialog(QDialog):
    """Connect to a remote Portico by URL, username and password, or single sign-on."""

    SSO = 2  # the result when "Sign in with single sign-on…" was pressed

    def __init__(
        self,
        recent: list[tuple[str, str]],
        *,
        keyring: bool = False,
        password_lookup: Callable[[str, str], str | None] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.password_lookup = password_lookup
        self.setWindowTitle("Connect to server")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.recent = QComboBox()
        self.recent.addItem("—", None)
        for url, username in recent:
            self.recent.addItem(f"{url} ({username})", (url, username))
        self.recent.currentIndexChanged.connect(self._recent_chosen)
        self.url = QLineEdit()
        self.url.setPlaceholderText("https://portico.hospital.example")
        self.username = QLineEdit()
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.remember = QCheckBox("Remember the password in the system keyring")
        self.remember.setVisible(keyring)
        if recent:
            form.addRow("Recent", self.recent)
        form.addRow("Server URL", self.url)
        form.addRow("Username", self.username)
        form.addRow("Password", self.password)
        layout.addLayout(form)
        layout.addWidget(self.remember)
        self.error = _error_label()
        layout.addWidget(self.error)
        buttons = QDialogButtonBox()
        self.connect_button = buttons.addButton("Connect", QDialogButtonBox.ButtonRole.AcceptRole)
        self.connect_button.setObjectName("primary")
        self.sso_button = buttons.addButton("Sign in with single sign-on…", QDialogButtonBox.ButtonRole.ActionRole)
        self.sso_button.setToolTip("Sign in at the server's identity provider in a browser pane (no password here)")
        self.sso_button.clicked.connect(lambda: self.done(self.SSO))
        buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        for line in (self.url, self.username, self.password):
            line.textChanged.connect(self._update)
        self._update()
        self.setMinimumWidth(440)

    def _recent_chosen(self) -> None:
        data = self.recent.currentData()
        if data:
            self.url.setText(data[0])
            self.username.setText(data[1])
            stored = self.password_lookup(data[0], data[1]) if self.password_lookup is not None else None
            self.password.setText(stored or "")  # from the OS keyring, where one is used
            self.password.setFocus()

    def _update(self) -> None:
        url = self.url.text().strip()
        self.connect_button.setEnabled(url.startswith(("http://", "https://")) and bool(self.username.text().strip()) and bool(self.password.text()))
        self.sso_button.setEnabled(url.startswith(("http://", "https://")))

    def show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.setVisible(bool(message))


class ConflictDialog(QDialog):
    """Someone else saved the record meanwhile: compare, then choose. Never silent."""

    RELOAD = 10
    KEEP_MINE = 11

    def __init__(
        self, noun: str, labels: Mapping[str, str], mine: Mapping[str, Any], theirs: Mapping[str, Any], original: Mapping[str, Any], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"The {noun} was changed meanwhile")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        layout = QVBoxLayout(self)
        intro = QLabel(
            f"Someone saved this {noun} after you opened it. Compare your changes with the version "
            "now on the server, then reload theirs (your changes are dropped) or apply yours on top of it."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        names = [name for name in labels if name in mine or theirs.get(name) != original.get(name)]
        self.table = QTableWidget(len(names), 3)
        self.table.setHorizontalHeaderLabels(["Field", "Yours", "Now on the server"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        for row, name in enumerate(names):
            yours = mine.get(name, original.get(name))
            cells = (labels[name], "(secret)" if name in mine and "secret" in name or name == "password" else display(yours), display(theirs.get(name)))
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if name in mine and column > 0 and yours != theirs.get(name):
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(row, column, item)
        layout.addWidget(self.table)
        buttons = QDialogButtonBox()
        self.reload_button = buttons.addButton("Reload theirs", QDialogButtonBox.ButtonRole.ActionRole)
        self.keep_button = buttons.addButton("Apply mine on top", QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button = buttons.addButton("Keep editing", QDialogButtonBox.ButtonRole.RejectRole)
        self.reload_button.clicked.connect(lambda: self.done(self.RELOAD))
        self.keep_button.clicked.connect(lambda: self.done(self.KEEP_MINE))
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(620, 320)


class PickDialog(QDialog):
    """Choose several records (multi-select) from a list: e.g. users to add to a group."""

    def __init__(self, title: str, options: Mapping[int, str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setWindowModality(Qt.WindowModality.WindowModal)
        layout = QVBoxLayout(self)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter")
        self.filter.textChanged.connect(self._filter)
        layout.addWidget(self.filter)
        self.list = QListWidget()
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        for record_id, label in sorted(options.items(), key=lambda item: item[1].lower()):
            item = QListWidgetItem(label)
            item.setData(Qt.ItemDataRole.UserRole, record_id)
            self.list.addItem(item)
        layout.addWidget(self.list)
        buttons = QDialogButtonBox()
        self.ok_button = buttons.addButton("Add", QDialogButtonBox.ButtonRole.AcceptRole)
        self.ok_button.setObjectName("primary")
        buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(360, 420)

    def _filter(self, text: str) -> None:
        needle = text.lower()
        for row in range(self.list.count()):
            item = self.list.item(row)
            item.setHidden(needle not in item.text().lower())

    def select_labels(self, labels: list[str]) -> None:
        for row in range(self.list.count()):
            item = self.list.item(row)
            item.setSelected(item.text() in labels)

    def chosen(self) -> list[int]:
        return [int(item.data(Qt.ItemDataRole.UserRole)) for item in self.list.selectedItems()]


class TextDialog(QDialog):
    """A block of text to copy (the Orthanc configuration)."""

    def __init__(self, title: str, intro: str, text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setWindowModality(Qt.WindowModality.WindowModal)
        layout = QVBoxLayout(self)
        label = QLabel(intro)
        label.setWordWrap(True)
        layout.addWidget(label)
        self.text = QPlainTextEdit(text)
        self.text.setReadOnly(True)
        layout.addWidget(self.text)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        copy = QPushButton(icon("duplicate"), "Copy")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(text))
        buttons.addButton(copy, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.accept)
        layout.addWidget(buttons)
        self.resize(600, 460)
