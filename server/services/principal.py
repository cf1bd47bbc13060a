"""Who is calling, and what they may do."""

from __future__ import annotations

from dataclasses import dataclass

from server.domain.vocabulary import Action, EntityType, permission_name
from server.services.audit import Actor

# The user id of principals that act for no user: the commands (import, orthanc-config) and
# the embedded console's owner credential. Database ids start at 1, so 0 names nobody, and
# such a principal's audit events carry no user id.
NO_USER = 0


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
        return Actor(name=self.username, user_id=None if self.user_id == NO_USER else self.user_id, address=self.address)

    def may(self, entity: EntityType, action: Action) -> bool:
        """Superusers may do everything; staff only what they were granted; others nothing."""
        if self.is_superuser:
            return True
        return self.is_staff and permission_name(entity, action) in self.permissions
