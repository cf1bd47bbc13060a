"""The guided Cognito set-up: one page per step of the seed article, each saying in two
lines what to do in the AWS console and checking what the administrator types.

User pool → App client → Domain (with a check from this computer) → Portico side (a
preview of exactly what will be created, then created) → the URLs to paste into Cognito
(copy buttons; blocking warnings where Cognito or the Site would make the login fail, with
a fix) → Test (hands over to the test-login panel).

The run is kept as a draft file (``ConsoleService.save_cognito_draft``) until it is finished
or discarded, so closing the wizard loses nothing but the client secret, which is never
written to disk. Opened with a provider id it edits that provider and its auth server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from app.models.service import ApiError, ConsoleService, ServerUnreachable
from app.oidc.cognito import (
    Domain,
    DomainKind,
    WizardDraft,
    check_client_id,
    check_pool_id,
    check_region,
    discovery_url,
    domain_from,
    issuer_url,
    jwks_url,
    parse_issuer,
    region_of,
)
from app.views.entity_panel import inline_message, show_inline
from app.views.theme import icon

PAGE_POOL, PAGE_CLIENT, PAGE_DOMAIN, PAGE_PORTICO, PAGE_URLS, PAGE_TEST = range(6)
STATUS_MARK = {"ok": "✔", "warning": "⚠", "failed": "✖", "skipped": "–"}
MASKED = "•••••••• (kept in memory only, sent once)"


def _explain(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setObjectName("fieldHelp")
    label.setTextFormat(Qt.TextFormat.RichText)
    return label


def _error_label() -> QLabel:
    label = QLabel()
    label.setObjectName("fieldError")
    label.setWordWrap(True)
    return label


def _readonly(text: str = "") -> QLineEdit:
    line = QLineEdit(text)
    line.setReadOnly(True)
    return line


def _message(error: BaseException) -> str:
    if isinstance(error, ApiError):
        details = "; ".join(f"{item.field}: {item.message}" for item in error.fields)
        return f"{error.message}" + (f" ({details})" if details and details not in error.message else "")
    return str(error)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


class _Page(QWizardPage):
    def __init__(self, wizard: CognitoWizard, title: str, subtitle: str) -> None:
        super().__init__()
        self.owner = wizard
        self.setTitle(title)
        self.setSubTitle(subtitle)
        self.layout_ = QVBoxLayout(self)

    def changed(self, *_: Any) -> None:
        self.owner.remember()
        self.completeChanged.emit()


# ---------------------------------------------------------------- 1. user pool


class PoolPage(_Page):
    def __init__(self, wizard: CognitoWizard) -> None:
        super().__init__(wizard, "1. The user pool", "In the AWS console open Cognito → User pools and create (or pick) the pool "
                         "whose users will sign in to Portico. Copy its region and its user pool id from the pool's overview page.")
        form = QFormLayout()
        self.region = QLineEdit()
        self.region.setObjectName("region")
        self.region.setPlaceholderText("eu-west-1")
        self.pool_id = QLineEdit()
        self.pool_id.setObjectName("pool_id")
        self.pool_id.setPlaceholderText("eu-west-1_AbC123xyz")
        self.region_error = _error_label()
        self.pool_error = _error_label()
        form.addRow("Region", self.region)
        form.addRow("", self.region_error)
        form.addRow("User pool id", self.pool_id)
        form.addRow("", self.pool_error)
        self.issuer = _readonly()
        self.discovery = _readonly()
        self.jwks = _readonly()
        form.addRow("Issuer", self.issuer)
        form.addRow("Discovery URL", self.discovery)
        form.addRow("JWKS URL", self.jwks)
        self.layout_.addLayout(form)
        self.layout_.addWidget(_explain("The issuer, discovery and JWKS URLs follow from the region and pool id: Portico checks every "
                                        "ID token's issuer and signature against them."))
        self.layout_.addStretch(1)
        self.region.textChanged.connect(self._update)
        self.pool_id.textChanged.connect(self._pool_typed)

    def _pool_typed(self, text: str) -> None:
        # The pool id starts with its region: fill the region in when it is still empty.
        if not self.region.text().strip() and "_" in text:
            self.region.setText(region_of(text.strip()))
        self._update()

    def problems(self) -> tuple[str | None, str | None]:
        region = self.region.text().strip()
        pool = self.pool_id.text().strip()
        region_problem = check_region(region)
        return region_problem, check_pool_id(pool, None if region_problem else region)

    def _update(self, *_: Any) -> None:
        state = self.owner.state
        state.region, state.pool_id = self.region.text().strip(), self.pool_id.text().strip()
        region_problem, pool_problem = self.problems()
        self.region_error.setText(region_problem if self.region.text() else "")
        self.pool_error.setText(pool_problem if self.pool_id.text() else "")
        if region_problem is None and pool_problem is None:
            issuer = issuer_url(state.region, state.pool_id)
            self.issuer.setText(issuer)
            self.discovery.setText(discovery_url(issuer))
            self.jwks.setText(jwks_url(issuer))
        else:
            for line in (self.issuer, self.discovery, self.jwks):
                line.clear()
        self.changed()

    def isComplete(self) -> bool:
        return self.problems() == (None, None)


# ---------------------------------------------------------------- 2. app client


class ClientPage(_Page):
    def __init__(self, wizard: CognitoWizard) -> None:
        super().__init__(wizard, "2. The app client", "In the pool open App integration → App clients → Create app client. Choose "
                         "“Confidential client” so that Cognito generates a client secret, then copy the client id and secret.")
        self.layout_.addWidget(_explain(
            "Portico exchanges the login code for tokens from its own server, so it authenticates with the secret: without "
            "<b>Generate client secret</b> Cognito refuses the exchange. Under <b>Authentication flows</b> keep "
            "ALLOW_USER_PASSWORD_AUTH and ALLOW_REFRESH_TOKEN_AUTH ticked; under the hosted UI choose the "
            "<b>Authorization code grant</b> and the scopes <b>openid</b>, <b>email</b> and <b>profile</b>."))
        form = QFormLayout()
        self.client_id = QLineEdit()
        self.client_id.setObjectName("client_id")
        self.client_id.setPlaceholderText("1h57kf5cpq17m0eml12EXAMPLE")
        self.client_id_error = _error_label()
        self.secret = QLineEdit()
        self.secret.setObjectName("client_secret")
        self.secret.setEchoMode(QLineEdit.EchoMode.Password)
        self.secret_error = _error_label()
        self.secret_help = _explain("The secret stays in memory: if you close the wizard and come back, it asks for it again.")
        form.addRow("Client id", self.client_id)
        form.addRow("", self.client_id_error)
        form.addRow("Client secret", self.secret)
        form.addRow("", self.secret_error)
        form.addRow("", self.secret_help)
        self.layout_.addLayout(form)
        self.welcome_back = inline_message()
        self.layout_.addWidget(self.welcome_back)
        self.layout_.addStretch(1)
        self.client_id.textChanged.connect(self._update)
        self.secret.textChanged.connect(self._update)

    @property
    def secret_optional(self) -> bool:
        """Editing an auth server that has a secret: leave it empty to keep it."""
        return bool(self.owner.auth_server is not None and getattr(self.owner.auth_server, "client_secret_set", False))

    def initializePage(self) -> None:
        if self.secret_optional:
            self.secret.setPlaceholderText("leave empty to keep the secret Portico has")

    def _update(self, *_: Any) -> None:
        self.owner.state.client_id = self.client_id.text().strip()
        self.owner.client_secret = self.secret.text()
        problem = check_client_id(self.owner.state.client_id)
        self.client_id_error.setText(problem if self.client_id.text() and problem else "")
        self.changed()

    def isComplete(self) -> bool:
        if check_client_id(self.client_id.text().strip()) is not None:
            return False
        return bool(self.secret.text()) or self.secret_optional


# ---------------------------------------------------------------- 3. domain


class DomainPage(_Page):
    def __init__(self, wizard: CognitoWizard) -> None:
        super().__init__(wizard, "3. The domain", "Under App integration → Domain create a Cognito domain (a prefix of your choice) "
                         "or attach a custom domain. Browsers and Portico both reach the sign-in pages there.")
        self.kinds = QButtonGroup(self)
        self.prefix_button = QRadioButton("Cognito domain prefix")
        self.custom_button = QRadioButton("Custom domain")
        self.url_button = QRadioButton("Advanced: any URL")
        self.url_button.setToolTip("A Cognito look-alike or a test identity provider: this URL is the issuer and the sign-in pages")
        self.url_button.setObjectName("advanced_domain")
        grid = QGridLayout()
        self.prefix = QLineEdit()
        self.prefix.setObjectName("prefix")
        self.prefix.setPlaceholderText("hospital-pacs")
        self.prefix_suffix = QLabel()
        self.custom = QLineEdit()
        self.custom.setObjectName("custom_domain")
        self.custom.setPlaceholderText("auth.hospital.example")
        self.url = QLineEdit()
        self.url.setObjectName("domain_url")
        self.url.setPlaceholderText("http://127.0.0.1:9000 (its issuer, discovery and login pages)")
        for row, (button, editor) in enumerate(((self.prefix_button, self.prefix), (self.custom_button, self.custom), (self.url_button, self.url))):
            self.kinds.addButton(button, row)
            grid.addWidget(button, row, 0)
            grid.addWidget(editor, row, 1)
        grid.addWidget(self.prefix_suffix, 0, 2)
        grid.setColumnStretch(1, 1)  # the editors take the width, not the radio labels
        self.layout_.addLayout(grid)
        self.error = _error_label()
        self.layout_.addWidget(self.error)
        self.resolved = _explain("")
        self.layout_.addWidget(self.resolved)
        row = QHBoxLayout()
        self.check_button = QPushButton(icon("refresh"), "Check")
        self.check_button.setObjectName("check")
        self.check_button.setToolTip("Fetch the discovery document and the JWKS from this computer")
        self.check_button.clicked.connect(lambda: self.owner.check())
        row.addWidget(self.check_button)
        row.addStretch(1)
        self.layout_.addLayout(row)
        self.results = QLabel("Not checked yet: the check fetches discovery and JWKS from this computer.")
        self.results.setObjectName("checkResults")
        self.results.setWordWrap(True)
        self.results.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.layout_.addWidget(self.results)
        self.layout_.addStretch(1)
        self.prefix_button.setChecked(True)
        self.kinds.idToggled.connect(lambda _id, on: on and self._update())
        for editor in (self.prefix, self.custom, self.url):
            editor.textChanged.connect(self._update)

    def kind(self) -> DomainKind:
        return [DomainKind.PREFIX, DomainKind.CUSTOM, DomainKind.URL][max(0, self.kinds.checkedId())]

    def value(self) -> str:
        return {DomainKind.PREFIX: self.prefix, DomainKind.CUSTOM: self.custom, DomainKind.URL: self.url}[self.kind()].text().strip()

    def set_domain(self, kind: DomainKind, value: str) -> None:
        {DomainKind.PREFIX: self.prefix_button, DomainKind.CUSTOM: self.custom_button, DomainKind.URL: self.url_button}[kind].setChecked(True)
        {DomainKind.PREFIX: self.prefix, DomainKind.CUSTOM: self.custom, DomainKind.URL: self.url}[kind].setText(value)

    def initializePage(self) -> None:
        self.prefix_suffix.setText(f".auth.{self.owner.state.region}.amazoncognito.com")
        self._update()

    def domain(self) -> tuple[Domain | None, str | None]:
        return domain_from(self.kind(), self.value(), self.owner.state.region)

    def _update(self, *_: Any) -> None:
        state = self.owner.state
        state.domain_kind, state.domain = self.kind().value, self.value()
        for editor, kind in ((self.prefix, DomainKind.PREFIX), (self.custom, DomainKind.CUSTOM), (self.url, DomainKind.URL)):
            editor.setEnabled(self.kind() is kind)
        domain, problem = self.domain()
        self.error.setText(problem if self.value() and problem else "")
        if domain is not None:
            issuer = self.owner.issuer()
            self.resolved.setText(f"Sign-in pages at <b>{domain.base_url}</b>; issuer <b>{issuer}</b>.")
        else:
            self.resolved.setText("")
        self.owner.probe_report = None
        self.results.setText("Not checked yet: the check fetches discovery and JWKS from this computer.")
        self.changed()

    def show_report(self, report: Any) -> None:
        lines = [f"{STATUS_MARK.get(check.status, '?')} {check.message}" for check in report.checks]
        verdict = "The provider is ready." if report.ok else "The check found problems (✖): fix them, then check again."
        self.results.setText("\n".join([verdict, *lines]))

    def isComplete(self) -> bool:
        return self.domain()[0] is not None and not self.owner.checking


# ---------------------------------------------------------------- 4. Portico side


class PorticoPage(_Page):
    def __init__(self, wizard: CognitoWizard) -> None:
        super().__init__(wizard, "4. Portico's side", "Portico needs an OpenID provider (Cognito's endpoints and claim mapping) and an "
                         "auth server (the app client's id and secret). Check the preview, then create them.")
        form = QFormLayout()
        self.name = QLineEdit("Cognito")
        self.name.setObjectName("provider_name")
        self.description = QLineEdit()
        self.description.setPlaceholderText("e.g. Hospital staff (Cognito)")
        self.is_default = QCheckBox("Default auth server (the short login URL /auth/openid/ uses it)")
        self.is_default.setChecked(True)
        self.group_sync = QComboBox()
        for value, text in (("off", "off: groups are managed in Portico"), ("add", "add: IdP groups are added, never removed"),
                            ("mirror", "mirror: Portico groups follow cognito:groups")):
            self.group_sync.addItem(text, value)
        form.addRow("Provider name", self.name)
        form.addRow("Description", self.description)
        form.addRow("", self.is_default)
        form.addRow("Group sync", self.group_sync)
        self.layout_.addLayout(form)
        box = QGroupBox("What will be created")
        box_layout = QVBoxLayout(box)
        self.preview = QPlainTextEdit()
        self.preview.setObjectName("preview")
        self.preview.setReadOnly(True)
        self.preview.setMinimumHeight(170)
        box_layout.addWidget(self.preview)
        self.layout_.addWidget(box, 1)
        row = QHBoxLayout()
        self.create_button = QPushButton(icon("save"), "Create in Portico")
        self.create_button.setObjectName("primary")
        self.create_button.clicked.connect(lambda: self.owner.create())
        row.addStretch(1)
        row.addWidget(self.create_button)
        self.layout_.addLayout(row)
        self.message = inline_message()
        self.layout_.addWidget(self.message)
        for signal in (self.name.textChanged, self.description.textChanged):
            signal.connect(self._update)
        self.is_default.toggled.connect(self._update)
        self.group_sync.currentIndexChanged.connect(self._update)

    def initializePage(self) -> None:
        self.create_button.setText("Save changes in Portico" if self.owner.provider is not None else "Create in Portico")
        self._update()

    def _update(self, *_: Any) -> None:
        state = self.owner.state
        state.name, state.description = self.name.text().strip(), self.description.text().strip()
        state.is_default, state.group_sync = self.is_default.isChecked(), str(self.group_sync.currentData())
        self.owner.saved = False
        self.preview.setPlainText(self.owner.preview_text())
        self.changed()

    def isComplete(self) -> bool:
        return self.owner.saved and self.owner.auth_server is not None


# ---------------------------------------------------------------- 5. URLs to paste into Cognito


class UrlsPage(_Page):
    def __init__(self, wizard: CognitoWizard) -> None:
        super().__init__(wizard, "5. URLs for Cognito", "In the app client open Hosted UI → Edit and paste these exactly (Cognito compares "
                         "them character by character): the callback URL under Allowed callback URLs, the sign-out URL under "
                         "Allowed sign-out URLs.")
        grid = QGridLayout()
        self.fields: dict[str, QLineEdit] = {}
        self.copy_buttons: dict[str, QPushButton] = {}
        for row, (key, label) in enumerate((("callback", "Allowed callback URL"), ("signout", "Allowed sign-out URL"),
                                            ("login", "Login URL (for viewers)"))):
            line = _readonly()
            line.setObjectName(f"url_{key}")
            button = QPushButton(icon("duplicate"), "Copy")
            button.setObjectName(f"copy_{key}")
            button.clicked.connect(lambda _checked=False, k=key: self.copy(k))
            grid.addWidget(QLabel(label), row, 0)
            grid.addWidget(line, row, 1)
            grid.addWidget(button, row, 2)
            self.fields[key] = line
            self.copy_buttons[key] = button
        self.layout_.addLayout(grid)
        self.warnings = inline_message()
        self.warnings.setObjectName("inlineMessage")
        self.layout_.addWidget(self.warnings)
        fix = QHBoxLayout()
        self.site_url = QLineEdit()
        self.site_url.setObjectName("site_url")
        self.fix_button = QPushButton(icon("site"), "Fix Site settings")
        self.fix_button.setObjectName("fix_site")
        self.fix_button.clicked.connect(lambda: self.owner.fix_site())
        self.fix_label = QLabel("Site URL")
        fix.addWidget(self.fix_label)
        fix.addWidget(self.site_url, 1)
        fix.addWidget(self.fix_button)
        self.fix_row = QWidget()
        self.fix_row.setLayout(fix)
        self.fix_row.hide()
        self.layout_.addWidget(self.fix_row)
        self.policy = _explain("")
        self.layout_.addWidget(self.policy)
        self.confirmed = QCheckBox("I have saved these URLs in the Cognito app client")
        self.confirmed.setObjectName("confirmed")
        self.confirmed.toggled.connect(self.changed)
        self.layout_.addWidget(self.confirmed)
        self.layout_.addStretch(1)
        self.blocking: list[str] = []

    def copy(self, key: str) -> None:
        QGuiApplication.clipboard().setText(self.fields[key].text())
        self.copy_buttons[key].setText("Copied")

    def initializePage(self) -> None:
        self.owner.load_urls()

    def show_urls(self, urls: Any, site: Any, blocking: list[str], advice: list[str], suggestion: str) -> None:
        self.fields["callback"].setText(urls.callback)
        # Where Cognito sends the browser after its sign-out: Portico's "signed out" page.
        self.fields["signout"].setText(urls.logout)
        self.fields["login"].setText(urls.default_login or urls.login)
        for button in self.copy_buttons.values():
            button.setText("Copy")
        self.blocking = blocking
        lines = [f"✖ {text}" for text in blocking] + [f"⚠ {text}" for text in advice]
        if lines:
            show_inline(self.warnings, "error" if blocking else "warning", "\n".join(lines))
        else:
            show_inline(self.warnings, "info", f"These URLs follow the Site's URL {site.base_url}; Cognito will accept them.")
        self.fix_row.setVisible(bool(blocking or advice))
        if suggestion and not self.site_url.text():
            self.site_url.setText(suggestion)
        self.policy.setText(urls.policy)
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        return bool(self.fields["callback"].text()) and not self.blocking and self.confirmed.isChecked()


# ---------------------------------------------------------------- 6. test


class TestPage(_Page):
    __test__ = False

    def __init__(self, wizard: CognitoWizard) -> None:
        super().__init__(wizard, "6. Test", "In Cognito create a test user (User management → Users → Create user), then sign in with "
                         "it in the test-login panel: it shows every step of the login and what to fix if one fails.")
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.layout_.addWidget(self.summary)
        self.layout_.addWidget(_explain("Finish opens the test-login panel with this auth server chosen. A dry run there goes "
                                        "through the whole login without creating or changing any user."))
        self.layout_.addStretch(1)

    def initializePage(self) -> None:
        provider, auth_server = self.owner.provider, self.owner.auth_server
        self.summary.setText(
            f"Provider “{getattr(provider, 'name', '?')}” (#{getattr(provider, 'id', '?')}) and auth server "
            f"{getattr(auth_server, 'token', '?')} for client id {getattr(auth_server, 'client_id', '?')} are saved in Portico."
        )


# ---------------------------------------------------------------- the wizard


class CognitoWizard(QWizard):
    test_requested = Signal(int)  # auth server id
    setup_saved = Signal(int, int)  # provider id, auth server id

    def __init__(self, service: ConsoleService, *, provider_id: int | None = None, draft: WizardDraft | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.service = service
        self.state = draft or WizardDraft()
        self.client_secret = ""  # memory only
        self.provider: Any = None
        self.auth_server: Any = None
        self.saved = False
        self.probe_report: Any = None
        self.check_task: asyncio.Task[Any] | None = None
        self.checking = False  # a check is under way (its task is not done while it says so)
        self.save_task: asyncio.Task[Any] | None = None
        self.urls_task: asyncio.Task[Any] | None = None
        self.fix_task: asyncio.Task[Any] | None = None
        self.load_task: asyncio.Task[Any] | None = None
        self.finished_or_discarded = False
        self._loading = True
        self.setObjectName("cognitoWizard")
        self.setWindowTitle("Set up AWS Cognito")
        self.setWindowIcon(icon("provider"))
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.setOption(QWizard.WizardOption.HaveCustomButton1, True)
        self.setButtonText(QWizard.WizardButton.CustomButton1, "Discard")
        self.setButtonText(QWizard.WizardButton.CancelButton, "Close (continue later)")
        self.setButtonText(QWizard.WizardButton.FinishButton, "Open the test-login panel")
        self.button(QWizard.WizardButton.CustomButton1).clicked.connect(lambda _checked=False: self.discard())
        self.resize(780, 600)
        # The theme paints the default button blue even when disabled: a blocked Next must look blocked.
        self.setStyleSheet("QPushButton:default:disabled { background: #c9d3e0; color: #f3f5f8; border-color: #c9d3e0; }")
        self.pool_page = PoolPage(self)
        self.client_page = ClientPage(self)
        self.domain_page = DomainPage(self)
        self.portico_page = PorticoPage(self)
        self.urls_page = UrlsPage(self)
        self.test_page = TestPage(self)
        for number, page in enumerate((self.pool_page, self.client_page, self.domain_page, self.portico_page, self.urls_page, self.test_page)):
            self.setPage(number, page)
        self.resume_note = ""
        if provider_id is not None:
            self.state = WizardDraft(provider_id=provider_id)
            self.load_task = service.spawn(self._load_existing(provider_id))
        else:
            self._apply_state()
        self._loading = False

    # ------------------------------------------------------------ state

    def _apply_state(self) -> None:
        # Setting one field updates the state from all of its page's fields: read a copy.
        state = dataclasses.replace(self.state)
        self._loading = True
        self.pool_page.region.setText(state.region)
        self.pool_page.pool_id.setText(state.pool_id)
        self.client_page.client_id.setText(state.client_id)
        try:
            kind = DomainKind(state.domain_kind)
        except ValueError:
            kind = DomainKind.PREFIX
        self.domain_page.set_domain(kind, state.domain)
        self.portico_page.name.setText(state.name)
        self.portico_page.description.setText(state.description)
        self.portico_page.is_default.setChecked(state.is_default)
        index = self.portico_page.group_sync.findData(state.group_sync)
        self.portico_page.group_sync.setCurrentIndex(max(0, index))
        self._loading = False
        self.state = state
        start = min(max(0, state.page), PAGE_TEST)
        if state.saved_at and start > PAGE_CLIENT and state.auth_server_id is None:
            # Resumed before anything was created: the secret was not kept, ask for it again.
            start = PAGE_CLIENT
            show_inline(self.client_page.welcome_back, "info", "Welcome back. Enter the client secret again: "
                        "Portico never writes it to disk.")
        if state.auth_server_id is not None and state.provider_id is not None:
            self.load_task = self.service.spawn(self._load_saved(state.provider_id, state.auth_server_id, start))
            return
        self.setStartId(start)

    async def _load_saved(self, provider_id: int, auth_server_id: int, start: int) -> None:
        try:
            self.provider = await self.service.get("providers", provider_id)
            self.auth_server = await self.service.get("auth-servers", auth_server_id)
            self.saved = True
        except (ApiError, ServerUnreachable):
            self.provider = self.auth_server = None
            self.state.provider_id = self.state.auth_server_id = None
            start = min(start, PAGE_PORTICO)
        if self.currentId() == -1 or self.currentId() == 0:
            self.setStartId(start)
            self.restart()

    async def _load_existing(self, provider_id: int) -> None:
        """Edit: the provider, its first auth server, and the values they hold."""
        provider = await self.service.get("providers", provider_id)
        page = await self.service.list_page("auth-servers", {"provider_id": provider_id, "limit": 1})
        self.provider = provider
        self.auth_server = page.items[0] if page.items else None
        parsed = parse_issuer(getattr(provider, "issuer", None))
        state = self.state
        state.provider_id = provider.id
        state.auth_server_id = getattr(self.auth_server, "id", None)
        state.name, state.description = provider.name, provider.description
        if parsed:
            state.region, state.pool_id = parsed
        hostname, scheme, port = provider.hostname, provider.scheme, provider.port
        match = domain_from(DomainKind.PREFIX, hostname, state.region)[0] if state.region else None
        if match is not None and scheme == "https" and port in (None, 443):
            state.domain_kind, state.domain = DomainKind.PREFIX.value, hostname.split(".", 1)[0]
        elif scheme == "https" and port in (None, 443) and parsed:
            state.domain_kind, state.domain = DomainKind.CUSTOM.value, hostname
        else:
            state.domain_kind = DomainKind.URL.value
            state.domain = Domain(DomainKind.URL, scheme, hostname, port).base_url
            if not parsed:
                state.region, state.pool_id = state.region or "us-east-1", state.pool_id or "us-east-1_Unknown"
        if self.auth_server is not None:
            state.client_id = self.auth_server.client_id
            state.is_default = self.auth_server.is_default
            state.group_sync = str(getattr(self.auth_server.group_sync, "value", self.auth_server.group_sync))
        state.page = 0
        self._apply_state()
        self.saved = False

    def remember(self) -> None:
        """Keep the draft on disk (never the secret) after every change."""
        if self._loading or self.finished_or_discarded:
            return
        self.state.page = max(0, self.currentId())
        self.state.saved_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.service.save_cognito_draft(self.state)

    def discard(self) -> None:
        self.finished_or_discarded = True
        self.service.discard_cognito_draft()
        self.reject()

    def done(self, result: int) -> None:
        if result == QWizard.DialogCode.Accepted:
            self.finished_or_discarded = True
            self.service.discard_cognito_draft()
            if self.auth_server is not None:
                self.test_requested.emit(int(self.auth_server.id))
        elif self.state.region or self.state.pool_id or self.state.client_id:
            self.remember()  # closed to continue later
        super().done(result)

    # ------------------------------------------------------------ derived values

    def domain(self) -> Domain | None:
        return self.domain_page.domain()[0]

    def issuer(self) -> str:
        domain = self.domain()
        if domain is not None and domain.kind is DomainKind.URL:
            if self.probe_report is not None and self.probe_report.document.get("issuer"):
                return str(self.probe_report.document["issuer"])
            return domain.base_url
        return issuer_url(self.state.region, self.state.pool_id)

    def provider_body(self) -> dict[str, Any]:
        domain = self.domain()
        assert domain is not None
        issuer = self.issuer()
        jwks = jwks_url(issuer)
        if self.probe_report is not None and self.probe_report.document.get("jwks_uri"):
            jwks = str(self.probe_report.document["jwks_uri"])
        body: dict[str, Any] = {
            "name": self.state.name or "Cognito",
            "preset": "cognito",
            "scheme": domain.scheme,
            "hostname": domain.hostname,
            "port": domain.port,
            "description": self.state.description,
            "parameters": {"region": self.state.region, "user_pool_id": self.state.pool_id},
            "issuer": issuer,
            "jwks_uri": jwks,
        }
        return body

    def auth_server_body(self, provider_id: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "provider_id": provider_id,
            "client_id": self.state.client_id,
            "is_default": self.state.is_default,
            "group_sync": self.state.group_sync,
            "description": self.state.description or f"{self.state.name or 'Cognito'} app client",
        }
        if self.client_secret:
            body["client_secret"] = self.client_secret
        return body

    def preview_text(self) -> str:
        if self.domain() is None:
            return "(complete the previous pages first)"
        provider = self.provider_body()
        auth_server = self.auth_server_body(None)
        auth_server["provider_id"] = f"(the provider above{f', #{self.provider.id}' if self.provider is not None else ''})"
        if "client_secret" in auth_server:
            auth_server["client_secret"] = MASKED
        elif self.auth_server is not None:
            auth_server["client_secret"] = "(unchanged)"
        verb = "Update" if self.provider is not None else "Create"
        return (
            f"{verb} the OpenID provider:\n{json.dumps(provider, indent=2)}\n"
            "  endpoints from the Cognito preset: /oauth2/authorize, /oauth2/token, /oauth2/userInfo, /oauth2/revoke\n"
            "  claim mapping: username = \"cognito:username\" || preferred_username || username, groups = \"cognito:groups\"\n"
            "  login button classes: cognito aws login\n\n"
            f"{'Update' if self.auth_server is not None else 'Create'} the auth server:\n{json.dumps(auth_server, indent=2)}"
        )

    # ------------------------------------------------------------ actions

    def check(self) -> asyncio.Task[Any] | None:
        domain = self.domain()
        if domain is None:
            return None
        self.domain_page.check_button.setEnabled(False)
        self.checking = True
        self.domain_page.results.setText(f"Checking {domain.base_url} …")
        self.check_task = self.service.spawn(self._check(domain))
        self.domain_page.completeChanged.emit()
        return self.check_task

    async def _check(self, domain: Domain) -> None:
        try:
            issuer = domain.base_url if domain.kind is DomainKind.URL else issuer_url(self.state.region, self.state.pool_id)
            hosted = None if domain.kind is DomainKind.URL else domain.base_url
            report = await self.service.probe_provider(issuer, hosted)
            self.probe_report = report
            self.domain_page.show_report(report)
            self.portico_page.preview.setPlainText(self.preview_text())
        finally:
            self.checking = False
            self.domain_page.check_button.setEnabled(True)
            self.domain_page.completeChanged.emit()

    def create(self) -> asyncio.Task[Any]:
        self.portico_page.create_button.setEnabled(False)
        self.save_task = self.service.spawn(self._save())
        return self.save_task

    async def _save(self) -> None:
        page = self.portico_page
        try:
            body = self.provider_body()
            if self.provider is None:
                self.provider = await self.service.create("providers", body)
            else:
                update = {key: value for key, value in body.items() if key not in ("preset", "parameters")}
                update["version"] = self.provider.version
                self.provider = await self.service.update("providers", self.provider.id, update)
            server_body = self.auth_server_body(self.provider.id)
            if self.auth_server is None:
                self.auth_server = await self.service.create("auth-servers", server_body)
            else:
                server_body["version"] = self.auth_server.version
                self.auth_server = await self.service.update("auth-servers", self.auth_server.id, server_body)
        except (ApiError, ServerUnreachable) as error:
            show_inline(page.message, "error", f"Portico refused it: {_message(error)}")
            return
        finally:
            page.create_button.setEnabled(True)
        self.saved = True
        self.state.provider_id, self.state.auth_server_id = self.provider.id, self.auth_server.id
        page.create_button.setText("Save changes in Portico")
        show_inline(page.message, "info", f"Saved: provider “{self.provider.name}” (#{self.provider.id}) and auth server "
                    f"{self.auth_server.token}. Next: the URLs to paste into Cognito.")
        page.preview.setPlainText(self.preview_text())
        self.remember()
        self.setup_saved.emit(int(self.provider.id), int(self.auth_server.id))
        page.completeChanged.emit()

    def load_urls(self) -> asyncio.Task[Any] | None:
        if self.auth_server is None:
            return None
        self.urls_task = self.service.spawn(self._load_urls())
        return self.urls_task

    async def _load_urls(self) -> None:
        assert self.auth_server is not None
        try:
            urls = await self.service.auth_server_urls(self.auth_server.id)
            site = await self.service.site()
        except (ApiError, ServerUnreachable) as error:
            show_inline(self.urls_page.warnings, "error", f"Could not read the URLs: {_message(error)}")
            return
        blocking = list(urls.warnings)
        advice: list[str] = []
        suggestion = ""
        served = self.service.url
        if served and _origin(site.base_url) != _origin(served):
            text = (f"The Site's URL is {site.base_url}, but this Portico answers at {served}: after signing in, the identity "
                    f"provider would send browsers to {_origin(site.base_url)[1]} port {_origin(site.base_url)[2]}, where this "
                    f"server does not listen (the port does not match the Site's connect port).")
            if self.service.mode in ("embedded", "attached"):
                blocking.append(text)
                suggestion = served
            else:
                advice.append(text + " Ignore this if a proxy publishes Portico at the Site's URL.")
        parts = urlsplit(site.base_url)
        domain = self.domain()
        if parts.scheme != "https" and not (domain is not None and domain.kind is DomainKind.URL) and not urls.warnings:
            host = parts.hostname or ""
            if host not in ("localhost", "127.0.0.1", "::1"):
                blocking.append("Cognito accepts only https callback URLs (http only for localhost): set the Site's URL to https.")
        if blocking and not suggestion and parts.hostname:
            suggestion = f"https://{parts.hostname}" + (f":{parts.port}" if parts.port and parts.port != 443 and parts.scheme == "https" else "")
        self.urls_page.show_urls(urls, site, blocking, advice, suggestion)

    def fix_site(self) -> asyncio.Task[Any]:
        self.fix_task = self.service.spawn(self._fix_site(self.urls_page.site_url.text().strip()))
        return self.fix_task

    async def _fix_site(self, url: str) -> None:
        try:
            site = await self.service.site()
            key = "development_url" if str(getattr(site.environment, "value", site.environment)) == "development" else "production_url"
            await self.service.update_site({"version": site.version, key: url})
        except (ApiError, ServerUnreachable) as error:
            show_inline(self.urls_page.warnings, "error", f"The Site settings were not changed: {_message(error)}")
            return
        await self._load_urls()


def cognito_section(panel: Any, open_wizard: Any) -> QWidget:
    """A button under the Providers panel's form: edit the shown Cognito provider with the
    wizard, or set a new one up."""
    button = QPushButton(icon("provider"), "Set up AWS Cognito…")
    button.setObjectName("cognitoWizardButton")
    button.setToolTip("The guided set-up: user pool, app client, domain, Portico's side, URLs, test")
    shown: dict[str, int | None] = {"id": None}

    def on_shown(record: Any) -> None:
        preset = getattr(record, "preset", None)
        cognito = record is not None and str(getattr(preset, "value", preset)) == "cognito"
        shown["id"] = int(record.id) if cognito else None
        button.setText("Edit with the Cognito wizard…" if cognito else "Set up AWS Cognito…")

    panel.record_shown.connect(on_shown)
    button.clicked.connect(lambda _checked=False: open_wizard(shown["id"]))
    return button
