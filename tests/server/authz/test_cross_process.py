"""Two `portico serve` processes on one SQLite file: a change made through one reaches the
other's in-memory decisions (through the file's data_version), within a bounded delay."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, login, start_live_server

pytestmark = pytest.mark.slow


def test_a_rule_deleted_through_one_process_stops_granting_in_the_other(tmp_path: Path) -> None:
    first = start_live_server("sqlite", tmp_path, None)
    second = ServerProcess(first.process.env).start()
    try:
        api = first.client
        pacs = api.post("/api/v1/imaging-servers", json={"token": "pacs", "name": "PACS", "hostname": "pacs"}).json()
        credential = api.post("/api/v1/credentials", json={"kind": "orthanc-plugin", "imaging_server_id": pacs["id"]}).json()
        group = api.post("/api/v1/groups", json={"name": "Radiology"}).json()
        user = api.post("/api/v1/users", json={"username": "dora", "password": "dora-password"}).json()
        api.post(f"/api/v1/groups/{group['id']}/members/add", json={"user_ids": [user["id"]]}).raise_for_status()
        rule = api.post("/api/v1/access-rules", json={"group_id": group["id"], "imaging_server_id": pacs["id"], "capabilities": ["view"]}).json()
        token = login(first.url, "dora", "dora-password")
        body = {"level": "study", "method": "get", "orthanc-id": "s1", "token-value": token}
        auth = (credential["username"], credential["secret"])
        with httpx.Client(base_url=second.url, auth=auth) as orthanc:
            assert orthanc.post("/orthanc/pacs/tokens/validate", json=body).json()["granted"] is True  # warm
            assert api.delete(f"/api/v1/access-rules/{rule['id']}").status_code == 204
            deleted_at = time.perf_counter()
            deadline = deleted_at + 5
            while orthanc.post("/orthanc/pacs/tokens/validate", json=body).json()["granted"]:
                assert time.perf_counter() < deadline, "the other process kept granting for 5 s"
                time.sleep(0.02)
            delay = time.perf_counter() - deleted_at
        print(f"revocation reached the other process after {delay * 1000:.0f} ms")
        assert delay < 2.0
    finally:
        first.client.close()
        assert second.stop() == 0
        assert first.process.stop() == 0
