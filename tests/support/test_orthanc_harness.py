"""The Orthanc harness against a real Orthanc: generated DICOM in, ancestry out of its REST API.

Skips when /usr/sbin/Orthanc is missing (apt-get install orthanc), except under CI=true where
it fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.support import orthanc as orthanc_module
from tests.support.dicom import make_study, new_uid, orthanc_id
from tests.support.orthanc import (
    LabelsNotSupported,
    OrthancServer,
    orthanc_server,  # noqa: F401 (fixture)
    require_orthanc,
)

pytestmark = pytest.mark.slow


def test_uploaded_study_has_the_expected_ancestry(orthanc_server: OrthancServer) -> None:  # noqa: F811
    patient_id = f"PORTICO-{new_uid()[-12:]}"
    study_uid = new_uid()
    series_uids = [new_uid(), new_uid()]
    sop_uids = {series_uid: [new_uid(), new_uid()] for series_uid in series_uids}

    stored = []
    for series_uid in series_uids:
        files = make_study(patient_id, study_uid, series_uid, sop_uids[series_uid], labels={"StudyDescription": "harness"})
        stored += [(series_uid, sop_uid, orthanc_server.upload(dicom)) for sop_uid, dicom in zip(sop_uids[series_uid], files)]
    assert len(stored) == 4
    assert {answer["Status"] for _, _, answer in stored} == {"Success"}

    # Orthanc's ids are SHA-1 hashes of the DICOM ids of the resource and its ancestors.
    patient = orthanc_id(patient_id)
    study = orthanc_id(patient_id, study_uid)
    for series_uid, sop_uid, answer in stored:
        assert answer["ParentPatient"] == patient
        assert answer["ParentStudy"] == study
        assert answer["ParentSeries"] == orthanc_id(patient_id, study_uid, series_uid)
        assert answer["ID"] == orthanc_id(patient_id, study_uid, series_uid, sop_uid)

    found = orthanc_server.lookup(patient_id)
    assert [(item["Type"], item["ID"]) for item in found] == [("Patient", patient)]
    assert [item["ID"] for item in orthanc_server.lookup(study_uid)] == [study]

    study_json = orthanc_server.get(f"/studies/{study}")
    assert study_json["ParentPatient"] == patient
    assert study_json["PatientMainDicomTags"]["PatientID"] == patient_id
    assert study_json["MainDicomTags"]["StudyInstanceUID"] == study_uid
    assert study_json["MainDicomTags"]["StudyDescription"] == "harness"
    assert sorted(study_json["Series"]) == sorted(orthanc_id(patient_id, study_uid, s) for s in series_uids)

    patient_json = orthanc_server.get(f"/patients/{patient}")
    assert patient_json["MainDicomTags"]["PatientID"] == patient_id
    assert patient_json["Studies"] == [study]

    for series_uid, sop_uid, answer in stored:
        series_json = orthanc_server.get(f"/series/{answer['ParentSeries']}")
        assert series_json["ParentStudy"] == study
        assert series_json["MainDicomTags"]["SeriesInstanceUID"] == series_uid
        assert len(series_json["Instances"]) == 2

        instance_json = orthanc_server.get(f"/instances/{answer['ID']}")
        assert instance_json["ParentSeries"] == answer["ParentSeries"]
        assert instance_json["MainDicomTags"]["SOPInstanceUID"] == sop_uid


def test_orthanc_requires_its_credentials(orthanc_server: OrthancServer) -> None:  # noqa: F811
    with httpx.Client(base_url=orthanc_server.url, timeout=10) as client:
        assert client.get("/system").status_code == 401
        assert client.get("/system", auth=(orthanc_server.username, "wrong password")).status_code == 401
        assert client.get("/system", auth=("intruder", orthanc_server.password)).status_code == 401
        assert client.get("/patients", auth=("intruder", "wrong")).status_code == 401
        assert client.get("/system", auth=(orthanc_server.username, orthanc_server.password)).status_code == 200


def test_labels_are_used_only_where_orthanc_has_them(orthanc_server: OrthancServer) -> None:  # noqa: F811
    patient_id = f"PORTICO-{new_uid()[-12:]}"
    study_uid = new_uid()
    (dicom,) = make_study(patient_id, study_uid, new_uid(), [new_uid()])
    study = orthanc_server.upload(dicom)["ParentStudy"]
    if orthanc_server.supports_labels:
        orthanc_server.add_label("study", study, "portico-test")
        assert orthanc_server.labels("study", study) == ["portico-test"]
        assert orthanc_server.get(f"/studies/{study}")["Labels"] == ["portico-test"]
    else:
        # Orthanc before 1.12 (Debian 12 ships 1.10.1): no "HasLabels" in /system, no labels URI.
        assert "HasLabels" not in orthanc_server.system
        with pytest.raises(LabelsNotSupported):
            orthanc_server.add_label("study", study, "portico-test")
        response = orthanc_server.client.put(f"/studies/{study}/labels/portico-test")
        assert response.status_code in (400, 404, 405)
        assert "Labels" not in orthanc_server.get(f"/studies/{study}")


def test_stop_leaves_no_process_nor_files() -> None:
    require_orthanc()
    with OrthancServer() as server:
        pid = server.pid
        root = server.directory
        assert root is not None
        assert pid is not None and server.running
        assert (root / "orthanc.json").is_file()
        assert server.version
    assert server.returncode == 0, server.log_tail()
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not root.exists()
    assert "Orthanc has stopped" in server.log_text()
    assert server.stop() == 0  # idempotent


def test_missing_orthanc_skips_but_fails_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "Orthanc"
    monkeypatch.setattr(orthanc_module, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="Orthanc is not installed"):
        require_orthanc(missing)
    monkeypatch.setattr(orthanc_module, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_orthanc(missing)
