"""``portico`` with no command: the desktop console (Qt lives in app.views)."""

from __future__ import annotations

from collections.abc import Sequence


def run_console(argv: Sequence[str]) -> int:
    from app.views.application import run

    return run(argv)
