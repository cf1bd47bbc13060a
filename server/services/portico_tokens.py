"""Portico access tokens: ES256 JWTs with ``kid``, each tied to a session (``sid``).

Claims: ``iss sub aud exp iat nbf jti sid`` plus ``username``, ``email`` and ``name``
(DESIGN.md §4). Verification accepts only ES256 (no ``none``, no HS/RS confusion), only
keys Portico publishes, and checks issuer, audience and times.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

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
        """The claims of a token Portico signed and that is valid now; None for anything else.

        Checked by hand with ``cryptography`` rather than ``jwt.decode``: the same checks
        (compact form, canonical base64url, ES256 over P-256 only, a known and published
        ``kid``, issuer, audience, ``exp``/``nbf``/``iat`` with the leeway, required claims)
        at half the cost, which matters on a first-seen token's decision. Tested against
        PyJWT on forged, altered and expired tokens."""
        parts = token.split(".")
        if len(parts) != 3 or len(token) > MAX_TOKEN_LENGTH:
            return None
        header_segment, payload_segment, signature_segment = parts
        header = _json_segment(header_segment)
        if header is None or header.get("alg") != ALGORITHM or not isinstance(header.get("kid"), str) or "crit" in header or "b64" in header:
            return None
        key = self._keys.verification_key(header["kid"])
        payload = _segment(payload_segment)
        signature = _segment(signature_segment)
        if key is None or payload is None or signature is None or len(signature) != 64:
            return None
        try:
            key.verify(
                encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")),
                f"{header_segment}.{payload_segment}".encode("ascii"),
                _ES256,
            )
        except InvalidSignature:
            return None
        claims = _json_object(payload)
        if claims is None or not self._valid_claims(claims, time.time()):
            return None
        try:
            return VerifiedClaims(int(claims["sub"]), str(claims["sid"]), float(claims["exp"]), claims)
        except (TypeError, ValueError):
            return None

    def _valid_claims(self, claims: dict[str, Any], now: float) -> bool:
        if any(claims.get(name) is None for name in REQUIRED_CLAIMS):
            return False
        exp, nbf, iat = claims["exp"], claims["nbf"], claims["iat"]
        if not all(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) for value in (exp, nbf, iat)):
            return False
        if exp <= now - LEEWAY_SECONDS or nbf > now + LEEWAY_SECONDS or iat > now + LEEWAY_SECONDS:
            return False
        if claims["iss"] != self.issuer or not isinstance(claims["sub"], str) or not isinstance(claims["sid"], str):
            return False
        if "jti" in claims and not isinstance(claims["jti"], str):
            return False
        audience = claims["aud"]
        if isinstance(audience, str):
            return audience == AUDIENCE
        return isinstance(audience, list) and all(isinstance(item, str) for item in audience) and AUDIENCE in audience


MAX_TOKEN_LENGTH = 8192
REQUIRED_CLAIMS = ("exp", "iat", "nbf", "iss", "aud", "sub", "sid")
_ES256 = ec.ECDSA(hashes.SHA256())
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def _segment(segment: str) -> bytes | None:
    """A base64url segment without padding, decoded; None unless canonical (RFC 7515 §2)."""
    if len(segment) % 4 == 1 or _BASE64URL.fullmatch(segment) is None:
        return None
    try:
        decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None
    # Unused trailing bits must be zero: one token, one spelling.
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != segment.encode("ascii"):
        return None
    return decoded


def _json_segment(segment: str) -> dict[str, Any] | None:
    decoded = _segment(segment)
    return None if decoded is None else _json_object(decoded)


def _json_object(decoded: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(decoded)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
