"""The console's QApplication, qasync loop and error hook."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import qasync
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

ORGANIZATION = "Portico"
APPLICATION = "Console"


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="portico", description="The Portico desktop console (with no command).")
    parser.add_argument("--data-dir", type=Path, help="the embedded server's data folder (default: the user's data directory)")
    parser.add_argument("--theme", choices=["light", "dark"], help="colour theme (default: the last one chosen)")
    parser.add_argument("--quit-when-ready", action="store_true", help=argparse.SUPPRESS)  # start-up benchmark
    return parser.parse_args(list(argv))


def install_excepthook(sink: Callable[[BaseException], None]) -> Callable[..., Any]:
    """Route exceptions nobody caught (qasync slots send theirs here) to ``sink``.

    qasync's ``asyncSlot`` passes a slot's exception to ``sys.excepthook`` and does not
    treat ``CancelledError`` as normal (qasync issue #126): cancellations are ignored here,
    everything else is shown instead of being lost on a console nobody reads.
    """
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, trace: TracebackType | None) -> None:
        if isinstance(value, asyncio.CancelledError):
            return
        traceback.print_exception(kind, value, trace)
        try:
            sink(value)
        except Exception:  # the sink itself must never take the console down
            previous(kind, value, trace)

    sys.excepthook = hook
    return previous


def run(argv: Sequence[str]) -> int:
    started = time.perf_counter()
    args = parse_arguments(argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)

    # The embedded server first: its start (a second Python importing the server) is most
    # of the wait, so it boots while this process builds its window.
    from app.models.service import ConsoleService

    spawned = ConsoleService.prepare_embedded(args.data_dir)
    loop.run_until_complete(spawned.spawn())

    from app.views.main_window import MainWindow
    from app.views.theme import apply_theme, icon

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app.setWindowIcon(icon("portico"))
    settings = QSettings()
    apply_theme(app, args.theme or str(settings.value("theme", "light")))
    service = ConsoleService()
    install_excepthook(service.report)
    window = MainWindow(service, settings=settings)
    window.show()
    # Everything made so far lives as long as the console: keep it out of the collector's
    # full passes, which otherwise stall the GUI thread for tens of ms while lists load
    # (bench/console_search.py measures the longest stall).
    gc.freeze()
    closed = asyncio.Event()
    app.aboutToQuit.connect(closed.set)

    async def start() -> None:
        await window.start_embedded(args.data_dir, spawned=spawned)
        if args.quit_when_ready:
            # One line for bench/console_start.py: window shown and embedded server answering.
            await service.user_count()
            print(f"console ready in {time.perf_counter() - started:.3f} s", flush=True)
            window.close()

    service.spawn(start())
    with loop:
        loop.run_until_complete(closed.wait())
    return 0
