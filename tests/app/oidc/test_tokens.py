"""Decoding Portico tokens against a JWKS: verified, tampered, unknown key, not a JWT."""

from __future__ import annotations

import json

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from app.oidc.tokens import decode_token, unverified_claims


def _key_pair(kid: str) -> tuple[ec.EllipticCurvePrivateKey, dict]:  # type: ignore[type-arg]
    private = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    public.update({"kid": kid, "alg": "ES256", "use": "sig"})
    return private, {"keys": [public]}


def test_a_signed_token_is_verified() -> None:
    private, jwks = _key_pair("k1")
    token = jwt.encode({"sub": "7", "username": "alice", "aud": "portico"}, private, algorithm="ES256", headers={"kid": "k1"})
    decoded = decode_token(token, jwks)
    assert decoded.verified and decoded.claims["username"] == "alice" and decoded.header["kid"] == "k1"


def test_a_tampered_or_foreign_token_is_shown_but_not_verified() -> None:
    private, jwks = _key_pair("k1")
    other, _ = _key_pair("k1")
    forged = jwt.encode({"username": "mallory"}, other, algorithm="ES256", headers={"kid": "k1"})
    decoded = decode_token(forged, jwks)
    assert not decoded.verified and decoded.claims["username"] == "mallory" and "Signature" in decoded.problem
    unknown = jwt.encode({"username": "x"}, private, algorithm="ES256", headers={"kid": "k9"})
    assert "no key 'k9'" in decode_token(unknown, jwks).problem
    assert decode_token("not-a-jwt", jwks).problem == "not a JWT"
    assert unverified_claims("a.b") == ({}, {})
