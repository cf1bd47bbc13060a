"""`portico serve --embedded`: the console's child server and its one-time credential.

Real child processes only: the credential must reach the parent through the stdout pipe and
nowhere else, act as the database's local owner, and the child must not outlive its parent.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import READY_TIMEOUT, portico_env

pytestmark = pytest.mark.slow


@dataclass
class Embedded:
    process: subprocess.Popen[bytes]
    ready: dict[str, Any]

    @property
    def url(self) -> str:
        return str(self.ready["url"])

    @property
    def token(self) -> str:
        return str(self.ready["console_token"])

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token or self.token}"}, timeout=30)


def _read_ready(stream: Any, timeout: float) -> dict[str, Any]:
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buffer = b""
    while b"\n" not in buffer:
        if not selector.select(max(0.0, deadline - time.monotonic())):
            raise AssertionError("no ready line in time")
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            raise AssertionError("the embedded server exited before it was ready")
        buffer += chunk
    selector.close()
    ready: dict[str, Any] = json.loads(buffer.split(b"\n", 1)[0])
    return ready


def _start(data_dir: Path, *extra: str) -> Embedded:
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--embedded", "--port", "0", "--log-level", "warning", *extra],
        env=portico_env(data_dir),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    return Embedded(process, _read_ready(process.stdout, READY_TIMEOUT))


def _stop(embedded: Embedded) -> int:
    process = embedded.process
    assert process.stdin is not None
    process.stdin.close()
    if process.poll() is None:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Embedded]:
    server = _start(tmp_path)
    yield server
    _stop(server)


def test_ready_line_carries_a_fresh_console_credential(embedded: Embedded, tmp_path: Path) -> None:
    assert embedded.ready["event"] == "ready"
    assert embedded.url.startswith("http://127.0.0.1:")
    token = embedded.token
    assert token.startswith("pec_") and len(token) >= 40
    # Never on the command line, never on disk.
    cmdline = Path(f"/proc/{embedded.process.pid}/cmdline")
    if cmdline.exists():
        assert token.encode() not in cmdline.read_bytes()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_each_start_makes_a_new_credential(tmp_path: Path) -> None:
    first = _start(tmp_path)
    try:
        token = first.token
    finally:
        assert _stop(first) == 0
    second = _start(tmp_path)
    try:
        assert second.token != token
        with second.client(token) as stale:
            assert stale.get("/api/v1/users").status_code == 401
    finally:
        _stop(second)


def test_the_credential_is_the_local_owner(embedded: Embedded) -> None:
    with embedded.client() as api:
        users = api.get("/api/v1/users")
        assert users.status_code == 200, users.text
        assert users.json()["total"] == 0
        # The first superuser of an empty database is made through the API with it.
        created = api.post(
            "/api/v1/users",
            json={"username": "first", "password": "correct horse battery", "is_superuser": True, "is_staff": True},
        )
        assert created.status_code == 201, created.text
        group = api.post("/api/v1/groups", json={"name": "Radiology"})
        assert group.status_code == 201, group.text
        events = api.get("/api/v1/audit-events", params={"action": "group.create"}).json()["items"]
        assert events[0]["actor"] == "console (local)"
        assert events[0]["actor_user_id"] is None
        assert events[0]["client_address"] == "127.0.0.1"
        # The owner is no user: deleting any user is not "deleting your own account".
        user_id = created.json()["id"]
        second = api.post("/api/v1/users", json={"username": "second", "is_superuser": True, "is_staff": True}).json()
        assert api.delete(f"/api/v1/users/{second['id']}", params={"version": second["version"]}).status_code == 204
        assert api.get(f"/api/v1/users/{user_id}").status_code == 200


def test_wrong_or_missing_credential_is_refused(embedded: Embedded) -> None:
    wrong = embedded.token[:-4] + ("AAAA" if not embedded.token.endswith("AAAA") else "BBBB")
    with embedded.client(wrong) as api:
        answer = api.get("/api/v1/users")
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "not_authenticated"
    assert httpx.get(f"{embedded.url}/api/v1/users").status_code == 401


def test_passwords_still_work_beside_the_credential(embedded: Embedded) -> None:
    with embedded.client() as api:
        assert api.post("/api/v1/users", json={"username": "alice", "password": "alice password", "is_superuser": True, "is_staff": True}).status_code == 201
    login = httpx.post(f"{embedded.url}/api/v1/auth/login", json={"username": "alice", "password": "alice password"})
    assert login.status_code == 200
    me = httpx.get(f"{embedded.url}/api/v1/auth/me", headers={"Authorization": f"Bearer {login.json()['token']}"})
    assert me.json()["username"] == "alice"


def test_listens_on_loopback_only_whatever_the_host(tmp_path: Path) -> None:
    server = _start(tmp_path, "--host", "0.0.0.0")
    try:
        assert server.url.startswith("http://127.0.0.1:")
    finally:
        _stop(server)


def test_stops_gracefully_when_stdin_closes(embedded: Embedded) -> None:
    assert embedded.process.stdin is not None
    embedded.process.stdin.close()
    assert embedded.process.wait(20) == 0


def test_sigterm_is_still_a_graceful_stop(embedded: Embedded) -> None:
    embedded.process.send_signal(signal.SIGTERM)
    assert embedded.process.wait(20) == 0


_PARENT = textwrap.dedent(
    """
    import subprocess, sys
    child = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--embedded", "--port", "0", "--log-level", "warning"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    line = child.stdout.readline()
    print(child.pid, flush=True)
    import time
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose; its reaper is init now.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process bookkeeping through /proc")
def test_child_dies_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], env=portico_env(tmp_path), stdout=subprocess.PIPE, text=True,
    )
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert _alive(child_pid)
    parent.kill()
    parent.wait(10)
    parent.stdout.close()
    deadline = time.monotonic() + 20
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child_pid), "the embedded server outlived the console"


def test_embedded_needs_one_worker(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--embedded", "--workers", "2", "--port", "0"],
        env=portico_env(tmp_path), capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "--embedded" in result.stderr


def test_the_local_owner_makes_shares_and_is_told_api_tokens_need_a_user(embedded: Embedded) -> None:
    with embedded.client() as api:
        server = api.post("/api/v1/imaging-servers", json={"token": "pacs", "name": "PACS", "hostname": "pacs"}).json()
        share = api.post("/api/v1/shares", json={
            "type": "viewer-instant-link", "imaging_server_id": server["id"],
            "resources": [{"level": "study", "orthanc_id": None, "dicom_uid": "1.2.840.113619.2.1", "url": None}],
        })
        assert share.status_code == 201, share.text
        token = api.post("/api/v1/credentials", json={"kind": "api-token"})
        assert token.status_code == 422 and token.json()["error"]["fields"][0]["field"] == "user_id"
        assert "belongs to a user" in token.json()["error"]["fields"][0]["message"]
