"""Helpers of the Orthanc web-service tests: a plugin client, raw HTTP over a socket,
strict checks of the answers' JSON types, and the records a test needs (imaging server,
plugin credential, users with rules and tokens), created through the admin API."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from tests.conftest import LiveServer, start_live_server

API = "/api/v1"
JSON_TYPE = "application/json"
INT32_MAX = 2**31 - 1

# What the captured plugin was configured with (see /work/shared/wire/README.md).
RIG_SERVER = "rig-orthanc"
RIG_USERNAME = "orthanc-plugin"
RIG_SECRET = "rig-secret"

# The resources of the capture.
PATIENT_ID = "RIG-0001"
PATIENT_OID = "cdca6a4a-42c41789-cf08a3cc-80b9f8ec-0bded3a8"
STUDY_UID = "1.2.826.0.1.3680043.8.498.4242.1"
STUDY_OID = "c8274410-057eab77-c536e331-adea62dc-ebad447c"
SERIES_UID = "1.2.826.0.1.3680043.8.498.4242.2"
SERIES_OID = "574d969a-8ef00af6-2c8071ee-d84f5ef9-f0a89e75"
INSTANCE_UID = "1.2.826.0.1.3680043.8.498.4242.3.1"
INSTANCE_OID = "66adaa17-af25459d-c0bea67c-f3999dd4-61db9f8c"
OTHER_STUDY_UID = "1.2.826.0.1.3680043.8.498.9999.1"
OTHER_STUDY_OID = "0f0f0f0f-11111111-22222222-33333333-44444444"

PROFILE_KEYS = {"name", "permissions", "authorized-labels", "validity"}
PROFILE_OPTIONAL = {"groups", "user-id"}
DECODE_KEYS = {"token-type", "redirect-url", "error-code", "resources"}


# ---------------------------------------------------------------- backends


def backend_database(request: pytest.FixtureRequest, backend: str) -> str | None:
    """None for SQLite; a new, empty PostgreSQL database otherwise (skips without one)."""
    if backend == "sqlite":
        return None
    make: Callable[[], str] = request.getfixturevalue("fresh_postgres_database")
    return make()


@contextmanager
def running(backend: str, tmp: Path, database_url: str | None, **env: str) -> Iterator[LiveServer]:
    """A live server that is always stopped (and its client closed), whatever the test did."""
    live = start_live_server(backend, tmp, database_url, **env)
    try:
        yield live
    finally:
        live.client.close()
        code = live.process.stop()
        assert code == 0, f"portico serve did not stop gracefully (exit {code}):\n{''.join(live.process.output)}"


# ---------------------------------------------------------------- admin API


def ok(response: httpx.Response) -> Any:
    assert response.is_success, f"{response.request.method} {response.request.url}: {response.status_code} {response.text[:2000]}"
    return response.json() if response.content else None


@dataclass
class Member:
    """A user in a group of its own, with one access rule on one imaging server and an API token."""

    user_id: int
    username: str
    password: str
    group_id: int
    rule_id: int
    token: str
    credential_id: int


@dataclass
class Admin:
    live: LiveServer

    @property
    def api(self) -> httpx.Client:
        return self.live.client

    def unique(self, stem: str) -> str:
        return self.live.unique(stem)

    def imaging_server(self, token: str, **extra: Any) -> dict[str, Any]:
        body = {"token": token, "name": self.unique(token), "hostname": "orthanc.example.org", **extra}
        result: dict[str, Any] = ok(self.api.post(f"{API}/imaging-servers", json=body))
        return result

    def plugin_credential(self, imaging_server_id: int) -> tuple[str, str]:
        created = ok(self.api.post(f"{API}/credentials", json={"kind": "orthanc-plugin", "imaging_server_id": imaging_server_id}))
        return created["username"], created["secret"]

    def api_token(self, user_id: int) -> tuple[str, int]:
        created = ok(self.api.post(f"{API}/credentials", json={"kind": "api-token", "user_id": user_id}))
        return created["secret"], created["credential"]["id"]

    def rule(self, group_id: int, imaging_server_id: int, capabilities: list[str], **extra: Any) -> dict[str, Any]:
        body = {"group_id": group_id, "imaging_server_id": imaging_server_id, "capabilities": capabilities, **extra}
        result: dict[str, Any] = ok(self.api.post(f"{API}/access-rules", json=body))
        return result

    def member(self, stem: str, imaging_server_id: int, capabilities: list[str], *, can_log_in: bool = False, **rule: Any) -> Member:
        """A new user in a new group with one rule; a password (slow to hash) only when it will log in."""
        username = self.unique(stem)
        password = "a long enough password"
        user = ok(self.api.post(f"{API}/users", json={"username": username, **({"password": password} if can_log_in else {})}))
        group = ok(self.api.post(f"{API}/groups", json={"name": self.unique(f"{stem}-group")}))
        ok(self.api.post(f"{API}/groups/{group['id']}/members/add", json={"user_ids": [user["id"]]}))
        created_rule = self.rule(group["id"], imaging_server_id, capabilities, **rule)
        token, credential_id = self.api_token(user["id"])
        return Member(user["id"], username, password, group["id"], created_rule["id"], token, credential_id)

    def login(self, username: str, password: str) -> tuple[str, str]:
        """An admin-API session of this user: (pss_ token, session id)."""
        with self.live.anonymous() as anonymous:
            body = ok(anonymous.post(f"{API}/auth/login", json={"username": username, "password": password}))
        return body["token"], body["session_id"]

    def bump(self) -> None:
        """A committed write to a watched table: every decision cache is dropped."""
        ok(self.api.post(f"{API}/groups", json={"name": self.unique("bump")}))

    def audit(self, action: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = ok(self.api.get(f"{API}/audit-events", params={"action": action, "limit": 200}))["items"]
        return items


def seed_plugin_credential(live: LiveServer, imaging_server_id: int, username: str = RIG_USERNAME, secret: str = RIG_SECRET) -> None:
    """A plugin credential with a chosen username, written straight into the database.

    Portico generates credential ids (``poc_...``); the capture used ``orthanc-plugin``.
    Call this before any plugin call with these credentials, then make a watched write
    (``Admin.bump``) so that no cache can hold an older answer.
    """
    now = datetime.now(UTC).replace(tzinfo=None)
    row = ("orthanc-plugin", username, hashlib.sha256(secret.encode()).hexdigest(), "", imaging_server_id, 1)
    sql = (
        "INSERT INTO credentials (kind, public_id, secret_hash, description, imaging_server_id, version, created_at, updated_at) "
        "VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})"
    )
    if live.database_url is None:
        stamp = now.isoformat(sep=" ", timespec="microseconds")
        lite = sqlite3.connect(live.data_dir / "portico.sqlite3", timeout=30)
        try:
            with lite:
                lite.execute(sql.format(p="?"), (*row, stamp, stamp))
        finally:
            lite.close()
    else:
        with psycopg.connect(live.database_url) as connection:
            connection.execute(sql.format(p="%s"), (*row, now, now))


# ---------------------------------------------------------------- strict answers


def error_of(response: httpx.Response | RawResponse, status: int | None = None) -> dict[str, Any]:
    """A 4xx answer with ``{"error": {"code", "message"}}``; returns ``error``."""
    assert 400 <= response.status_code < 500, f"{response.status_code} {response.content[:500]!r}"
    if status is not None:
        assert response.status_code == status, f"{response.status_code} {response.content[:500]!r}"
    assert response.headers.get("content-type", "").startswith(JSON_TYPE), response.headers
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and isinstance(error.get("code"), str) and error["code"], body
    assert isinstance(error.get("message"), str) and error["message"].strip(), body
    return error


def _answer(response: httpx.Response | RawResponse) -> Any:
    assert response.status_code == 200, f"{response.status_code} {response.content[:1000]!r}"
    content_type = response.headers.get("content-type", "")
    assert content_type.split(";")[0].strip() == JSON_TYPE, content_type
    return json.loads(response.content)


def strict_validate(response: httpx.Response | RawResponse) -> dict[str, Any]:
    """Exactly ``{"granted": bool, "validity": int >= 0}``, an int the plugin can read."""
    body = _answer(response)
    assert isinstance(body, dict) and set(body) == {"granted", "validity"}, body
    assert type(body["granted"]) is bool, body
    assert type(body["validity"]) is int and 0 <= body["validity"] <= INT32_MAX, body
    return body


def strict_profile(response: httpx.Response | RawResponse) -> dict[str, Any]:
    body = _answer(response)
    assert isinstance(body, dict), body
    assert PROFILE_KEYS <= set(body) <= PROFILE_KEYS | PROFILE_OPTIONAL, body
    assert type(body["name"]) is str, body
    for key in ("permissions", "authorized-labels"):
        assert type(body[key]) is list and all(type(item) is str for item in body[key]), body
    # 0 would mean "cache this profile forever" to the plugin.
    assert type(body["validity"]) is int and 1 <= body["validity"] <= INT32_MAX, body
    if "groups" in body:
        assert type(body["groups"]) is list and all(type(item) is str for item in body["groups"]), body
    if "user-id" in body:
        assert type(body["user-id"]) is str, body
    return body


def strict_created(response: httpx.Response | RawResponse) -> dict[str, Any]:
    body = _answer(response)
    assert isinstance(body, dict) and set(body) == {"token", "url"}, body
    assert type(body["token"]) is str and body["token"], body
    assert body["url"] is None or type(body["url"]) is str, body
    return body


def strict_decoded(response: httpx.Response | RawResponse) -> dict[str, Any]:
    body = _answer(response)
    assert isinstance(body, dict) and set(body) <= DECODE_KEYS, body
    for key in ("token-type", "redirect-url", "error-code"):
        if key in body:
            assert type(body[key]) is str, body
    if "error-code" in body:
        assert body["error-code"] in ("expired", "invalid", "unknown"), body
    if "resources" in body:
        assert type(body["resources"]) is list, body
        for resource in body["resources"]:
            assert type(resource) is dict and all(type(value) is str for value in resource.values()), body
            assert set(resource) <= {"dicom-uid", "orthanc-id", "url", "level"}, body
    return body


# ---------------------------------------------------------------- the plugin's side


def basic(username: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()


class Plugin:
    """Calls Portico's Orthanc web service as the authorization plugin would (over httpx)."""

    def __init__(self, url: str, server: str, username: str, secret: str) -> None:
        self.server = server
        self.client = httpx.Client(base_url=url, headers={"Authorization": basic(username, secret)}, timeout=30)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Plugin:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def root(self, server: str | None = None) -> str:
        return f"/orthanc/{server or self.server}/"

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, fresh: bool = False, **kwargs: Any) -> httpx.Response:
        """One call; ``fresh`` on a connection of its own (after a 500 the server drops the connection)."""
        content = raw if raw is not None else json.dumps(body).encode()
        headers = {"Content-Type": JSON_TYPE, **kwargs.pop("headers", {})}
        url = self.root(kwargs.pop("server", None)) + path
        if fresh:
            with httpx.Client(base_url=self.client.base_url, headers=self.client.headers, timeout=30) as client:
                return client.request(method, url, content=content, headers=headers, **kwargs)
        return self.client.request(method, url, content=content, headers=headers, **kwargs)

    def validate_response(self, body: Any = None, **kwargs: Any) -> httpx.Response:
        return self.call("POST", "tokens/validate", body, **kwargs)

    def validate(self, token: str | None, method: str = "get", level: str = "study", **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"method": method, "level": level, "server-id": self.server}
        if level == "study":
            body.update({"orthanc-id": STUDY_OID, "dicom-uid": STUDY_UID})
        if token is not None:
            body.update({"token-key": "token", "token-value": token})
        body.update(fields)
        headers = {"token": token} if token else {}
        return strict_validate(self.validate_response(body, headers=headers))

    def granted(self, token: str | None, method: str = "get", level: str = "study", **fields: Any) -> bool:
        return bool(self.validate(token, method, level, **fields)["granted"])

    def profile(self, token: str, **fields: Any) -> dict[str, Any]:
        body = {"server-id": self.server, "token-key": "token", "token-value": token, **fields}
        return strict_profile(self.call("POST", "user/get-profile", body))

    def create(self, resources: list[dict[str, str]], share_type: str = "viewer-instant-link", **fields: Any) -> httpx.Response:
        body = {"id": "share-1", "resources": resources, "server-id": self.server, "type": share_type, **fields}
        return self.call("PUT", f"tokens/{share_type}", body)

    def decode(self, token: str) -> dict[str, Any]:
        return strict_decoded(self.call("POST", "tokens/decode", {"token-key": "token", "token-value": token}))


# ---------------------------------------------------------------- raw HTTP/1.1 over a socket


@dataclass
class RawResponse:
    status_code: int
    headers: dict[str, str]
    content: bytes


def _read_until(sock: socket.socket, buffer: bytearray, marker: bytes) -> int:
    while (index := buffer.find(marker)) < 0:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"the server closed the connection; got {bytes(buffer)[:500]!r}")
        buffer += data
    return index


def _read_exactly(sock: socket.socket, buffer: bytearray, size: int) -> bytes:
    while len(buffer) < size:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection mid-body")
        buffer += data
    taken = bytes(buffer[:size])
    del buffer[:size]
    return taken


def read_response(sock: socket.socket) -> RawResponse:
    buffer = bytearray()
    end = _read_until(sock, buffer, b"\r\n\r\n")
    head = bytes(buffer[:end]).decode("iso-8859-1")
    del buffer[: end + 4]
    status_line, *lines = head.split("\r\n")
    version, status, *_ = status_line.split(" ", 2)
    assert version == "HTTP/1.1", status_line
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts: list[bytes] = []
        while True:
            end = _read_until(sock, buffer, b"\r\n")
            size = int(bytes(buffer[:end]).split(b";")[0], 16)
            del buffer[: end + 2]
            parts.append(_read_exactly(sock, buffer, size))
            _read_exactly(sock, buffer, 2)
            if size == 0:
                break
        content = b"".join(parts)
    else:
        content = _read_exactly(sock, buffer, int(headers.get("content-length", "0")))
    return RawResponse(int(status), headers, content)


def chunked(body: bytes, pieces: int = 2) -> list[bytes]:
    """The body as ``pieces`` HTTP chunks (the last one possibly shorter) and the terminator."""
    size = max(1, -(-len(body) // pieces))
    chunks = [body[index : index + size] for index in range(0, len(body), size)]
    return [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for chunk in chunks] + [b"0\r\n\r\n"]


class RawConnection:
    """One keep-alive TCP connection to the server, for raw HTTP/1.1 exchanges."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def exchange(self, head: bytes, body_parts: list[bytes], pause: float = 0.002) -> RawResponse:
        """Send the request head and then each body part in its own write (with a short pause,
        so that the server sees them arrive separately), and read one response."""
        self.sock.sendall(head)
        for part in body_parts:
            time.sleep(pause)
            self.sock.sendall(part)
        return read_response(self.sock)


def raw_exchange(url: str, head: bytes, body_parts: list[bytes], pause: float = 0.002) -> RawResponse:
    with RawConnection(url) as connection:
        return connection.exchange(head, body_parts, pause)


def host_of(url: str) -> str:
    return urlsplit(url).netloc


def request_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def poll(predicate: Callable[[], bool], deadline: float, interval: float = 0.01) -> float | None:
    """Seconds until ``predicate()`` held, or None if it never did within ``deadline`` seconds."""
    started = time.perf_counter()
    while True:
        if predicate():
            return time.perf_counter() - started
        if time.perf_counter() - started > deadline:
            return None
        time.sleep(interval)
