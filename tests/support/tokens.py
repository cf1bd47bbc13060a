"""Portico access tokens for tests, made as the single sign-on flow will make them: an SSO
session in the server's database and an ES256 token for it, signed with the server's key."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

from server.domain.vocabulary import SessionKind
from server.services.portico import open_portico
from server.settings import Settings
from server.storage.tables import Session, User, utcnow


def sso_token(data_dir: Path, user_id: int, lifetime: timedelta = timedelta(hours=1)) -> tuple[str, str]:
    """(token, session id) for an existing user of the SQLite installation in ``data_dir``."""
    portico = open_portico(Settings(data_dir=data_dir), migrate_schema=False)
    try:
        with portico.db.writing() as session:
            row = Session(id=secrets.token_hex(12), user_id=user_id, kind=SessionKind.SSO.value, expires_at=utcnow() + lifetime)
            session.add(row)
            session.flush()
            user = session.get(User, user_id)
            assert user is not None
            return portico.tokens.issue(user, row.id), row.id
    finally:
        portico.close()
