"""OAuth 2.0 Token Introspection (RFC 7662) of the tokens Portico issues.

Anything that is not a valid, current token of an active user, whatever the reason
(malformed, unknown, expired, revoked, another issuer's, another audience's, too long),
is ``{"active": false}``: the answer never says why, and never fails.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from server.services.authz_state import Generation
from server.services.orthanc_authz import OrthancAuthorizer
from server.services.portico_tokens import PorticoTokens
from server.storage.database import Database
from server.storage.tables import User

log = logging.getLogger("portico.introspection")

MAX_TOKEN_LENGTH = 8192
INACTIVE: dict[str, Any] = {"active": False}
CACHE_CAPACITY = 50_000


IdPTokens = Callable[[str], "dict[str, Any] | None"]


def introspect(db: Database, authorizer: OrthancAuthorizer, tokens: PorticoTokens, token: str,
               idp_tokens: IdPTokens | None = None) -> dict[str, Any]:
    try:
        answer = _introspect(db, authorizer, tokens, token)
        if not answer["active"] and idp_tokens is not None and token.count(".") == 2 and len(token) <= MAX_TOKEN_LENGTH:
            # Not Portico's: an identity provider's own access token, where an auth server accepts them.
            return idp_tokens(token) or INACTIVE
        return answer
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


class Introspector:
    """Introspection with the answers remembered, for resource servers that ask about the
    same token on every request.

    Each remembered answer carries the generation it was computed under (the counter that
    moves on every change of a session, user, credential...: authz_state), so a revocation
    or deactivation is seen by the very next call; an active answer is also dropped once
    the token expires. ``cached_*`` never touch the database: the HTTP layer answers warm
    calls on the event loop and sends the rest to a worker thread.
    """

    def __init__(self, db: Database, authorizer: OrthancAuthorizer, tokens: PorticoTokens, generation: Generation,
                 clock: Callable[[], float] = time.time, idp_tokens: IdPTokens | None = None) -> None:
        self._idp_tokens = idp_tokens
        self._db = db
        self._authorizer = authorizer
        self._tokens = tokens
        self._generation = generation
        self._clock = clock
        self._answers: dict[bytes, tuple[int, dict[str, Any]]] = {}
        self._clients: dict[bytes, tuple[int, bool]] = {}

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()

    def _remember(self, memo: dict[bytes, Any], key: bytes, generation: int, value: Any) -> None:
        if generation != self._generation.value:
            return  # something changed while we looked: the value may already be stale
        if len(memo) >= CACHE_CAPACITY:
            memo.clear()  # a flood of made-up tokens must not grow memory
        memo[key] = (generation, value)

    def cached_client(self, authorization: str) -> bool | None:
        """Whether this Basic credential is a plugin credential, if known at this generation."""
        entry = self._clients.get(self._key(authorization))
        return entry[1] if entry is not None and entry[0] == self._generation.value else None

    def client(self, authorization: str) -> bool:
        generation = self._generation.value
        known = self._authorizer.client(authorization) is not None
        self._remember(self._clients, self._key(authorization), generation, known)
        return known

    def cached(self, token: str) -> dict[str, Any] | None:
        entry = self._answers.get(self._key(token))
        if entry is None or entry[0] != self._generation.value:
            return None
        answer = entry[1]
        if answer["active"] and "exp" in answer and answer["exp"] <= self._clock():
            return None
        return answer

    def introspect(self, token: str) -> dict[str, Any]:
        generation = self._generation.value
        answer = introspect(self._db, self._authorizer, self._tokens, token, self._idp_tokens)
        if len(token) <= MAX_TOKEN_LENGTH:
            self._remember(self._answers, self._key(token), generation, answer)
        return answer
