"""RFC 7662 introspection: the valid token is described, ten kinds of bad one are inactive."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from server.services.portico import open_portico
from server.settings import Settings
from server.storage.tables import utcnow
from tests.conftest import LiveServer, start_live_server
from tests.support.tokens import sso_token

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_live_server("sqlite", tmp_path_factory.mktemp("introspection"), None)
    yield live
    live.client.close()
    assert live.process.stop() == 0


@pytest.fixture(scope="module")
def world(server: LiveServer) -> dict[str, Any]:
    api = server.client
    pacs = api.post("/api/v1/imaging-servers", json={"token": "pacs", "name": "PACS", "hostname": "pacs"}).json()
    credential = api.post("/api/v1/credentials", json={"kind": "orthanc-plugin", "imaging_server_id": pacs["id"]}).json()
    return {"auth": (credential["username"], credential["secret"])}


def _user_and_session(server: LiveServer, name: str, lifetime: timedelta = timedelta(hours=1)) -> tuple[int, str, str]:
    """A new IdP user with an SSO session and a Portico token for it: (user id, session id, token)."""
    user = server.client.post("/api/v1/users", json={"username": name, "email": f"{name}@hospital.example"}).json()
    token, session_id = sso_token(server.data_dir, user["id"], lifetime)
    return user["id"], session_id, token


def _signed(server: LiveServer, **changes: Any) -> str:
    """A token signed with Portico's real active key, with some claims changed."""
    _, _, token = _user_and_session(server, f"u{secrets.token_hex(3)}")
    portico = open_portico(Settings(data_dir=server.data_dir), migrate_schema=False)
    try:
        key = portico.keys.active
        claims = {**jwt.decode(token, options={"verify_signature": False}), **changes}
        return jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})
    finally:
        portico.close()


def _introspect(server: LiveServer, world: dict[str, Any], token: str, auth: Any = None) -> httpx.Response:
    return httpx.post(f"{server.url}/oauth2/introspect", data={"token": token}, auth=auth or world["auth"])


def test_a_valid_token_is_described(server: LiveServer, world: dict[str, Any]) -> None:
    user_id, session_id, token = _user_and_session(server, "gina")
    answer = _introspect(server, world, token)
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["active"] is True and body["sub"] == str(user_id) and body["username"] == "gina"
    assert body["sid"] == session_id and body["token_type"] == "Bearer" and body["exp"] > body["iat"]
    api_token = server.client.post("/api/v1/credentials", json={"kind": "api-token"}).json()["secret"]
    assert _introspect(server, world, api_token).json()["username"] == "admin"


def test_introspection_needs_client_authentication(server: LiveServer, world: dict[str, Any]) -> None:
    _, _, token = _user_and_session(server, "hank")
    for auth in ((world["auth"][0], "wrong-secret"), ("poc_unknown", "x")):
        refused = _introspect(server, world, token, auth=auth)
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert httpx.post(f"{server.url}/oauth2/introspect", data={"token": token}).status_code == 401


def test_ten_kinds_of_bad_token_are_inactive(server: LiveServer, world: dict[str, Any]) -> None:
    _, revoked_session, revoked = _user_and_session(server, "ivan")
    server.client.post(f"/api/v1/sessions/{revoked_session}/revoke", json={}).raise_for_status()
    deactivated_id, _, deactivated = _user_and_session(server, "judy")
    judy = server.client.get(f"/api/v1/users/{deactivated_id}").json()
    server.client.patch(f"/api/v1/users/{deactivated_id}", json={"version": judy["version"], "is_active": False}).raise_for_status()
    _, _, valid = _user_and_session(server, "kim")
    kid = jwt.get_unverified_header(valid)["kid"]
    stranger = ec.generate_private_key(ec.SECP256R1())
    now = int(utcnow().timestamp())
    bad = {
        "empty": "",
        "garbage": "not a token at all",
        "truncated": valid[: len(valid) // 2],
        "wrong key": jwt.encode(jwt.decode(valid, options={"verify_signature": False}), stranger, algorithm="ES256", headers={"kid": kid}),
        "expired": _signed(server, exp=now - 3600, iat=now - 7200, nbf=now - 7200),
        "revoked session": revoked,
        "deactivated user": deactivated,
        "another issuer": _signed(server, iss="https://idp.example.org"),
        "wrong audience": _signed(server, aud="someone-else"),
        "oversized": "x" * 100_000,
    }
    for kind, token in bad.items():
        answer = _introspect(server, world, token)
        assert answer.status_code == 200, (kind, answer.text)
        assert answer.json() == {"active": False}, kind
    assert _introspect(server, world, valid).json()["active"] is True


def test_a_refused_introspection_client_is_audited(server: LiveServer, world: dict[str, Any]) -> None:
    assert _introspect(server, world, "x", auth=("poc_nobody", "guess")).status_code == 401
    events = server.client.get("/api/v1/audit-events", params={"action": "orthanc.authenticate", "actor": "orthanc-plugin:poc_nobody"}).json()
    assert events["total"] >= 1 and events["items"][0]["outcome"] == "denied"
    assert "guess" not in str(events)


def test_a_remembered_answer_never_outlives_a_revocation_or_deactivation(server: LiveServer, world: dict[str, Any]) -> None:
    """Warm answers come from memory; the next call after a change must see the change."""
    user_id, session_id, token = _user_and_session(server, "ivy")
    for _ in range(3):  # the second and third answers are the remembered one
        assert _introspect(server, world, token).json()["active"] is True
    revoked = server.client.post(f"/api/v1/sessions/{session_id}/revoke", json={})
    assert revoked.status_code == 200
    assert _introspect(server, world, token).json() == {"active": False}

    user_id, _, token = _user_and_session(server, "jack")
    assert _introspect(server, world, token).json()["active"] is True
    user = server.client.get(f"/api/v1/users/{user_id}").json()
    assert server.client.patch(f"/api/v1/users/{user_id}", json={"version": user["version"], "is_active": False}).status_code == 200
    assert _introspect(server, world, token).json() == {"active": False}


def test_a_deleted_plugin_credential_is_refused_at_once(server: LiveServer, world: dict[str, Any]) -> None:
    pacs = server.client.get("/api/v1/imaging-servers", params={"q": "pacs"}).json()["items"][0]
    credential = server.client.post("/api/v1/credentials", json={"kind": "orthanc-plugin", "imaging_server_id": pacs["id"]}).json()
    auth = (credential["username"], credential["secret"])
    _, _, token = _user_and_session(server, "kate")
    assert _introspect(server, world, token, auth=auth).status_code == 200
    assert _introspect(server, world, token, auth=auth).status_code == 200
    stored = credential["credential"]
    assert server.client.delete(f"/api/v1/credentials/{stored['id']}", params={"version": stored["version"]}).status_code == 204
    assert _introspect(server, world, token, auth=auth).status_code == 401
