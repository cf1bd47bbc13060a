"""Portico access tokens as the console shows them: decoded, and checked against the JWKS
Portico publishes (as a resource server would check them). No I/O, no Qt."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import jwt

__all__ = ["DecodedToken", "decode_token", "unverified_claims"]


def _segment(part: str) -> dict[str, Any]:
    padded = part + "=" * (-len(part) % 4)
    value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    return value if isinstance(value, dict) else {}


def unverified_claims(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) without any check; ({}, {}) for something that is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}, {}
    try:
        return _segment(parts[0]), _segment(parts[1])
    except (ValueError, UnicodeDecodeError):
        return {}, {}


@dataclass(frozen=True)
class DecodedToken:
    header: dict[str, Any]
    claims: dict[str, Any]
    verified: bool
    problem: str = ""


def decode_token(token: str, jwks: dict[str, Any], *, audience: str | None = None) -> DecodedToken:
    """The token's claims; ``verified`` when its signature checks with a key of ``jwks``
    (ES256/RS256 only: the console never trusts an algorithm the token chose for itself)."""
    header, claims = unverified_claims(token)
    if not header:
        return DecodedToken({}, {}, False, "not a JWT")
    try:
        keys = jwt.PyJWKSet.from_dict(jwks).keys
    except jwt.PyJWTError as error:
        return DecodedToken(header, claims, False, f"Portico's JWKS holds no usable key: {error}")
    key = next((item for item in keys if item.key_id == header.get("kid")), None)
    if key is None:
        return DecodedToken(header, claims, False, f"no key {header.get('kid')!r} in Portico's JWKS")
    try:
        jwt.decode(token, key.key, algorithms=["ES256", "RS256"], audience=audience,
                   options={"verify_aud": audience is not None})
    except jwt.PyJWTError as error:
        return DecodedToken(header, claims, False, str(error))
    return DecodedToken(header, claims, True)
