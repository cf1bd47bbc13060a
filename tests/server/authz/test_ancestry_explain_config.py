"""Ancestry through a real Orthanc, the explain API and the Orthanc configuration generator.

A patient-scoped rule grants a study-level validate call only once Portico has asked the
imaging server's own REST API (a real Orthanc, Debian's package) which patient the study
belongs to; explain gives the same answer with its reasons.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, start_live_server
from tests.support.dicom import make_study, new_uid
from tests.support.orthanc import OrthancServer, orthanc_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def portico(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_live_server("sqlite", tmp_path_factory.mktemp("ancestry"), None)
    yield server
    server.client.close()
    assert server.process.stop() == 0


def _setup(portico: LiveServer, orthanc: OrthancServer, *, rest_password: str | None) -> dict[str, Any]:
    api = portico.client
    host, port = orthanc.url.removeprefix("http://").split(":")
    server = api.post(
        "/api/v1/imaging-servers",
        json={
            "token": portico.unique("pacs"), "name": portico.unique("PACS"), "scheme": "http",
            "hostname": host, "port": int(port), "rest_username": orthanc.username,
            **({"rest_password": rest_password} if rest_password else {}),
        },
    ).json()
    credential = api.post("/api/v1/credentials", json={"kind": "orthanc-plugin", "imaging_server_id": server["id"]}).json()
    group = api.post("/api/v1/groups", json={"name": portico.unique("Cardiology")}).json()
    username = portico.unique("carol")
    user = api.post("/api/v1/users", json={"username": username, "password": "carol-password"}).json()
    api.post(f"/api/v1/groups/{group['id']}/members/add", json={"user_ids": [user["id"]]}).raise_for_status()
    patient_id = portico.unique("PAT")
    rule = api.post(
        "/api/v1/access-rules",
        json={"group_id": group["id"], "imaging_server_id": server["id"], "scope": "resources",
              "selectors": [{"kind": "patient-id", "value": patient_id}], "capabilities": ["view"], "validity": 120},
    )
    assert rule.status_code == 201, rule.text
    token = httpx.post(f"{portico.url}/api/v1/auth/login", json={"username": username, "password": "carol-password"}).json()["token"]
    return {"server": server, "credential": credential, "user": user, "patient_id": patient_id, "token": token, "rule": rule.json()}


def _validate(portico: LiveServer, setup: dict[str, Any], study: dict[str, str], level: str = "study") -> dict[str, Any]:
    body = {"level": level, "method": "get", "orthanc-id": study["orthanc_id"], "dicom-uid": study["dicom_uid"],
            "server-id": setup["server"]["token"], "token-key": "token", "token-value": setup["token"]}
    with portico.anonymous() as client:
        answer = client.post(
            f"/orthanc/{setup['server']['token']}/tokens/validate", json=body,
            auth=(setup["credential"]["username"], setup["credential"]["secret"]),
        )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _upload_study(orthanc: OrthancServer, patient_id: str) -> dict[str, str]:
    study_uid, series_uid = new_uid(), new_uid()
    stored = orthanc.upload_all(make_study(patient_id, study_uid, series_uid, [new_uid(), new_uid()]))
    return {"orthanc_id": stored[0]["ParentStudy"], "dicom_uid": study_uid, "series": stored[0]["ParentSeries"], "instance": stored[0]["ID"]}


def test_patient_rule_grants_its_studies_after_asking_orthanc(portico: LiveServer, orthanc_server: OrthancServer) -> None:  # noqa: F811
    setup = _setup(portico, orthanc_server, rest_password=orthanc_server.password)
    mine = _upload_study(orthanc_server, setup["patient_id"])
    other = _upload_study(orthanc_server, portico.unique("OTHER"))
    assert _validate(portico, setup, mine) == {"granted": True, "validity": 120}
    assert _validate(portico, setup, other)["granted"] is False
    # Below the study too: its series and its instances, through the same ancestry.
    assert _validate(portico, setup, {"orthanc_id": mine["series"], "dicom_uid": "x"}, level="series")["granted"] is True
    assert _validate(portico, setup, {"orthanc_id": mine["instance"], "dicom_uid": "x"}, level="instance")["granted"] is True

    explained = portico.client.post(
        "/api/v1/explain",
        json={"user_id": setup["user"]["id"], "imaging_server_id": setup["server"]["id"], "method": "get",
              "level": "study", "orthanc_id": mine["orthanc_id"]},
    ).json()
    assert explained["granted"] is True and explained["validity"] == 120
    assert explained["matched_rules"] == [setup["rule"]["id"]]
    assert any(f"PatientID {setup['patient_id']}" in line for line in explained["trace"]), explained["trace"]


def test_a_study_orthanc_does_not_know_is_denied(portico: LiveServer, orthanc_server: OrthancServer) -> None:  # noqa: F811
    setup = _setup(portico, orthanc_server, rest_password=orthanc_server.password)
    unknown = {"orthanc_id": "00000000-00000000-00000000-00000000-00000000", "dicom_uid": "1.2.3.4"}
    assert _validate(portico, setup, unknown)["granted"] is False


def test_without_rest_credentials_patient_rules_cannot_match_studies(portico: LiveServer, orthanc_server: OrthancServer) -> None:  # noqa: F811
    setup = _setup(portico, orthanc_server, rest_password=None)
    mine = _upload_study(orthanc_server, setup["patient_id"])
    assert _validate(portico, setup, mine)["granted"] is False
    explained = portico.client.post(
        "/api/v1/explain",
        json={"token": setup["token"], "imaging_server_id": setup["server"]["id"], "level": "study", "orthanc_id": mine["orthanc_id"]},
    ).json()
    assert explained["granted"] is False
    assert any("ancestry is unknown" in line and "REST credentials" in line for line in explained["trace"]), explained["trace"]


def test_wrong_rest_password_fails_closed(portico: LiveServer, orthanc_server: OrthancServer) -> None:  # noqa: F811
    setup = _setup(portico, orthanc_server, rest_password="not-the-password")
    mine = _upload_study(orthanc_server, setup["patient_id"])
    assert _validate(portico, setup, mine)["granted"] is False


def test_explain_refuses_unclear_questions(portico: LiveServer) -> None:
    api = portico.client
    both = api.post("/api/v1/explain", json={"user_id": 1, "token": "x", "imaging_server_id": 1, "level": "study", "orthanc_id": "a"})
    assert both.status_code == 422 and "exactly one of user_id, username or token" in both.text
    no_uri = api.post("/api/v1/explain", json={"user_id": 1, "imaging_server_id": 1, "level": "system"})
    assert no_uri.status_code == 422 and "uri" in no_uri.text
    nowhere = api.post("/api/v1/explain", json={"user_id": 1, "imaging_server_id": 999999, "level": "study", "orthanc_id": "a"})
    assert nowhere.status_code == 422 and nowhere.json()["error"]["fields"][0]["field"] == "imaging_server_id"


def test_orthanc_configuration_block_works_as_given(portico: LiveServer) -> None:
    api = portico.client
    site = api.get("/api/v1/site").json()
    api.patch("/api/v1/site", json={"version": site["version"], "production_url": "https://portico.example.org"}).raise_for_status()
    server = api.post("/api/v1/imaging-servers", json={"token": portico.unique("gen"), "name": portico.unique("Gen"), "hostname": "pacs.example.org"}).json()
    block = api.post(f"/api/v1/imaging-servers/{server['id']}/orthanc-config")
    assert block.status_code == 200, block.text
    authorization = block.json()["Authorization"]
    assert authorization["WebServiceRootUrl"] == f"https://portico.example.org/orthanc/{server['token']}/"
    assert authorization["WebServiceIdentifier"] == server["token"]
    assert authorization["CheckedLevel"] == "studies"
    # The minted credential is a real one, bound to this server, and its secret is not stored in clear.
    with portico.anonymous() as client:
        answer = client.post(
            f"/orthanc/{server['token']}/tokens/validate",
            json={"level": "system", "method": "get", "uri": "/patients"},
            auth=(authorization["WebServiceUsername"], authorization["WebServicePassword"]),
        )
    assert answer.json() == {"granted": False, "validity": 5}
    listed = api.get("/api/v1/credentials", params={"imaging_server_id": server["id"]}).json()
    assert [c["public_id"] for c in listed["items"]] == [authorization["WebServiceUsername"]]
    assert authorization["WebServicePassword"] not in str(listed)


def test_every_validate_answer_is_strictly_typed(portico: LiveServer, tmp_path: Path) -> None:
    api = portico.client
    server = api.post("/api/v1/imaging-servers", json={"token": portico.unique("typed"), "name": portico.unique("Typed"), "hostname": "h"}).json()
    credential = api.post("/api/v1/credentials", json={"kind": "orthanc-plugin", "imaging_server_id": server["id"]}).json()
    with portico.anonymous() as client:
        for token in ("", "Bearer " + portico.token, portico.token, "garbage"):
            answer = client.post(
                f"/orthanc/{server['token']}/tokens/validate",
                json={"level": "study", "method": "get", "orthanc-id": "x", "token-value": token},
                auth=(credential["username"], credential["secret"]),
            ).json()
            assert set(answer) == {"granted", "validity"}
            assert type(answer["granted"]) is bool and type(answer["validity"]) is int
            # The superuser's own session token is granted, with or without "Bearer ".
            assert answer["granted"] is (token.removeprefix("Bearer ") == portico.token)
