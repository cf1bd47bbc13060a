"""Portico's ES256 access tokens: published keys, validation at Orthanc's door, rotation."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from server.services.portico import open_portico
from server.settings import Settings
from server.storage.tables import Session, User, utcnow
from tests.conftest import LiveServer, portico_env, run_cli, start_live_server
from tests.support.tokens import sso_token

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_live_server("sqlite", tmp_path_factory.mktemp("tokens"), None)
    yield live
    live.client.close()
    assert live.process.stop() == 0


@pytest.fixture(scope="module")
def world(server: LiveServer) -> dict[str, Any]:
    api = server.client
    pacs = api.post("/api/v1/imaging-servers", json={"token": "pacs", "name": "PACS", "hostname": "pacs"}).json()
    credential = api.post("/api/v1/credentials", json={"kind": "orthanc-plugin", "imaging_server_id": pacs["id"]}).json()
    group = api.post("/api/v1/groups", json={"name": "Radiology"}).json()
    user = api.post("/api/v1/users", json={"username": "erin", "email": "erin@hospital.example"}).json()
    api.post(f"/api/v1/groups/{group['id']}/members/add", json={"user_ids": [user["id"]]}).raise_for_status()
    api.post("/api/v1/access-rules", json={"group_id": group["id"], "imaging_server_id": pacs["id"], "capabilities": ["view"], "validity": 120}).raise_for_status()
    return {"user_id": user["id"], "auth": (credential["username"], credential["secret"])}


def _sso_token(server: LiveServer, user_id: int, lifetime: timedelta = timedelta(hours=1)) -> tuple[str, str]:
    return sso_token(server.data_dir, user_id, lifetime)


def _validate(server: LiveServer, world: dict[str, Any], token: str) -> dict[str, Any]:
    with httpx.Client(base_url=server.url, auth=world["auth"]) as orthanc:
        answer = orthanc.post("/orthanc/pacs/tokens/validate", json={"level": "study", "method": "get", "orthanc-id": "s", "token-value": token})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_the_published_keys_are_public_es256_keys(server: LiveServer) -> None:
    with server.anonymous() as client:
        keys = client.get("/.well-known/jwks.json").json()["keys"]
        configuration = client.get("/.well-known/openid-configuration").json()
    assert len(keys) == 2  # the active one and the next one
    assert all(key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256" and key["kid"] for key in keys)
    assert all("d" not in key for key in keys), "a private key part was published"
    assert configuration["jwks_uri"].endswith("/.well-known/jwks.json")


def test_a_portico_token_is_honoured_until_its_session_is_revoked(server: LiveServer, world: dict[str, Any]) -> None:
    token, session_id = _sso_token(server, world["user_id"])
    claims = jwt.decode(token, options={"verify_signature": False})
    assert {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "username", "email", "name"} <= set(claims)
    assert _validate(server, world, token) == {"granted": True, "validity": 120}
    assert _validate(server, world, "Bearer " + token)["granted"] is True
    server.client.post(f"/api/v1/sessions/{session_id}/revoke", json={}).raise_for_status()
    assert _validate(server, world, token)["granted"] is False


def _forge(token: str, header: dict[str, Any], payload: dict[str, Any] | None = None, signature: bytes = b"") -> str:
    def part(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    original = jwt.decode(token, options={"verify_signature": False})
    return f"{part(header)}.{part(payload or original)}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def _pem(public_jwk: dict[str, Any]) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(public_jwk))
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[union-attr]


def _hs256(claims: dict[str, Any], kid: str, secret: bytes) -> str:
    """The algorithm-confusion attack, by hand (PyJWT rightly refuses to build it)."""
    import hashlib
    import hmac

    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    signing_input = part(json.dumps({"alg": "HS256", "kid": kid}).encode()) + "." + part(json.dumps(claims).encode())
    return signing_input + "." + part(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def test_forged_and_foreign_tokens_are_denied(server: LiveServer, world: dict[str, Any]) -> None:
    token, _ = _sso_token(server, world["user_id"])
    kid = jwt.get_unverified_header(token)["kid"]
    with server.anonymous() as client:
        public = next(key for key in client.get("/.well-known/jwks.json").json()["keys"] if key["kid"] == kid)
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = {
        "alg none": _forge(token, {"alg": "none", "kid": kid}),
        "HS256 keyed with the public key": _hs256(claims, kid, _pem(public)),
        "unknown kid": _forge(token, {"alg": "ES256", "kid": "made-up"}, signature=b"x" * 64),
        "payload changed": token.rsplit(".", 2)[0] + "." + _forge(token, {}, {**claims, "sub": "1"}).split(".")[1] + "." + token.rsplit(".", 1)[1],
        "truncated": token[:-10],
        "garbage": "ey.ey.ey",
    }
    for name, value in forged.items():
        assert _validate(server, world, value)["granted"] is False, name


def test_expired_tokens_are_denied_and_grants_never_outlive_a_token(server: LiveServer, world: dict[str, Any]) -> None:
    short, _ = _sso_token(server, world["user_id"], lifetime=timedelta(seconds=40))
    assert _validate(server, world, short)["validity"] <= 40  # the session ends before the rule's 120 s


def test_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key(server: LiveServer, world: dict[str, Any]) -> None:
    old, _ = _sso_token(server, world["user_id"])
    old_kid = jwt.get_unverified_header(old)["kid"]
    rotated = run_cli("keys", "rotate", env=portico_env(server.data_dir))
    assert rotated.returncode == 0, rotated.stderr
    new, _ = _sso_token(server, world["user_id"])
    new_kid = jwt.get_unverified_header(new)["kid"]
    assert new_kid != old_kid
    with server.anonymous() as client:
        published = {key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]}
    assert {old_kid, new_kid} <= published and len(published) == 3  # retired (still valid), active, next
    assert _validate(server, world, old)["granted"] is True
    assert _validate(server, world, new)["granted"] is True


def test_a_retired_key_stops_verifying_once_its_tokens_have_expired(tmp_path: Path) -> None:
    portico = open_portico(Settings(data_dir=tmp_path, access_token_seconds=1))
    try:
        with portico.db.writing() as session:
            user = User(username="f", username_key="f", source="database")
            session.add(user)
            session.flush()
            row = Session(id="s1", user_id=user.id, kind="sso", expires_at=utcnow() + timedelta(hours=1))
            session.add(row)
            session.flush()
            token = portico.tokens.issue(user, row.id)
        assert portico.tokens.verify(token) is not None
        from server.services.audit import Actor
        from server.services.signing_keys import rotate

        rotate(portico.db, portico.box, Actor.system("test"))
        portico.keys.reload()
        assert portico.tokens.verify(token) is not None  # within the overlap
        # With a 1 s lifetime the retired key is unpublished one second after the rotation.
        time.sleep(1.2)
        assert all(key["kid"] != jwt.get_unverified_header(token)["kid"] for key in portico.keys.jwks()["keys"])
        assert portico.tokens.verify(token) is None
    finally:
        portico.close()
