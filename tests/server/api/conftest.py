"""Fixtures of the API tests: the OpenAPI document and a few records other records refer to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.server.api.support import API, create


@dataclass
class World:
    """Records that the entities under test refer to, created once per server."""

    server: LiveServer
    provider_id: int
    user_id: int
    group_id: int
    imaging_server_id: int

    @property
    def api(self) -> httpx.Client:
        return self.server.client

    def unique(self, stem: str) -> str:
        return self.server.unique(stem)

    def new_group(self) -> int:
        return int(create(self.api, "groups", {"name": self.unique("world-group")})["id"])


@pytest.fixture(scope="module")
def world(live_server: LiveServer) -> World:
    api = live_server.client
    provider = create(
        api,
        "providers",
        {
            "name": live_server.unique("world-idp"),
            "hostname": "idp.example.org",
            "authorization_endpoint": "https://idp.example.org/authorize",
            "token_endpoint": "https://idp.example.org/token",
        },
    )
    user = create(api, "users", {"username": live_server.unique("world-user")})
    group = create(api, "groups", {"name": live_server.unique("world-group")})
    imaging = create(
        api, "imaging-servers", {"token": live_server.unique("world-orthanc"), "name": live_server.unique("world-orthanc"), "hostname": "orthanc.example.org"}
    )
    # A membership, so that listing memberships has something to (not) find.
    create(api, "memberships", {"user_id": user["id"], "group_id": group["id"]})
    return World(live_server, provider["id"], user["id"], group["id"], imaging["id"])


@pytest.fixture(scope="module")
def openapi(live_server: LiveServer) -> dict[str, Any]:
    with live_server.anonymous() as anonymous:
        response = anonymous.get(f"{API}/openapi.json")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]
