"""Who is calling, and what they may do."""

from __future__ import annotations

from dataclasses import dataclass

from server.domain.vocabulary import Action, EntityType, permission_name
from server.services.audit import Actor


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    is_superuser: bool
    is_staff: bool
    permissions: frozenset[str]
    session_id: str | None = None
    credential_id: int | None = None
    address: str | None = None

    @property
    def actor(self) -> Actor:
        return Actor(name=self.username, user_id=self.user_id, address=self.address)

    def may(self, entity: EntityType, action: Action) -> bool:
        """Superusers may do everything; staff only what they were granted; others nothing."""
        if self.is_superuser:
            return True
        return self.is_staff and permission_name(entity, action) in self.permissions
