"""Who may call what: staff permissions, non-staff users, superusers, logout and the login limit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, LiveServer, start_live_server
from tests.server.api.conftest import World
from tests.server.api.support import (
    API,
    PUBLIC_OPERATIONS,
    assert_error,
    call,
    create,
    login,
    make_user,
    new_password,
    operations,
)

# Any signed-in user may use these, whatever their role.
SELF_SERVICE = frozenset({("get", f"{API}/auth/me"), ("post", f"{API}/auth/logout"), ("get", f"{API}/orthanc-permission-table")})


def _signed_in(server: LiveServer, **fields: Any) -> tuple[dict[str, Any], httpx.Client]:
    password = new_password()
    user = make_user(server.client, server, password=password, **fields)
    session = login(server, user["username"], password)
    return user, server.client_for(session["token"])


@pytest.fixture
def group_viewer(live_server: LiveServer) -> Iterator[httpx.Client]:
    _, client = _signed_in(live_server, stem="viewer", is_staff=True, permissions=["group.view"])
    with client:
        yield client


def test_staff_may_do_only_what_they_were_granted(group_viewer: httpx.Client, api: httpx.Client, world: World) -> None:
    listed = group_viewer.get(f"{API}/groups", params={"limit": 500})
    assert listed.status_code == 200, listed.text
    assert world.group_id in {item["id"] for item in listed.json()["items"]}
    one = group_viewer.get(f"{API}/groups/{world.group_id}")
    assert one.status_code == 200 and one.json() == api.get(f"{API}/groups/{world.group_id}").json()

    name = world.unique("refused")
    error = assert_error(group_viewer.post(f"{API}/groups", json={"name": name}), 403, "permission_denied")
    assert "add" in error["message"] and "group" in error["message"]
    assert api.get(f"{API}/groups", params={"q": name}).json()["total"] == 0
    version = one.json()["version"]
    assert_error(group_viewer.patch(f"{API}/groups/{world.group_id}", json={"version": version, "description": "x"}), 403, "permission_denied")
    assert_error(group_viewer.delete(f"{API}/groups/{world.group_id}"), 403, "permission_denied")
    assert_error(group_viewer.get(f"{API}/users"), 403, "permission_denied")
    assert api.get(f"{API}/groups/{world.group_id}").json()["version"] == version


GROUP_VIEW = frozenset(
    {("get", f"{API}/groups"), ("get", f"{API}/groups/{{record_id}}"), ("get", f"{API}/groups/{{record_id}}/delete-impact")}
)


def test_a_group_viewer_is_refused_every_other_operation(group_viewer: httpx.Client, openapi: dict[str, Any], world: World) -> None:
    wrong: list[str] = []
    for op in operations(openapi):
        if op.key in PUBLIC_OPERATIONS or op.key in SELF_SERVICE:
            continue
        # The world's group for every id: only the permission check can refuse the call.
        response = call(group_viewer, op, op.path(integer=world.group_id, string="abc123"), json={} if op.has_body else None)
        expected = (200, None) if op.key in GROUP_VIEW else (403, "permission_denied")
        code = response.json().get("error", {}).get("code") if response.status_code >= 400 else None
        if (response.status_code, code) != expected:
            wrong.append(f"{op}: {response.status_code} {response.text[:200]}")
    assert wrong == []


def test_a_non_staff_user_is_refused_everywhere(live_server: LiveServer, openapi: dict[str, Any], world: World) -> None:
    user, client = _signed_in(live_server, stem="plain", is_staff=False, permissions=[])
    wrong: list[str] = []
    with client:
        me = client.get(f"{API}/auth/me")
        assert me.status_code == 200 and me.json()["id"] == user["id"]
        for op in operations(openapi):
            if op.key in PUBLIC_OPERATIONS or op.key in SELF_SERVICE:
                continue
            response = call(client, op, op.path(integer=world.group_id, string="abc123"), json={} if op.has_body else None)
            if response.status_code != 403 or response.json()["error"]["code"] != "permission_denied":
                wrong.append(f"{op}: {response.status_code} {response.text[:200]}")
            elif "staff" not in response.json()["error"]["message"]:
                wrong.append(f"{op}: the message does not say that only staff use the admin API")
    assert wrong == []


def test_a_non_staff_user_with_grants_is_still_refused(live_server: LiveServer) -> None:
    _, client = _signed_in(live_server, stem="grants-only", is_staff=False, permissions=["group.view"])
    with client:
        assert_error(client.get(f"{API}/groups"), 403, "permission_denied")


@pytest.fixture
def user_admin(live_server: LiveServer) -> Iterator[tuple[dict[str, Any], httpx.Client]]:
    user, client = _signed_in(live_server, stem="useradmin", is_staff=True, permissions=["user.view", "user.add", "user.change"])
    with client:
        yield user, client


@pytest.mark.parametrize(
    ("target", "change", "field"),
    [
        ("other", {"is_superuser": True}, "is_superuser"),
        ("self", {"is_superuser": True}, "is_superuser"),
        ("other", {"is_staff": True}, "is_staff"),
        ("self", {"permissions": ["user.view", "user.add", "user.change", "user.delete"]}, "permissions"),
        ("other", {"permissions": ["group.view"]}, "permissions"),
    ],
)
def test_staff_cannot_grant_roles(
    api: httpx.Client, live_server: LiveServer, user_admin: tuple[dict[str, Any], httpx.Client], target: str, change: dict[str, Any], field: str
) -> None:
    me, client = user_admin
    victim = me if target == "self" else make_user(api, live_server, stem="victim")
    url = f"{API}/users/{victim['id']}"
    before = api.get(url).json()
    assert_error(client.patch(url, json={"version": before["version"], **change}), 403, "permission_denied", field=field)
    assert api.get(url).json() == before


def test_staff_cannot_create_a_superuser(api: httpx.Client, live_server: LiveServer, user_admin: tuple[dict[str, Any], httpx.Client]) -> None:
    _, client = user_admin
    name = live_server.unique("would-be-root")
    response = client.post(f"{API}/users", json={"username": name, "is_superuser": True})
    assert_error(response, 403, "permission_denied", field="is_superuser")
    assert api.get(f"{API}/users", params={"q": name}).json()["total"] == 0


def test_staff_may_change_ordinary_fields_but_not_a_superuser(
    api: httpx.Client, live_server: LiveServer, user_admin: tuple[dict[str, Any], httpx.Client]
) -> None:
    _, client = user_admin
    ordinary = make_user(api, live_server, stem="ordinary")
    changed = client.patch(f"{API}/users/{ordinary['id']}", json={"version": ordinary["version"], "first_name": "Changed"})
    assert changed.status_code == 200 and changed.json()["first_name"] == "Changed"

    root = make_user(api, live_server, stem="root", is_superuser=True, is_staff=True)
    try:
        error = assert_error(
            client.patch(f"{API}/users/{root['id']}", json={"version": root["version"], "first_name": "Hacked"}), 403, "permission_denied"
        )
        assert "superuser" in error["message"]
        assert api.get(f"{API}/users/{root['id']}").json() == root
    finally:
        # Two superusers exist (admin and root): removing one is allowed.
        assert api.delete(f"{API}/users/{root['id']}").status_code == 204


def test_staff_api_token_for_another_user_is_refused(api: httpx.Client, live_server: LiveServer, world: World) -> None:
    _, client = _signed_in(live_server, stem="tokenmaker", is_staff=True, permissions=["credential.add", "credential.view"])
    with client:
        assert_error(client.post(f"{API}/credentials", json={"kind": "api-token", "user_id": world.user_id}), 403, "permission_denied", field="user_id")
        own = client.post(f"{API}/credentials", json={"kind": "api-token"})
        assert own.status_code == 201, own.text


def test_an_api_token_carries_its_owners_permissions(live_server: LiveServer) -> None:
    _, client = _signed_in(live_server, stem="tokenowner", is_staff=True, permissions=["group.view", "credential.add"])
    with client:
        secret = create(client, "credentials", {"kind": "api-token"})["secret"]
    with live_server.client_for(secret) as holder:
        assert holder.get(f"{API}/groups").status_code == 200
        assert_error(holder.post(f"{API}/groups", json={"name": live_server.unique("x")}), 403, "permission_denied")


def test_a_deactivated_users_session_stops_working(api: httpx.Client, live_server: LiveServer) -> None:
    user, client = _signed_in(live_server, stem="leaver", is_staff=True, permissions=["group.view"])
    with client:
        assert client.get(f"{API}/groups").status_code == 200
        deactivated = api.patch(f"{API}/users/{user['id']}", json={"version": user["version"], "is_active": False})
        assert deactivated.status_code == 200, deactivated.text
        assert_error(client.get(f"{API}/groups"), 401, "not_authenticated")


def test_logout_revokes_the_session(api: httpx.Client, live_server: LiveServer) -> None:
    session = login(live_server, "admin", ADMIN_PASSWORD)
    with live_server.client_for(session["token"]) as client:
        assert client.get(f"{API}/auth/me").status_code == 200
        assert api.get(f"{API}/sessions/{session['session_id']}").json()["active"] is True
        logout = client.post(f"{API}/auth/logout")
        assert logout.status_code == 204 and logout.content == b""
        assert_error(client.get(f"{API}/auth/me"), 401, "not_authenticated")
        assert_error(client.post(f"{API}/auth/logout"), 401, "not_authenticated")
    record = api.get(f"{API}/sessions/{session['session_id']}").json()
    assert record["active"] is False
    assert record["revoked_at"] is not None
    assert record["revoked_reason"] == "logged out"
    events = api.get(f"{API}/audit-events", params={"action": "auth.logout", "target_id": session["session_id"]}).json()["items"]
    assert [event["actor"] for event in events] == ["admin"]


def test_a_wrong_password_gets_one_message_for_every_cause(live_server: LiveServer) -> None:
    user = make_user(live_server.client, live_server, stem="pw", password=new_password())
    with live_server.anonymous() as anonymous:
        wrong_password = anonymous.post(f"{API}/auth/login", json={"username": user["username"], "password": "not-the-password"})
        unknown_user = anonymous.post(f"{API}/auth/login", json={"username": live_server.unique("nobody"), "password": "whatever1"})
    first = assert_error(wrong_password, 401, "not_authenticated")
    second = assert_error(unknown_user, 401, "not_authenticated")
    assert first["message"] == second["message"]


# ---------------------------------------------------------------- on a private server

LIMIT = 3


@pytest.fixture(scope="module")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of our own: its only superuser is `admin`, and failed logins are limited to 3 a minute."""
    server = start_live_server("sqlite", tmp_path_factory.mktemp("private"), None, PORTICO_LOGIN_LIMIT_PER_USER=f"{LIMIT}/minute")
    try:
        yield server
    finally:
        server.client.close()
        code = server.process.stop()
        assert code == 0, "".join(server.process.output)


def _superusers(api: httpx.Client) -> set[str]:
    page = api.get(f"{API}/users", params={"is_superuser": True, "is_active": True, "limit": 500}).json()
    return {item["username"] for item in page["items"]}


def test_the_last_superuser_cannot_be_demoted_or_deactivated(private_server: LiveServer) -> None:
    api = private_server.client
    assert _superusers(api) == {"admin"}
    me = api.get(f"{API}/auth/me").json()
    url = f"{API}/users/{me['id']}"
    for change, field in (({"is_superuser": False}, "is_superuser"), ({"is_active": False}, "is_active")):
        error = assert_error(api.patch(url, json={"version": me["version"], **change}), 409, "last_superuser", field=field)
        assert "last active superuser" in error["message"]
    assert api.get(url).json() == me
    assert_error(api.delete(url), 409, "in_use")  # nor delete itself
    assert _superusers(api) == {"admin"}


def test_with_two_superusers_one_may_be_demoted_and_deleted(private_server: LiveServer) -> None:
    api = private_server.client
    second = make_user(api, private_server, stem="root", password=new_password(), is_superuser=True, is_staff=True)
    assert _superusers(api) == {"admin", second["username"]}
    url = f"{API}/users/{second['id']}"

    demoted = api.patch(url, json={"version": second["version"], "is_superuser": False})
    assert demoted.status_code == 200, demoted.text
    assert demoted.json()["is_superuser"] is False
    assert _superusers(api) == {"admin"}

    promoted = api.patch(url, json={"version": demoted.json()["version"], "is_superuser": True})
    assert promoted.status_code == 200 and promoted.json()["is_superuser"] is True
    deactivated = api.patch(url, json={"version": promoted.json()["version"], "is_active": False})
    assert deactivated.status_code == 200 and deactivated.json()["is_active"] is False
    reactivated = api.patch(url, json={"version": deactivated.json()["version"], "is_active": True})
    assert reactivated.status_code == 200

    assert api.delete(url).status_code == 204
    assert _superusers(api) == {"admin"}


def test_failed_logins_are_rate_limited(private_server: LiveServer) -> None:
    password = new_password()
    user = make_user(private_server.client, private_server, stem="target", password=password)
    attempt = {"username": user["username"], "password": "wrong-password"}
    with private_server.anonymous() as anonymous:
        for _ in range(LIMIT):
            assert_error(anonymous.post(f"{API}/auth/login", json=attempt), 401, "not_authenticated")
        refused = anonymous.post(f"{API}/auth/login", json={**attempt, "password": password})
        error = assert_error(refused, 429, "rate_limited")
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 61
        assert str(retry_after) in error["message"]
        # The limit is per user: another user still logs in.
        assert anonymous.post(f"{API}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}).status_code == 200

    events = private_server.client.get(f"{API}/audit-events", params={"action": "auth.login", "actor": user["username"], "outcome": "denied"}).json()["items"]
    assert [(event["outcome"], event["detail"]) for event in events] == [("denied", "rate limited")]
    assert password not in str(events)


def test_failed_logins_are_audited(private_server: LiveServer) -> None:
    user = make_user(private_server.client, private_server, stem="failing", password=new_password())
    with private_server.anonymous() as anonymous:
        response = anonymous.post(f"{API}/auth/login", json={"username": user["username"], "password": "wrong-password"})
    assert_error(response, 401, "not_authenticated")
    events = private_server.client.get(f"{API}/audit-events", params={"action": "auth.login", "actor": user["username"]}).json()["items"]
    assert [(event["outcome"], event["detail"], event["target_id"]) for event in events] == [("failure", "wrong password", str(user["id"]))]
    assert "wrong-password" not in str(events)
