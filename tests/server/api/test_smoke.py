from __future__ import annotations

from tests.conftest import LiveServer


def test_ready_and_logged_in(live_server: LiveServer) -> None:
    with live_server.anonymous() as anonymous:
        assert anonymous.get("/readyz").json()["status"] == "ready"
    me = live_server.client.get("/api/v1/auth/me")
    assert me.status_code == 200
    assert me.json()["username"] == "admin"
