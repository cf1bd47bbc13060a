"""The embedded console's one-time credential.

``portico serve --embedded`` is the server that the desktop console starts as its child
process. It makes one random bearer token at start, keeps it in memory only and hands it to
its parent in the ready line on standard output (a pipe): never on disk, never on a command
line. Whoever holds it is the local owner of the database, as a superuser acting for no
user; its audit events name the actor "console (local)". The token dies with the process.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from server.services.principal import NO_USER, Principal

TOKEN_PREFIX = "pec_"
ACTOR_NAME = "console (local)"


@dataclass(frozen=True)
class ConsoleCredential:
    token: str = field(repr=False)

    @classmethod
    def generate(cls) -> ConsoleCredential:
        return cls(TOKEN_PREFIX + secrets.token_urlsafe(32))

    def matches(self, presented: str) -> bool:
        # Constant time: the comparison must not tell how much of a guess was right.
        return presented.startswith(TOKEN_PREFIX) and hmac.compare_digest(presented.encode(), self.token.encode())

    def principal(self, address: str | None) -> Principal:
        return Principal(
            user_id=NO_USER,
            username=ACTOR_NAME,
            is_superuser=True,
            is_staff=True,
            permissions=frozenset(),
            address=address,
        )
