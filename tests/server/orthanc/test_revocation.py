"""Revocation reaches the Orthanc decision at once.

A token is granted (twice, so that the second answer comes from the warm in-memory
decision path), then access is taken away through the admin API in one of six ways;
the very next validate call must be denied. Then the same across two replicas on one
PostgreSQL database: replica B, warm, must learn of a revocation made through replica A
within 2 s (through LISTEN/NOTIFY), and replica A must never answer from stale state.

The measured delays are printed (run with -s to see them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import LiveServer, ServerProcess, portico_env
from tests.server.orthanc.support import (
    API,
    RIG_SERVER,
    Admin,
    Member,
    Plugin,
    ok,
    poll,
    running,
)

REPLICA_DEADLINE = 5.0
REPLICA_BOUND = 2.0


@dataclass
class Grant:
    """A member and the token it presents: its API token, or an admin-API session token."""

    member: Member
    token: str
    session_id: str | None


def _revoke_session(admin: Admin, grant: Grant) -> None:
    assert grant.session_id is not None
    ok(admin.api.post(f"{API}/sessions/{grant.session_id}/revoke", json={"reason": "test"}))


def _deactivate(admin: Admin, grant: Grant) -> None:
    user = ok(admin.api.get(f"{API}/users/{grant.member.user_id}"))
    ok(admin.api.patch(f"{API}/users/{grant.member.user_id}", json={"is_active": False, "version": user["version"]}))


def _remove_membership(admin: Admin, grant: Grant) -> None:
    changed = ok(admin.api.post(f"{API}/groups/{grant.member.group_id}/members/remove", json={"user_ids": [grant.member.user_id]}))
    assert changed["changed"] == 1, changed


def _delete_rule(admin: Admin, grant: Grant) -> None:
    response = admin.api.delete(f"{API}/access-rules/{grant.member.rule_id}")
    assert response.status_code == 204, response.text


def _delete_token(admin: Admin, grant: Grant) -> None:
    response = admin.api.delete(f"{API}/credentials/{grant.member.credential_id}")
    assert response.status_code == 204, response.text


REVOCATIONS: dict[str, Callable[[Admin, Grant], None]] = {
    "session-revoked": _revoke_session,
    "user-deactivated": _deactivate,
    "membership-removed": _remove_membership,
    "rule-deleted": _delete_rule,
    "api-token-deleted": _delete_token,
}


def new_grant(admin: Admin, server_id: int, revocation: str) -> Grant:
    session = revocation == "session-revoked"
    member = admin.member(revocation, server_id, ["view"], can_log_in=session)
    if session:
        token, session_id = admin.login(member.username, member.password)
        return Grant(member, token, session_id)
    return Grant(member, member.token, None)


def report(what: str, seconds: float, since: str = "the admin API call returned") -> None:
    print(f"\n[revocation] {what}: first denied validate {seconds * 1000:.1f} ms after {since}")


# ---------------------------------------------------------------- one process


@dataclass
class Single:
    admin: Admin
    plugin: Plugin
    server_id: int
    backend: str


@pytest.fixture(scope="module")
def single(orthanc_live: LiveServer) -> Iterator[Single]:
    admin = Admin(orthanc_live)
    server = admin.unique("revoke-orthanc")
    server_id = admin.imaging_server(server)["id"]
    username, secret = admin.plugin_credential(server_id)
    with Plugin(orthanc_live.url, server, username, secret) as plugin:
        yield Single(admin, plugin, server_id, orthanc_live.backend)


@pytest.mark.parametrize("revocation", REVOCATIONS)
def test_next_validate_is_denied(single: Single, revocation: str) -> None:
    grant = new_grant(single.admin, single.server_id, revocation)
    assert single.plugin.granted(grant.token)
    assert single.plugin.granted(grant.token)  # from the warm decision path
    assert single.plugin.profile(grant.token)["permissions"] == ["view"]

    REVOCATIONS[revocation](single.admin, grant)
    returned = time.perf_counter()
    granted = single.plugin.granted(grant.token)
    report(f"{single.backend} {revocation}", time.perf_counter() - returned)
    assert granted is False

    assert single.plugin.granted(grant.token) is False
    assert single.plugin.granted(grant.token, "get", "system", uri="/patients") is False
    assert single.plugin.profile(grant.token)["permissions"] == []
    if revocation == "session-revoked":
        # Only that session: the user's API token still works.
        assert single.plugin.granted(grant.member.token)


def test_rule_and_token_expiry(single: Single) -> None:
    """A rule that expires, and an API token that expires (on a member whose rule does not):
    granted until that moment, denied by the first call after it."""
    expires_at = datetime.now(UTC) + timedelta(seconds=2)
    member = single.admin.member("expiring", single.server_id, ["view"], expires_at=expires_at.isoformat())
    lasting = single.admin.member("expiring-token", single.server_id, ["view"])
    created = ok(single.admin.api.post(f"{API}/credentials", json={"kind": "api-token", "user_id": lasting.user_id, "expires_at": expires_at.isoformat()}))
    short_token = created["secret"]
    answer = single.plugin.validate(member.token)
    assert answer["granted"] is True, answer
    # Orthanc may cache a grant for its validity: never past the rule's expiry.
    assert 1 <= answer["validity"] <= 2, answer
    assert single.plugin.granted(member.token)
    assert single.plugin.granted(short_token)

    time.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()))
    passed = time.perf_counter()
    granted = single.plugin.granted(member.token)
    report(f"{single.backend} rule-expired", time.perf_counter() - passed, since="the rule's expires_at")
    assert granted is False
    assert single.plugin.profile(member.token)["permissions"] == []
    passed = time.perf_counter()
    granted = single.plugin.granted(short_token)
    report(f"{single.backend} api-token-expired", time.perf_counter() - passed, since="the token's expires_at (and one more call)")
    assert granted is False
    assert single.plugin.profile(short_token)["permissions"] == []
    assert single.plugin.granted(lasting.token)


def test_profile_validity_stops_at_rule_expiry(single: Single) -> None:
    expires_at = datetime.now(UTC) + timedelta(seconds=30)
    member = single.admin.member("expiring-profile", single.server_id, ["view"], expires_at=expires_at.isoformat())
    profile = single.plugin.profile(member.token)
    assert profile["permissions"] == ["view"], profile
    assert profile["validity"] <= 30, profile


def test_grant_validity_stops_at_token_expiry(single: Single) -> None:
    member = single.admin.member("short-token", single.server_id, ["view"])
    expires_at = datetime.now(UTC) + timedelta(seconds=30)
    created = ok(single.admin.api.post(f"{API}/credentials", json={"kind": "api-token", "user_id": member.user_id, "expires_at": expires_at.isoformat()}))
    answer = single.plugin.validate(created["secret"])
    assert answer["granted"] is True, answer
    assert answer["validity"] <= 30, answer
    assert single.plugin.profile(created["secret"])["validity"] <= 30


def test_the_denial_is_short_lived(single: Single) -> None:
    """A denial is cached by Orthanc too: a grant made now must work within seconds."""
    member = single.admin.member("late-grant", single.server_id, ["view"])
    response = single.admin.api.delete(f"{API}/access-rules/{member.rule_id}")
    assert response.status_code == 204
    answer = single.plugin.validate(member.token)
    assert answer["granted"] is False and answer["validity"] <= 10, answer
    single.admin.rule(member.group_id, single.server_id, ["view"])
    assert single.plugin.granted(member.token)


# ---------------------------------------------------------------- two replicas on PostgreSQL


@dataclass
class Replicas:
    admin: Admin  # through replica A
    a: Plugin
    b: Plugin
    server_id: int


@pytest.fixture(scope="module")
def replicas(fresh_postgres_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    database_url = fresh_postgres_database()
    data_dir = tmp_path_factory.mktemp("replicas")  # one key file for both
    with running("postgresql", data_dir, database_url) as live:
        b_process = ServerProcess(portico_env(data_dir, database_url)).start()
        try:
            admin = Admin(live)
            server_id = admin.imaging_server(RIG_SERVER)["id"]
            username, secret = admin.plugin_credential(server_id)
            with Plugin(live.url, RIG_SERVER, username, secret) as a, Plugin(b_process.url, RIG_SERVER, username, secret) as b:
                yield Replicas(admin, a, b, server_id)
        finally:
            code = b_process.stop()
            assert code == 0, f"replica B did not stop gracefully (exit {code}):\n{''.join(b_process.output)}"


@pytest.mark.postgres
@pytest.mark.parametrize("revocation", REVOCATIONS)
def test_replica_learns_of_revocation(replicas: Replicas, revocation: str) -> None:
    grant = new_grant(replicas.admin, replicas.server_id, revocation)
    # The grant made through A must reach B too (it was never cached there).
    assert poll(lambda: replicas.b.granted(grant.token), REPLICA_DEADLINE) is not None
    for plugin in (replicas.a, replicas.b, replicas.a, replicas.b):
        assert plugin.granted(grant.token)  # both warm

    REVOCATIONS[revocation](replicas.admin, grant)
    returned = time.perf_counter()
    # Never stale on the replica that made the change.
    assert replicas.a.granted(grant.token) is False
    seen = poll(lambda: not replicas.b.granted(grant.token), REPLICA_DEADLINE, interval=0.005)
    delay = time.perf_counter() - returned
    assert seen is not None, f"replica B still granted {REPLICA_DEADLINE} s after the revocation through A"
    print(f"\n[revocation] replica B, {revocation}: denied {delay * 1000:.1f} ms after replica A's admin API call returned")
    assert delay < REPLICA_BOUND, f"replica B took {delay:.3f} s"
    assert replicas.a.granted(grant.token) is False
    assert replicas.b.granted(grant.token) is False


def test_a_changed_rule_reaches_members_not_seen_before(single: Single) -> None:
    """Compiled rules are shared by a group's members: a change must reach a member whose
    token Portico has never seen, not only the ones it had cached."""
    admin = single.admin
    first = admin.member("shared-rule", single.server_id, ["view"])
    second_user = ok(admin.api.post(f"{API}/users", json={"username": admin.unique("shared-rule-2")}))
    ok(admin.api.post(f"{API}/groups/{first.group_id}/members/add", json={"user_ids": [second_user["id"]]}))
    second_token, _ = admin.api_token(second_user["id"])
    assert single.plugin.granted(first.token)  # compiles and keeps the group's rule
    rule = ok(admin.api.get(f"{API}/access-rules/{first.rule_id}"))
    ok(admin.api.patch(f"{API}/access-rules/{first.rule_id}", json={"version": rule["version"], "capabilities": ["download"]}))
    assert single.plugin.granted(second_token) is False  # never seen; must not get the old "view"
    assert single.plugin.granted(first.token) is False
