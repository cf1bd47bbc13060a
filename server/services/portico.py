"""One running Portico: its settings, database, encryption box and login limiter.

Built once at start and handed explicitly to whatever needs it (no module globals).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from server.services.accounts import LoginLimiter
from server.services.authz_state import Generation, PostgresListener, SqliteChangeWatcher, watch_writes
from server.services.orthanc_authz import OrthancAuthorizer
from server.services.portico_tokens import PorticoTokens
from server.services.signing_keys import KeyRing, ensure_keys
from server.services.sso import SingleSignOn
from server.services.site import get_site
from server.services.secretbox import SecretBox, load_or_create_key_file, verify_or_record_key
from server.settings import Settings
from server.storage import migrate
from server.storage.database import Database


class NotMigrated(RuntimeError):
    """The database schema is behind this version of Portico."""


@dataclass
class Portico:
    settings: Settings
    db: Database
    box: SecretBox
    limiter: LoginLimiter
    generation: Generation
    authorizer: OrthancAuthorizer
    keys: KeyRing
    tokens: PorticoTokens
    sso: SingleSignOn
    listener: PostgresListener | SqliteChangeWatcher | None = None

    @property
    def admin_session_lifetime(self) -> timedelta:
        return timedelta(seconds=self.settings.admin_session_seconds)

    def close(self) -> None:
        if self.listener is not None:
            self.listener.stop()
        self.authorizer.close()
        self.sso.close()
        self.db.dispose()


def load_secret_box(settings: Settings, *, create: bool) -> SecretBox:
    if settings.secret_key:
        return SecretBox.from_text(settings.secret_key)
    return load_or_create_key_file(settings.resolved_key_file, create=create)


def open_portico(settings: Settings, *, migrate_schema: bool | None = None, listen_for_changes: bool = False) -> Portico:
    """Open the database (migrating it when asked), load and check the encryption key."""
    db = Database(settings.resolved_database_url)
    try:
        if settings.migrate_on_start if migrate_schema is None else migrate_schema:
            migrate.upgrade(db.engine)
        elif migrate.current_revision(db.engine) != migrate.head_revision():
            raise NotMigrated(
                f"the database is at schema {migrate.current_revision(db.engine) or 'none'}, "
                f"this Portico needs {migrate.head_revision()}: run `portico migrate`"
            )
        if db.is_sqlite:
            with db.engine.connect() as connection:
                # Refresh the planner's statistics where they are stale (cheap when they are not).
                connection.exec_driver_sql("PRAGMA optimize")
        box = load_secret_box(settings, create=True)
        with db.writing() as session:
            verify_or_record_key(session, box)
            issuer = get_site(session).base_url  # every later read finds the one Site row
            ensure_keys(session, box)
    except BaseException:
        db.dispose()
        raise
    limiter = LoginLimiter(settings.login_limit_per_user, settings.login_limit_per_address)
    generation = Generation()
    watch_writes(db.write_sessions, generation, notify=not db.is_sqlite)
    keys = KeyRing(db, box, timedelta(seconds=settings.access_token_seconds), generation)
    tokens = PorticoTokens(keys, issuer, timedelta(seconds=settings.access_token_seconds))
    listener: PostgresListener | SqliteChangeWatcher | None = None
    if listen_for_changes:
        # Other processes' commits: NOTIFY on PostgreSQL, the file's data_version on SQLite.
        if db.is_sqlite:
            listener = SqliteChangeWatcher(str(db.engine.url.database), generation)
        else:
            listener = PostgresListener(db.url, generation)
        listener.start()
    return Portico(
        settings=settings,
        db=db,
        box=box,
        limiter=limiter,
        generation=generation,
        authorizer=OrthancAuthorizer(db, box, generation, tokens=tokens),
        keys=keys,
        tokens=tokens,
        sso=SingleSignOn(db, box, settings, tokens),
        listener=listener,
    )
