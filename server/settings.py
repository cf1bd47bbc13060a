"""Configuration of one Portico server process.

Read once, at start, from command-line flags and ``PORTICO_*`` environment variables,
and then passed explicitly: no module reads the environment at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import platformdirs

DATABASE_FILENAME = "portico.sqlite3"
KEY_FILENAME = "secret.key"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("portico", appauthor=False))


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None  # None: the SQLite file in data_dir
    # Base64 Fernet key(s), comma-separated, newest first. None: the key file beside the database.
    secret_key: str | None = None
    key_file: Path | None = None
    admin_session_seconds: int = 12 * 3600
    access_token_seconds: int = 15 * 60
    login_limit_per_user: str = "10/15 minutes"
    login_limit_per_address: str = "50/15 minutes"
    max_body_bytes: int = 1_048_576
    # Single sign-on: how long Portico waits for the IdP, how long each step may take.
    idp_timeout_seconds: float = 10.0
    sso_session_seconds: int = 12 * 3600
    refresh_token_seconds: int = 12 * 3600
    pending_login_seconds: int = 600
    login_code_seconds: int = 60
    migrate_on_start: bool = True

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / DATABASE_FILENAME}"

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.data_dir / KEY_FILENAME

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        settings = cls()
        values: dict[str, object] = {}
        if env.get("PORTICO_DATA_DIR"):
            values["data_dir"] = Path(env["PORTICO_DATA_DIR"])
        if env.get("PORTICO_DATABASE_URL"):
            values["database_url"] = env["PORTICO_DATABASE_URL"]
        if env.get("PORTICO_SECRET_KEY"):
            values["secret_key"] = env["PORTICO_SECRET_KEY"]
        if env.get("PORTICO_KEY_FILE"):
            values["key_file"] = Path(env["PORTICO_KEY_FILE"])
        if env.get("PORTICO_LOGIN_LIMIT_PER_USER"):
            values["login_limit_per_user"] = env["PORTICO_LOGIN_LIMIT_PER_USER"]
        if env.get("PORTICO_LOGIN_LIMIT_PER_ADDRESS"):
            values["login_limit_per_address"] = env["PORTICO_LOGIN_LIMIT_PER_ADDRESS"]
        if env.get("PORTICO_IDP_TIMEOUT_SECONDS"):
            values["idp_timeout_seconds"] = float(env["PORTICO_IDP_TIMEOUT_SECONDS"])
        values.update({key: value for key, value in overrides.items() if value is not None})
        return replace(settings, **values)  # type: ignore[arg-type]
