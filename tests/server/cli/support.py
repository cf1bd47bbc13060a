"""Small helpers shared by the command-line tests (the fixtures themselves are in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from server.settings import DATABASE_FILENAME, KEY_FILENAME

def new_fernet_key() -> str:
    return Fernet.generate_key().decode()


def sqlite_path(data_dir: Path) -> Path:
    return data_dir / DATABASE_FILENAME


def key_path(data_dir: Path) -> Path:
    return data_dir / KEY_FILENAME


@contextlib.contextmanager
def sqlite_connection(data_dir: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection in autocommit mode, closed afterwards (as an attacker would open the file)."""
    connection = sqlite3.connect(sqlite_path(data_dir), isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Assert that a command succeeded, showing its output when it did not."""
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def check_results(stdout: str) -> dict[str, tuple[bool, str]]:
    """``portico check`` output as ``name -> (ok, message)``."""
    results: dict[str, tuple[bool, str]] = {}
    for line in stdout.splitlines():
        match = re.match(r"^\[(ok|FAIL)\] ([^:]+): (.*)$", line)
        if match:
            results[match.group(2)] = (match.group(1) == "ok", match.group(3))
    return results


def without_exported_at(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key != "exported_at"}


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document, indent=2))
    return path
