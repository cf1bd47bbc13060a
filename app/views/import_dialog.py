"""File → Import users…: a CSV of users and memberships, previewed row by row, then imported.

The preview checks every row before anything is sent (the server's own model of a new
user, group names, duplicates in the file, usernames that exist: "update" or "skip" as
chosen). The import goes row by row in a task with a progress bar and can be cancelled;
each row then shows what happened, with the server's message when it failed. Failed rows
are exported as CSV with the reason in an ``error`` column, to fix and import again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.models.service import ApiError, ConsoleService, ServerUnreachable
from app.models.user_import import (
    COLUMNS,
    Action,
    CsvProblem,
    ExistingPolicy,
    ImportPlan,
    ImportRow,
    Outcome,
    export_failed_rows,
    plan,
    read_csv_file,
)
from app.views.entity_panel import inline_message, show_inline
from app.views.theme import icon

HEADERS = ("Line", "Status", "Username", "Email", "First name", "Last name", "Active", "Staff", "Groups", "Message")
SHOWN_CELLS = ("username", "email", "first_name", "last_name", "is_active", "is_staff", "groups")
GOOD, BAD, QUIET = QColor("#1e7b34"), QColor("#b3261e"), QColor("#6b7585")
STATUS_COLOUR = {
    Action.INVALID: BAD, Outcome.FAILED: BAD, Outcome.NOT_IMPORTED: BAD,
    Outcome.CREATED: GOOD, Outcome.UPDATED: GOOD, Action.SKIP: QUIET, Outcome.SKIPPED: QUIET,
}


class UserImportDialog(QDialog):
    import_finished = Signal(int)  # rows created or updated

    def __init__(self, service: ConsoleService, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.service = service
        self.plan: ImportPlan | None = None
        self.groups: dict[str, int] = {}
        self.existing: dict[str, int] = {}
        self.load_task: asyncio.Task[Any] | None = None
        self.import_task: asyncio.Task[Any] | None = None
        self.setWindowTitle("Import users from CSV")
        self.setObjectName("userImport")
        layout = QVBoxLayout(self)
        intro = QLabel(
            f"Columns: {', '.join(COLUMNS)} (only username is required). Groups are separated by “;” and must exist. "
            "An empty cell takes the default for a new user and leaves an existing user's value as it is; "
            "groups are added, never removed."
        )
        intro.setWordWrap(True)
        intro.setObjectName("fieldHelp")
        layout.addWidget(intro)

        choose = QHBoxLayout()
        self.path = QLineEdit()
        self.path.setReadOnly(True)
        self.path.setPlaceholderText("No file chosen")
        self.choose_button = QPushButton(icon("export"), "Choose file…")
        self.choose_button.clicked.connect(lambda: self.choose_file())
        self.policy = QComboBox()
        self.policy.addItem("Existing users: update them", ExistingPolicy.UPDATE)
        self.policy.addItem("Existing users: skip them", ExistingPolicy.SKIP)
        self.policy.setToolTip("What to do with a row whose username already exists")
        self.policy.currentIndexChanged.connect(lambda _index: self.replan())
        choose.addWidget(self.path, 1)
        choose.addWidget(self.choose_button)
        choose.addWidget(self.policy)
        layout.addLayout(choose)

        self.message = inline_message()
        layout.addWidget(self.message)
        self.summary = QLabel("Choose a CSV file to preview it.")
        self.summary.setObjectName("formMessage")
        layout.addWidget(self.summary)

        self.table = QTableWidget(0, len(HEADERS))
        self.table.setObjectName("importTable")
        self.table.setHorizontalHeaderLabels(list(HEADERS))
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        for column, width in enumerate((44, 120, 140, 150, 92, 92, 58, 50, 120)):
            self.table.setColumnWidth(column, width)
        self.table.itemSelectionChanged.connect(self._show_detail)
        layout.addWidget(self.table, 1)
        # The message column is narrow: the selected row's message in full, wrapped.
        self.detail = QLabel()
        self.detail.setObjectName("fieldHelp")
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.detail)

        self.progress = QProgressBar()
        self.progress.setFormat("%v of %m rows")
        self.progress.hide()
        layout.addWidget(self.progress)

        buttons = QHBoxLayout()
        self.export_button = QPushButton(icon("export"), "Export failed rows…")
        self.export_button.setToolTip("The rows that did not go in, with the reason in an “error” column")
        self.export_button.clicked.connect(lambda: self.export_failed_dialog())
        self.cancel_button = QPushButton(icon("revert"), "Cancel import")
        self.cancel_button.setObjectName("danger")
        self.cancel_button.clicked.connect(lambda: self.cancel_import())
        self.import_button = QPushButton(icon("add"), "Import")
        self.import_button.setObjectName("primary")
        self.import_button.clicked.connect(lambda: self.start_import())
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        buttons.addWidget(self.export_button)
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.import_button)
        buttons.addWidget(self.close_button)
        layout.addLayout(buttons)
        for button in (self.choose_button, self.export_button, self.cancel_button, self.close_button):
            button.setAutoDefault(False)  # Enter in the dialog does not choose a file
        self.resize(1180, 600)
        self._update_buttons()

    def _show_detail(self) -> None:
        rows = sorted({index.row() for index in self.table.selectedIndexes()})
        if not rows:
            self.detail.setText("")
            return
        line, status, message = (self._text(rows[0], column) for column in (0, 1, len(HEADERS) - 1))
        self.detail.setText(f"Line {line}: {status}" + (f" — {message}" if message else ""))

    # ------------------------------------------------------------ loading and preview

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import users", "", "CSV files (*.csv *.txt);;All files (*)")
        if path:
            self.load(Path(path))

    def load(self, path: Path) -> asyncio.Task[Any]:
        if self.load_task is not None and not self.load_task.done():
            self.load_task.cancel()  # latest wins
        self.path.setText(str(path))
        self.load_task = self.service.spawn(self._load(path))
        return self.load_task

    async def _load(self, path: Path) -> None:
        self.plan = None
        self._fill()
        try:
            read = read_csv_file(path)
        except (OSError, CsvProblem) as error:
            show_inline(self.message, "error", f"Cannot import {path.name}: {error}")
            self.summary.setText("")
            return
        self.summary.setText(f"Checking {len(read.rows):,} rows against the server…")
        show_inline(self.message, "info", "")
        try:
            self.groups = await self.service.group_ids_by_name()
            self.existing = await self.service.existing_usernames([row.username for row in read.rows if not row.problems])
        except (ApiError, ServerUnreachable) as error:
            show_inline(self.message, "error", f"Could not check the rows against the server: {getattr(error, 'message', str(error))}")
            self.summary.setText("")
            return
        self.plan = read
        self.replan()

    def current_policy(self) -> ExistingPolicy:
        return ExistingPolicy(self.policy.currentData())

    def replan(self) -> None:
        if self.plan is None or self.importing:
            return
        plan(self.plan.rows, self.groups, self.existing, self.current_policy())
        self._fill()

    def _fill(self) -> None:
        rows = self.plan.rows if self.plan is not None else []
        self.table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            self.table.setItem(index, 0, QTableWidgetItem(str(row.line)))
            for column, name in enumerate(SHOWN_CELLS, start=2):
                self.table.setItem(index, column, QTableWidgetItem(row.cells.get(name, "")))
            self._show_status(index, row)
        if self.plan is not None:
            self.summary.setText(self.plan.summary() if not any(row.outcome for row in rows) else f"Imported: {self.plan.result_summary()}")
        self._update_buttons()

    def _show_status(self, index: int, row: ImportRow) -> None:
        status: Action | Outcome = row.outcome if row.outcome is not None else row.action
        text = row.message if row.outcome is not None else "; ".join(row.errors)
        item = QTableWidgetItem(status.value)
        item.setForeground(STATUS_COLOUR.get(status, self.palette().text().color()))
        if status in (Action.INVALID, Outcome.FAILED, Outcome.NOT_IMPORTED):
            item.setIcon(icon("warning"))
        message = QTableWidgetItem(text)
        message.setToolTip(text)
        if status in (Action.INVALID, Outcome.FAILED, Outcome.NOT_IMPORTED):
            message.setForeground(BAD)
        self.table.setItem(index, 1, item)
        self.table.setItem(index, len(HEADERS) - 1, message)

    def _text(self, row: int, column: int) -> str:
        item = self.table.item(row, column)
        return item.text() if item is not None else ""

    def status_of(self, line: int) -> tuple[str, str]:
        """The status and message the table shows for the row of a file line (tests)."""
        for index in range(self.table.rowCount()):
            if self._text(index, 0) == str(line):
                return self._text(index, 1), self._text(index, len(HEADERS) - 1)
        raise KeyError(line)

    @property
    def importing(self) -> bool:
        return self.import_task is not None and not self.import_task.done()

    def _update_buttons(self) -> None:
        rows = self.plan.rows if self.plan is not None else []
        done = any(row.outcome is not None for row in rows)
        sendable = sum(1 for row in rows if row.action in (Action.CREATE, Action.UPDATE))
        self.import_button.setText(f"Import {sendable:,} user{'' if sendable == 1 else 's'}" if sendable else "Import")
        self.import_button.setEnabled(bool(sendable) and not done and not self.importing)
        self.cancel_button.setVisible(self.importing)
        self.choose_button.setEnabled(not self.importing)
        self.policy.setEnabled(not self.importing and not done)
        self.export_button.setEnabled(any(row.outcome in (Outcome.FAILED, Outcome.NOT_IMPORTED) for row in rows) and not self.importing)

    # ------------------------------------------------------------ import

    def start_import(self) -> asyncio.Task[Any] | None:
        if self.plan is None or self.importing:
            return self.import_task
        self.import_task = self.service.spawn(self._import(self.plan))
        self._update_buttons()
        return self.import_task

    def cancel_import(self) -> None:
        if self.importing:
            assert self.import_task is not None
            self.import_task.cancel()

    async def _import(self, plan_: ImportPlan) -> None:
        self.progress.setRange(0, len(plan_.rows))
        self.progress.setValue(0)
        self.progress.show()
        self._update_buttons()
        index = 0
        try:
            for index, row in enumerate(plan_.rows):
                shown = self.table.item(index, 0)
                if shown is not None:
                    self.table.scrollToItem(shown)
                await self.service.import_user_row(row)
                self._show_status(index, row)
                self.progress.setValue(index + 1)
        except asyncio.CancelledError:
            self._stopped(plan_, index, "cancelled")  # on purpose: the dialog stays, with what was done
        except ServerUnreachable as error:
            self._stopped(plan_, index, f"stopped: {error}")
        finally:
            self.import_task = None  # done (this coroutine is its last step)
            self.progress.hide()
            self.summary.setText(f"Imported: {plan_.result_summary()}")
            self._update_buttons()
            self.import_finished.emit(len(plan_.outcomes(Outcome.CREATED)) + len(plan_.outcomes(Outcome.UPDATED)))

    def _stopped(self, plan_: ImportPlan, index: int, why: str) -> None:
        for later, row in enumerate(plan_.rows[index:], start=index):
            if row.outcome is None:
                row.outcome = Outcome.NOT_IMPORTED
                row.message = (
                    f"{why} while this row was being sent: check whether it went in" if later == index else f"not imported ({why.split(':')[0]})"
                )
            self._show_status(later, row)
        show_inline(self.message, "warning", f"The import was {why.split(':')[0]} at line {plan_.rows[index].line}; the rows from there on were not imported. "
                    "Export the failed rows to import them later.")

    # ------------------------------------------------------------ failed rows

    def export_failed_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export failed rows", "failed-users.csv", "CSV files (*.csv)")
        if path:
            self.export_failed(Path(path))

    def export_failed(self, path: Path) -> int:
        if self.plan is None:
            return 0
        try:
            count = export_failed_rows(self.plan, path)
        except OSError as error:
            show_inline(self.message, "error", f"Not exported: {error}")
            return 0
        show_inline(self.message, "info", f"Exported {count:,} failed row{'' if count == 1 else 's'} to {path}.")
        return count

    def closeEvent(self, event: Any) -> None:
        self.cancel_import()  # closing stops the import between two rows' requests
        if self.load_task is not None and not self.load_task.done():
            self.load_task.cancel()
        super().closeEvent(event)
