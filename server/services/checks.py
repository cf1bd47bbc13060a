"""``portico check``: configuration and database self-check with clear messages."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import func, select, text

from server.services.audit import verify_chain
from server.services.portico import load_secret_box
from server.services.secretbox import KEY_CHECK, SecretKeyError, check_key_file_permissions, verify_or_record_key
from server.settings import DATABASE_FILENAME, Settings
from server.storage import migrate
from server.storage.database import Database
from server.storage.tables import Meta, User


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    message: str


def run_checks(settings: Settings) -> Iterator[CheckResult]:
    sqlite_file = settings.data_dir / DATABASE_FILENAME
    if settings.is_sqlite and settings.database_url is None and not sqlite_file.exists():
        # A check must not create what it checks.
        yield CheckResult("database", False, f"no database at {sqlite_file}: run `portico migrate` (or start `portico serve`)")
        return
    try:
        db = Database(settings.resolved_database_url)
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:
        yield CheckResult("database", False, f"cannot open {settings.resolved_database_url}: {error}")
        return
    try:
        yield CheckResult("database", True, f"{db.engine.dialect.name} at {db.engine.url.render_as_string(hide_password=True)}")
        if db.is_sqlite:
            with db.engine.connect() as connection:
                mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
                integrity = connection.exec_driver_sql("PRAGMA integrity_check").scalar()
            yield CheckResult("sqlite journal", mode == "wal", f"journal_mode={mode}" + ("" if mode == "wal" else " (expected wal)"))
            yield CheckResult("sqlite integrity", integrity == "ok", str(integrity))
        current, head = migrate.current_revision(db.engine), migrate.head_revision()
        if current != head:
            yield CheckResult("schema", False, f"at {current or 'nothing'}, this Portico needs {head}: run `portico migrate`")
            return
        yield CheckResult("schema", True, f"current ({head})")
        yield from _key_checks(settings, db)
        with db.reading() as session:
            superusers = session.scalar(select(func.count()).select_from(User).where(User.is_superuser, User.is_active)) or 0
            yield CheckResult(
                "superuser", superusers > 0,
                f"{superusers} active superuser(s)" if superusers else "no active superuser: run `portico createsuperuser`",
            )
            report = verify_chain(session)
            yield CheckResult(
                "audit chain", report.intact,
                f"{report.events} events, chain intact; head {report.head[:16]} (keep it elsewhere: removing the newest events is detectable only against it)"
                if report.intact else f"broken at event {report.broken_at}: {report.reason}",
            )
    finally:
        db.dispose()


def _key_checks(settings: Settings, db: Database) -> Iterator[CheckResult]:
    source = "PORTICO_SECRET_KEY" if settings.secret_key else str(settings.resolved_key_file)
    try:
        if not settings.secret_key:
            if not settings.resolved_key_file.exists():
                yield CheckResult("encryption key", False, f"no key file at {source} and PORTICO_SECRET_KEY is not set")
                return
            if os.name == "posix":
                check_key_file_permissions(settings.resolved_key_file)
        box = load_secret_box(settings, create=False)
        with db.reading() as session:
            recorded = session.get(Meta, KEY_CHECK) is not None
            verify_or_record_key(session, box)
            session.rollback()  # a check never writes
    except SecretKeyError as error:
        yield CheckResult("encryption key", False, str(error))
        return
    yield CheckResult(
        "encryption key", True,
        f"from {source}, matches the stored secrets" if recorded else f"from {source}; no secret stored yet to compare it with",
    )
