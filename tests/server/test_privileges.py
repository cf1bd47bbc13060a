"""Privilege boundaries found by review: what staff may not do, and races that must not win."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import LiveServer, login, start_live_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_live_server("sqlite", tmp_path_factory.mktemp("privileges"), None, PORTICO_LOGIN_LIMIT_PER_USER="5/minute")
    yield live
    live.client.close()
    assert live.process.stop() == 0


def _staff(server: LiveServer, permissions: list[str]) -> tuple[dict[str, object], httpx.Client]:
    name = server.unique("staff")
    user = server.client.post("/api/v1/users", json={"username": name, "password": "staff-password", "is_staff": True, "permissions": permissions}).json()
    return user, server.client_for(login(server.url, name, "staff-password"))


def test_staff_cannot_take_over_a_colleague(server: LiveServer) -> None:
    colleague, _ = _staff(server, ["imaging-server.change", "credential.add"])
    me, client = _staff(server, ["user.view", "user.change"])
    with client:
        refused = client.patch(f"/api/v1/users/{colleague['id']}", json={"version": colleague["version"], "password": "taken-over-now"})
        assert refused.status_code == 403, refused.text
        assert "another staff member" in refused.json()["error"]["message"]
        # A plain user (not staff) may still be helped, and one's own password changed.
        plain = server.client.post("/api/v1/users", json={"username": server.unique("plain"), "password": "plain-password"}).json()
        assert client.patch(f"/api/v1/users/{plain['id']}", json={"version": plain["version"], "password": "new-password1"}).status_code == 200
        assert client.patch(f"/api/v1/users/{me['id']}", json={"version": me["version"], "password": "my-new-password"}).status_code == 200


def test_staff_cannot_link_an_identity_to_a_superuser(server: LiveServer) -> None:
    provider = server.client.post(
        "/api/v1/providers",
        json={"name": server.unique("idp"), "hostname": "idp.example.org", "authorization_endpoint": "/authorize", "token_endpoint": "/token"},
    ).json()
    _, client = _staff(server, ["external-identity.add"])
    with client:
        refused = client.post("/api/v1/external-identities", json={"provider_id": provider["id"], "subject": "attacker", "user_id": 1})
    assert refused.status_code == 403 and refused.json()["error"]["fields"][0]["field"] == "user_id", refused.text


def test_plugin_credentials_need_imaging_server_change(server: LiveServer) -> None:
    pacs = server.client.post("/api/v1/imaging-servers", json={"token": server.unique("pacs"), "name": server.unique("PACS"), "hostname": "pacs"}).json()
    _, client = _staff(server, ["credential.add", "credential.view"])
    with client:
        refused = client.post("/api/v1/credentials", json={"kind": "orthanc-plugin", "imaging_server_id": pacs["id"]})
        assert refused.status_code == 403 and "imaging-server.change" in refused.text
        assert client.post(f"/api/v1/imaging-servers/{pacs['id']}/orthanc-config").status_code == 403
        # Their own API token is still theirs to make.
        assert client.post("/api/v1/credentials", json={"kind": "api-token"}).status_code == 201


def test_the_rest_password_never_follows_the_server_to_a_new_address(server: LiveServer) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    pacs = server.client.post(
        "/api/v1/imaging-servers",
        json={"token": server.unique("moved"), "name": server.unique("Moved"), "hostname": "pacs.example.org", "rest_username": "orthanc", "rest_password": "the-rest-secret"},
    ).json()
    assert pacs["rest_password_set"] is True
    moved = server.client.patch(f"/api/v1/imaging-servers/{pacs['id']}", json={"version": pacs["version"], "scheme": "http", "hostname": "127.0.0.1", "port": listener.getsockname()[1]})
    listener.close()
    assert moved.status_code == 200 and moved.json()["rest_password_set"] is False, moved.text
    kept = server.client.patch(
        f"/api/v1/imaging-servers/{pacs['id']}", json={"version": moved.json()["version"], "port": 8043, "rest_password": "given-again"}
    ).json()
    assert kept["rest_password_set"] is True


def test_parallel_wrong_passwords_do_not_outrun_the_login_limit(server: LiveServer) -> None:
    name = server.unique("target")
    server.client.post("/api/v1/users", json={"username": name, "password": "right-password"}).raise_for_status()
    statuses: list[int] = []
    barrier = threading.Barrier(12)

    def attempt() -> None:
        barrier.wait()
        statuses.append(httpx.post(f"{server.url}/api/v1/auth/login", json={"username": name, "password": "wrong-password"}).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [401] * 5 + [429] * 7, statuses


def test_two_superusers_demoting_each_other_leave_one(fresh_postgres_database: object, tmp_path: Path) -> None:
    database_url = fresh_postgres_database()  # type: ignore[operator]
    live = start_live_server("postgresql", tmp_path, database_url)
    try:
        other = live.client.post("/api/v1/users", json={"username": "second", "password": "second-password", "is_superuser": True, "is_staff": True}).json()
        first_id = live.client.get("/api/v1/auth/me").json()["id"]
        second_client = live.client_for(login(live.url, "second", "second-password"))
        first = live.client.get(f"/api/v1/users/{first_id}").json()
        results: dict[str, int] = {}
        barrier = threading.Barrier(2)

        def demote(name: str, client: httpx.Client, target: dict[str, object]) -> None:
            barrier.wait()
            results[name] = client.patch(f"/api/v1/users/{target['id']}", json={"version": target["version"], "is_superuser": False}).status_code

        threads = [
            threading.Thread(target=demote, args=("admin demotes second", live.client, other)),
            threading.Thread(target=demote, args=("second demotes admin", second_client, first)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        second_client.close()
        # The loser is refused either as the last superuser (409, both passed authentication)
        # or, when the winner committed first, as no longer a superuser (403): both leave one.
        outcomes = sorted(results.values())
        assert outcomes[0] == 200 and outcomes[1] in (403, 409), results
        with psycopg.connect(database_url) as connection:
            superusers = connection.execute("SELECT count(*) FROM users WHERE is_superuser AND is_active").fetchone()
        assert superusers == (1,)
    finally:
        live.client.close()
        assert live.process.stop() == 0
