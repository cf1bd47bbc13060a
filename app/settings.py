"""What the console remembers between runs that is not a window's geometry (no Qt here).

Recent remote connections: URL and username only, in a small JSON file in the user's
config folder. Passwords are never written there; where the ``keyring`` package is
installed (and a keyring backend works) a password may be kept in the OS keyring instead.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import platformdirs

MAX_RECENT = 10
KEYRING_SERVICE = "portico-console"


def config_dir() -> Path:
    override = os.environ.get("PORTICO_CONSOLE_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir("portico", appauthor=False))


@dataclass(frozen=True)
class RecentConnection:
    url: str
    username: str


class ConsoleSettings:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or config_dir()

    @property
    def path(self) -> Path:
        return self.directory / "console.json"

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=2))
        temporary.replace(self.path)

    def recent_connections(self) -> list[RecentConnection]:
        recent: list[RecentConnection] = []
        for item in self._load().get("recent", []):
            if isinstance(item, dict) and isinstance(item.get("url"), str) and isinstance(item.get("username"), str):
                recent.append(RecentConnection(item["url"], item["username"]))
        return recent

    def remember_connection(self, url: str, username: str) -> None:
        data = self._load()
        entry = RecentConnection(url.rstrip("/"), username)
        recent = [entry] + [item for item in self.recent_connections() if item != entry]
        data["recent"] = [asdict(item) for item in recent[:MAX_RECENT]]
        self._save(data)


def _keyring() -> Any:
    try:
        import keyring  # optional: not a dependency
    except ImportError:
        return None
    return keyring


def keyring_available() -> bool:
    return _keyring() is not None


def stored_password(url: str, username: str) -> str | None:
    keyring = _keyring()
    if keyring is None:
        return None
    try:
        value = keyring.get_password(KEYRING_SERVICE, f"{username}@{url.rstrip('/')}")
    except Exception:  # any backend failure: behave as if nothing were stored
        return None
    return value if isinstance(value, str) else None


def store_password(url: str, username: str, password: str) -> bool:
    keyring = _keyring()
    if keyring is None:
        return False
    with contextlib.suppress(Exception):
        keyring.set_password(KEYRING_SERVICE, f"{username}@{url.rstrip('/')}", password)
        return True
    return False
