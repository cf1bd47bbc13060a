"""``portico`` with no command: the desktop console (Qt lives in app.views).

Importing this module imports Qt: where PySide6 is missing the ImportError surfaces here,
and the launcher says what to install.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.views.application import run


def run_console(argv: Sequence[str]) -> int:
    return run(argv)
