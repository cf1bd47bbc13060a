"""The `portico` entry point works where PySide6 is not installed (the server's promise)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Make every Qt import fail, as on a server without the console extra.
_WITHOUT_QT = textwrap.dedent(
    """
    import sys
    for name in ("PySide6", "qasync"):
        sys.modules[name] = None
    from app.launcher import main
    raise SystemExit(main(sys.argv[1:]))
    """
)


def _portico_without_qt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_QT, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_server_commands_run_without_pyside6() -> None:
    result = _portico_without_qt("serve", "--help")
    assert result.returncode == 0, result.stderr
    assert "--database-url" in result.stdout


def test_console_without_pyside6_says_what_to_install() -> None:
    result = _portico_without_qt()
    assert result.returncode == 2
    assert "portico[console]" in result.stderr
    assert "portico serve" in result.stderr
