"""The URL answered with a new share token depends on the token type."""

from __future__ import annotations

from server.services.orthanc_authz import ServerInfo
from server.services.orthanc_shares import share_url

STUDY = [{"level": "study", "orthanc_id": "6e2c0ec2-5d99c8ca-c1c21cee-79a09605-68391d12", "dicom_uid": "1.2.840.1"}]


def server(viewer_url: str | None) -> ServerInfo:
    return ServerInfo(id=1, token="pacs", name="PACS", is_active=True, viewer_url=viewer_url, rest_url="https://pacs.example.org:8042")


def test_download_link_points_at_the_study_archive() -> None:
    assert share_url(server(None), "download-instant-link", STUDY, "pst_a_b") == (
        "https://pacs.example.org:8042/studies/6e2c0ec2-5d99c8ca-c1c21cee-79a09605-68391d12/archive?token=pst_a_b"
    )


def test_viewer_link_opens_the_viewer_on_the_studies() -> None:
    assert share_url(server("https://viewer.example.org/viewer"), "viewer-instant-link", STUDY, "pst_a_b") == (
        "https://viewer.example.org/viewer?StudyInstanceUIDs=1.2.840.1&token=pst_a_b"
    )
    assert share_url(server("https://viewer.example.org/v?x=1"), "ohif-viewer-publication", STUDY, "t").startswith(  # type: ignore[union-attr]
        "https://viewer.example.org/v?x=1&StudyInstanceUIDs="
    )


def test_without_a_viewer_a_viewer_link_has_no_url() -> None:
    assert share_url(server(None), "viewer-instant-link", STUDY, "pst_a_b") is None
