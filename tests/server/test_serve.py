"""`portico serve` as an operator meets it: operations endpoints, start-up refusals,
several workers, the encryption key, and a fresh database migrated on first start."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families

from server.storage import migrate
from tests.conftest import (
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    READY_TIMEOUT,
    LiveServer,
    ServerProcess,
    portico_env,
    run_cli,
    start_live_server,
)

pytestmark = pytest.mark.slow

DATABASE_FILE = "portico.sqlite3"
KEY_FILE = "secret.key"
HEAD = migrate.head_revision()


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _schema_in_file(database: Path) -> str | None:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        return None if row is None else str(row[0])
    finally:
        connection.close()


def _refused_start(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`portico serve` that is expected to refuse to start (a started one would time out)."""
    try:
        result = run_cli("serve", "--port", "0", "--log-level", "warning", *args, env=env, timeout=30)
    except subprocess.TimeoutExpired as expired:  # run_cli has killed it
        raise AssertionError(f"portico serve started instead of refusing: {expired.stdout!r} {expired.stderr!r}") from None
    assert '"ready"' not in result.stdout, result.stdout
    return result


# ---------------------------------------------------------------- operations endpoints


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_live_server("sqlite", tmp_path_factory.mktemp("serve"), None)
    yield live
    live.client.close()
    code = live.process.stop()
    assert code == 0, f"portico serve did not stop gracefully (exit {code}):\n{''.join(live.process.output)}"


def test_healthz(server: LiveServer) -> None:
    with server.anonymous() as anonymous:
        response = anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_names_the_current_schema(server: LiveServer) -> None:
    with server.anonymous() as anonymous:
        response = anonymous.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "schema": HEAD}


def _request_counts(text: str) -> dict[tuple[str, str, str], float]:
    counts: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "portico_http_requests_total":
                counts[(sample.labels["method"], sample.labels["route"], sample.labels["status"])] = sample.value
    return counts


def test_metrics_count_requests_per_route_template(server: LiveServer) -> None:
    group = server.client.post("/api/v1/groups", json={"name": server.unique("metrics")})
    assert group.status_code == 201
    group_id = group.json()["id"]
    for _ in range(3):
        assert server.client.get(f"/api/v1/groups/{group_id}").status_code == 200
    assert server.client.get("/api/v1/groups/987654321").status_code == 404
    with server.anonymous() as anonymous:
        assert anonymous.get("/no/such/endpoint/424242").status_code == 404
        response = anonymous.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain"), response.headers["content-type"]
    text = response.text
    assert "# TYPE portico_http_requests_total counter" in text
    assert "portico_http_requests_total{" in text
    assert "portico_http_request_duration_seconds_bucket{" in text

    counts = _request_counts(text)
    template = "/api/v1/groups/{record_id}"
    assert counts.get(("GET", template, "200"), 0) >= 3, counts
    assert counts.get(("GET", template, "404"), 0) >= 1, counts
    assert counts.get(("POST", "/api/v1/groups", "201"), 0) >= 1, counts
    routes = {route for _, route, _ in counts}
    # Never a raw path: ids would make one series per record.
    numeric_segments = [route for route in routes if any(segment.isdigit() for segment in route.split("/"))]
    assert not numeric_segments, routes
    assert f"/api/v1/groups/{group_id}" not in text and "987654321" not in text and "424242" not in text
    assert all(route.startswith("/") or route == "unmatched" for route in routes), routes


# ---------------------------------------------------------------- a fresh database, as `make run` starts it


def _start_console_script(env: dict[str, str]) -> tuple[subprocess.Popen[str], dict[str, Any], list[str]]:
    """`.venv/bin/portico serve`, the command `make run` runs; returns once it printed "ready"."""
    script = Path(sys.executable).parent / "portico"
    assert script.exists(), f"no console script at {script}"
    process = subprocess.Popen(
        [str(script), "serve", "--port", "0", "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output: list[str] = []
    ready: dict[str, Any] = {}
    seen = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if line.startswith("{") and '"ready"' in line:
                ready.update(json.loads(line))
                seen.set()

    threading.Thread(target=pump, daemon=True).start()
    if not seen.wait(READY_TIMEOUT):
        process.kill()
        process.wait(10)
        raise AssertionError("portico serve did not become ready:\n" + "".join(output))
    return process, ready, output


def test_first_start_creates_and_migrates_the_database_in_the_user_data_dir(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PORTICO_", "XDG_"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / ".local" / "share"))
    data_dir = home / ".local" / "share" / "portico"
    assert not home.exists()

    process, ready, output = _start_console_script(env)
    try:
        assert ready["pid"] == process.pid
        with httpx.Client(base_url=ready["url"], timeout=30) as client:
            readyz = client.get("/readyz")
            assert readyz.status_code == 200, readyz.text
            assert readyz.json() == {"status": "ready", "schema": HEAD}
            # No superuser yet: the API answers, and refuses the anonymous caller properly.
            assert client.get("/api/v1/groups").status_code == 401
    finally:
        process.terminate()
        code = process.wait(20)
        assert process.stdout is not None
        process.stdout.close()
    assert code == 0, "".join(output)

    assert (data_dir / DATABASE_FILE).is_file()
    assert _schema_in_file(data_dir / DATABASE_FILE) == HEAD
    key_file = data_dir / KEY_FILE
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, oct(key_file.stat().st_mode)
    Fernet(key_file.read_text().strip().encode())  # a valid key


def test_first_start_migrates_a_fresh_postgresql_database(tmp_path: Path, fresh_postgres_database: Callable[[], str]) -> None:
    database_url = fresh_postgres_database()
    process = ServerProcess(portico_env(tmp_path, database_url)).start()
    try:
        with httpx.Client(base_url=process.url, timeout=30) as client:
            assert client.get("/readyz").json() == {"status": "ready", "schema": HEAD}
    finally:
        assert process.stop() == 0, "".join(process.output)
    key_file = tmp_path / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


# ---------------------------------------------------------------- --no-migrate


def test_no_migrate_on_an_empty_database_refuses_to_start(tmp_path: Path) -> None:
    env = portico_env(tmp_path)
    refused = _refused_start("--no-migrate", env=env)
    assert refused.returncode != 0
    assert "portico migrate" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr, refused.stderr
    if (tmp_path / DATABASE_FILE).exists():
        assert _schema_or_none(tmp_path / DATABASE_FILE) is None, "--no-migrate must not migrate"

    # Once migrated by the operator, the same command starts.
    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert HEAD in migrated.stdout
    process = ServerProcess(env, args=("--no-migrate",)).start()
    try:
        with httpx.Client(base_url=process.url, timeout=30) as client:
            assert client.get("/readyz").json()["schema"] == HEAD
    finally:
        assert process.stop() == 0, "".join(process.output)


def _schema_or_none(database: Path) -> str | None:
    try:
        return _schema_in_file(database)
    except sqlite3.OperationalError:  # no alembic_version table: nothing was migrated
        return None


# ---------------------------------------------------------------- several workers


def _pids_owning_socket(pids: list[int], inode: str) -> list[int]:
    owners = []
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    owners.append(pid)
                    break
            except OSError:
                continue
    return owners


def _server_side_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the server's end of 127.0.0.1:client_port -> 127.0.0.1:server_port."""
    local = f"0100007F:{server_port:04X}"
    remote = f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return fields[9]
    return None


def _answering_pid(port: int, worker_pids: list[int]) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as connection:
        client_port = connection.getsockname()[1]
        connection.sendall(f"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            assert chunk, f"connection closed early: {received!r}"
            received += chunk
        assert received.startswith(b"HTTP/1.1 200"), received
        assert b'"status":"ready"' in received.replace(b" ", b""), received
        # The connection is still open: find which worker holds its server side.
        inode = _server_side_inode(port, client_port)
        assert inode is not None, "the connection is not in /proc/net/tcp"
        owners = _pids_owning_socket(worker_pids, inode)
        assert len(owners) == 1, f"socket {inode} owned by {owners} among {worker_pids}"
        return owners[0]


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc to see which worker answers")
def test_two_workers_both_answer_and_stop_together(tmp_path: Path) -> None:
    env = portico_env(tmp_path)
    port = _free_port()
    process = ServerProcess(env, args=("--workers", "2", "--port", str(port))).start()
    try:
        assert process.url == f"http://127.0.0.1:{port}"

        def ready_pids() -> list[int]:
            return [json.loads(line)["pid"] for line in list(process.output) if line.startswith("{") and '"ready"' in line]

        _wait_until(lambda: len(ready_pids()) == 2, timeout=READY_TIMEOUT, what="both workers to be ready")
        workers = ready_pids()
        assert process.process is not None
        assert len(set(workers)) == 2 and process.process.pid not in workers, workers

        seen: set[int] = set()
        deadline = time.monotonic() + 30
        while seen != set(workers):
            assert time.monotonic() < deadline, f"only {seen} of {workers} answered"
            seen.add(_answering_pid(port, workers))
    finally:
        code = process.stop()
    assert code == 0, "".join(process.output)
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived the SIGTERM"
    assert "Traceback" not in "".join(process.output), "".join(process.output)


def test_several_workers_need_a_fixed_port(tmp_path: Path) -> None:
    refused = _refused_start("--workers", "2", env=portico_env(tmp_path))
    assert refused.returncode == 2
    assert "--port" in refused.stderr, refused.stderr


def test_a_port_in_use_is_refused_with_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            result = run_cli("serve", "--port", str(port), "--log-level", "warning", env=portico_env(tmp_path), timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError("portico serve started on a port that is in use") from None
    assert result.returncode != 0
    assert str(port) in result.stderr and "in use" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


# ---------------------------------------------------------------- the encryption key


@pytest.fixture(scope="module")
def existing_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory that has been used: database, key file and recorded key check."""
    data_dir = tmp_path_factory.mktemp("existing")
    created = run_cli(
        "createsuperuser", "--username", ADMIN_USERNAME, "--no-input",
        env={**portico_env(data_dir), "PORTICO_SUPERUSER_PASSWORD": ADMIN_PASSWORD},
    )
    assert created.returncode == 0, created.stderr
    return data_dir


def _key_is_still_accepted(data_dir: Path) -> None:
    checked = run_cli("check", env=portico_env(data_dir))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "[ok] encryption key" in checked.stdout, checked.stdout


def test_a_different_secret_key_is_refused(existing_data_dir: Path) -> None:
    other_key = Fernet.generate_key().decode()
    assert other_key not in (existing_data_dir / KEY_FILE).read_text()
    refused = _refused_start(env=portico_env(existing_data_dir, PORTICO_SECRET_KEY=other_key))
    assert refused.returncode != 0
    message = refused.stderr
    assert "encryption key" in message and "not the one" in message, message
    assert "PORTICO_SECRET_KEY" in message, message
    assert "Traceback" not in message, message
    assert other_key not in message + refused.stdout, "the key itself must never be printed"
    _key_is_still_accepted(existing_data_dir)  # the refusal did not overwrite the recorded key


def test_a_malformed_secret_key_is_refused(existing_data_dir: Path) -> None:
    refused = _refused_start(env=portico_env(existing_data_dir, PORTICO_SECRET_KEY="not-a-fernet-key"))
    assert refused.returncode != 0
    assert "malformed encryption key" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr, refused.stderr


def test_the_original_key_given_in_the_environment_is_accepted(existing_data_dir: Path) -> None:
    key = (existing_data_dir / KEY_FILE).read_text().strip()
    process = ServerProcess(portico_env(existing_data_dir, PORTICO_SECRET_KEY=key)).start()
    assert process.stop() == 0, "".join(process.output)


def test_a_key_file_readable_by_others_is_refused(existing_data_dir: Path) -> None:
    key_file = existing_data_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key_file.chmod(0o644)
    try:
        refused = _refused_start(env=portico_env(existing_data_dir))
    finally:
        key_file.chmod(0o600)
    assert refused.returncode != 0
    assert "chmod 600" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr, refused.stderr
