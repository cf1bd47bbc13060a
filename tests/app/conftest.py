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
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + READY_TIMEOUT
    buffer = b""
    while b"\n" not in buffer:
        if not selector.select(max(0.0, deadline - time.monotonic())):
            process.kill()
            raise RuntimeError("the embedded server did not become ready")
        chunk = os.read(process.stdout.fileno(), 4096)
        if not chunk:
            raise RuntimeError("the embedded server exited before it was ready")
        buffer += chunk
    selector.close()
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
