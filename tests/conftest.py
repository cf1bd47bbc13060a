"""Shared fixtures: real `portico serve` processes on loopback, on SQLite and on PostgreSQL.

Nothing here is mocked: each server is a child process started with the real command,
reached over HTTP, and stopped with SIGTERM (its exit code is checked: a graceful stop).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

PG_ADMIN_URL = os.environ.get("PORTICO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "correct horse battery staple"
READY_TIMEOUT = 60.0


def _postgres_reason() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as error:
        return f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {str(error).strip()}"


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    reason = _postgres_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run)")
        pytest.skip(reason)
    return PG_ADMIN_URL


@pytest.fixture(scope="session")
def fresh_postgres_database(postgres_admin_url: str) -> Iterator[Any]:
    """A factory of new, empty databases, dropped at the end of the session."""
    created: list[str] = []

    def make() -> str:
        name = f"portico_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        base = postgres_admin_url.rsplit("/", 1)[0]
        return f"{base}/{name}"

    yield make
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        for name in created:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def portico_env(data_dir: Path, database_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTICO_")}
    env["PORTICO_DATA_DIR"] = str(data_dir)
    if database_url:
        env["PORTICO_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str], input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class ServerProcess:
    """One `portico serve` child process."""

    env: dict[str, str]
    args: tuple[str, ...] = ()
    process: subprocess.Popen[str] | None = None
    url: str = ""
    output: list[str] = field(default_factory=list)
    started_in: float = 0.0

    def start(self) -> ServerProcess:
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--port", "0", "--log-level", "warning", *self.args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line)
                if line.startswith("{") and '"ready"' in line:
                    self.url = json.loads(line)["url"]
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(READY_TIMEOUT) or not self.url:
            self.kill()
            raise RuntimeError("portico serve did not become ready:\n" + "".join(self.output))
        self.started_in = time.perf_counter() - started
        return self

    def stop(self, timeout: float = 20) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._close()

    def _close(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()


def login(url: str, username: str = ADMIN_USERNAME, password: str = ADMIN_PASSWORD) -> str:
    response = httpx.post(f"{url}/api/v1/auth/login", json={"username": username, "password": password})
    response.raise_for_status()
    token: str = response.json()["token"]
    return token


@dataclass
class LiveServer:
    """A running server with a superuser, and an authenticated client for it."""

    backend: str
    process: ServerProcess
    data_dir: Path
    database_url: str | None
    token: str
    client: httpx.Client

    @property
    def url(self) -> str:
        return self.process.url

    def anonymous(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def client_for(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def unique(self, stem: str) -> str:
        """A name no other test uses on this shared server."""
        return f"{stem}-{secrets.token_hex(4)}"


def start_live_server(backend: str, tmp: Path, database_url: str | None, **env: str) -> LiveServer:
    environment = portico_env(tmp, database_url, **env)
    created = run_cli("createsuperuser", "--username", ADMIN_USERNAME, "--no-input", env={**environment, "PORTICO_SUPERUSER_PASSWORD": ADMIN_PASSWORD})
    assert created.returncode == 0, created.stderr
    process = ServerProcess(environment).start()
    token = login(process.url)
    client = httpx.Client(base_url=process.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return LiveServer(backend, process, tmp, database_url, token, client)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def live_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One shared server per backend for the API tests; tests use unique names."""
    database_url = None
    if request.param == "postgresql":
        database_url = request.getfixturevalue("fresh_postgres_database")()
    server = start_live_server(request.param, tmp_path_factory.mktemp(f"live-{request.param}"), database_url)
    yield server
    server.client.close()
    code = server.process.stop()
    assert code == 0, f"portico serve did not stop gracefully (exit {code}):\n{''.join(server.process.output)}"


@pytest.fixture
def api(live_server: LiveServer) -> httpx.Client:
    return live_server.client
