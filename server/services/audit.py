"""The audit trail: append-only, hash-chained events.

Each event's hash covers its own content and the previous event's hash, so removing,
reordering or editing any event breaks the chain from that point on, which ``verify_chain``
(and ``portico check``) reports. Writers take a lock before reading the chain's head:
SQLite's write transactions are already exclusive (BEGIN IMMEDIATE), PostgreSQL takes an
advisory transaction lock, so concurrent replicas never fork the chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from server.domain.vocabulary import AuditOutcome
from server.storage.tables import AuditEvent, utcnow

GENESIS_HASH = "0" * 64
MASK = "********"
_PG_AUDIT_LOCK = 0x41554454  # "AUDT"


@dataclass(frozen=True)
class Actor:
    """Who did something, and from where."""

    name: str
    user_id: int | None = None
    address: str | None = None

    @classmethod
    def system(cls, what: str) -> Actor:
        return cls(name=f"system:{what}")


def _text(value: str | None, limit: int | None = None) -> str | None:
    """Stored text: no NUL (PostgreSQL refuses it; it may come from a hostile request)."""
    if value is None:
        return None
    value = value.replace("\x00", "\\0")
    return value[:limit] if limit else value


def jsonable(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return MASK
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    return value


def _event_digest(event: AuditEvent) -> str:
    payload = {
        "at": event.at.isoformat(),
        "actor": event.actor,
        "actor_user_id": event.actor_user_id,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "target_label": event.target_label,
        "changes": event.changes,
        "outcome": event.outcome,
        "detail": event.detail,
        "client_address": event.client_address,
        "prev_hash": event.prev_hash,
    }
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    target_type: str | None = None,
    target_id: str | int | None = None,
    target_label: str | None = None,
    changes: Mapping[str, Any] | None = None,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    detail: str = "",
) -> AuditEvent:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_AUDIT_LOCK})
    head = session.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1))
    event = AuditEvent(
        at=utcnow(),
        actor=_text(actor.name, 150),
        actor_user_id=actor.user_id,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else _text(str(target_id), 64),
        target_label=_text(target_label, 200),
        changes=jsonable(dict(changes or {})),
        outcome=outcome.value,
        detail=_text(detail),
        client_address=_text(actor.address, 64),
        prev_hash=head or GENESIS_HASH,
    )
    event.hash = _event_digest(event)
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True)
class ChainReport:
    events: int
    intact: bool
    broken_at: int | None = None
    reason: str = ""
    head: str = GENESIS_HASH


def verify_chain(session: Session, batch: int = 1000) -> ChainReport:
    expected_prev = GENESIS_HASH
    count = 0
    for event in session.scalars(select(AuditEvent).order_by(AuditEvent.id).execution_options(yield_per=batch)):
        count += 1
        if event.prev_hash != expected_prev:
            return ChainReport(count, False, event.id, "its previous-event hash does not match the event before it (an event was removed or reordered)")
        if _event_digest(event) != event.hash:
            return ChainReport(count, False, event.id, "its content does not match its hash (the event was altered)")
        expected_prev = event.hash
    return ChainReport(count, True, head=expected_prev)


def diff(before: Mapping[str, Any], after: Mapping[str, Any], secret_fields: frozenset[str] = frozenset()) -> dict[str, list[Any]]:
    """``field -> [old, new]`` for every field that changed; secrets only say that they changed."""
    changes: dict[str, list[Any]] = {}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if key in secret_fields:
            if new is not None and new != old or (old is None) != (new is None):
                changes[key] = [MASK if old is not None else None, MASK if new is not None else None]
            continue
        if jsonable(old) != jsonable(new):
            changes[key] = [jsonable(old), jsonable(new)]
    return changes
