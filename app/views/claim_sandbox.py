"""The claim-mapping sandbox: claims from a finished test login (or pasted JSON), the five
JMESPath expressions, and the user and groups they map to, updated as one types.

Every change is evaluated by the server (``/claim-mapping/evaluate``: the very code a login
runs), debounced and "latest wins". A bad expression is shown at its field with the
parser's message. Saving writes the mapping to the provider (with its version: a change
someone else made meanwhile is refused, not overwritten).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.models.service import ApiError, ConsoleService, ServerUnreachable
from app.views.async_tools import Debouncer
from app.views.entity_panel import inline_message, show_inline
from app.views.theme import icon, restyle

FIELDS = (
    ("username", "Username"),
    ("email", "Email"),
    ("first_name", "First name"),
    ("last_name", "Last name"),
    ("groups", "Groups"),
)
EVALUATE_DELAY_MS = 300
COGNITO_DEFAULTS = {
    "username": '"cognito:username" || preferred_username || username',
    "email": "email",
    "first_name": "given_name",
    "last_name": "family_name",
    "groups": '"cognito:groups"',
}


class ClaimSandbox(QWidget):
    mapping_saved = Signal(object)  # the provider as saved

    def __init__(self, service: ConsoleService, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.service = service
        self.provider: Any = None
        self.result: Any = None
        self.field_problems: dict[str, str] = {}
        self.evaluate_task: asyncio.Task[Any] | None = None
        self.save_task: asyncio.Task[Any] | None = None
        self.setObjectName("claimSandbox")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.source = QLabel("Paste ID-token claims (JSON), or finish a test login to use its claims.")
        self.source.setWordWrap(True)
        outer.addWidget(self.source)
        splitter = QSplitter(Qt.Orientation.Vertical)
        self.claims = QPlainTextEdit()
        self.claims.setObjectName("claims")
        self.claims.setPlaceholderText('{"sub": "…", "cognito:username": "alice", "cognito:groups": ["radiology"]}')
        splitter.addWidget(self.claims)
        lower = QWidget()
        lower_layout = QHBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        mapping_box = QGroupBox("Mapping (JMESPath over the claims)")
        form = QFormLayout(mapping_box)
        self.expressions: dict[str, QLineEdit] = {}
        self.errors: dict[str, QLabel] = {}
        for name, label in FIELDS:
            editor = QLineEdit(COGNITO_DEFAULTS[name])
            editor.setObjectName(f"expr_{name}")
            error = QLabel()
            error.setObjectName("fieldError")
            error.setWordWrap(True)
            error.hide()
            form.addRow(label, editor)
            form.addRow("", error)
            self.expressions[name] = editor
            self.errors[name] = error
        lower_layout.addWidget(mapping_box, 3)
        result_box = QGroupBox("Maps to")
        result_layout = QVBoxLayout(result_box)
        self.mapped = QLabel("—")
        self.mapped.setObjectName("mappedUser")
        self.mapped.setWordWrap(True)
        self.mapped.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.mapped.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        result_layout.addWidget(self.mapped, 1)
        lower_layout.addWidget(result_box, 2)
        splitter.addWidget(lower)
        splitter.setSizes([140, 260])
        outer.addWidget(splitter, 1)
        self.message = inline_message()
        outer.addWidget(self.message)
        buttons = QHBoxLayout()
        self.defaults_button = QPushButton(icon("revert"), "Provider's mapping")
        self.defaults_button.setToolTip("Back to the mapping saved in the provider")
        self.defaults_button.clicked.connect(self.revert)
        self.save_button = QPushButton(icon("save"), "Save to provider")
        self.save_button.setObjectName("primary")
        self.save_button.clicked.connect(lambda: self.save())
        buttons.addStretch(1)
        buttons.addWidget(self.defaults_button)
        buttons.addWidget(self.save_button)
        outer.addLayout(buttons)
        self._debounce = Debouncer(EVALUATE_DELAY_MS, self.evaluate, self)
        self.claims.textChanged.connect(self._debounce.trigger)
        for editor in self.expressions.values():
            editor.textChanged.connect(self._debounce.trigger)
        self._update_buttons()

    # ------------------------------------------------------------ inputs

    def mapping(self) -> dict[str, str]:
        return {name: editor.text().strip() for name, editor in self.expressions.items()}

    def claims_value(self) -> tuple[dict[str, Any] | None, str]:
        text = self.claims.toPlainText().strip()
        if not text:
            return None, ""
        try:
            value = json.loads(text)
        except ValueError as error:
            return None, f"The claims are not JSON: {error}"
        if not isinstance(value, dict):
            return None, "The claims must be a JSON object ({\"claim\": value, …})."
        return value, ""

    def set_claims(self, claims: dict[str, Any], source: str = "") -> None:
        self.claims.setPlainText(json.dumps(claims, indent=2, ensure_ascii=False))
        if source:
            self.source.setText(source)
        self._debounce.flush()

    def set_provider(self, provider: Any) -> None:
        """Edit this provider's mapping (its saved expressions are loaded)."""
        self.provider = provider
        mapping = getattr(provider, "claim_mapping", None)
        if mapping is not None:
            for name, editor in self.expressions.items():
                editor.setText(str(getattr(mapping, name, editor.text())))
        self._update_buttons()

    def revert(self) -> None:
        if self.provider is not None:
            self.set_provider(self.provider)

    def _update_buttons(self) -> None:
        self.save_button.setEnabled(self.provider is not None and not self.field_problems)
        self.save_button.setToolTip(f"Save these expressions to “{self.provider.name}”" if self.provider is not None
                                    else "Finish a test login first: its provider is the one saved to")
        self.defaults_button.setEnabled(self.provider is not None)

    # ------------------------------------------------------------ evaluation

    def evaluate(self) -> asyncio.Task[Any] | None:
        claims, problem = self.claims_value()
        if claims is None:
            self.mapped.setText(problem or "—")
            return None
        if self.evaluate_task is not None and not self.evaluate_task.done():
            self.evaluate_task.cancel()  # latest wins
        self.evaluate_task = self.service.spawn(self._evaluate(self.mapping(), claims))
        return self.evaluate_task

    @property
    def settled(self) -> bool:
        return not self._debounce.pending and (self.evaluate_task is None or self.evaluate_task.done())

    async def _evaluate(self, mapping: dict[str, str], claims: dict[str, Any]) -> None:
        try:
            result = await self.service.evaluate_claim_mapping(mapping, claims)
        except asyncio.CancelledError:
            raise
        except ApiError as error:
            problems = {item.field.removeprefix("mapping."): item.message for item in error.fields if item.field.startswith("mapping.")}
            self._show_field_problems(problems)
            if not problems:
                show_inline(self.message, "error", error.message)
            self.mapped.setText("(fix the expression marked in red)")
            return
        except ServerUnreachable as error:
            show_inline(self.message, "error", str(error))
            return
        self._show_field_problems({})
        show_inline(self.message, "info", "")
        self.result = result
        self.mapped.setText(self.describe(result))

    def _show_field_problems(self, problems: dict[str, str]) -> None:
        self.field_problems = problems
        for name, editor in self.expressions.items():
            text = problems.get(name, "")
            self.errors[name].setText(text)
            self.errors[name].setVisible(bool(text))
            editor.setProperty("invalid", bool(text))
            restyle(editor)
        self._update_buttons()

    @staticmethod
    def describe(result: Any) -> str:
        groups = ", ".join(result.groups) if result.groups else "(none)"
        lines = [
            f"Username: {result.username or '(none)'}",
            f"Email: {result.email or '(none)'}",
            f"Name: {(result.first_name + ' ' + result.last_name).strip() or '(none)'}",
            f"Groups: {groups}",
            "A login would succeed." if result.usable else "A login would FAIL: Portico needs a username.",
        ]
        lines += [f"⚠ {problem.field}: {problem.message}" for problem in result.problems]
        return "\n".join(lines)

    # ------------------------------------------------------------ saving

    def save(self) -> asyncio.Task[Any] | None:
        if self.provider is None:
            return None
        self.save_task = self.service.spawn(self._save())
        return self.save_task

    async def _save(self) -> None:
        assert self.provider is not None
        try:
            provider = await self.service.update("providers", self.provider.id, {"version": self.provider.version,
                                                                                 "claim_mapping": self.mapping()})
        except (ApiError, ServerUnreachable) as error:
            show_inline(self.message, "error", f"Not saved: {getattr(error, 'message', str(error))}")
            return
        self.provider = provider
        show_inline(self.message, "info", f"Saved to provider “{provider.name}”: the next login uses this mapping.")
        self.mapping_saved.emit(provider)
        self._update_buttons()
