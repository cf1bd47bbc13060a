"""The test-login panel: a real browser pane signs in at the identity provider, and a
timeline says what happened at each step and, when one fails, what to fix.

Start asks Portico for a test login of the chosen auth server and opens its login URL in
the pane. Portico sends the pane to the IdP; the administrator signs in on the IdP's own
page; the IdP returns to Portico's callback, which finishes the login and sends the pane
to a loopback console URL. The pane never loads that URL: ``acceptNavigationRequest``
refuses it and the panel reads the timeline Portico kept (``GET /test-logins/{id}``), then
exchanges the one-time code for a Portico token exactly as a viewer would, verifies it
against Portico's JWKS and asks for its introspection.

Steps seen only from here (the pane's navigation) are timed here: discovery (probed from
this computer), the authorize redirect and the sign-in at the IdP, including the two
failures that never reach Portico: an IdP that cannot be reached and a callback URL the
IdP does not know (it shows its own error page instead of redirecting).
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# QtWebEngine (Chromium) refuses to start as root with its sandbox on; a root desktop session
# is rare but is how the console runs in containers. No GPU is needed for login pages.
if hasattr(os, "geteuid") and os.geteuid() == 0:
    os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
os.environ.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--disable-gpu")

from PySide6.QtCore import QUrl, Qt, Signal  # noqa: E402
from PySide6.QtWebEngineCore import QWebEngineLoadingInfo, QWebEnginePage, QWebEngineProfile  # noqa: E402
from PySide6.QtWebEngineWidgets import QWebEngineView  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.models.service import ApiError, ConsoleService, ServerUnreachable  # noqa: E402
from app.oidc.pkce import new_pair  # noqa: E402
from app.views.claim_sandbox import ClaimSandbox  # noqa: E402
from app.views.entity_panel import inline_message, show_inline  # noqa: E402
from app.views.theme import icon  # noqa: E402

TITLES = {
    "discovery": "Discovery (from this computer)",
    "authorize_redirect": "Authorize redirect",
    "idp_login": "Sign-in at the identity provider",
    "callback": "Callback checks (state, nonce, PKCE)",
    "code_exchange": "Code exchange",
    "id_token": "ID token validation",
    "userinfo": "Userinfo",
    "claim_mapping": "Claim mapping",
    "user": "User created or linked",
    "portico_token": "Portico token issued",
    "introspection": "Introspection",
}
STATUS_TEXT = {"ok": "✔ ok", "failed": "✖ failed", "skipped": "– skipped", "waiting": "… waiting", "running": "… running"}

# What to do, in plain words, per error code of the server (its message says what happened).
FIXES = {
    "token_invalid_client": "The client secret (or client id) saved in this auth server is not the app client's. Copy the "
                            "secret again from Cognito (App integration → App clients → your client → Show client secret) "
                            "and save it in the auth server (run the Cognito wizard again to edit it).",
    "token_unauthorized_client": "Enable the “Authorization code grant” for the app client (Hosted UI settings).",
    "token_invalid_grant": "Start the test again; if it repeats, check that the callback URL registered in Cognito is exactly "
                           "the one the wizard shows.",
    "idp_access_denied": "The sign-in was cancelled (or refused) at the identity provider: nothing is wrong with the set-up. "
                         "Start again and sign in; if you did not cancel, check that the user may use this app client.",
    "idp_redirect_mismatch": "Register the callback URL shown above in the app client's Allowed callback URLs, exactly.",
    "idp_client_refused": "Check the client id, and that the app client allows the authorization code grant.",
    "idp_invalid_scope": "Allow the scopes openid, email and profile for the app client.",
    "id_token_not_yet_valid": "The clocks disagree: the identity provider's clock is ahead of the Portico server's by more "
                              "than the two minutes allowed. Synchronise the server's clock (NTP, e.g. "
                              "`timedatectl set-ntp true`) and try again.",
    "id_token_expired": "The ID token arrived already expired: synchronise the Portico server's clock (NTP) and try again.",
    "id_token_issuer": "Check the user pool's region and id in the provider (the issuer Portico expects).",
    "id_token_audience": "The ID token was issued for another app client: check the client id in the auth server.",
    "id_token_signature": "Check the provider's JWKS URI: it must be the user pool's .well-known/jwks.json.",
    "id_token_unknown_key": "Check the provider's JWKS URI: it must be the user pool's .well-known/jwks.json.",
    "id_token_nonce": "Start the test again in a fresh pane; a nonce mismatch means the answer belongs to another login.",
    "idp_unreachable": "Portico's server cannot reach the identity provider: check the provider's host name and port, DNS, "
                       "and the firewall or proxy between the server and the provider.",
    "idp_timeout": "The identity provider is too slow or a firewall drops the connection from Portico's server: check the "
                   "network path, then try again.",
    "claim_mapping_failed": "Open the Claim mapping tab: edit the expressions until the claims map to a username, then save.",
    "userinfo_error": "Check the userinfo endpoint (/oauth2/userInfo) and that the openid scope is allowed.",
    "login_unknown": "The pane lost Portico's login cookie: start the test again.",
    "client_secret_missing": "Set the app client's secret in the auth server (run the Cognito wizard again).",
}


@dataclass
class TimelineStep:
    name: str
    status: str  # ok | failed | skipped | waiting | running
    duration_ms: float | None = None
    detail: str = ""
    fix: str = ""


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def _now_ms() -> float:
    return time.perf_counter() * 1000


class ConsolePage(QWebEnginePage):
    """Refuses (and reports) the navigation to the console's own redirect URL."""

    intercepted = Signal(str)
    navigating = Signal(str)

    def __init__(self, profile: QWebEngineProfile, parent: Any = None) -> None:
        super().__init__(profile, parent)
        self.prefix = ""

    def acceptNavigationRequest(self, url: QUrl | str, navigation_type: QWebEnginePage.NavigationType, is_main_frame: bool) -> bool:
        text = url.toString() if isinstance(url, QUrl) else str(url)
        if self.prefix and text.startswith(self.prefix):
            self.intercepted.emit(text)
            return False
        if is_main_frame:
            self.navigating.emit(text)
        return True


class TestLoginPanel(QWidget):
    __test__ = False

    login_finished = Signal(str)  # outcome: ok | failed

    def __init__(self, service: ConsoleService, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.service = service
        self.loaded = False
        self.last_dialog: Any = None
        self.timeline: dict[str, TimelineStep] = {}
        self.started: Any = None
        self.pkce = new_pair()
        self.auth_server: Any = None
        self.provider: Any = None
        self.urls: Any = None
        self.test: Any = None  # the server's record of the finished test login
        self.access_token: str | None = None
        self.token_claims: dict[str, Any] = {}
        self.idp_claims: dict[str, Any] = {}
        self.phase = "idle"  # idle | authorize | idp | finishing | done
        self.finished = False
        self.flow_task: asyncio.Task[Any] | None = None
        self.explain_task: asyncio.Task[Any] | None = None
        self.explain_result: Any = None
        self.choices_task: asyncio.Task[Any] | None = None
        self._wanted: int | None = None
        self._marks: dict[str, float] = {}
        self._last_url = ""
        self._idp_origin: tuple[str, str, int | None] | None = None
        self.setObjectName("panel_test-login")

        outer = QVBoxLayout(self)
        outer.setContentsMargins(10, 8, 10, 8)
        header = QHBoxLayout()
        title = QLabel("Test login")
        title.setObjectName("panelTitle")
        header.addWidget(title)
        header.addStretch(1)
        outer.addLayout(header)
        toolbar = QHBoxLayout()
        toolbar.addWidget(QLabel("Auth server"))
        self.auth_servers = QComboBox()
        self.auth_servers.setObjectName("auth_servers")
        self.auth_servers.setMinimumWidth(280)
        toolbar.addWidget(self.auth_servers, 1)
        self.refresh_button = QPushButton(icon("refresh"), "")
        self.refresh_button.setToolTip("Reload the auth servers (F5)")
        self.refresh_button.clicked.connect(lambda: self.refresh())
        self.start_button = QPushButton(icon("connect"), "Start")
        self.start_button.setObjectName("primary")
        self.start_button.setToolTip("Sign in through this auth server in the pane below; users and sessions are created as in a real login")
        self.start_button.clicked.connect(lambda: self.start(dry_run=False))
        self.dry_run_button = QPushButton(icon("explain"), "Dry run")
        self.dry_run_button.setToolTip("The whole login, without creating or changing any user, group or session")
        self.dry_run_button.clicked.connect(lambda: self.start(dry_run=True))
        for widget in (self.refresh_button, self.start_button, self.dry_run_button):
            toolbar.addWidget(widget)
        outer.addLayout(toolbar)
        self.message = inline_message()
        outer.addWidget(self.message)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter = splitter
        pane = QWidget()
        pane_layout = QVBoxLayout(pane)
        pane_layout.setContentsMargins(0, 0, 0, 0)
        self.address = QLineEdit()
        self.address.setObjectName("paneAddress")
        self.address.setReadOnly(True)
        self.address.setPlaceholderText("The identity provider's sign-in page appears here")
        pane_layout.addWidget(self.address)
        self.view = QWebEngineView()
        self.view.setObjectName("browserPane")
        self.profile = QWebEngineProfile.defaultProfile()
        self.page = ConsolePage(self.profile, self.view)
        self.view.setPage(self.page)
        self.view.setMinimumWidth(360)
        # Queued: loading anything from inside acceptNavigationRequest aborts Chromium.
        self.page.intercepted.connect(self._intercepted, Qt.ConnectionType.QueuedConnection)
        self.page.navigating.connect(self._navigating)
        self.page.loadingChanged.connect(self._loading_changed)
        self.page.urlChanged.connect(lambda url: url.scheme() != "data" and self._show_address(url.toString()))
        pane_layout.addWidget(self.view, 1)
        splitter.addWidget(pane)

        self.tabs = QTabWidget()
        # Rich text, not a table: every step's explanation is read in full, wrapped.
        self.tree = QTextBrowser()
        self.tree.setObjectName("timeline")
        self.tree.setOpenLinks(False)
        timeline_tab = QWidget()
        timeline_layout = QVBoxLayout(timeline_tab)
        timeline_layout.setContentsMargins(4, 4, 4, 4)
        timeline_layout.addWidget(self.tree, 3)
        self.verdict = QLabel("")
        self.verdict.setObjectName("verdict")
        self.verdict.setWordWrap(True)
        self.verdict.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        timeline_layout.addWidget(self.verdict)
        self.user_text = QPlainTextEdit()
        self.user_text.setObjectName("mappedUserText")
        self.user_text.setReadOnly(True)
        self.user_text.setMaximumHeight(150)
        timeline_layout.addWidget(self.user_text, 1)
        self.tabs.addTab(timeline_tab, "Timeline")
        self.claims_text = QPlainTextEdit()
        self.claims_text.setObjectName("tokenClaims")
        self.claims_text.setReadOnly(True)
        self.tabs.addTab(self.claims_text, "Token claims")
        self.tabs.addTab(self._explain_tab(), "Explain")
        self.sandbox = ClaimSandbox(service)
        self.tabs.addTab(self.sandbox, "Claim mapping")
        splitter.addWidget(self.tabs)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([520, 560])
        outer.addWidget(splitter, 1)
        self._update_buttons()

    def _show_address(self, url: str) -> None:
        self.address.setText(url)
        self.address.setCursorPosition(0)  # the host, not the end of a long query

    def _explain_tab(self) -> QWidget:
        tab = QWidget()
        layout = QVBoxLayout(tab)
        row = QHBoxLayout()
        row.addWidget(QLabel("Imaging server"))
        self.imaging_servers = QComboBox()
        self.imaging_servers.setObjectName("imaging_servers")
        row.addWidget(self.imaging_servers, 1)
        layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(QLabel("Request (GET, system level)"))
        self.explain_uri = QLineEdit("/studies")
        self.explain_uri.setObjectName("explain_uri")
        row.addWidget(self.explain_uri, 1)
        layout.addLayout(row)
        self.explain_button = QPushButton(icon("explain"), "What could this user do here?")
        self.explain_button.setObjectName("explain")
        self.explain_button.clicked.connect(lambda: self.explain())
        layout.addWidget(self.explain_button)
        self.explain_text = QPlainTextEdit()
        self.explain_text.setObjectName("explainResult")
        self.explain_text.setReadOnly(True)
        layout.addWidget(self.explain_text, 1)
        return tab

    # ------------------------------------------------------------ panel protocol (main window)

    def activate(self) -> None:
        if not self.loaded:
            self.loaded = True
            self.refresh()

    def shutdown(self) -> None:
        for task in (self.flow_task, self.explain_task):
            if task is not None and not task.done():
                task.cancel()
        self.page.prefix = ""
        self.view.stop()

    def refresh(self) -> asyncio.Task[Any]:
        return self._reload_choices()

    def _reload_choices(self) -> asyncio.Task[Any]:
        if self.choices_task is not None and not self.choices_task.done():
            self.choices_task.cancel()  # latest wins
        self.choices_task = self.service.spawn(self._load_choices())
        return self.choices_task

    def focus_search(self) -> None:
        self.auth_servers.setFocus()

    def new_record(self) -> None:
        self.start(dry_run=False)

    def save(self) -> None:
        self.sandbox.save()

    async def _load_choices(self) -> None:
        wanted = self._wanted if self._wanted is not None else self.auth_servers.currentData()
        try:
            servers = await self.service.list_page("auth-servers", {"limit": 500})
            providers = await self.service.labels("providers", refresh=True)
            imaging = await self.service.labels("imaging-servers", refresh=True)
        except (ApiError, ServerUnreachable) as error:
            show_inline(self.message, "error", f"Could not load the auth servers: {getattr(error, 'message', str(error))}")
            return
        self.auth_servers.clear()
        for record in servers.items:
            default = " — default" if record.is_default else ""
            self.auth_servers.addItem(f"{providers.get(record.provider_id, '?')}: {record.client_id} ({record.token}){default}", record.id)
        index = self.auth_servers.findData(wanted) if wanted is not None else -1
        self.auth_servers.setCurrentIndex(index if index >= 0 else 0)
        self._wanted = None
        current_imaging = self.imaging_servers.currentData()
        self.imaging_servers.clear()
        for record_id, label in imaging.items():
            self.imaging_servers.addItem(label, record_id)
        index = self.imaging_servers.findData(current_imaging)
        if index >= 0:
            self.imaging_servers.setCurrentIndex(index)
        if not servers.items:
            show_inline(self.message, "info", "No auth server yet: set one up with Tools → Set up AWS Cognito….")
        self._update_buttons()

    def select_auth_server(self, auth_server_id: int) -> asyncio.Task[Any]:
        self.loaded = True
        self._wanted = auth_server_id
        return self._reload_choices()

    def _update_buttons(self) -> None:
        running = self.phase in ("authorize", "idp", "finishing")
        has_server = self.auth_servers.count() > 0
        self.start_button.setEnabled(has_server and not running)
        self.dry_run_button.setEnabled(has_server and not running)
        self.explain_button.setEnabled(bool(self.access_token or (self.test and (self.test.report or {}).get("user_id")))
                                       and self.imaging_servers.count() > 0)

    # ------------------------------------------------------------ the timeline

    def _set(self, name: str, status: str, duration_ms: float | None = None, detail: str = "", fix: str = "") -> TimelineStep:
        step = self.timeline.get(name)
        if step is None:
            step = TimelineStep(name, status)
            self.timeline[name] = step
        step.status, step.duration_ms = status, duration_ms
        if detail or status != "waiting":
            step.detail = detail
        step.fix = fix
        self._render()
        return step

    def _render(self) -> None:
        rows = []
        for step in self.timeline.values():
            duration = "" if step.duration_ms is None else f"{step.duration_ms:,.0f} ms" if step.duration_ms >= 10 else f"{step.duration_ms:.1f} ms"
            color = {"ok": "#1b7a2e", "failed": "#b3261e", "skipped": "#6b7585"}.get(step.status, "#7a4b00")
            fix = f"<div style='color:#8c1d18'><b>Fix:</b> {html.escape(step.fix)}</div>" if step.fix else ""
            rows.append(
                f"<tr><td style='color:{color};white-space:nowrap'><b>{html.escape(STATUS_TEXT.get(step.status, step.status))}</b></td>"
                f"<td><b>{html.escape(TITLES.get(step.name, step.name))}</b> <span style='color:#6b7585'>{duration}</span>"
                f"<div>{html.escape(step.detail)}</div>{fix}</td></tr>"
            )
        self.tree.setHtml("<table cellspacing='0' cellpadding='3'>" + "".join(rows) + "</table>")

    def _since(self, mark: str) -> float:
        return round(_now_ms() - self._marks.get(mark, _now_ms()), 1)

    def _fail(self, name: str, detail: str, fix: str = "", code: str = "") -> None:
        self._set(name, "failed", self._since(name), detail, fix or FIXES.get(code, ""))
        self._done("failed", detail)

    def _done(self, outcome: str, verdict: str) -> None:
        self.phase = "done"
        self.finished = True
        self.splitter.setSizes([320, 760])  # the pane is done: room for the timeline
        self.page.prefix = ""
        self.verdict.setText(verdict)
        self._update_buttons()
        self.login_finished.emit(outcome)

    # ------------------------------------------------------------ the flow

    def start(self, *, dry_run: bool) -> asyncio.Task[Any] | None:
        auth_server_id = self.auth_servers.currentData()
        if auth_server_id is None:
            return None
        if self.flow_task is not None and not self.flow_task.done():
            self.flow_task.cancel()
        self.flow_task = self.service.spawn(self._start(int(auth_server_id), dry_run))
        return self.flow_task

    def _reset(self) -> None:
        self.timeline.clear()
        self._render()
        self.started = self.test = None
        self.access_token = None
        self.token_claims, self.idp_claims = {}, {}
        self.explain_result = None
        self.finished = False
        self.verdict.setText("")
        self.user_text.clear()
        self.user_text.hide()
        self.claims_text.clear()
        self.explain_text.clear()
        show_inline(self.message, "info", "")

    async def _start(self, auth_server_id: int, dry_run: bool) -> None:
        self._reset()
        self.splitter.setSizes([540, 540])
        self.phase = "authorize"
        self._update_buttons()
        try:
            self.auth_server = await self.service.get("auth-servers", auth_server_id)
            self.provider = await self.service.get("providers", self.auth_server.provider_id)
            self.urls = await self.service.auth_server_urls(auth_server_id)
        except (ApiError, ServerUnreachable) as error:
            self.phase = "idle"
            show_inline(self.message, "error", f"Could not start: {getattr(error, 'message', str(error))}")
            self._update_buttons()
            return
        provider = self.provider
        port = f":{provider.port}" if provider.port and provider.port != {"https": 443, "http": 80}.get(provider.scheme) else ""
        hosted_ui = f"{provider.scheme}://{provider.hostname}{port}"
        self._idp_origin = _origin(hosted_ui)
        self.sandbox.set_provider(provider)
        self._set("discovery", "running")
        started = _now_ms()
        report = await self.service.probe_provider(provider.issuer or hosted_ui,
                                                   None if _origin(provider.issuer or hosted_ui) == self._idp_origin else hosted_ui)
        failed = [check.message for check in report.checks if check.status == "failed"]
        if failed:
            self._set("discovery", "failed", round(_now_ms() - started, 1), " ".join(failed),
                      "Check the provider's domain, region and user pool id; the pane below tries the sign-in page anyway.")
        else:
            self._set("discovery", "ok", round(_now_ms() - started, 1),
                      f"{report.discovery_url}: issuer matches, {len(report.endpoints)} endpoints, {report.jwks_keys} signing key(s).")
        try:
            self.pkce = new_pair()  # the code sent to the loopback URL is useless without it
            self.started = await self.service.start_test_login(auth_server_id, dry_run=dry_run, code_challenge=self.pkce.challenge)
        except (ApiError, ServerUnreachable) as error:
            self.phase = "idle"
            show_inline(self.message, "error", f"Portico did not start the test login: {getattr(error, 'message', str(error))}")
            self._update_buttons()
            return
        self.page.prefix = self.started.redirect_prefix
        self._marks["authorize_redirect"] = _now_ms()
        self._set("authorize_redirect", "running", detail="Portico's login URL is loading in the pane…")
        self.verdict.setText("Dry run: nothing will be created or changed." if dry_run else "")
        # A fresh sign-in every time: forget the IdP's session cookie from an earlier test.
        store = self.profile.cookieStore()
        store.deleteAllCookies()
        self.view.load(QUrl(self.started.login_url))

    def _navigating(self, url: str) -> None:
        self._last_url = url
        if self.phase == "authorize" and self._idp_origin is not None and _origin(url) == self._idp_origin:
            params = dict(parse_qsl(urlsplit(url).query))
            checks = [name for name, present in (("state", "state" in params), ("nonce", "nonce" in params),
                                                 ("PKCE S256", params.get("code_challenge_method") == "S256")) if present]
            self._set("authorize_redirect", "ok", self._since("authorize_redirect"),
                      f"Portico sent the pane to {urlsplit(url).netloc}{urlsplit(url).path} with {', '.join(checks) or 'no protection parameters'}.")
            self.phase = "idp"
            self._marks["idp_login"] = _now_ms()
            self._set("idp_login", "waiting", detail="Sign in on the identity provider's page in the pane.")

    def _loading_changed(self, info: QWebEngineLoadingInfo) -> None:
        status = info.status()
        if status == QWebEngineLoadingInfo.LoadStatus.LoadSucceededStatus:
            self._load_finished(True, info.url().toString(), "")
        elif status == QWebEngineLoadingInfo.LoadStatus.LoadFailedStatus:
            # An HTTP error status still shows the server's page (the IdP's error page, say).
            shown = info.errorDomain() == QWebEngineLoadingInfo.ErrorDomain.HttpStatusCodeDomain
            self._load_finished(shown, info.url().toString(), "" if shown else info.errorString())

    def _load_finished(self, ok: bool, url: str, error: str) -> None:
        if self.phase not in ("authorize", "idp"):
            return
        url = url or self.page.url().toString() or self._last_url
        if not ok and url:
            self._last_url = url
        at_idp = self._idp_origin is not None and (_origin(self._last_url) == self._idp_origin or _origin(url) == self._idp_origin)
        if not ok:
            if at_idp:
                if self.phase == "authorize":
                    self._set("authorize_redirect", "ok", self._since("authorize_redirect"), "Portico sent the pane to the identity provider.")
                    self._marks["idp_login"] = _now_ms()
                    self.phase = "idp"
                host = urlsplit(self._last_url).netloc
                self._fail("idp_login", f"The sign-in page at {host} did not load: the identity provider cannot be reached from "
                           f"this computer ({error or 'nothing answered'}).",
                           "Check the provider's domain (host and port) and that the identity provider is up and reachable; "
                           "the discovery step above says what the console found.")
            elif self.phase == "authorize":
                self._fail("authorize_redirect", f"Portico's login URL did not load ({self._last_url}: {error}).",
                           "Check that the Portico server is running and that the Site's URL points at it.")
            return
        self.service.spawn(self._inspect_page(url))

    async def _inspect_page(self, url: str) -> None:
        text = await self.page_text()
        if self.phase == "authorize" and self._idp_origin is not None and _origin(url) != self._idp_origin:
            # Portico answered with its own page instead of redirecting: an error page.
            self._fail("authorize_redirect", f"Portico did not send the pane to the identity provider: {text.strip()[:400]}")
            return
        if self.phase != "idp":
            return
        lowered = text.lower()
        query = dict(parse_qsl(urlsplit(url).query))
        mismatch = query.get("error") in ("redirect_mismatch", "invalid_redirect_uri") or (
            "redirect_uri" in lowered and any(word in lowered for word in ("did not match", "invalid_redirect_uri", "redirect_mismatch",
                                                                          "not registered")))
        if mismatch:
            callback = getattr(self.urls, "callback", "Portico's callback URL")
            self._fail("idp_login", "The identity provider refused to send the browser back to Portico: the callback URL is not "
                       f"registered for this app client (its page says: {' '.join(text.split())[:200]}).",
                       f"Register {callback} in the app client's Allowed callback URLs, exactly as shown.")
            return
        if "error" in query and "/error" in urlsplit(url).path:
            self._fail("idp_login", f"The identity provider shows an error page: {query.get('error')} {' '.join(text.split())[:200]}")

    def page_text(self) -> asyncio.Future[str]:
        """The pane's visible text (what a person reads), from its DOM."""
        future: asyncio.Future[str] = asyncio.get_event_loop().create_future()

        def done(value: Any) -> None:
            if not future.done():
                future.set_result(value if isinstance(value, str) else "")

        self.page.runJavaScript("document.body ? document.body.innerText : ''", 0, done)
        return future

    def _intercepted(self, url: str) -> None:
        params = dict(parse_qsl(urlsplit(url).query))
        if self.started is None or params.get("test_login") != self.started.id:
            return
        if self.phase == "authorize":  # the IdP had a session: no page was shown
            self._set("authorize_redirect", "ok", self._since("authorize_redirect"), "Portico sent the pane to the identity provider.")
            self._marks["idp_login"] = _now_ms()
        self._set("idp_login", "ok", self._since("idp_login"), "Signed in; the identity provider sent the pane back to Portico's callback.")
        self.phase = "finishing"
        self.view.setHtml("<html><body style='font-family:sans-serif;color:#3a4352'><p>Back in the console: "
                          "the timeline on the right shows how the login went.</p></body></html>")
        self._show_address(url)
        self.flow_task = self.service.spawn(self._finish(self.started.id, params.get("outcome", ""), params.get("code")))

    async def _finish(self, test_login_id: str, outcome: str, code: str | None) -> None:
        try:
            self.test = test = await self.service.test_login(test_login_id)
        except (ApiError, ServerUnreachable) as error:
            self._done("failed", f"Could not read the test login's timeline: {getattr(error, 'message', str(error))}")
            return
        report: dict[str, Any] = test.report or {}
        error = report.get("error") or {}
        for step in report.get("steps", []):
            name = str(step.get("name"))
            detail = str(step.get("detail") or "") or self._step_summary(name, step.get("data") or {}, report)
            fix = FIXES.get(str(error.get("code")), "") if step.get("status") == "failed" else ""
            if step.get("status") == "failed" and error.get("message") and error.get("message") not in detail:
                detail = f"{detail} {error['message']}".strip()
            self._set(name, str(step.get("status")), float(step.get("duration_ms") or 0), detail, fix)
            for key in ("claims",):
                if isinstance((step.get("data") or {}).get(key), dict):
                    self.idp_claims.update(step["data"][key])
        if error.get("step") == "idp_login":
            self._set("idp_login", "failed", self.timeline["idp_login"].duration_ms, str(error.get("message", "")),
                      FIXES.get(str(error.get("code")), ""))
        summary = self._user_summary(report)
        self.user_text.setPlainText(summary)
        self.user_text.setVisible(bool(summary))
        if self.idp_claims:
            self.sandbox.set_claims(self.idp_claims, f"Claims of test login {test_login_id} (ID token merged with userinfo).")
        if outcome != "ok":
            code_text = f" [{error.get('code')}]" if error.get("code") else ""
            self._set("portico_token", "skipped", detail="The login failed: no token.")
            self._done("failed", f"The login failed at “{TITLES.get(str(error.get('step')), error.get('step'))}”{code_text}: "
                       f"{error.get('message', 'see the timeline')}")
            return
        if report.get("dry_run") or not code:
            self._set("portico_token", "skipped", detail="Dry run: no session and no token were created.")
            self._set("introspection", "skipped", detail="Dry run: nothing to introspect.")
            self._done("ok", f"Dry run finished: this login would {'create' if report.get('created') else 'link'} the user "
                       f"“{report.get('username')}”. Nothing was created or changed.")
            return
        await self._token_and_introspection(code)

    async def _token_and_introspection(self, code: str) -> None:
        assert self.started is not None
        started = _now_ms()
        try:
            grant = await self.service.exchange_login_code(code, self.started.redirect_prefix, self.pkce.verifier)
            decoded = await self.service.decode_portico_token(str(grant["access_token"]))
        except (ApiError, ServerUnreachable, KeyError) as error:
            self._set("portico_token", "failed", round(_now_ms() - started, 1), f"The one-time code was refused: {getattr(error, 'message', str(error))}")
            self._done("failed", "Portico did not issue a token for the login.")
            return
        self.access_token = str(grant["access_token"])
        self.token_claims = dict(decoded.claims)
        verified = "signature verified with Portico's JWKS" if decoded.verified else f"signature NOT verified: {decoded.problem}"
        self._set("portico_token", "ok" if decoded.verified else "failed", round(_now_ms() - started, 1),
                  f"Access token for “{self.token_claims.get('username')}” ({decoded.header.get('alg')}, kid {decoded.header.get('kid')}), "
                  f"valid {grant.get('expires_in')} s; {verified}.")
        self.claims_text.setPlainText(json.dumps({"header": decoded.header, "claims": self.token_claims}, indent=2, ensure_ascii=False))
        started = _now_ms()
        try:
            answer = await self.service.introspect(self.access_token)
        except (ApiError, ServerUnreachable) as error:
            self._set("introspection", "failed", round(_now_ms() - started, 1), getattr(error, "message", str(error)))
            self._done("failed", "Introspection failed.")
            return
        active = bool(answer.get("active"))
        self._set("introspection", "ok" if active else "failed", round(_now_ms() - started, 1),
                  f"active: {str(active).lower()}, username {answer.get('username')}, session {answer.get('sid')}"
                  if active else "Portico says the token it just issued is not active.")
        self.claims_text.appendPlainText("\nIntrospection (RFC 7662):\n" + json.dumps(answer, indent=2, ensure_ascii=False))
        self._done("ok" if active else "failed", f"The login works: “{self.token_claims.get('username')}” signed in and holds a Portico token.")

    @staticmethod
    def _step_summary(name: str, data: dict[str, Any], report: dict[str, Any]) -> str:
        if name == "callback":
            return "state matched; the code came back for this browser's login (PKCE verifier kept for the exchange)."
        if name == "code_exchange":
            return f"tokens received ({data.get('token_type')}; ID token: {'yes' if data.get('id_token') else 'no'})."
        if name == "id_token":
            claims = data.get("claims") or {}
            return f"signature, issuer, audience, times and nonce checked; subject {claims.get('sub')}."
        if name == "userinfo":
            return f"{len(data.get('claims') or {})} claims read."
        if name == "claim_mapping":
            return f"username {data.get('username')}, groups {', '.join(data.get('groups') or []) or '(none)'}."
        if name == "user":
            verb = "would create" if report.get("dry_run") and report.get("created") else "created" if report.get("created") else "linked"
            return f"{verb} user “{report.get('username')}”."
        return ""

    @staticmethod
    def _user_summary(report: dict[str, Any]) -> str:
        mapped = report.get("mapped") or {}
        if not mapped:
            return ""
        dry = report.get("dry_run")
        action = ("would be created" if report.get("created") else "would be linked") if dry else (
            "was created" if report.get("created") else "was linked")
        lines = [
            f"User “{report.get('username') or mapped.get('username')}” {action}" + (" (dry run: nothing changed)" if dry else "")
            + (f", id {report.get('user_id')}" if report.get("user_id") else ""),
            f"Email: {mapped.get('email') or '(none)'}",
            f"Name: {(str(mapped.get('first_name') or '') + ' ' + str(mapped.get('last_name') or '')).strip() or '(none)'}",
            f"Groups from the IdP: {', '.join(mapped.get('groups') or []) or '(none)'}",
        ]
        changes = report.get("group_changes") or {}
        if any(changes.values()):
            lines.append("Group changes: " + "; ".join(f"{kind} {', '.join(names)}" for kind, names in changes.items() if names))
        lines += [f"⚠ {problem.get('field')}: {problem.get('message')}" for problem in mapped.get("problems") or []]
        return "\n".join(lines)

    # ------------------------------------------------------------ explain

    def explain(self) -> asyncio.Task[Any] | None:
        imaging_server_id = self.imaging_servers.currentData()
        if imaging_server_id is None:
            return None
        self.explain_task = self.service.spawn(self._explain(int(imaging_server_id)))
        return self.explain_task

    async def _explain(self, imaging_server_id: int) -> None:
        body: dict[str, Any] = {"imaging_server_id": imaging_server_id, "method": "get", "level": "system",
                                "uri": self.explain_uri.text().strip() or "/studies"}
        if self.access_token:
            body["token"] = self.access_token
        elif self.test is not None and (self.test.report or {}).get("user_id"):
            body["user_id"] = self.test.report["user_id"]
        else:
            return
        try:
            result = await self.service.explain(body)
        except (ApiError, ServerUnreachable) as error:
            self.explain_text.setPlainText(f"The explain API refused the question: {getattr(error, 'message', str(error))}")
            return
        self.explain_result = result
        verdict = "GRANTED" if result.granted else "DENIED"
        self.explain_text.setPlainText(
            f"{verdict} for {result.subject or '(no valid subject)'}: GET {body['uri']} on “{self.imaging_servers.currentText()}”"
            f" (Orthanc may cache this for {result.validity} s)\n\n" + "\n".join(f"• {line}" for line in result.trace)
        )
