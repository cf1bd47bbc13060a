"""Create, read, update, delete, search, filter, sort and page any entity, with audit.

Each entity is described once by an ``EntitySpec``; the rules that only one entity has
(the last superuser, the one default auth server, issuing a credential's secret) live in
that entity's hooks, in ``server.services.entities``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, SecretStr
from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.orm import InstrumentedAttribute, Session

from server.contract.errors import Conflict, ErrorCode, FieldError, NotFound, ValidationFailed
from server.contract.schemas import MAX_ID, DeleteImpact, ListQuery
from server.domain.vocabulary import EntityType
from server.services import audit
from server.services.principal import Principal
from server.services.secretbox import SecretBox
from server.storage.tables import Base

RowT = TypeVar("RowT", bound=Base)
Values = dict[str, Any]
LIST_QUERY_BASE_FIELDS = frozenset(ListQuery.model_fields)
# Columns that are bookkeeping, not content: left out of audit diffs.
_NOT_AUDITED = frozenset({"version", "updated_at", "created_at", "id"})


@dataclass
class WriteContext:
    """What a hook may need: the transaction, the caller and the encryption box."""

    session: Session
    principal: Principal
    box: SecretBox
    # Set by hooks that hand a secret back to the caller exactly once.
    issued_secret: str | None = None


Hook = Callable[[WriteContext, Any, Values], None]


@dataclass(frozen=True)
class Reference:
    """A field that names another record; checked before writing so the error names the field."""

    table: type[Base]
    noun: str


@dataclass(frozen=True)
class Dependent:
    """Records that go (or block) when one of this entity is deleted, for the confirmation."""

    noun: str
    column: InstrumentedAttribute[Any]


@dataclass(frozen=True)
class EntitySpec(Generic[RowT]):
    entity: EntityType
    table: type[RowT]
    noun: str
    label: Callable[[RowT], str]
    search: Sequence[InstrumentedAttribute[Any]] = ()
    sort: Mapping[str, InstrumentedAttribute[Any]] = field(default_factory=dict)
    default_sort: str = "id"
    filters: Mapping[str, Callable[[Any], ColumnElement[bool]]] = field(default_factory=dict)
    unique: Mapping[str, InstrumentedAttribute[Any]] = field(default_factory=dict)
    references: Mapping[str, Reference] = field(default_factory=dict)
    # API field -> encrypted column: write-only secrets.
    secrets: Mapping[str, str] = field(default_factory=dict)
    cascades: Sequence[Dependent] = ()
    blockers: Sequence[Dependent] = ()
    # Fields the API takes but that are not columns (handled by hooks), e.g. a user's permissions.
    virtual: frozenset[str] = frozenset()
    before_create: Hook | None = None
    before_update: Hook | None = None
    after_write: Hook | None = None
    before_delete: Callable[[WriteContext, Any], None] | None = None
    snapshot_extra: Callable[[Any], Values] | None = None

    def id_column(self) -> InstrumentedAttribute[Any]:
        return self.table.id  # type: ignore[attr-defined, no-any-return]


# ---------------------------------------------------------------- reading


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _order_by(spec: EntitySpec[Any], sort: str | None) -> list[Any]:
    clauses: list[Any] = []
    for raw in (sort or spec.default_sort).split(","):
        name = raw.strip()
        descending = name.startswith("-")
        name = name.lstrip("-+")
        if not name:
            continue
        column = spec.sort.get(name)
        if column is None:
            allowed = ", ".join(sorted(spec.sort))
            raise ValidationFailed.on_field("sort", f"cannot sort by {name!r}; sortable fields: {allowed}")
        clauses.append(column.desc() if descending else column.asc())
    clauses.append(spec.id_column().asc())  # a stable order pages without repeats or gaps
    return clauses


def _contains(column: InstrumentedAttribute[Any], pattern: str, dialect: str) -> ColumnElement[bool]:
    # Case-insensitive everywhere. On SQLite, LIKE already ignores (ASCII) case, and ILIKE
    # would become lower(column) LIKE lower(pattern): the same answer (SQLite's lower() is
    # ASCII-only too), ~2.7x slower on 100,000 users (bench/console_search.py).
    if dialect == "sqlite":
        return column.like(pattern, escape="\\")
    return column.ilike(pattern, escape="\\")


def filtered(spec: EntitySpec[RowT], query: ListQuery, dialect: str) -> Select[Any]:
    statement = select(spec.table)
    if query.q and not spec.search:
        raise ValidationFailed.on_field("q", f"{spec.noun}s cannot be searched by text; use the filters")
    if query.q:
        pattern = f"%{_escape_like(query.q)}%"
        statement = statement.where(or_(*(_contains(column, pattern, dialect) for column in spec.search)))
    for name, value in query.model_dump(exclude=set(LIST_QUERY_BASE_FIELDS), exclude_none=True).items():
        statement = statement.where(spec.filters[name](getattr(query, name)))
    return statement


def list_records(session: Session, spec: EntitySpec[RowT], query: ListQuery) -> tuple[list[RowT], int]:
    statement = filtered(spec, query, session.get_bind().dialect.name)
    order = _order_by(spec, query.sort)
    total = session.scalar(select(func.count()).select_from(statement.order_by(None).subquery())) or 0
    rows = session.scalars(statement.order_by(*order).offset(query.offset).limit(query.limit)).all()
    return list(rows), total


def get_record(session: Session, spec: EntitySpec[RowT], record_id: Any, *, for_update: bool = False) -> RowT:
    if isinstance(record_id, int) and not 0 < record_id <= MAX_ID:
        raise NotFound(f"no {spec.noun} with id {record_id}")
    # FOR UPDATE: on PostgreSQL a second writer waits here and then sees the new version,
    # so its stale write is refused with the current record (SQLite writers are serial anyway).
    row = session.get(spec.table, record_id, with_for_update=for_update or None)
    if row is None:
        raise NotFound(f"no {spec.noun} with id {record_id}")
    return row


# ---------------------------------------------------------------- writing


_SECRET_NAMES = {"password_hash": "password", "secret_hash": "secret", "private_key_encrypted": "private_key"}


def snapshot(spec: EntitySpec[Any], row: Any) -> Values:
    """The record's content for the audit trail, secrets under the names the API uses."""
    api_names = {column: name for name, column in spec.secrets.items()} | _SECRET_NAMES
    values = {
        api_names.get(column.key, column.key): getattr(row, column.key)
        for column in row.__table__.columns
        if column.key not in _NOT_AUDITED and column.key != "username_key"
    }
    if spec.snapshot_extra is not None:
        values.update(spec.snapshot_extra(row))
    return values


def _secret_columns(spec: EntitySpec[Any]) -> frozenset[str]:
    return frozenset(spec.secrets) | frozenset(_SECRET_NAMES.values())


def _check_not_null(spec: EntitySpec[Any], values: Values) -> None:
    columns = spec.table.__table__.columns
    errors = [
        FieldError(field=name, message="may not be null")
        for name, value in values.items()
        if value is None and name in columns and not columns[name].nullable
    ]
    if errors:
        raise ValidationFailed("; ".join(f"{e.field}: {e.message}" for e in errors), fields=errors)


def _check_references(session: Session, spec: EntitySpec[Any], values: Values) -> None:
    errors = [
        FieldError(field=name, message=f"no {reference.noun} with id {values[name]}")
        for name, reference in spec.references.items()
        if values.get(name) is not None and session.get(reference.table, values[name]) is None
    ]
    if errors:
        raise ValidationFailed("; ".join(f"{e.field}: {e.message}" for e in errors), fields=errors)


def _check_unique(session: Session, spec: EntitySpec[Any], values: Values, row_id: Any | None) -> None:
    # ``unique`` maps the API's field name to the unique column (they differ for a
    # normalised copy such as a user's lower-cased username key).
    for name, column in spec.unique.items():
        value = values.get(column.key)
        if value is None:
            continue
        shown = values.get(name, value)
        statement = select(spec.id_column()).where(column == value)
        if row_id is not None:
            statement = statement.where(spec.id_column() != row_id)
        if session.scalar(statement.limit(1)) is not None:
            raise Conflict(
                f"a {spec.noun} with {name} {shown!r} already exists",
                code=ErrorCode.DUPLICATE,
                fields=[FieldError(field=name, message=f"{shown!r} is already taken")],
            )


def _column_values(spec: EntitySpec[Any], body: BaseModel, ctx: WriteContext, *, creating: bool) -> Values:
    """Body -> column values: secrets encrypted, virtual fields kept for hooks, ``version`` dropped."""
    values = body.model_dump(exclude_unset=not creating, exclude={"version"})
    for api_name, column in spec.secrets.items():
        if api_name in values:
            secret = getattr(body, api_name)
            del values[api_name]
            if secret is not None or not creating:
                plaintext = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
                values[column] = ctx.box.encrypt_optional(plaintext)
    return values


def _flush(session: Session, spec: EntitySpec[Any]) -> None:
    try:
        session.flush()
    except StaleDataError as error:
        # Another writer committed a new version between our read and our UPDATE
        # (possible on PostgreSQL, where reads do not lock): the UPDATE matched no row.
        raise Conflict(
            f"the {spec.noun} was changed by someone else while you saved; reload it and apply your change again",
            code=ErrorCode.VERSION_CONFLICT,
            fields=[FieldError(field="version", message="stale: the record changed during your write")],
        ) from error
    except IntegrityError as error:
        # Pre-checks give a precise message; this covers a race with a concurrent writer.
        raise Conflict(
            f"the {spec.noun} conflicts with an existing record or reference",
            code=ErrorCode.DUPLICATE,
        ) from error


def _apply(row: Any, values: Values, virtual: frozenset[str]) -> None:
    for name, value in values.items():
        if name not in virtual:
            setattr(row, name, value)


def create_record(spec: EntitySpec[RowT], body: BaseModel, ctx: WriteContext) -> RowT:
    values = _column_values(spec, body, ctx, creating=True)
    if spec.before_create is not None:
        spec.before_create(ctx, None, values)
    _check_references(ctx.session, spec, values)
    _check_unique(ctx.session, spec, values, None)
    row = spec.table()
    _apply(row, values, spec.virtual)
    ctx.session.add(row)
    _flush(ctx.session, spec)
    if spec.after_write is not None:
        spec.after_write(ctx, row, values)
        _flush(ctx.session, spec)
    audit.record(
        ctx.session,
        ctx.principal.actor,
        f"{spec.entity.value}.create",
        target_type=spec.entity.value,
        target_id=row.id,  # type: ignore[attr-defined]
        target_label=spec.label(row),
        changes=audit.diff({}, snapshot(spec, row), _secret_columns(spec)),
    )
    return row


def check_version(spec: EntitySpec[Any], row: Any, version: int, current: Callable[[Any], Values]) -> None:
    if row.version != version:
        raise Conflict(
            f"the {spec.noun} was changed by someone else (you edited version {version}, "
            f"it is now at version {row.version}); reload it and apply your change again",
            code=ErrorCode.VERSION_CONFLICT,
            fields=[FieldError(field="version", message=f"stale: current version is {row.version}")],
            current=current(row),
        )


def update_record(
    spec: EntitySpec[RowT],
    record_id: Any,
    body: BaseModel,
    ctx: WriteContext,
    current: Callable[[Any], Values],
) -> RowT:
    row = get_record(ctx.session, spec, record_id, for_update=True)
    check_version(spec, row, body.version, current)  # type: ignore[attr-defined]
    values = _column_values(spec, body, ctx, creating=False)
    _check_not_null(spec, values)
    before = snapshot(spec, row)
    if spec.before_update is not None:
        spec.before_update(ctx, row, values)
    _check_references(ctx.session, spec, values)
    _check_unique(ctx.session, spec, values, row.id)  # type: ignore[attr-defined]
    _apply(row, values, spec.virtual)
    if spec.after_write is not None:
        spec.after_write(ctx, row, values)
    _flush(ctx.session, spec)
    after = snapshot(spec, row)
    changes = audit.diff(before, after, _secret_columns(spec))
    if changes:
        audit.record(
            ctx.session,
            ctx.principal.actor,
            f"{spec.entity.value}.update",
            target_type=spec.entity.value,
            target_id=record_id,
            target_label=spec.label(row),
            changes=changes,
        )
    return row


def delete_impact(session: Session, spec: EntitySpec[Any], record_id: Any) -> DeleteImpact:
    row = get_record(session, spec, record_id)

    def count(dependents: Sequence[Dependent]) -> dict[str, int]:
        counts = {d.noun: session.scalar(select(func.count()).where(d.column == record_id)) or 0 for d in dependents}
        return {noun: n for noun, n in counts.items() if n}

    return DeleteImpact(target=spec.label(row), removes=count(spec.cascades), blocked_by=count(spec.blockers))


def delete_record(spec: EntitySpec[Any], record_id: Any, version: int | None, ctx: WriteContext, current: Callable[[Any], Values]) -> DeleteImpact:
    row = get_record(ctx.session, spec, record_id, for_update=True)
    if version is not None:
        check_version(spec, row, version, current)
    impact = delete_impact(ctx.session, spec, record_id)
    if impact.blocked_by:
        what = ", ".join(f"{n} {noun}" for noun, n in impact.blocked_by.items())
        raise Conflict(f"the {spec.noun} {impact.target!r} is still used by {what}; remove those first", code=ErrorCode.IN_USE)
    if spec.before_delete is not None:
        spec.before_delete(ctx, row)
    before = snapshot(spec, row)
    ctx.session.delete(row)
    _flush(ctx.session, spec)
    audit.record(
        ctx.session,
        ctx.principal.actor,
        f"{spec.entity.value}.delete",
        target_type=spec.entity.value,
        target_id=record_id,
        target_label=impact.target,
        changes=audit.diff(before, {}, _secret_columns(spec)),
        detail=", ".join(f"also removed {n} {noun}" for noun, n in impact.removes.items()),
    )
    return impact
