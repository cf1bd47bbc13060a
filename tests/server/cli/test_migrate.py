"""``portico migrate``: from nothing to the head revision, then nothing more to do; SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from server.storage.migrate import head_revision
from tests.conftest import portico_env, run_cli
from tests.server.cli.support import ok, sqlite_connection, sqlite_path


def test_migrate_an_empty_sqlite_file_then_again(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    sqlite_path(data_dir).touch()  # an existing, empty (0-byte) database file
    env = portico_env(tmp_path / "not-used")  # the --data-dir flag wins over PORTICO_DATA_DIR
    first = ok(run_cli("migrate", "--data-dir", str(data_dir), env=env))
    assert first.stdout.strip() == f"schema empty -> {head_revision()}"
    with sqlite_connection(data_dir) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(head_revision(),)]
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"users", "groups", "audit_events", "access_rules"} <= tables
    assert not (tmp_path / "not-used").exists()

    second = ok(run_cli("migrate", "--data-dir", str(data_dir), env=env))
    assert second.stdout.strip() == f"schema already at {head_revision()}"


@pytest.mark.postgres
def test_migrate_postgresql_then_again(tmp_path: Path, fresh_postgres_database: Callable[[], str]) -> None:
    database_url = fresh_postgres_database()
    env = portico_env(tmp_path)
    first = ok(run_cli("migrate", "--database-url", database_url, env=env))
    assert first.stdout.strip() == f"schema empty -> {head_revision()}"
    second = ok(run_cli("migrate", env=portico_env(tmp_path, database_url)))  # PORTICO_DATABASE_URL does the same
    assert second.stdout.strip() == f"schema already at {head_revision()}"
    # Nothing went to the SQLite default beside it.
    assert not sqlite_path(tmp_path).exists()
