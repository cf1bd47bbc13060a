"""settings/roles as Orthanc Explorer 2 reads it, and `portico orthanc-config`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import portico_env, run_cli, start_live_server

pytestmark = pytest.mark.slow


def test_roles_mirror_groups_and_rules_and_cannot_be_changed_from_orthanc(tmp_path: Path) -> None:
    server = start_live_server("sqlite", tmp_path, None)
    try:
        api = server.client
        pacs = api.post("/api/v1/imaging-servers", json={"token": "pacs-1", "name": "PACS 1", "hostname": "pacs"}).json()
        other = api.post("/api/v1/imaging-servers", json={"token": "pacs-2", "name": "PACS 2", "hostname": "pacs2"}).json()
        radiology = api.post("/api/v1/groups", json={"name": "Radiology"}).json()
        research = api.post("/api/v1/groups", json={"name": "Research"}).json()
        for body in (
            {"group_id": radiology["id"], "imaging_server_id": pacs["id"], "capabilities": ["view", "download"]},
            {"group_id": research["id"], "imaging_server_id": pacs["id"], "scope": "labels", "labels": ["trial-a"], "capabilities": ["view"]},
            {"group_id": research["id"], "imaging_server_id": other["id"], "capabilities": ["delete"]},
        ):
            assert api.post("/api/v1/access-rules", json=body).status_code == 201
        credential = api.post("/api/v1/credentials", json={"kind": "orthanc-plugin", "imaging_server_id": pacs["id"]}).json()
        auth = (credential["username"], credential["secret"])
        with server.anonymous() as client:
            roles = client.get("/orthanc/pacs-1/settings/roles", auth=auth)
            assert roles.status_code == 200
            assert roles.json() == {
                "roles": {
                    "Radiology": {"authorized-labels": ["*"], "permissions": ["download", "view"]},
                    "Research": {"authorized-labels": ["trial-a"], "permissions": ["view"]},
                },
                "available-labels": ["trial-a"],
            }
            refused = client.put("/orthanc/pacs-1/settings/roles", json={"roles": {}}, auth=auth)
            assert refused.status_code == 405
            assert "managed in Portico" in refused.json()["error"]["message"]
            # A credential is bound to its own server: not usable for another one.
            assert client.get("/orthanc/pacs-2/settings/roles", auth=auth).status_code == 401
    finally:
        server.client.close()
        assert server.process.stop() == 0

    env = portico_env(tmp_path)
    printed = run_cli("orthanc-config", "PACS 2", env=env)
    assert printed.returncode == 0, printed.stderr
    block = json.loads(printed.stdout)["Authorization"]
    assert block["WebServiceRootUrl"].endswith("/orthanc/pacs-2/")
    assert block["WebServiceUsername"].startswith("poc_")
    missing = run_cli("orthanc-config", "pacs-9", env=env)
    assert missing.returncode == 1 and "no imaging server with token or name 'pacs-9'" in missing.stderr
