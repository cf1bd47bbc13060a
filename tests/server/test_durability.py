"""Crash and stop behaviour of `portico serve` on SQLite.

- SIGKILL in the middle of a stream of writes loses no acknowledged write, leaves an
  intact database file and an unbroken audit chain, and the server starts again on it.
- SIGTERM lets requests in flight finish (a request whose body is still arriving when the
  signal comes is answered), refuses new connections, and exits 0.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import LiveServer, ServerProcess, login, portico_env, run_cli, start_live_server

pytestmark = pytest.mark.slow

DATABASE_FILE = "portico.sqlite3"
WANTED_WRITES = 60
WRITE_WINDOW = 1.0  # seconds of writing before the kill, if WANTED_WRITES come later
MAX_WRITES = 400  # keeps every name on one page of the list


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def _group_names(url: str, token: str, prefix: str) -> set[str]:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        response = client.get("/api/v1/groups", params={"q": prefix, "limit": 500})
        assert response.status_code == 200, response.text
        assert response.json()["total"] <= 500
        return {item["name"] for item in response.json()["items"]}


def _integrity(database: Path) -> list[str]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return [row[0] for row in connection.execute("PRAGMA integrity_check")]
    finally:
        connection.close()


def _stored_names(database: Path, prefix: str) -> set[str]:
    """Group names straight from the SQLite file of a stopped server (read-only)."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return {row[0] for row in connection.execute("SELECT name FROM groups WHERE name LIKE ? || '%'", (prefix,))}
    finally:
        connection.close()


def _check(env: dict[str, str]) -> str:
    checked = run_cli("check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "chain intact" in checked.stdout, checked.stdout
    assert "[ok] sqlite integrity: ok" in checked.stdout, checked.stdout
    return checked.stdout


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_live_server("sqlite", tmp_path, None)
    try:
        yield live
    finally:
        live.client.close()
        live.process.kill()  # a no-op when the test already stopped or killed it


def test_sigkill_mid_write_loses_no_acknowledged_write(sqlite_server: LiveServer) -> None:
    live = sqlite_server
    prefix = live.unique("durable")
    acknowledged: list[str] = []
    refused: list[tuple[str, int, str]] = []
    stop = threading.Event()

    def writer() -> None:
        with live.client_for(live.token) as client:
            for index in range(MAX_WRITES):
                if stop.is_set():
                    return
                name = f"{prefix}-{index:04d}"
                try:
                    response = client.post("/api/v1/groups", json={"name": name})
                except httpx.TransportError:
                    return  # the server died under this request: its outcome is unknown
                if response.status_code == 201:
                    acknowledged.append(name)  # only once the server said it is stored
                else:
                    refused.append((name, response.status_code, response.text))

    with ThreadPoolExecutor(1) as pool:
        writing = pool.submit(writer)
        started = time.monotonic()
        _wait_until(
            lambda: len(acknowledged) >= WANTED_WRITES or (time.monotonic() - started >= WRITE_WINDOW and bool(acknowledged)) or writing.done(),
            timeout=30,
            what="acknowledged writes",
        )
        assert not writing.done(), "the writer stopped before the kill: " + "".join(live.process.output)
        live.process.kill()  # SIGKILL, in the middle of the stream of writes
        stop.set()
        writing.result(timeout=30)

    assert not refused, refused[:3]
    assert live.process.process is not None and live.process.process.returncode == -signal.SIGKILL
    assert acknowledged, "no write was acknowledged before the kill"

    database = live.data_dir / DATABASE_FILE
    # Straight after the crash, before anything opens it for writing.
    assert _integrity(database) == ["ok"]

    env = portico_env(live.data_dir)
    restarted = ServerProcess(env).start()
    try:
        stored = _group_names(restarted.url, login(restarted.url), prefix)
    finally:
        code = restarted.stop()
    assert code == 0, "".join(restarted.output)

    lost = [name for name in acknowledged if name not in stored]
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged writes were lost, e.g. {lost[:5]}"
    # At most the one request that was in flight at the kill may have been stored unacknowledged.
    assert len(stored - set(acknowledged)) <= 1, sorted(stored - set(acknowledged))

    assert _integrity(database) == ["ok"]
    _check(env)


def _raw_request_head(url: str, token: str, body_length: int) -> socket.socket:
    """Open a connection and send a POST's head with ``Expect: 100-continue``, not its body."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    connection = socket.create_connection((parts.hostname, parts.port), timeout=15)
    head = (
        f"POST /api/v1/groups HTTP/1.1\r\n"
        f"Host: {parts.hostname}:{parts.port}\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\n"
        f"Content-Length: {body_length}\r\n"
        f"Expect: 100-continue\r\n"
        f"Connection: close\r\n\r\n"
    )
    connection.sendall(head.encode())
    return connection


def _read_until(connection: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        chunk = connection.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2):
            return True
    except OSError:
        return False


def test_sigterm_finishes_a_request_in_flight_and_exits_0(sqlite_server: LiveServer) -> None:
    live = sqlite_server
    name = live.unique("in-flight")
    body = json.dumps({"name": name}).encode()
    connection = _raw_request_head(live.url, live.token, len(body))
    with contextlib.closing(connection):
        # "100 Continue" comes when the application asks for the body: the request is being handled.
        interim = _read_until(connection, b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100"), interim
        assert live.process.process is not None
        live.process.process.send_signal(signal.SIGTERM)
        # Shutdown has begun once the listening socket is closed; the request is still open.
        _wait_until(lambda: not _listening(live.url), timeout=10, what="the listener to close after SIGTERM")
        assert live.process.process.poll() is None, "the server exited with a request in flight"
        connection.sendall(body)
        response = _read_until(connection, b"\0")  # to the end: the server closes (Connection: close)
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 201"), response
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["name"] == name
    code = live.process.stop()
    assert code == 0, "".join(live.process.output)
    assert _stored_names(live.data_dir / DATABASE_FILE, name) == {name}


def test_sigterm_during_a_stream_of_requests_drops_no_handled_request(sqlite_server: LiveServer) -> None:
    live = sqlite_server
    prefix = live.unique("stream")
    threads = 4
    per_thread = 400
    acknowledged: list[str] = []
    failed: list[tuple[str, str]] = []
    bad_status: list[tuple[str, int, str]] = []
    lock = threading.Lock()

    def writer(thread: int) -> None:
        with live.client_for(live.token) as client:
            for index in range(per_thread):
                name = f"{prefix}-t{thread}-{index:04d}"
                try:
                    response = client.post("/api/v1/groups", json={"name": name})
                except httpx.TransportError as error:
                    with lock:
                        failed.append((name, repr(error)))
                    return  # the server is going away: new connections are refused
                with lock:
                    if response.status_code == 201:
                        acknowledged.append(name)
                    else:
                        bad_status.append((name, response.status_code, response.text))

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(writer, thread) for thread in range(threads)]
        _wait_until(lambda: len(acknowledged) >= 40 or any(f.done() for f in futures), timeout=30, what="writes")
        assert not any(future.done() for future in futures), "a writer stopped before SIGTERM"
        assert live.process.process is not None
        live.process.process.send_signal(signal.SIGTERM)
        try:
            code = live.process.process.wait(30)
        finally:
            for future in futures:
                future.result(timeout=30)
    live.process.stop()
    assert code == 0, f"exit {code} after SIGTERM:\n{''.join(live.process.output)}"
    assert not bad_status, bad_status[:3]
    assert "Traceback" not in "".join(live.process.output), "".join(live.process.output)

    stored = _stored_names(live.data_dir / DATABASE_FILE, prefix)
    assert failed, "SIGTERM came after every writer had finished"
    assert set(acknowledged) <= stored, "an acknowledged write was lost"
    # A request the server handled was answered: nothing was stored behind a dropped response.
    unanswered = sorted(stored - set(acknowledged))
    assert not unanswered, f"stored but never answered (in flight when SIGTERM came): {unanswered} / failures: {failed}"
