"""OAuth 2.0 Token Introspection (RFC 7662) of the tokens Portico issues.

Anything that is not a valid, current token of an active user, whatever the reason
(malformed, unknown, expired, revoked, another issuer's, another audience's, too long),
is ``{"active": false}``: the answer never says why, and never fails.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from server.services.orthanc_authz import OrthancAuthorizer
from server.services.portico_tokens import PorticoTokens
from server.storage.database import Database
from server.storage.tables import User

log = logging.getLogger("portico.introspection")

MAX_TOKEN_LENGTH = 8192
INACTIVE: dict[str, Any] = {"active": False}


def introspect(db: Database, authorizer: OrthancAuthorizer, tokens: PorticoTokens, token: str) -> dict[str, Any]:
    try:
        return _introspect(db, authorizer, tokens, token)
    except Exception:  # fail closed, and never a 500 to a resource server
        log.exception("introspection failed")
        return INACTIVE


def _introspect(db: Database, authorizer: OrthancAuthorizer, tokens: PorticoTokens, token: str) -> dict[str, Any]:
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return INACTIVE
    info = authorizer.verify_token(token)  # signature or secret, expiry, session, active user
    if info is None or info.user_id is None:
        return INACTIVE  # share links are for Orthanc only
    with db.reading() as session:
        user = session.execute(select(User.username, User.email, User.is_active).where(User.id == info.user_id)).first()
    if user is None or not user.is_active:
        return INACTIVE
    answer: dict[str, Any] = {"active": True, "sub": str(info.user_id), "username": user.username}
    if info.expires_at is not None:
        answer["exp"] = int(info.expires_at)
    claims = tokens.verify(token) if token.count(".") == 2 else None
    if claims is not None:
        answer.update(
            token_type="Bearer",
            iss=claims.claims["iss"],
            aud=claims.claims["aud"],
            iat=claims.claims["iat"],
            nbf=claims.claims["nbf"],
            jti=claims.claims.get("jti"),
            sid=claims.session_id,
        )
    else:
        answer["token_type"] = "api_token" if token.startswith("pat_") else "session_token"
    if user.email:
        answer["email"] = user.email
    return answer
