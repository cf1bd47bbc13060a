"""The Alembic migration builds exactly the models' schema, and goes down and up again cleanly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from server.storage import migrate
from server.storage.database import create_database_engine
from server.storage.tables import Base


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgresql":
        url = request.getfixturevalue("fresh_postgres_database")()
    else:
        url = f"sqlite:///{tmp_path / 'migrations.sqlite3'}"
    engine = create_database_engine(url)
    yield engine
    engine.dispose()


def differences(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(context, Base.metadata))


def tables(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(inspect(connection).get_table_names())


def append_only_triggers(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_events'"))
        else:
            rows = connection.execute(text(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_events'::regclass AND NOT tgisinternal"
            ))
        return {name for (name,) in rows}


def postgres_functions(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT proname FROM pg_proc JOIN pg_namespace ON pg_namespace.oid = pronamespace WHERE nspname = 'public'"
        ))
        return {name for (name,) in rows}


EXPECTED_TRIGGERS = {
    "sqlite": {"audit_events_no_update", "audit_events_no_delete"},
    "postgresql": {"audit_events_append_only"},
}


def test_the_migration_produces_exactly_the_models_schema(engine: Engine) -> None:
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert differences(engine) == []
    assert tables(engine) == set(Base.metadata.tables) | {"alembic_version"}
    assert append_only_triggers(engine) == EXPECTED_TRIGGERS[engine.dialect.name]


def test_downgrade_to_base_then_upgrade_again(engine: Engine) -> None:
    migrate.upgrade(engine)
    with engine.begin() as connection:
        command.downgrade(migrate._config(connection), "base")
    assert migrate.current_revision(engine) is None
    assert tables(engine) == {"alembic_version"}
    if engine.dialect.name == "postgresql":
        assert "audit_events_append_only" not in postgres_functions(engine)

    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert differences(engine) == []
    assert append_only_triggers(engine) == EXPECTED_TRIGGERS[engine.dialect.name]


def test_the_comparison_would_notice_a_drift(engine: Engine) -> None:
    """Guard against a vacuous comparison: a schema that differs from the models is reported."""
    migrate.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_users_email"))
    found = differences(engine)
    assert len(found) == 1, found
    assert found[0][0] == "add_index"
    assert found[0][1].name == "ix_users_email"
