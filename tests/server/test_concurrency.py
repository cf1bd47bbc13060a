"""Concurrent writers against a real `portico serve`, on SQLite and on PostgreSQL.

Optimistic locking: two clients that both read version 1 and both PATCH it get exactly one
200 and one 409 ``version_conflict`` (carrying the winner's record); the stored record is
the winner's, never a silent mix or a lost update. Many concurrent creates all succeed and
leave one unbroken audit chain (``portico check``).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, portico_env, run_cli, start_live_server

pytestmark = pytest.mark.slow

ROUNDS = 20
CREATE_THREADS = 8
CREATES_PER_THREAD = 25


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server per backend for this module (a PostgreSQL one gets its own new database)."""
    database_url = None
    if request.param == "postgresql":
        database_url = request.getfixturevalue("fresh_postgres_database")()
    live = start_live_server(request.param, tmp_path_factory.mktemp(f"concurrency-{request.param}"), database_url)
    yield live
    live.client.close()
    code = live.process.stop()
    assert code == 0, f"portico serve did not stop gracefully (exit {code}):\n{''.join(live.process.output)}"


def _create_group(client: httpx.Client, name: str) -> dict[str, Any]:
    response = client.post("/api/v1/groups", json={"name": name, "description": "original"})
    assert response.status_code == 201, response.text
    group: dict[str, Any] = response.json()
    assert group["version"] == 1
    return group


def _patch(client: httpx.Client, group_id: int, version: int, description: str) -> httpx.Response:
    return client.patch(f"/api/v1/groups/{group_id}", json={"version": version, "description": description})


def _assert_no_lost_update(server: LiveServer, group_id: int, responses: dict[str, httpx.Response]) -> str:
    """Exactly one PATCH succeeded and the stored record is its change; returns the winner's description.

    ``responses`` maps each attempted description to its response.
    """
    bodies = {description: (response.status_code, response.text) for description, response in responses.items()}
    winners = [description for description, response in responses.items() if response.status_code == 200]
    assert len(winners) == 1, f"expected exactly one successful PATCH, got {bodies}"
    winner = winners[0]
    assert all(response.status_code >= 400 for description, response in responses.items() if description != winner), bodies
    won = responses[winner].json()
    assert won["description"] == winner
    assert won["version"] == 2

    stored = server.client.get(f"/api/v1/groups/{group_id}")
    assert stored.status_code == 200
    assert stored.json()["description"] == winner, f"the stored record must be the winner's change: {stored.json()} {bodies}"
    assert stored.json()["version"] == 2
    return winner


def _assert_loser_got_version_conflict(group_id: int, winner: str, responses: dict[str, httpx.Response]) -> None:
    for description, response in responses.items():
        if description == winner:
            continue
        assert response.status_code == 409, f"the loser must get 409, got {response.status_code}: {response.text}"
        error = response.json()["error"]
        assert error["code"] == "version_conflict", error
        assert any(field["field"] == "version" for field in error["fields"]), error
        current = error["current"]
        assert current is not None, error
        assert current["id"] == group_id
        assert current["description"] == winner, f"the 409 must show the winner's value: {error}"
        assert current["version"] == 2


def _race(server: LiveServer, rounds: int) -> Generator[tuple[int, dict[str, httpx.Response]], None, None]:
    """Per round: a fresh group read by two clients at version 1, then PATCHed by both at once."""
    clients = [server.client_for(server.token), server.client_for(server.token)]
    try:
        for client in clients:  # open both connections before the race
            assert client.get("/api/v1/auth/me").status_code == 200
        for round_number in range(rounds):
            group = _create_group(server.client, server.unique(f"race{round_number}"))
            reads = [client.get(f"/api/v1/groups/{group['id']}").json() for client in clients]
            assert [read["version"] for read in reads] == [1, 1]
            barrier = threading.Barrier(len(clients))
            descriptions = [f"writer {index} round {round_number} {secrets.token_hex(3)}" for index in range(len(clients))]

            def attempt(index: int) -> httpx.Response:
                barrier.wait(timeout=10)
                return _patch(clients[index], group["id"], reads[index]["version"], descriptions[index])

            with ThreadPoolExecutor(len(clients)) as pool:
                results = list(pool.map(attempt, range(len(clients))))
            yield group["id"], dict(zip(descriptions, results, strict=True))
    finally:
        for client in clients:
            client.close()


def _assert_chain_intact(server: LiveServer) -> str:
    checked = run_cli("check", env=portico_env(server.data_dir, server.database_url))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "chain intact" in checked.stdout, checked.stdout
    return checked.stdout


def test_stale_patch_sequential_is_refused_with_the_winners_record(server: LiveServer) -> None:
    group = _create_group(server.client, server.unique("seq"))
    with server.client_for(server.token) as first, server.client_for(server.token) as second:
        read_first = first.get(f"/api/v1/groups/{group['id']}").json()
        read_second = second.get(f"/api/v1/groups/{group['id']}").json()
        assert read_first["version"] == read_second["version"] == 1
        responses = {
            "first writer": _patch(first, group["id"], read_first["version"], "first writer"),
            "second writer": _patch(second, group["id"], read_second["version"], "second writer"),
        }
    winner = _assert_no_lost_update(server, group["id"], responses)
    assert winner == "first writer"
    _assert_loser_got_version_conflict(group["id"], winner, responses)


def test_concurrent_patches_of_one_version_have_exactly_one_winner(server: LiveServer) -> None:
    with contextlib.closing(_race(server, ROUNDS)) as rounds:  # closes the clients even on failure
        for group_id, responses in rounds:
            winner = _assert_no_lost_update(server, group_id, responses)
            _assert_loser_got_version_conflict(group_id, winner, responses)
    _assert_chain_intact(server)


def test_concurrent_creates_all_succeed_and_keep_the_audit_chain(server: LiveServer) -> None:
    prefix = server.unique("bulk")
    barrier = threading.Barrier(CREATE_THREADS)

    def writer(thread: int) -> list[tuple[str, int, str]]:
        outcomes = []
        with server.client_for(server.token) as client:
            barrier.wait(timeout=30)
            for index in range(CREATES_PER_THREAD):
                name = f"{prefix}-t{thread}-n{index}"
                response = client.post("/api/v1/groups", json={"name": name})
                outcomes.append((name, response.status_code, response.text))
        return outcomes

    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        outcomes = [outcome for batch in pool.map(writer, range(CREATE_THREADS)) for outcome in batch]

    failures = [(name, status, text) for name, status, text in outcomes if status != 201]
    assert not failures, f"{len(failures)} of {len(outcomes)} creates failed, e.g. {failures[:3]}"
    expected = CREATE_THREADS * CREATES_PER_THREAD

    listed = server.client.get("/api/v1/groups", params={"q": prefix, "limit": 500})
    assert listed.status_code == 200
    assert listed.json()["total"] == expected
    assert {item["name"] for item in listed.json()["items"]} == {name for name, _, _ in outcomes}

    events = server.client.get("/api/v1/audit-events", params={"q": prefix, "action": "group.create", "limit": 1})
    assert events.status_code == 200
    assert events.json()["total"] == expected, "every create leaves exactly one audit event"

    output = _assert_chain_intact(server)
    assert "[FAIL]" not in output



def test_concurrent_creates_of_one_name_have_one_winner(server: LiveServer) -> None:
    threads = 6
    clients = [server.client_for(server.token) for _ in range(threads)]
    try:
        for round_number in range(5):
            name = server.unique(f"same{round_number}")
            barrier = threading.Barrier(threads)

            def attempt(index: int, name: str = name, barrier: threading.Barrier = barrier) -> httpx.Response:
                barrier.wait(timeout=10)
                return clients[index].post("/api/v1/groups", json={"name": name})

            with ThreadPoolExecutor(threads) as pool:
                results = list(pool.map(attempt, range(threads)))
            statuses = sorted(response.status_code for response in results)
            assert statuses == [201] + [409] * (threads - 1), [(r.status_code, r.text) for r in results]
            for response in results:
                if response.status_code == 409:
                    assert response.json()["error"]["code"] == "duplicate", response.text
            listed = server.client.get("/api/v1/groups", params={"q": name})
            assert listed.json()["total"] == 1
    finally:
        for client in clients:
            client.close()
