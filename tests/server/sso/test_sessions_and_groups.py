"""Group sync, refresh-token rotation, logout, revocation and key rotation, end to end."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import portico_env, run_cli
from tests.server.api.support import API, create
from tests.server.sso.conftest import Wiring, wire
from tests.support.idp import TestIdP


def _idp_user(idp: TestIdP, groups: list[str]) -> tuple[str, str]:
    name = f"sync-{secrets.token_hex(4)}"
    idp.add_user(name, "sync-password", {"cognito:username": name, "cognito:groups": groups})
    return name, "sync-password"


def _group_names(wiring: Wiring, user_id: int) -> set[str]:
    groups = wiring.api.get(f"{API}/groups", params={"limit": 500}).json()["items"]
    members = set()
    for group in groups:
        users = wiring.api.get(f"{API}/users", params={"group_id": group["id"], "limit": 500}).json()["items"]
        if any(user["id"] == user_id for user in users):
            members.add(group["name"])
    return members


def _login_user_id(wiring: Wiring, name: str, password: str) -> int:
    _, landing = wiring.login(name, password)
    return int(wiring.decode(wiring.tokens(landing.query["code"]).json()["access_token"])["sub"])


@pytest.fixture(scope="module")
def synced_groups(portico) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Three groups tied to IdP group names, and one local group; names unique per server."""
    names = {key: portico.unique(key) for key in ("radiology", "admins", "oncology", "local")}
    suffix = names["radiology"].rsplit("-", 1)[1]
    for key in ("radiology", "admins", "oncology"):
        create(portico.client, "groups", {"name": names[key], "idp_group_name": f"{key}-{suffix}"})
    create(portico.client, "groups", {"name": names["local"]})
    names["suffix"] = suffix
    return names


@pytest.mark.parametrize("mode", ["off", "add", "mirror"])
def test_group_sync(portico, idp, synced_groups, mode: str) -> None:  # type: ignore[no-untyped-def]
    suffix = synced_groups["suffix"]
    wiring = wire(portico, idp, preset="cognito", auth_server_overrides={"group_sync": mode, "is_default": False})
    name, password = _idp_user(idp, [f"radiology-{suffix}", f"admins-{suffix}", "a-group-portico-does-not-know"])
    user_id = _login_user_id(wiring, name, password)
    first = _group_names(wiring, user_id)
    if mode == "off":
        assert first == set()
    else:
        assert first == {synced_groups["radiology"], synced_groups["admins"]}

    # An administrator adds the user to a synced group and to a local one; the IdP drops "admins".
    for key in ("oncology", "local"):
        group = wiring.api.get(f"{API}/groups", params={"q": synced_groups[key]}).json()["items"][0]
        assert wiring.api.post(f"{API}/groups/{group['id']}/members/add", json={"user_ids": [user_id]}).status_code == 200
    idp.add_user(name, password, {"cognito:username": name, "cognito:groups": [f"radiology-{suffix}"]})
    assert _login_user_id(wiring, name, password) == user_id
    second = _group_names(wiring, user_id)
    if mode == "off":
        assert second == {synced_groups["oncology"], synced_groups["local"]}
    elif mode == "add":
        # "add" only ever adds: nothing the IdP stopped sending is taken away.
        assert second == {synced_groups["radiology"], synced_groups["admins"], synced_groups["oncology"], synced_groups["local"]}
    else:
        # "mirror": synced groups follow the IdP exactly; local groups are left alone.
        assert second == {synced_groups["radiology"], synced_groups["local"]}


def _grant(wiring: Wiring, username: str = "alice", password: str = "alice-password") -> dict[str, Any]:
    _, landing = wiring.login(username, password)
    response = wiring.tokens(landing.query["code"])
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _session_active(wiring: Wiring, session_id: str) -> bool:
    return bool(wiring.api.get(f"{API}/sessions/{session_id}").json()["active"])


def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_session(cognito: Wiring) -> None:
    grant = _grant(cognito)
    session_id = cognito.decode(grant["access_token"])["sid"]
    refreshed = cognito.refresh(grant["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()
    assert second["refresh_token"] != grant["refresh_token"]
    assert cognito.decode(second["access_token"])["sid"] == session_id
    assert _session_active(cognito, session_id)

    reused = cognito.refresh(grant["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert "already used" in reused.json()["error_description"]
    assert not _session_active(cognito, session_id)
    # Even the legitimate holder's newer token is now dead: the family is revoked.
    assert cognito.refresh(second["refresh_token"]).json()["error"] == "invalid_grant"


def test_a_replayed_one_time_code_is_refused_and_revokes_its_session(cognito: Wiring) -> None:
    _, landing = cognito.login("alice", "alice-password")
    first = cognito.tokens(landing.query["code"])
    assert first.status_code == 200
    session_id = cognito.decode(first.json()["access_token"])["sid"]
    replay = cognito.tokens(landing.query["code"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert not _session_active(cognito, session_id)


def test_the_one_time_code_is_bound_to_its_redirect_uri(cognito: Wiring) -> None:
    _, landing = cognito.login("alice", "alice-password")
    wrong = cognito.tokens(landing.query["code"], redirect_uri="http://elsewhere.test/cb")
    assert wrong.status_code == 400 and "redirect_uri" in wrong.json()["error_description"]


def test_logout_ends_the_session_and_revokes_the_upstream_token(cognito: Wiring, idp: TestIdP) -> None:
    grant = _grant(cognito)
    session_id = cognito.decode(grant["access_token"])["sid"]
    before = len(idp.revocations())
    response = httpx.post(cognito.urls["logout"], headers={"Authorization": f"Bearer {grant['access_token']}"})
    assert response.status_code == 200, response.text
    assert response.json() == {"ended": True, "upstream_revoked": True}
    assert len(idp.revocations()) == before + 1
    assert not _session_active(cognito, session_id)
    assert cognito.refresh(grant["refresh_token"]).json()["error"] == "invalid_grant"
    # Logging out twice is harmless and says so.
    again = httpx.post(cognito.urls["logout"], headers={"Authorization": f"Bearer {grant['access_token']}"})
    assert again.json()["ended"] is False


def test_rfc7009_revocation_of_a_refresh_token_ends_the_session(cognito: Wiring) -> None:
    grant = _grant(cognito)
    session_id = cognito.decode(grant["access_token"])["sid"]
    revoke = f"{cognito.portico.url}/oauth2/revoke"
    assert httpx.post(revoke, data={"token": grant["refresh_token"], "token_type_hint": "refresh_token"}).status_code == 200
    assert not _session_active(cognito, session_id)
    # Unknown tokens get the same 200 (RFC 7009 §2.2); a missing parameter does not.
    assert httpx.post(revoke, data={"token": "prt_nothing_here"}).status_code == 200
    missing = httpx.post(revoke, data={})
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"


def test_rfc7009_revocation_of_an_access_token_ends_the_session(cognito: Wiring) -> None:
    grant = _grant(cognito)
    session_id = cognito.decode(grant["access_token"])["sid"]
    assert httpx.post(f"{cognito.portico.url}/oauth2/revoke", data={"token": grant["access_token"]}).status_code == 200
    assert not _session_active(cognito, session_id)


def test_key_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key(cognito: Wiring) -> None:
    portico = cognito.portico
    old = _grant(cognito)
    old_kid = jwt.get_unverified_header(old["access_token"])["kid"]
    env = portico_env(portico.data_dir, portico.database_url)
    rotated = run_cli("keys", "rotate", env=env)
    assert rotated.returncode == 0, rotated.stderr
    # The running server learns of the rotation through its change watcher (at once on
    # PostgreSQL, within its poll on SQLite): wait for the JWKS to show a new active key.
    refreshed: dict[str, Any] = {}
    for _ in range(50):
        response = cognito.refresh(old["refresh_token"] if not refreshed else refreshed["refresh_token"])
        assert response.status_code == 200, response.text
        refreshed = response.json()
        if jwt.get_unverified_header(refreshed["access_token"])["kid"] != old_kid:
            break
        import time

        time.sleep(0.1)
    new_kid = jwt.get_unverified_header(refreshed["access_token"])["kid"]
    assert new_kid != old_kid
    assert cognito.decode(refreshed["access_token"])["username"] == "alice"
    assert cognito.decode(old["access_token"])["username"] == "alice"  # old key still published


def test_concurrent_use_of_one_code_or_refresh_token_succeeds_once(cognito: Wiring) -> None:
    """Two viewers racing with the same secret: exactly one wins (row locks on PostgreSQL)."""
    from concurrent.futures import ThreadPoolExecutor

    _, landing = cognito.login("alice", "alice-password")
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: cognito.tokens(landing.query["code"]).status_code, range(4)))
    assert sorted(codes) == [200, 400, 400, 400]

    grant = _grant(cognito)
    with ThreadPoolExecutor(4) as pool:
        refreshes = list(pool.map(lambda _: cognito.refresh(grant["refresh_token"]).status_code, range(4)))
    assert sorted(refreshes) == [200, 400, 400, 400]
