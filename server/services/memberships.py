"""Adding and removing many memberships at once, from either side (group or user)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.contract.errors import FieldError, NotFound, ValidationFailed
from server.contract.schemas import MembershipChange
from server.domain.vocabulary import EntityType
from server.services import audit
from server.services.audit import Actor
from server.storage.tables import Group, Membership, User


def _require_all(session: Session, table: type[User] | type[Group], ids: Sequence[int], field: str, noun: str) -> None:
    wanted = set(ids)
    found = set(session.scalars(select(table.id).where(table.id.in_(wanted))))
    missing = sorted(wanted - found)
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise ValidationFailed(
            f"{field}: no {noun} with id {shown}",
            fields=[FieldError(field=field, message=f"no {noun} with id {shown}")],
        )


def change_memberships(
    session: Session,
    actor: Actor,
    *,
    group_ids: Sequence[int],
    user_ids: Sequence[int],
    add: bool,
    anchor: EntityType,
    anchor_id: int,
) -> MembershipChange:
    """Add (or remove) every user in ``user_ids`` to (from) every group in ``group_ids``."""
    if anchor == EntityType.GROUP:
        if session.get(Group, anchor_id) is None:
            raise NotFound(f"no group with id {anchor_id}")
        _require_all(session, User, user_ids, "user_ids", "user")
    else:
        if session.get(User, anchor_id) is None:
            raise NotFound(f"no user with id {anchor_id}")
        _require_all(session, Group, group_ids, "group_ids", "group")
    pairs = {(user_id, group_id) for user_id in set(user_ids) for group_id in set(group_ids)}
    existing = set(
        session.execute(
            select(Membership.user_id, Membership.group_id).where(
                Membership.user_id.in_(set(user_ids)), Membership.group_id.in_(set(group_ids))
            )
        ).tuples()
    )
    if add:
        todo = sorted(pairs - existing)
        session.add_all(Membership(user_id=user_id, group_id=group_id) for user_id, group_id in todo)
    else:
        todo = sorted(pairs & existing)
        for user_id, group_id in todo:
            session.execute(delete(Membership).where(Membership.user_id == user_id, Membership.group_id == group_id))
    session.flush()
    if todo:
        other = "user_ids" if anchor == EntityType.GROUP else "group_ids"
        changed_ids = sorted({pair[0] if anchor == EntityType.GROUP else pair[1] for pair in todo})
        audit.record(
            session,
            actor,
            f"{anchor.value}.memberships.{'add' if add else 'remove'}",
            target_type=anchor.value,
            target_id=anchor_id,
            changes={other: [[], changed_ids] if add else [changed_ids, []]},
        )
    return MembershipChange(changed=len(todo), unchanged=len(pairs) - len(todo))
