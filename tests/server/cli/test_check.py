"""``portico check``: a healthy installation passes; each broken piece is named, with exit 1.

The audit log is append-only in the database itself (triggers); the tests first prove that the
trigger refuses the change, then do what an attacker with access to the database file would do
(drop the trigger, then edit or delete an event) and expect the hash chain to give it away.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.conftest import portico_env, run_cli
from tests.server.cli.support import check_results, key_path, new_fernet_key, ok, sqlite_connection, write_json

PASSWORD = "a long enough password"
ALL_CHECKS_SQLITE = {"database", "sqlite journal", "sqlite integrity", "schema", "encryption key", "superuser", "audit chain"}
ALL_CHECKS_POSTGRES = {"database", "schema", "encryption key", "superuser", "audit chain"}
# Five audit events: the two signing keys made on first start, the superuser, then two groups.
EVENTS = 5
GROUPS_DOCUMENT = {"groups": [{"name": "radiology", "description": "first"}, {"name": "cardiology", "description": "second"}]}


@dataclass
class Installation:
    data_dir: Path
    database_url: str | None = None

    def env(self, **extra: str) -> dict[str, str]:
        return portico_env(self.data_dir, self.database_url, **extra)

    def check(self, **extra: str) -> tuple[int, dict[str, tuple[bool, str]], str]:
        result = run_cli("check", env=self.env(**extra))
        assert "Traceback" not in result.stderr, result.stderr
        return result.returncode, check_results(result.stdout), result.stdout


def _populate(installation: Installation, tmp: Path) -> None:
    env = installation.env()
    ok(run_cli("createsuperuser", "--username", "admin", "--no-input", env={**env, "PORTICO_SUPERUSER_PASSWORD": PASSWORD}))
    ok(run_cli("import", str(write_json(tmp / "groups.json", GROUPS_DOCUMENT)), env=env))


@pytest.fixture(scope="module")
def healthy_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite installation with a superuser and its first audit events, copied by each test."""
    data_dir = tmp_path_factory.mktemp("check-template")
    _populate(Installation(data_dir), tmp_path_factory.mktemp("check-documents"))
    return data_dir


@pytest.fixture
def installation(healthy_template: Path, tmp_path: Path) -> Installation:
    data_dir = tmp_path / "data"
    shutil.copytree(healthy_template, data_dir)  # copy2 keeps the key file's mode 0600
    return Installation(data_dir)


def _only_failure(results: dict[str, tuple[bool, str]], expected: set[str]) -> tuple[str, str]:
    assert set(results) == expected, results
    failed = [(name, message) for name, (passed, message) in results.items() if not passed]
    assert len(failed) == 1, failed
    return failed[0]


def test_a_healthy_installation_passes(installation: Installation) -> None:
    code, results, stdout = installation.check()
    assert code == 0, stdout
    assert set(results) == ALL_CHECKS_SQLITE
    assert all(passed for passed, _ in results.values()), stdout
    assert stdout.count("[ok] ") == len(ALL_CHECKS_SQLITE)
    assert "[FAIL]" not in stdout
    assert "all checks passed" in stdout
    assert results["audit chain"][1].startswith(f"{EVENTS} events, chain intact; head ")
    assert results["superuser"][1].startswith("1 active superuser")


def test_no_active_superuser_fails(installation: Installation) -> None:
    with sqlite_connection(installation.data_dir) as connection:
        connection.execute("UPDATE users SET is_active = 0 WHERE username = 'admin'")  # the only superuser, deactivated
    code, results, stdout = installation.check()
    assert code == 1, stdout
    name, message = _only_failure(results, ALL_CHECKS_SQLITE)
    assert name == "superuser"
    assert "no active superuser" in message
    assert "createsuperuser" in message
    assert "some checks failed" in stdout


def test_a_key_file_readable_by_others_fails(installation: Installation) -> None:
    key_file = key_path(installation.data_dir)
    assert key_file.stat().st_mode & 0o777 == 0o600
    key_file.chmod(0o644)
    code, results, stdout = installation.check()
    assert code == 1, stdout
    name, message = _only_failure(results, ALL_CHECKS_SQLITE)
    assert name == "encryption key"
    assert "chmod 600" in message
    assert str(key_file) in message


def test_another_valid_key_fails_and_the_original_key_passes(installation: Installation) -> None:
    newer = new_fernet_key()
    code, results, stdout = installation.check(PORTICO_SECRET_KEY=newer)
    assert code == 1, stdout
    name, message = _only_failure(results, ALL_CHECKS_SQLITE)
    assert name == "encryption key"
    assert "not the one this database was written with" in message

    # Rotation: the new key first, then the original one (and no key file at all) is accepted.
    original = key_path(installation.data_dir).read_text().strip()
    key_path(installation.data_dir).unlink()
    code, results, stdout = installation.check(PORTICO_SECRET_KEY=f"{newer},{original}")
    assert code == 0, stdout
    assert results["encryption key"] == (True, "from PORTICO_SECRET_KEY, matches the stored secrets")


def _events(data_dir: Path) -> list[tuple[int, str, str]]:
    with sqlite_connection(data_dir) as connection:
        return connection.execute("SELECT id, actor, detail FROM audit_events ORDER BY id").fetchall()


def test_sqlite_triggers_keep_the_audit_log_append_only(installation: Installation) -> None:
    before = _events(installation.data_dir)
    assert len(before) == EVENTS
    with sqlite_connection(installation.data_dir) as connection:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            connection.execute("UPDATE audit_events SET detail = 'nothing to see' WHERE id = ?", (before[1][0],))
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            connection.execute("DELETE FROM audit_events WHERE id = ?", (before[1][0],))
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            connection.execute("DELETE FROM audit_events")
    assert _events(installation.data_dir) == before


@pytest.mark.parametrize("column", ["detail", "actor"])
def test_an_altered_audit_event_breaks_the_chain(installation: Installation, column: str) -> None:
    middle = _events(installation.data_dir)[1][0]
    with sqlite_connection(installation.data_dir) as connection:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            connection.execute(f"UPDATE audit_events SET {column} = 'mallory' WHERE id = ?", (middle,))
        connection.execute("DROP TRIGGER audit_events_no_update")
        connection.execute(f"UPDATE audit_events SET {column} = 'mallory' WHERE id = ?", (middle,))
    code, results, stdout = installation.check()
    assert code == 1, stdout
    name, message = _only_failure(results, ALL_CHECKS_SQLITE)
    assert name == "audit chain"
    assert f"broken at event {middle}" in message
    assert "altered" in message


def test_a_deleted_audit_event_breaks_the_chain(installation: Installation) -> None:
    *_, first, middle, last = (event[0] for event in _events(installation.data_dir))
    with sqlite_connection(installation.data_dir) as connection:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            connection.execute("DELETE FROM audit_events WHERE id = ?", (middle,))
        connection.execute("DROP TRIGGER audit_events_no_delete")
        connection.execute("DELETE FROM audit_events WHERE id = ?", (middle,))
    assert [event[0] for event in _events(installation.data_dir)][-2:] == [first, last]
    code, results, stdout = installation.check()
    assert code == 1, stdout
    name, message = _only_failure(results, ALL_CHECKS_SQLITE)
    assert name == "audit chain"
    assert f"broken at event {last}" in message
    assert "removed" in message


# ---------------------------------------------------------------- PostgreSQL


def _pg_events(database_url: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(database_url) as connection:
        return connection.execute("SELECT id, actor, detail FROM audit_events ORDER BY id").fetchall()


@pytest.mark.postgres
def test_postgres_installation_its_append_only_trigger_and_a_tampered_chain(
    tmp_path: Path, fresh_postgres_database: Callable[[], str]
) -> None:
    database_url = fresh_postgres_database()
    installation = Installation(tmp_path / "data", database_url)
    _populate(installation, tmp_path)
    code, results, stdout = installation.check()
    assert code == 0, stdout
    assert set(results) == ALL_CHECKS_POSTGRES
    assert all(passed for passed, _ in results.values()), stdout
    assert results["database"][1].startswith("postgresql")
    assert results["audit chain"][1].startswith(f"{EVENTS} events, chain intact; head ")

    # The trigger refuses UPDATE, DELETE and TRUNCATE, whoever asks.
    before = _pg_events(database_url)
    middle = before[1][0]
    with psycopg.connect(database_url, autocommit=True) as connection:
        for statement in (
            f"UPDATE audit_events SET detail = 'nothing to see' WHERE id = {middle}",
            f"DELETE FROM audit_events WHERE id = {middle}",
            "TRUNCATE audit_events",
        ):
            with pytest.raises(psycopg.Error, match="append-only"):
                connection.execute(statement)
    assert _pg_events(database_url) == before

    # Someone able to switch the trigger off can change an event, but not unnoticed.
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        connection.execute("UPDATE audit_events SET actor = 'mallory' WHERE id = %s", (middle,))
    code, results, stdout = installation.check()
    assert code == 1, stdout
    name, message = _only_failure(results, ALL_CHECKS_POSTGRES)
    assert name == "audit chain"
    assert f"broken at event {middle}" in message
    assert "altered" in message
