"""The ``portico`` entry point: a command runs the server's CLI, no command opens the console.

No Qt is imported here, so every server command works where PySide6 is not installed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from server.cli import COMMANDS
from server.cli import main as server_main

EXIT_USAGE = 2


def open_console(argv: Sequence[str]) -> int:
    try:
        from app.console import run_console
    except ImportError as error:
        print(
            f"The desktop console cannot start here ({error}).\n"
            "Install it with `pip install 'portico[console]'` (or `make run`), "
            "or run the server alone with `portico serve`.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return run_console(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and (args[0] in COMMANDS or args[0] in ("-h", "--help")):
        return server_main(args)
    return open_console(args)


if __name__ == "__main__":
    raise SystemExit(main())
