"""``PorticoTokens.verify`` checks ES256 tokens by hand (for speed): it must accept exactly
what ``jwt.decode`` with Portico's options accepts, on genuine, altered, forged and
badly timed tokens alike."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from server.services.portico import Portico, open_portico
from server.services.portico_tokens import AUDIENCE, LEEWAY_SECONDS
from server.services.signing_keys import ALGORITHM
from server.settings import Settings
from server.storage.tables import Session, User, utcnow


@pytest.fixture(scope="module")
def portico(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portico]:
    opened = open_portico(Settings(data_dir=tmp_path_factory.mktemp("verify")))
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def genuine(portico: Portico) -> str:
    with portico.db.writing() as session:
        user = User(username="vera", username_key="vera", source="database", email="vera@example.org")
        session.add(user)
        session.flush()
        session.add(Session(id="verify-1", user_id=user.id, kind="sso", expires_at=utcnow() + timedelta(hours=1)))
        session.flush()
        return portico.tokens.issue(user, "verify-1")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(value: Any) -> str:
    return _b64(json.dumps(value).encode())


def _signed(portico: Portico, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A token signed with Portico's active key, whatever it says (the signer is trusted:
    only the claim checks can refuse it)."""
    key = portico.keys.active
    assert key.private_key is not None
    signing_input = f"{_json({'alg': ALGORITHM, 'typ': 'JWT', **header})}.{_json(claims)}"
    r, s = decode_dss_signature(key.private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _reference(portico: Portico, token: str) -> dict[str, Any] | None:
    """What PyJWT decides with the options Portico used before."""
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != ALGORITHM or not isinstance(header.get("kid"), str):
            return None
        key = portico.keys.verification_key(header["kid"])
        if key is None:
            return None
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=portico.tokens.issuer, leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "sid"]},
        )
        int(claims["sub"])
        return claims
    except (jwt.PyJWTError, TypeError, ValueError):
        return None


def _variants(portico: Portico, genuine: str) -> dict[str, str]:
    header_segment, payload_segment, signature_segment = genuine.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_segment + "=="))
    claims = json.loads(base64.urlsafe_b64decode(payload_segment + "=="))
    kid = header["kid"]
    now = int(time.time())
    signature = base64.urlsafe_b64decode(signature_segment + "==")
    public = portico.keys.verification_key(kid)
    assert public is not None
    public_pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_input = f"{_json({'alg': 'HS256', 'kid': kid, 'typ': 'JWT'})}.{payload_segment}"
    other_key = ec.generate_private_key(ec.SECP256R1())
    # The last character of a 64-byte signature carries 4 unused bits: flip one.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    non_canonical = signature_segment[:-1] + alphabet[alphabet.index(signature_segment[-1]) ^ 1]
    variants = {
        "genuine": genuine,
        "alg none": f"{_json({'alg': 'none', 'kid': kid})}.{payload_segment}.",
        "HS256 keyed with the public key": hs_input + "." + _b64(hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest()),
        "unknown kid": f"{_json({'alg': 'ES256', 'kid': 'made-up'})}.{payload_segment}.{signature_segment}",
        "kid not a string": f"{_json({'alg': 'ES256', 'kid': 7})}.{payload_segment}.{signature_segment}",
        "payload changed": f"{header_segment}.{_json({**claims, 'sub': '1'})}.{signature_segment}",
        "signature of another key": jwt.encode(claims, other_key, algorithm=ALGORITHM, headers={"kid": kid}),
        "signature flipped": f"{header_segment}.{payload_segment}.{_b64(signature[:-1] + bytes([signature[-1] ^ 1]))}",
        "signature too short": f"{header_segment}.{payload_segment}.{_b64(signature[:63])}",
        "signature DER": f"{header_segment}.{payload_segment}.{_b64(b'0' + signature)}",
        "non-canonical signature spelling": f"{header_segment}.{payload_segment}.{non_canonical}",
        "padded signature": f"{genuine}==",
        "truncated": genuine[:-10],
        "two segments": f"{header_segment}.{payload_segment}",
        "four segments": f"{genuine}.{signature_segment}",
        "garbage": "ey.ey.ey",
        "empty": "",
        "dots": "..",
        "not base64": f"{header_segment}.{payload_segment}!.{signature_segment}",
        "non-ASCII payload": f"{header_segment}.{payload_segment}é.{signature_segment}",
        "header not an object": f"{_b64(b'[1]')}.{payload_segment}.{signature_segment}",
    }
    timed = {
        "expired": {**claims, "exp": now - LEEWAY_SECONDS - 5},
        "expired within the leeway": {**claims, "exp": now - LEEWAY_SECONDS + 5},
        "not yet valid": {**claims, "nbf": now + LEEWAY_SECONDS + 60},
        "nbf within the leeway": {**claims, "nbf": now + LEEWAY_SECONDS - 5},
        "issued in the future": {**claims, "iat": now + LEEWAY_SECONDS + 60},
        "exp a string": {**claims, "exp": str(now + 600)},
        "exp missing": {key: value for key, value in claims.items() if key != "exp"},
        "sid missing": {key: value for key, value in claims.items() if key != "sid"},
        "sid null": {**claims, "sid": None},
        "nbf missing": {key: value for key, value in claims.items() if key != "nbf"},
        "other issuer": {**claims, "iss": "https://elsewhere.example"},
        "issuer not a string": {**claims, "iss": [claims["iss"]]},
        "other audience": {**claims, "aud": "someone-else"},
        "audience list with portico": {**claims, "aud": ["x", AUDIENCE]},
        "audience list without portico": {**claims, "aud": ["x", "y"]},
        "audience not a string": {**claims, "aud": 5},
        "sub not a number": {**claims, "sub": "erin"},
        "sub an integer": {**claims, "sub": 5},
        "jti not a string": {**claims, "jti": 5},
        "float times": {**claims, "exp": now + 600.5, "iat": now - 0.5, "nbf": now - 0.5},
    }
    for name, changed in timed.items():
        variants[name] = _signed(portico, {"kid": kid}, changed)
    variants["critical header"] = _signed(portico, {"kid": kid, "crit": ["exp"]}, claims)
    variants["payload an array"] = _signed(portico, {"kid": kid}, claims).split(".")[0] + "." + _b64(b"[1]") + ".x"
    return variants


# Where PyJWT is lenient and Portico need not be: Portico refuses a ``crit`` header (it
# understands no extension), times given as numeric strings, and padded segments (it never
# issues them).
STRICTER = {"critical header", "exp a string", "padded signature"}


def test_hand_verification_agrees_with_pyjwt(portico: Portico, genuine: str) -> None:
    disagreements = []
    for name, token in _variants(portico, genuine).items():
        if name in STRICTER:
            continue
        expected = _reference(portico, token)
        verified = portico.tokens.verify(token)
        if (expected is None) != (verified is None) or (verified is not None and verified.claims != expected):
            disagreements.append((name, expected is not None, verified is not None))
    assert not disagreements
    assert portico.tokens.verify(genuine) is not None


def test_where_pyjwt_is_lenient_portico_refuses(portico: Portico, genuine: str) -> None:
    variants = _variants(portico, genuine)
    assert all(portico.tokens.verify(variants[name]) is None for name in STRICTER)
    assert portico.tokens.verify(variants["expired within the leeway"]) is not None
    assert portico.tokens.verify(variants["float times"]) is not None


def test_malformed_and_oversized_tokens_are_refused(tmp_path: Path) -> None:
    portico = open_portico(Settings(data_dir=tmp_path))
    try:
        assert portico.tokens.verify("a.b.c") is None
        assert portico.tokens.verify("x" * 10_000) is None
        assert portico.tokens.verify("eyJ" + "A" * 9000 + ".e30.AAAA") is None
    finally:
        portico.close()
