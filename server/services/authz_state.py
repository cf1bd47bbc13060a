"""In-memory state of the decision path, and its invalidation.

A validate call for a token seen before does no database query and no signature check:
the verified token, the subject's compiled rules and the imaging server all come from
dictionaries. Any committed write to a table they are built from (users, memberships,
groups, rules, sessions, credentials, shares, imaging servers) bumps a generation
counter, and everything built under an older generation is dropped at once.

On PostgreSQL the writer also sends ``NOTIFY portico_authz`` in the same transaction, and
every replica listens, so a revocation reaches every replica as soon as it commits.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import namedtuple
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import JSON, event, text
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("portico.authz")

NOTIFY_CHANNEL = "portico_authz"
GENERATION_KEY = "authz_generation"
# Bulk statements marked with this execution option only keep books (last seen, last used):
# decisions do not depend on them.
BOOKKEEPING = "portico_bookkeeping"
# However quiet the other processes seem, cached decisions are rebuilt this often: a
# notification lost with a silently dropped connection cannot keep a revoked grant alive.
FULL_REFRESH_SECONDS = 60.0
WATCHED_TABLES = frozenset(
    {"users", "memberships", "groups", "access_rules", "sessions", "credentials", "shares", "imaging_servers", "user_permissions", "signing_keys",
     # Which IdP access tokens introspection accepts, and whom they map to.
     "auth_servers", "providers", "external_identities"}
)
_PENDING = "portico_authz_changed"


class Generation:
    """A counter that says whether cached authorization data is still current."""

    def __init__(self) -> None:
        # A plain attribute, read on every decision (a property would be a call); only
        # ``bump`` writes it, under the lock.
        self.value = 0
        self._lock = threading.Lock()

    def bump(self) -> None:
        with self._lock:
            self.value += 1


def watch_writes(factory: sessionmaker[Session], generation: Generation, *, notify: bool) -> None:
    """Bump ``generation`` after every commit that touched a watched table."""

    @event.listens_for(factory, "after_flush")
    def _after_flush(session: Session, _context: Any) -> None:
        touched = {
            getattr(instance, "__tablename__", None) for instance in (*session.new, *session.dirty, *session.deleted)
        }
        if touched & WATCHED_TABLES:
            session.info[_PENDING] = True

    @event.listens_for(factory, "do_orm_execute")
    def _bulk(state: Any) -> None:
        # Bulk UPDATE/DELETE statements bypass the unit of work; look at their target table.
        if (state.is_update or state.is_delete) and state.bind_mapper is not None:
            if state.bind_mapper.local_table.name in WATCHED_TABLES and not state.execution_options.get(BOOKKEEPING):
                state.session.info[_PENDING] = True

    @event.listens_for(factory, "before_commit")
    def _before_commit(session: Session) -> None:
        session.flush()
        if not session.info.get(_PENDING):
            return
        if notify:
            session.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
        else:
            session.execute(
                text("UPDATE portico_meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = :key"),
                {"key": GENERATION_KEY},
            )

    @event.listens_for(factory, "after_commit")
    def _after_commit(session: Session) -> None:
        if session.info.pop(_PENDING, False):
            generation.bump()

    @event.listens_for(factory, "after_rollback")
    def _after_rollback(session: Session) -> None:
        session.info.pop(_PENDING, None)


class _Watcher:
    """A background thread that bumps ``generation`` when another process changed something."""

    name = "portico-watch"

    def __init__(self, generation: Generation) -> None:
        self._generation = generation
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        raise NotImplementedError


class PostgresListener(_Watcher):
    """Listens for ``NOTIFY portico_authz`` from other replicas and bumps the generation."""

    name = "portico-authz-listen"

    def __init__(self, url: str, generation: Generation) -> None:
        super().__init__(generation)
        self._url = url

    def _run(self) -> None:
        import psycopg

        conninfo = self._url.replace("postgresql+psycopg://", "postgresql://")
        while not self._stop.is_set():
            try:
                # Keepalives: a connection dropped without a word (NAT, failover) is noticed in
                # seconds, not in the two hours of the system default.
                with psycopg.connect(
                    conninfo, autocommit=True, keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3
                ) as connection:
                    connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    # Whatever happened while (re)connecting is unknown: start afresh.
                    self._generation.bump()
                    refreshed = time.monotonic()
                    while not self._stop.is_set():
                        for _ in connection.notifies(timeout=1.0, stop_after=1):
                            self._generation.bump()
                        if time.monotonic() - refreshed > FULL_REFRESH_SECONDS:
                            connection.execute("SELECT 1")  # raises if the connection is gone
                            self._generation.bump()
                            refreshed = time.monotonic()
            except Exception as error:  # keep listening across database restarts
                log.warning("authorization change listener lost its connection (%s); reconnecting", error)
                self._generation.bump()
                self._stop.wait(1.0)


class SqliteChangeWatcher(_Watcher):
    """Notices relevant commits made by other processes on the same SQLite file (another
    worker, a ``portico import``) through the ``authz_generation`` counter that every such
    commit increments, and bumps the generation.

    Commits of this process bump it at once (``watch_writes``); this covers the others
    within ``interval`` seconds. Other writes (audit events, bookkeeping) leave the counter,
    and so the cached decisions, alone.
    """

    name = "portico-sqlite-watch"

    def __init__(self, path: str, generation: Generation, interval: float = 0.25) -> None:
        super().__init__(generation)
        self._path = path
        self._interval = interval

    def _run(self) -> None:
        import sqlite3

        query = "SELECT value FROM portico_meta WHERE key = ?"
        last: object = None
        refreshed = time.monotonic()
        connection: sqlite3.Connection | None = None
        while not self._stop.wait(self._interval):
            try:
                if connection is None:
                    connection = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, check_same_thread=False)
                version = connection.execute(query, (GENERATION_KEY,)).fetchone()
            except Exception as error:  # never die silently: without this thread, other processes' changes go unseen
                log.warning("cannot watch the database for changes (%s); dropping cached decisions", error)
                self._generation.bump()
                if connection is not None:
                    connection.close()
                connection = None
                continue
            if version != last or time.monotonic() - refreshed > FULL_REFRESH_SECONDS:
                last = version
                refreshed = time.monotonic()
                self._generation.bump()
        if connection is not None:
            connection.close()


class _Rows:
    """What ``Connection.execute`` returns, as far as the decision path uses it."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def all(self) -> list[Any]:
        return self._rows


def _processor(column_type: Any, dialect: Any) -> Any:
    """SQLAlchemy's result processor of a column; for JSON text (SQLite) orjson first, and
    SQLAlchemy's own where orjson refuses (NaN, integers past 64 bits...): the same values,
    three times faster."""
    process = column_type.dialect_impl(dialect).result_processor(dialect, None)
    if process is None or not isinstance(column_type, JSON) or dialect.name != "sqlite":
        return process

    def json_text(value: Any) -> Any:
        if type(value) is str:
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
        return process(value)

    return json_text


class _Prepared:
    """A Core SELECT compiled once for one dialect, with the result processing SQLAlchemy
    would apply to each column (so rows hold the same values as through a Connection)."""

    def __init__(self, statement: Any, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        self.statement = statement  # keeps id(statement), the cache key, from being reused
        self.sql = str(compiled)
        # Literals of the statement (bound as parameters) and a None for each named one.
        self.defaults: dict[str, Any] = dict(compiled.construct_params({bind.key: None for bind in compiled.binds.values() if bind.required}))
        self.positions: tuple[str, ...] | None = tuple(compiled.positiontup) if compiled.positional else None
        columns = list(statement.selected_columns)
        names = list(statement.selected_columns.keys())
        # Rows read like SQLAlchemy's (attribute access); raises on a name unfit for one.
        self.row: Any = namedtuple("Row", names)  # type: ignore[misc]
        self.processors = [_processor(column.type, dialect) for column in columns]
        self.plain = not any(self.processors)

    def parameters(self, values: dict[str, Any]) -> Any:
        merged = {**self.defaults, **values}
        return merged if self.positions is None else tuple(merged[name] for name in self.positions)

    def rows(self, raw: list[Any]) -> list[Any]:
        make = self.row._make
        if self.plain:
            return [make(row) for row in raw]
        processors = self.processors
        return [make([value if process is None or value is None else process(value) for process, value in zip(processors, row)]) for row in raw]


class ReadConnection:
    """``execute(statement, parameters)`` for prepared SELECTs, on a DBAPI cursor."""

    __slots__ = ("_reads", "_cursor")

    def __init__(self, reads: PreparedReads, cursor: Any) -> None:
        self._reads = reads
        self._cursor = cursor

    def execute(self, statement: Any, parameters: dict[str, Any]) -> _Rows:
        prepared = self._reads.prepared(statement)
        self._cursor.execute(prepared.sql, prepared.parameters(parameters))
        return _Rows(prepared.rows(self._cursor.fetchall()))


class PreparedReads:
    """Reads of the decision path's cold misses, without SQLAlchemy's per-statement machinery.

    A Core ``Connection`` costs about 70 µs per statement on SQLite (checkout, events, an
    explicit BEGIN, result set-up), ten times the query itself; a first-seen token needs
    one to three statements. The statements stay Core statements (built once, compiled
    once per dialect), run on a DBAPI cursor with the same result processing, so their
    rows look the same. Each statement reads a consistent snapshot on its own (SQLite
    autocommit reads; PostgreSQL's transaction is rolled back when the connection returns
    to the pool); a change committed in between bumps the generation, and what was read is
    then not kept.

    On SQLite each thread keeps one connection of its own, made by the engine (same
    pragmas) and detached from its pool: a pool checkout and check-in cost ~40 µs of a
    cold decision in the server. It never holds a transaction open between reads
    (autocommit, every result fetched whole), is dropped after any error, and is closed
    with ``close`` (or when its thread is gone). PostgreSQL connections come from the
    pool (pre-pinged, bounded).
    """

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        self._prepared: dict[int, _Prepared] = {}
        self._per_thread = engine.dialect.name == "sqlite"
        self._local = threading.local()
        self._held: weakref.WeakKeyDictionary[threading.Thread, _Held] = weakref.WeakKeyDictionary()
        self._held_lock = threading.Lock()
        self._closed = False

    def prepared(self, statement: Any) -> _Prepared:
        found = self._prepared.get(id(statement))
        if found is None:
            found = self._prepared[id(statement)] = _Prepared(statement, self._dialect)
        return found

    @contextmanager
    def connect(self) -> Iterator[ReadConnection]:
        if not self._per_thread:
            connection = self._engine.raw_connection()
            try:
                cursor = connection.cursor()
                try:
                    yield ReadConnection(self, cursor)
                finally:
                    cursor.close()
            finally:
                connection.close()  # back to the pool (which rolls back what is open)
            return
        held: _Held | None = getattr(self._local, "held", None)
        if held is None or held.closed:
            held = self._hold()
        try:
            yield held.reads
        except BaseException:
            held.close()  # whatever state it is in, it is not reused
            raise

    def _hold(self) -> _Held:
        if self._closed:
            raise RuntimeError("the prepared reads are closed")
        connection = self._engine.raw_connection()
        connection.detach()  # ours now: closed by _Held, never returned to the pool
        held = _Held(connection, ReadConnection(self, connection.cursor()))
        self._local.held = held
        with self._held_lock:
            self._held[threading.current_thread()] = held
        return held

    def close(self) -> None:
        self._closed = True
        with self._held_lock:
            held = list(self._held.values())
            self._held.clear()
        for one in held:
            one.close()


class _Held:
    """One thread's own SQLite connection for the decision path's reads."""

    __slots__ = ("connection", "reads", "closed", "__weakref__")

    def __init__(self, connection: Any, reads: ReadConnection) -> None:
        self.connection = connection
        self.reads = reads
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.connection.close()
            except Exception as error:  # closing must not hide the error that led here
                log.warning("closing a read connection: %s", error)
