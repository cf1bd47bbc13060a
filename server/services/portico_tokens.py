"""Portico access tokens: ES256 JWTs with ``kid``, each tied to a session (``sid``).

Claims: ``iss sub aud exp iat nbf jti sid`` plus ``username``, ``email`` and ``name``
(DESIGN.md §4). Verification accepts only ES256 (no ``none``, no HS/RS confusion), only
keys Portico publishes, and checks issuer, audience and times.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt

from server.services.signing_keys import ALGORITHM, KeyRing
from server.storage.tables import User, utcnow

AUDIENCE = "portico"
LEEWAY_SECONDS = 30


@dataclass(frozen=True)
class VerifiedClaims:
    user_id: int
    session_id: str
    expires_at: float
    claims: dict[str, Any]


class PorticoTokens:
    def __init__(self, keys: KeyRing, issuer: str, lifetime: timedelta) -> None:
        self._keys = keys
        self.issuer = issuer
        self.lifetime = lifetime

    def issue(self, user: User, session_id: str) -> str:
        key = self._keys.active
        now = utcnow()
        claims = {
            "iss": self.issuer,
            "sub": str(user.id),
            "aud": AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime,
            "jti": secrets.token_urlsafe(16),
            "sid": session_id,
            "username": user.username,
            "email": user.email,
            "name": " ".join(part for part in (user.first_name, user.last_name) if part) or user.username,
        }
        assert key.private_key is not None
        return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})

    def verify(self, token: str) -> VerifiedClaims | None:
        """The claims of a token Portico signed and that is valid now; None for anything else."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        if header.get("alg") != ALGORITHM or not isinstance(header.get("kid"), str):
            return None
        key = self._keys.verification_key(header["kid"])
        if key is None:
            return None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "sid"]},
            )
        except jwt.PyJWTError:
            return None
        try:
            return VerifiedClaims(int(claims["sub"]), str(claims["sid"]), float(claims["exp"]), claims)
        except (TypeError, ValueError):
            return None
