"""The console's main window: panels on the left, the server being managed always named."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, Qt
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.models.entities import PANELS
from app.models.service import ApiError, ConsoleService, EmbeddedServerError, NotAuthenticatedError, ServerUnreachable
from app.views.async_tools import run_dialog
from app.views.cognito_wizard import CognitoWizard, cognito_section
from app.views.dialogs import ConnectDialog, FirstSuperuserDialog, MessageDialog
from app.views.entity_panel import EntityPanel
from app.views.explain_panel import ExplainPanel
from app.views.import_dialog import UserImportDialog
from app.views.sections import SECTIONS
from app.views.site_panel import SitePanel
from app.views.sso_sign_in import SsoSignInDialog
from app.views.test_login_panel import TestLoginPanel
from app.views.theme import THEMES, apply_theme, icon

APP_TITLE = "Portico"
# (key, title, icon): the order is the order of Ctrl+1 ... Ctrl+9, then Ctrl+0.
NAVIGATION: tuple[tuple[str, str, str], ...] = tuple((spec.key, spec.title, spec.icon) for spec in PANELS) + (
    ("site", "Site settings", "site"),
    ("explain", "Permission explainer", "explain"),
    ("test-login", "Test login", "connect"),
)
SHORTCUTS = {key: f"Ctrl+{number % 10}" for number, (key, _t, _i) in enumerate(NAVIGATION[:10], start=1)} | {"explain": "Ctrl+E", "test-login": "Ctrl+T"}


class MainWindow(QMainWindow):
    def __init__(self, service: ConsoleService, *, settings: QSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.service = service
        self.settings = settings or QSettings()
        self.panels: dict[str, Any] = {}
        self.last_dialog: Any = None
        self.closed = False
        self._closing: asyncio.Task[Any] | None = None
        self.first_start: asyncio.Task[Any] | None = None
        self.force_close = False  # tests and the start-up benchmark: close without asking
        self.setWindowIcon(icon("portico"))
        self.setWindowTitle(APP_TITLE)
        self.resize(1280, 780)

        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        self.banner = self._make_banner()
        outer.addWidget(self.banner)
        body = QHBoxLayout()
        body.setContentsMargins(0, 0, 0, 0)
        body.setSpacing(0)
        self.navigation = QListWidget()
        self.navigation.setObjectName("navigation")
        self.navigation.setFixedWidth(210)
        self.navigation.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.navigation.setTextElideMode(Qt.TextElideMode.ElideRight)
        for number, (key, title, icon_name) in enumerate(NAVIGATION, start=1):
            item = QListWidgetItem(icon(icon_name), title)
            item.setData(Qt.ItemDataRole.UserRole, key)
            item.setToolTip(f"{title} ({SHORTCUTS[key]})")
            self.navigation.addItem(item)
        self.navigation.currentRowChanged.connect(self._navigate)
        self.stack = QStackedWidget()
        self.placeholder = QLabel("Starting the embedded Portico server…")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.stack.addWidget(self.placeholder)
        body.addWidget(self.navigation)
        body.addWidget(self.stack, 1)
        outer.addLayout(body, 1)
        self.setCentralWidget(central)

        self.target_label = QLabel("not connected")
        self.target_label.setObjectName("statusTarget")
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)
        self.busy_bar.setFixedWidth(120)
        self.busy_bar.setTextVisible(False)
        self.busy_bar.hide()
        self.statusBar().addPermanentWidget(self.busy_bar)
        self.statusBar().addPermanentWidget(self.target_label)

        self._make_menus()
        service.busy_changed.connect(self._busy_changed)
        service.notification.connect(self._notify)
        service.server_died.connect(self._server_died)
        service.connection_changed.connect(self._connection_changed)
        self._restore_geometry()

    # ------------------------------------------------------------ building

    def _make_banner(self) -> QFrame:
        banner = QFrame()
        banner.setObjectName("serverBanner")
        layout = QHBoxLayout(banner)
        self.banner_icon = QLabel()
        self.banner_icon.setPixmap(icon("warning").pixmap(22, 22))
        self.banner_text = QLabel()
        self.banner_text.setWordWrap(True)
        self.banner_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.restart_button = QPushButton(icon("refresh"), "Restart the server")
        self.restart_button.setObjectName("primary")
        self.restart_button.clicked.connect(lambda: self.service.spawn(self.restart_embedded()))
        layout.addWidget(self.banner_icon, 0, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(self.banner_text, 1)
        layout.addWidget(self.restart_button, 0, Qt.AlignmentFlag.AlignTop)
        banner.hide()
        return banner

    def _make_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        connect = QAction(icon("connect"), "&Connect to server…", self)
        connect.triggered.connect(lambda: self.service.spawn(self.connect_dialog()))
        embedded = QAction(icon("portico"), "Use the &embedded server", self)
        embedded.triggered.connect(lambda: self.service.spawn(self.use_embedded()))
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Quit))
        quit_action.triggered.connect(self.close)
        for action in (connect, embedded):
            file_menu.addAction(action)
        file_menu.addSeparator()
        import_users = QAction(icon("user"), "&Import users…", self)
        import_users.setToolTip("Create or update users and their memberships from a CSV file")
        import_users.triggered.connect(lambda: self.open_user_import())
        file_menu.addAction(import_users)
        file_menu.addSeparator()
        file_menu.addAction(quit_action)

        edit_menu = self.menuBar().addMenu("&Edit")
        for text, shortcut, method in (
            ("&Find", "Ctrl+F", "focus_search"),
            ("&New", "Ctrl+N", "new_record"),
            ("&Save", "Ctrl+S", "save"),
            ("&Refresh", "F5", "refresh"),
        ):
            action = QAction(text, self)
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            action.triggered.connect(lambda _checked=False, name=method: self._on_panel(name))
            edit_menu.addAction(action)
            self.addAction(action)

        view_menu = self.menuBar().addMenu("&View")
        for number, (key, title, icon_name) in enumerate(NAVIGATION, start=1):
            action = QAction(icon(icon_name), title, self)
            action.setShortcut(QKeySequence(SHORTCUTS[key]))
            action.triggered.connect(lambda _checked=False, k=key: self.show_panel(k))
            view_menu.addAction(action)
            self.addAction(action)
        tools_menu = self.menuBar().addMenu("&Tools")
        cognito = QAction(icon("provider"), "Set up AWS &Cognito…", self)
        cognito.triggered.connect(lambda: self.open_cognito_wizard())
        tools_menu.addAction(cognito)
        view_menu.addSeparator()
        for theme in THEMES:
            action = QAction(f"{theme.capitalize()} theme", self)
            action.triggered.connect(lambda _checked=False, t=theme: self.set_theme(t))
            view_menu.addAction(action)

    # ------------------------------------------------------------ panels

    def panel(self, key: str) -> Any:
        """The panel of ``key``, built on first use."""
        if key not in self.panels:
            if key == "site":
                widget: Any = SitePanel(self.service)
            elif key == "explain":
                widget = ExplainPanel(self.service)
            elif key == "test-login":
                widget = TestLoginPanel(self.service)
            else:
                widget = EntityPanel(next(spec for spec in PANELS if spec.key == key), self.service)
                widget.sections = [section(widget, self.service) for section in SECTIONS.get(key, ())]
                for section in widget.sections:
                    widget.add_section(section)
                if key == "providers":
                    widget.add_section(cognito_section(widget, self.open_cognito_wizard))
            self.panels[key] = widget
            self.stack.addWidget(widget)
        return self.panels[key]

    def current_panel(self) -> Any:
        widget = self.stack.currentWidget()
        return widget if widget is not self.placeholder else None

    def show_panel(self, key: str) -> Any:
        row = next(index for index, (k, _t, _i) in enumerate(NAVIGATION) if k == key)
        if self.navigation.currentRow() != row:
            self.navigation.setCurrentRow(row)  # -> _navigate
        else:
            self._navigate(row)
        return self.panels.get(key)

    def _navigate(self, row: int) -> None:
        if row < 0 or self.service.client is None:
            return
        key = NAVIGATION[row][0]
        widget = self.panel(key)
        self.stack.setCurrentWidget(widget)
        widget.activate()

    def _on_panel(self, method: str) -> None:
        panel = self.current_panel()
        if panel is not None:
            getattr(panel, method)()

    def open_cognito_wizard(self, provider_id: int | None = None) -> CognitoWizard:
        """The Cognito set-up (resuming an unfinished one), or editing ``provider_id``."""
        draft = None if provider_id is not None else self.service.load_cognito_draft()
        wizard = CognitoWizard(self.service, provider_id=provider_id, draft=draft, parent=self)
        wizard.test_requested.connect(lambda auth_server_id: self.show_panel("test-login").select_auth_server(auth_server_id))
        self.last_dialog = wizard
        wizard.show()
        return wizard

    def open_user_import(self) -> UserImportDialog:
        """The CSV import of users (non-modal: the panels stay usable while it runs)."""
        dialog = UserImportDialog(self.service, parent=self)
        dialog.import_finished.connect(self._users_imported)
        self.last_dialog = dialog
        dialog.show()
        return dialog

    def _users_imported(self, changed: int) -> None:
        panel = self.panels.get("users")
        if changed and panel is not None and panel.loaded:
            panel.refresh()

    # ------------------------------------------------------------ connection

    def _connection_changed(self) -> None:
        target = self.service.target
        self.target_label.setText(target)
        self.setWindowTitle(f"{APP_TITLE} — {target}")

    def _reset_panels(self) -> None:
        """Another server: every panel shows that server's records."""
        for widget in self.panels.values():
            widget.shutdown()
            self.stack.removeWidget(widget)
            widget.deleteLater()
        self.panels.clear()
        row = max(0, self.navigation.currentRow())
        self.navigation.setCurrentRow(-1)
        self.navigation.setCurrentRow(row)

    async def start_embedded(self, data_dir: Path | None = None, *, spawned: Any = None) -> None:
        self.placeholder.setText("Starting the embedded Portico server…")
        self.statusBar().showMessage("Starting the embedded server…")
        try:
            await self.service.start_embedded(data_dir, spawned=spawned)
        except EmbeddedServerError as error:
            self._server_died(f"The embedded Portico server could not start.\n\n{error}")
            return
        self.banner.hide()
        self.statusBar().showMessage("Embedded server ready", 3000)
        await self.after_connect()

    async def attach(self, url: str, token: str) -> None:
        await self.service.attach(url, token)
        await self.after_connect()

    async def after_connect(self) -> None:
        self._reset_panels()
        # The window is usable now; the first-start question comes on top of it.
        self.first_start = self.service.spawn(self._first_start())

    async def _first_start(self) -> None:
        if await self.service.needs_first_superuser():
            await self.ask_first_superuser()

    async def ask_first_superuser(self) -> bool:
        dialog = FirstSuperuserDialog(self)
        self.last_dialog = dialog
        while await run_dialog(dialog) == FirstSuperuserDialog.DialogCode.Accepted:
            try:
                user = await self.service.create_first_superuser(
                    dialog.username.text().strip(), dialog.password.text(), dialog.email.text().strip() or None
                )
            except ApiError as error:
                details = "; ".join(f"{item.field}: {item.message}" for item in error.fields)
                dialog.show_error(details or error.message)
                continue
            except ServerUnreachable as error:
                dialog.show_error(str(error))
                continue
            self.statusBar().showMessage(f"Superuser “{getattr(user, 'username', '')}” created", 5000)
            panel = self.panels.get("users")
            if panel is not None:
                panel.refresh()
            return True
        return False

    async def restart_embedded(self) -> None:
        self.restart_button.setEnabled(False)
        self.banner_text.setText("Restarting the embedded Portico server…")
        try:
            await self.service.restart_embedded()
        except EmbeddedServerError as error:
            self._server_died(f"The embedded Portico server could not start again.\n\n{error}")
            return
        finally:
            self.restart_button.setEnabled(True)
        self.banner.hide()
        self.statusBar().showMessage("Embedded server restarted", 5000)
        # The same database: panels keep what is being edited and only reload their lists.
        for widget in self.panels.values():
            if widget.loaded:
                widget.refresh()
        self.first_start = self.service.spawn(self._first_start())

    async def use_embedded(self) -> None:
        if self.service.mode == "embedded" and self.service.server_alive:
            return
        await self.start_embedded()

    async def connect_dialog(self) -> bool:
        recent = [(item.url, item.username) for item in self.service.recent_connections()]
        dialog = ConnectDialog(
            recent, keyring=self.service.keyring_available(), password_lookup=self.service.stored_password, parent=self
        )
        self.last_dialog = dialog
        while (result := await run_dialog(dialog)) in (ConnectDialog.DialogCode.Accepted, ConnectDialog.SSO):
            if result == ConnectDialog.SSO:
                sso = SsoSignInDialog(self.service, dialog.url.text().strip(), parent=self)
                self.last_dialog = sso
                if await run_dialog(sso) != SsoSignInDialog.DialogCode.Accepted:
                    self.last_dialog = dialog
                    continue  # back to the Connect dialog
            else:
                try:
                    await self.service.connect_remote(
                        dialog.url.text().strip(), dialog.username.text().strip(), dialog.password.text(),
                        remember_password=dialog.remember.isVisible() and dialog.remember.isChecked(),
                    )
                except NotAuthenticatedError as error:
                    dialog.show_error(error.message)
                    continue
                except (ApiError, ServerUnreachable) as error:
                    dialog.show_error(getattr(error, "message", str(error)))
                    continue
            self.banner.hide()
            self.statusBar().showMessage(f"Connected to {self.service.url}", 5000)
            self._reset_panels()
            return True
        return False

    def _server_died(self, message: str) -> None:
        self.banner_text.setText(
            message + "\n\nEverything that was saved is in the database; a change that was being edited is still in its form."
        )
        self.restart_button.setVisible(self.service.mode in ("embedded", "none"))
        self.banner.show()
        self.statusBar().showMessage("The server stopped", 0)

    # ------------------------------------------------------------ feedback

    def _busy_changed(self, busy: bool) -> None:
        self.busy_bar.setVisible(busy)
        if busy:
            QApplication.setOverrideCursor(Qt.CursorShape.BusyCursor)
        else:
            QApplication.restoreOverrideCursor()

    def _notify(self, level: str, message: str) -> None:
        """Non-modal: the status bar; errors also stay readable in a dialog that does not block."""
        self.statusBar().showMessage(message, 10000)
        if level == "error":
            dialog = MessageDialog("Portico", message, parent=self)
            dialog.setWindowModality(Qt.WindowModality.NonModal)
            self.last_dialog = dialog
            dialog.show()

    def set_theme(self, theme: str) -> None:
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, theme)
        self.settings.setValue("theme", theme)

    # ------------------------------------------------------------ geometry and closing

    def _restore_geometry(self) -> None:
        geometry = self.settings.value("geometry")
        if isinstance(geometry, QByteArray | bytes):
            self.restoreGeometry(QByteArray(geometry))
        state = self.settings.value("windowState")
        if isinstance(state, QByteArray | bytes):
            self.restoreState(QByteArray(state))

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.closed:
            event.accept()
            return
        event.ignore()
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_after_asking())

    async def _close_after_asking(self) -> None:
        """Unsaved changes in a form are not thrown away without asking."""
        if not self.force_close:
            for key, widget in list(self.panels.items()):
                ask = getattr(widget, "ask_discard", None)
                form = getattr(widget, "form", None)
                if ask is None or form is None or not form.dirty:
                    continue
                self.show_panel(key)
                if not await ask():
                    self._closing = None  # stay open
                    return
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("windowState", self.saveState())
        self.settings.sync()
        await self._shut_down_and_close()

    async def _shut_down_and_close(self) -> None:
        for widget in self.panels.values():
            widget.shutdown()
        try:
            await self.service.shutdown()
        finally:
            self.closed = True
            self.close()
