"""Console tests: offscreen Qt on a qasync loop, against real embedded Portico servers.

Recipe of shared/ENVIRONMENT.md: a per-test ``qasync.QEventLoop(qapp)`` set as asyncio's
running loop; tests stay synchronous and every ``qtbot.wait*`` drives the async tasks. No
server ever runs in this process (a thread here could collect Qt objects off the GUI
thread): each is a child process, ``portico serve --embedded``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_LOGGING_RULES", "qt.qpa.*=false")
# QtWebEngine (the test-login panel's browser pane) must be loaded before the QApplication
# exists; as root Chromium needs its sandbox off, and no GPU is wanted offscreen.
os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
os.environ.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--disable-gpu")
import PySide6.QtWebEngineWidgets  # noqa: E402,F401

T = TypeVar("T")
READY_TIMEOUT = 60.0
ADMIN = "admin"
ADMIN_PASSWORD = "correct horse battery staple"


@dataclass
class EmbeddedChild:
    """One `portico serve --embedded` started the way the console starts it."""

    process: subprocess.Popen[bytes]
    url: str
    token: str
    data_dir: Path

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}/api/v1", headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def stop(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            code = self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


def start_embedded_child(data_dir: Path) -> EmbeddedChild:
    process = subprocess.Popen(
        [sys.executable, "-m", "app.launcher", "serve", "--embedded", "--port", "0", "--log-level", "warning", "--data-dir", str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={key: value for key, value in os.environ.items() if not key.startswith("PORTICO_")},
    )
    assert process.stdout is not None and process.stdin is not None
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + READY_TIMEOUT
        while b"\n" not in buffer:
            chunk = b""
            if selector.select(max(0.0, deadline - time.monotonic())):
                chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:  # timed out, or the child exited
                process.kill()
                process.wait(10)
                process.stdin.close()
                process.stdout.close()
                raise RuntimeError("the embedded server did not become ready (run `portico serve --embedded` to see why)")
            buffer += chunk
    ready = json.loads(buffer.split(b"\n", 1)[0])
    return EmbeddedChild(process, ready["url"], ready["console_token"], data_dir)


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedChild]:
    """One embedded server for the panel tests (they use unique names), with a superuser
    so that the first-start question does not come up."""
    child = start_embedded_child(tmp_path_factory.mktemp("shared-embedded"))
    with child.api() as api:
        created = api.post("/users", json={"username": ADMIN, "password": ADMIN_PASSWORD, "is_superuser": True, "is_staff": True})
        assert created.status_code == 201, created.text
    yield child
    assert child.stop() == 0


@pytest.fixture
def api(shared_server: EmbeddedChild) -> Iterator[httpx.Client]:
    """The admin API behind the console's back (another administrator, a script)."""
    with shared_server.api() as client:
        yield client


@pytest.fixture
def loop(qapp: Any) -> Iterator[asyncio.AbstractEventLoop]:
    import qasync

    event_loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(event_loop)
    asyncio.events._set_running_loop(event_loop)
    yield event_loop
    pending = [task for task in asyncio.all_tasks(event_loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        qapp.processEvents()
    asyncio.events._set_running_loop(None)
    asyncio.set_event_loop(None)
    event_loop.close()
    gc.collect()  # on the GUI thread, while Qt objects may still be destroyed safely


@pytest.fixture(autouse=True)
def _no_leftover_children() -> Iterator[None]:
    """A test must not leave a server process behind."""
    before = _children()
    yield
    deadline = time.monotonic() + 20
    while (_children() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _children() - before
    assert not left, f"child processes left behind: {left}"


def _children() -> set[int]:
    path = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    if not path.exists():
        return set()
    found = set()
    for pid in path.read_text().split():
        stat = Path(f"/proc/{pid}/stat")
        try:
            if stat.read_text().split(")")[-1].split()[0] != "Z":
                found.add(int(pid))
        except OSError:
            continue
    return found


class Runner:
    """Drive coroutines and tasks of the qasync loop from a synchronous test."""

    def __init__(self, qtbot: Any, event_loop: asyncio.AbstractEventLoop) -> None:
        self.qtbot = qtbot
        self.loop = event_loop

    def __call__(self, awaitable: Awaitable[T], timeout: float = 30.0) -> T:
        task = asyncio.ensure_future(awaitable)
        self.qtbot.waitUntil(task.done, timeout=int(timeout * 1000))
        return task.result()

    def until(self, condition: Any, timeout: float = 20.0) -> None:
        self.qtbot.waitUntil(condition, timeout=int(timeout * 1000))


@pytest.fixture
def run(qtbot: Any, loop: asyncio.AbstractEventLoop) -> Runner:
    return Runner(qtbot, loop)


def screenshot(widget: Any, tmp_path: Path, name: str) -> Path:
    widget.repaint()
    path = tmp_path / f"{name}.png"
    assert widget.grab().save(str(path)), f"could not save {path}"
    return path


@pytest.fixture
def make_window(qtbot: Any, loop: asyncio.AbstractEventLoop, run: Runner, tmp_path: Path) -> Iterator[Any]:
    """A factory of main windows (light theme, settings in tmp_path); each is closed, and its
    service shut down, at the end of the test."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.models.service import ConsoleService
    from app.settings import ConsoleSettings
    from app.views.main_window import MainWindow
    from app.views.theme import apply_theme

    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_theme(app, "light")
    made: list[Any] = []

    def make(name: str = "console") -> Any:
        settings = QSettings(str(tmp_path / f"{name}.ini"), QSettings.Format.IniFormat)
        service = ConsoleService(ConsoleSettings(tmp_path / f"{name}-config"))
        window = MainWindow(service, settings=settings)
        # Not qtbot.addWidget: pytest-qt closes such widgets before fixtures are torn down,
        # and closing this window is asynchronous (it stops its server first).
        window.show()
        made.append(window)
        return window

    yield make
    for window in made:
        if not window.closed:
            window.force_close = True  # a test may end with a form half filled
            window.close()
            run.until(lambda w=window: w.closed, timeout=30)
        window.deleteLater()
    qtbot.wait(10)


@pytest.fixture
def window(make_window: Any, run: Runner, shared_server: EmbeddedChild) -> Any:
    """A main window attached to the shared embedded server."""
    main = make_window()
    run(main.attach(shared_server.url, shared_server.token))
    run(main.first_start)
    return main


# ---------------------------------------------------------------- single sign-on (Cognito wizard, test logins)

COGNITO_CLAIMS_USERS = (
    ("alice", "alice-password", {"cognito:username": "alice", "email": "alice@hospital.test", "email_verified": True,
                                 "given_name": "Alice", "family_name": "Archer", "cognito:groups": ["radiology", "admins"]}),
)


@pytest.fixture(scope="session")
def sso_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedChild]:
    """An embedded server of its own for the single sign-on tests (they change its Site)."""
    child = start_embedded_child(tmp_path_factory.mktemp("sso-embedded"))
    with child.api() as api:
        created = api.post("/users", json={"username": ADMIN, "password": ADMIN_PASSWORD, "is_superuser": True, "is_staff": True})
        assert created.status_code == 201, created.text
    yield child
    assert child.stop() == 0


@pytest.fixture(scope="session")
def console_idp() -> Iterator[Any]:
    """The test identity provider (oidc-provider with Cognito's paths) on loopback."""
    from tests.support.idp import IdPUser, TestIdP

    idp = TestIdP([], [IdPUser(name, password, claims) for name, password, claims in COGNITO_CLAIMS_USERS])
    idp.start()
    yield idp
    assert idp.stop() == 0


@pytest.fixture
def sso_window(web_engine: None, make_window: Any, run: Runner, sso_server: EmbeddedChild) -> Any:
    """A main window attached to the single sign-on tests' embedded server."""
    main = make_window("sso-console")
    run(main.attach(sso_server.url, sso_server.token))
    run(main.first_start)
    return main


def point_site_at(child: EmbeddedChild, url: str | None = None) -> None:
    with child.api() as api:
        site = api.get("/site").json()
        response = api.patch("/site", json={"version": site["version"], "production_url": url or child.url, "environment": "production"})
        assert response.status_code == 200, response.text


def pane_text(run: Runner, panel: Any) -> str:
    """What the browser pane shows, read from its DOM."""
    return str(run(panel.page_text(), timeout=10))


def wait_pane_text(run: Runner, panel: Any, needle: str, timeout: float = 20.0) -> str:
    """Wait until the pane's page text contains ``needle`` (a blank page also 'loads')."""
    seen = {"text": ""}

    def found() -> bool:
        seen["text"] = pane_text(run, panel)
        return needle.lower() in seen["text"].lower()

    deadline = time.monotonic() + timeout
    while not found():
        if time.monotonic() > deadline:
            raise AssertionError(f"the pane never showed {needle!r}; it shows {seen['text'][:500]!r} at {panel.page.url().toString()}")
        run.qtbot.wait(150)
    return seen["text"]


def sign_in_at_idp(run: Runner, panel: Any, username: str, password: str, *, cancel: bool = False) -> None:
    """Fill the IdP's real form inside the pane and press its button, as a person would."""
    wait_pane_text(run, panel, "Sign in")
    script = (
        f"document.getElementById('username').value = {json.dumps(username)};"
        f"document.getElementById('password').value = {json.dumps(password)};"
        f"document.getElementById({json.dumps('cancel' if cancel else 'submit')}).click(); 'clicked'"
    )
    clicked: dict[str, Any] = {}
    panel.page.runJavaScript(script, 0, lambda value: clicked.setdefault("value", value))
    run.until(lambda: "value" in clicked, timeout=10)


@pytest.fixture(scope="session")
def web_engine(qapp: Any) -> Iterator[None]:
    """Chromium's helper processes (zygotes) start with the first web view and live as long
    as the application: start them before any test counts its child processes."""
    from PySide6.QtWebEngineWidgets import QWebEngineView

    view = QWebEngineView()
    loaded: list[bool] = []
    view.loadFinished.connect(loaded.append)
    view.setHtml("<html><body>warm-up</body></html>")
    deadline = time.monotonic() + 30
    while not loaded and time.monotonic() < deadline:
        qapp.processEvents()
        time.sleep(0.01)
    yield
    # Every page must be gone before the default profile is released at exit, or Chromium
    # crashes the process on its way out.
    import shiboken6
    from PySide6.QtCore import QCoreApplication, QEvent
    from PySide6.QtWebEngineCore import QWebEnginePage

    shiboken6.delete(view)
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()
    for page in [obj for obj in gc.get_objects() if isinstance(obj, QWebEnginePage)]:
        if shiboken6.isValid(page):
            shiboken6.delete(page)
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
