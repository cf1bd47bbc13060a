"""Sign in to a remote Portico with single sign-on, in a small browser pane.

The pane opens the server's SSO login (``/auth/openid/[{auth server}/]``) with a PKCE S256
challenge and the console's loopback redirect URL, which Portico always allows with PKCE.
The administrator signs in on the identity provider's own page; Portico sends the pane back
to the loopback URL with a one-time code. The pane never loads that URL
(``ConsolePage.acceptNavigationRequest`` refuses it); the console exchanges the code and
its verifier for a Portico access token, then that token for an ordinary admin session
(``POST /api/v1/auth/sso-exchange``), and manages the server with it.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from PySide6.QtCore import QUrl, Qt
from PySide6.QtWebEngineCore import QWebEngineLoadingInfo, QWebEngineProfile
from PySide6.QtWebEngineWidgets import QWebEngineView
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.models.service import ApiError, ConsoleService, ServerUnreachable
from app.oidc.pkce import new_pair
from app.views.test_login_panel import ConsolePage

SIGN_IN_REDIRECT = "http://127.0.0.1/portico-console/sign-in"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or {"https": 443, "http": 80}.get(parts.scheme)


class SsoSignInDialog(QDialog):
    """Accepted once the console is connected to ``url`` with the signed-in user's session."""

    def __init__(self, service: ConsoleService, url: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.service = service
        self.url = url.strip().rstrip("/")
        self.pkce = new_pair()
        self.phase = "idle"  # idle | signing-in | exchanging | failed | done
        self.task: asyncio.Task[Any] | None = None
        self.setWindowTitle("Sign in with single sign-on")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        layout = QVBoxLayout(self)
        intro = QLabel(f"Sign in to {self.url} at its identity provider, in the pane below.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        row = QHBoxLayout()
        row.addWidget(QLabel("Auth server"))
        self.auth_server = QLineEdit()
        self.auth_server.setObjectName("ssoAuthServer")
        self.auth_server.setPlaceholderText("the server's default (or another auth server's token)")
        row.addWidget(self.auth_server, 1)
        self.restart_button = QPushButton("Sign in again")
        self.restart_button.clicked.connect(lambda: self.start())
        row.addWidget(self.restart_button)
        layout.addLayout(row)
        self.status = QLabel("")
        self.status.setObjectName("ssoStatus")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.error = QLabel()
        self.error.setObjectName("fieldError")
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.hide()
        layout.addWidget(self.error)
        self.view = QWebEngineView()
        self.view.setObjectName("browserPane")
        self.page = ConsolePage(QWebEngineProfile.defaultProfile(), self.view)
        self.page.prefix = SIGN_IN_REDIRECT
        self.view.setPage(self.page)
        # Queued: loading anything from inside acceptNavigationRequest aborts Chromium.
        self.page.intercepted.connect(self._intercepted, Qt.ConnectionType.QueuedConnection)
        self.page.loadingChanged.connect(self._loading_changed)
        layout.addWidget(self.view, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.finished.connect(self._stop)
        self.resize(720, 680)
        self.start()

    def login_url(self) -> str:
        token = self.auth_server.text().strip()
        path = f"/auth/openid/{quote(token, safe='')}/" if token else "/auth/openid/"
        query = urlencode({"redirect_uri": SIGN_IN_REDIRECT, "code_challenge": self.pkce.challenge, "code_challenge_method": "S256"})
        return f"{self.url}{path}?{query}"

    def start(self) -> None:
        if self.task is not None and not self.task.done():
            return
        self.pkce = new_pair()  # a fresh verifier per attempt
        self.show_error("")
        self.phase = "signing-in"
        self.status.setText("Sign in at the identity provider.")
        # A fresh sign-in every time (as the test-login panel does): the administrator picks the
        # account, instead of the pane reusing whichever IdP session it kept.
        self.page.profile().cookieStore().deleteAllCookies()
        self.page.load(QUrl(self.login_url()))

    def show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.setVisible(bool(message))

    def _fail(self, message: str) -> None:
        self.phase = "failed"
        self.status.setText("The sign-in did not succeed: press “Sign in again” to retry.")
        self.show_error(message)

    def _stop(self, *_: Any) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.page.prefix = ""
        self.view.stop()

    def page_text(self) -> asyncio.Future[str]:
        """The pane's visible text, from its DOM."""
        future: asyncio.Future[str] = asyncio.get_event_loop().create_future()

        def done(value: Any) -> None:
            if not future.done():
                future.set_result(value if isinstance(value, str) else "")

        self.page.runJavaScript("document.body ? document.body.innerText : ''", 0, done)
        return future

    def _loading_changed(self, info: QWebEngineLoadingInfo) -> None:
        if info.status() != QWebEngineLoadingInfo.LoadStatus.LoadFailedStatus or self.phase != "signing-in":
            return
        url = info.url().toString()
        if url.startswith(SIGN_IN_REDIRECT):
            return  # the refused navigation: _intercepted handles it
        if info.errorDomain() == QWebEngineLoadingInfo.ErrorDomain.HttpStatusCodeDomain:
            if _origin(url) != _origin(self.url):
                return  # the identity provider's own page (its error is shown in the pane)
            # Portico's error page: say what it says.
            self.phase = "failed"
            status = info.errorCode()

            def shown(text: Any) -> None:
                words = " ".join(str(text or "").split())[:400]
                self._fail(f"Portico refused the sign-in (HTTP {status}): {words or info.errorString()}")

            self.page.runJavaScript("document.body ? document.body.innerText : ''", 0, shown)
            return
        if info.errorDomain() != QWebEngineLoadingInfo.ErrorDomain.NoErrorDomain:
            host = urlsplit(url).netloc or self.url
            self._fail(f"The page at {host} did not load: {info.errorString() or 'nothing answered'}.")

    def _intercepted(self, url: str) -> None:
        if self.phase != "signing-in":
            return
        params = dict(parse_qsl(urlsplit(url).query))
        self.view.setHtml("<html><body style='font-family:sans-serif;color:#3a4352'><p>Back in the console.</p></body></html>")
        code = params.get("code")
        if not code:
            reason = params.get("error_description") or params.get("error") or "no one-time code came back"
            self._fail(f"The sign-in did not finish: {reason}")
            return
        self.phase = "exchanging"
        self.status.setText(f"Signed in; opening an admin session at {self.url}…")
        self.task = self.service.spawn(self._finish(code))

    async def _finish(self, code: str) -> None:
        try:
            await self.service.connect_sso(self.url, code, SIGN_IN_REDIRECT, self.pkce.verifier)
        except (ApiError, ServerUnreachable) as error:
            self._fail(getattr(error, "message", None) or str(error))
            return
        self.phase = "done"
        self.accept()
