"""The permission explainer: would this user (or token) be granted this call, and why.

Asks ``POST /explain`` and shows the decision with the server's trace, step by step, in
plain words, and the rules that matched.
"""

from __future__ import annotations

import asyncio
from typing import Any

from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.models.entities import EXPLAIN_REQUEST, validate
from app.models.service import ApiError, ConsoleService, ServerUnreachable
from app.views.entity_panel import inline_message, show_inline
from app.views.theme import icon

LEVELS = ("study", "patient", "series", "instance", "system")
SUBJECTS = (("username", "User name"), ("token", "Token (as Orthanc sends it)"))
RESOURCE_KINDS = (("dicom_uid", "DICOM id (PatientID, StudyInstanceUID, …)"), ("orthanc_id", "Orthanc id"))


class ExplainPanel(QWidget):
    def __init__(self, service: ConsoleService, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.service = service
        self.loaded = False
        self.result: Any = None
        self._task: asyncio.Task[Any] | None = None
        self.setObjectName("panel_explain")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        title = QLabel("Permission explainer")
        title.setObjectName("panelTitle")
        layout.addWidget(title)
        intro = QLabel(
            "Ask what Portico would answer Orthanc: pick a user (or paste a token), an imaging server and a "
            "resource or URI. The answer comes with every step of the decision."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.message = inline_message()
        layout.addWidget(self.message)

        form = QFormLayout()
        self.subject_kind = QComboBox()
        for value, label in SUBJECTS:
            self.subject_kind.addItem(label, value)
        self.subject = QLineEdit()
        self.subject.setPlaceholderText("username")
        self.subject_kind.currentIndexChanged.connect(
            lambda _i: self.subject.setPlaceholderText("username" if self.subject_kind.currentData() == "username" else "the bearer token")
        )
        who = QHBoxLayout()
        who.addWidget(self.subject_kind)
        who.addWidget(self.subject, 1)
        form.addRow("Who", who)
        self.server = QComboBox()
        form.addRow("Imaging server", self.server)
        self.method = QComboBox()
        for method in ("get", "post", "put", "delete"):
            self.method.addItem(method.upper(), method)
        form.addRow("Method", self.method)
        self.level = QComboBox()
        for level in LEVELS:
            self.level.addItem(level, level)
        self.level.currentIndexChanged.connect(self._level_changed)
        form.addRow("Level", self.level)
        self.resource_kind = QComboBox()
        for value, label in RESOURCE_KINDS:
            self.resource_kind.addItem(label, value)
        self.resource = QLineEdit()
        what = QHBoxLayout()
        what.addWidget(self.resource_kind)
        what.addWidget(self.resource, 1)
        form.addRow("Resource", what)
        self.labels = QLineEdit()
        self.labels.setPlaceholderText("labels on the resource, comma-separated (optional)")
        form.addRow("Labels", self.labels)
        self.uri = QLineEdit()
        self.uri.setPlaceholderText("/tools/find (for level 'system')")
        form.addRow("URI", self.uri)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.explain_button = QPushButton(icon("explain"), "Explain")
        self.explain_button.setObjectName("primary")
        self.explain_button.clicked.connect(lambda: self.explain())
        buttons.addWidget(self.explain_button)
        layout.addLayout(buttons)

        self.verdict = QLabel()
        self.verdict.setObjectName("panelTitle")
        layout.addWidget(self.verdict)
        self.details = QLabel()
        self.details.setWordWrap(True)
        layout.addWidget(self.details)
        self.trace = QListWidget()
        self.trace.setWordWrap(True)
        layout.addWidget(self.trace, 1)
        self._level_changed()

    def _level_changed(self, *_: Any) -> None:
        system = self.level.currentData() == "system"
        self.uri.setEnabled(system)
        self.resource.setEnabled(not system)
        self.resource_kind.setEnabled(not system)

    # Shortcuts of the main window.
    def activate(self) -> None:
        if not self.loaded:
            self.loaded = True
            self.refresh()

    def refresh(self) -> None:
        self.service.spawn(self._load_servers())

    def shutdown(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def focus_search(self) -> None:
        self.subject.setFocus()

    def new_record(self) -> None:
        return None

    def delete_selected(self) -> None:
        return None

    def save(self) -> asyncio.Task[Any] | None:
        return self.explain()

    async def _load_servers(self) -> None:
        try:
            servers = await self.service.labels("imaging-servers", refresh=True)
        except (ApiError, ServerUnreachable) as error:
            show_inline(self.message, "error", f"Could not load the imaging servers: {getattr(error, 'message', str(error))}")
            return
        chosen = self.server.currentData()
        self.server.clear()
        for server_id, name in sorted(servers.items(), key=lambda item: item[1].lower()):
            self.server.addItem(name, server_id)
        self.server.setCurrentIndex(max(0, self.server.findData(chosen)))

    def request(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            str(self.subject_kind.currentData()): self.subject.text().strip() or None,
            "imaging_server_id": self.server.currentData(),
            "method": self.method.currentData(),
            "level": self.level.currentData(),
        }
        if body["level"] == "system":
            body["uri"] = self.uri.text().strip() or None
        else:
            body[str(self.resource_kind.currentData())] = self.resource.text().strip() or None
            labels = [label.strip() for label in self.labels.text().split(",") if label.strip()]
            if labels:
                body["labels"] = labels
        return {key: value for key, value in body.items() if value is not None}

    def explain(self) -> asyncio.Task[Any] | None:
        if self._task is not None and not self._task.done():
            self._task.cancel()  # latest wins
        self._task = self.service.spawn(self._explain(self.request()))
        return self._task

    async def _explain(self, body: dict[str, Any]) -> None:
        errors = validate(EXPLAIN_REQUEST, (), body)
        if "imaging_server_id" in body and not body["imaging_server_id"]:
            errors = {"imaging_server_id": "choose an imaging server", **errors}
        if errors:
            show_inline(self.message, "error", "; ".join(f"{_friendly(k)}: {v}" if k else v for k, v in errors.items()))
            return
        show_inline(self.message, "info", "")
        try:
            result = await self.service.explain(body)
        except (ApiError, ServerUnreachable) as error:
            fields = "; ".join(f"{_friendly(f.field)}: {f.message}" for f in getattr(error, "fields", []))
            show_inline(self.message, "error", fields or getattr(error, "message", str(error)))
            return
        self.result = result
        self.verdict.setText("Granted" if result.granted else "Denied")
        self.verdict.setStyleSheet(f"color: {'#2e7d32' if result.granted else '#c62828'};")
        who = result.subject or "nobody (the token is not valid)"
        rules = ", ".join(f"#{rule}" for rule in result.matched_rules) or "none"
        self.details.setText(
            f"Decided for {who}. Orthanc may keep this answer for {result.validity} s. "
            f"Matching rules: {rules} (of {len(result.considered_rules)} considered)."
        )
        self.trace.clear()
        for number, step in enumerate(result.trace, start=1):
            self.trace.addItem(f"{number}. {step}")


def _friendly(field: str) -> str:
    return {
        "user_id": "who", "username": "who", "token": "who", "imaging_server_id": "imaging server",
        "orthanc_id": "resource", "dicom_uid": "resource", "uri": "URI",
    }.get(field, field)
