"""Share tokens made by Orthanc's plugin (``PUT tokens/{type}``), their use at validate,
and their decoding (``POST tokens/decode``)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import LiveServer
from tests.server.orthanc.support import (
    API,
    OTHER_STUDY_OID,
    OTHER_STUDY_UID,
    PATIENT_ID,
    PATIENT_OID,
    STUDY_OID,
    STUDY_UID,
    Admin,
    Plugin,
    ok,
    strict_created,
)

STUDY = {"dicom-uid": STUDY_UID, "level": "study", "orthanc-id": STUDY_OID}
VIEWER = "https://viewer.example.org/ohif/viewer"


@dataclass
class World:
    admin: Admin
    plugin: Plugin
    other: Plugin  # another imaging server's plugin
    viewer_server: dict[str, Any]  # an imaging server whose viewer_url the tests set
    viewer_plugin: Plugin
    member_token: str  # a user's API token with view on everything


@pytest.fixture(scope="module")
def world(orthanc_live: LiveServer) -> Iterator[World]:
    admin = Admin(orthanc_live)
    plugins = []
    servers = []
    for stem in ("share-orthanc", "other-orthanc", "viewer-orthanc"):
        server = admin.imaging_server(admin.unique(stem))
        servers.append(server)
        plugins.append(Plugin(orthanc_live.url, server["token"], *admin.plugin_credential(server["id"])))
    member = admin.member("viewer", servers[0]["id"], ["view"])
    try:
        yield World(admin, plugins[0], plugins[1], servers[2], plugins[2], member.token)
    finally:
        for plugin in plugins:
            plugin.close()


def share(plugin: Plugin, resources: list[dict[str, str]] | None = None, **fields: Any) -> dict[str, Any]:
    """A share made through ``plugin`` (of the study unless told), valid an hour unless told."""
    body = {"validity-duration": 3600, **fields}
    return strict_created(plugin.create(resources or [STUDY], **body))


def test_share_without_viewer_url(world: World) -> None:
    created = share(world.plugin)
    assert created["token"].startswith("pst_"), created
    assert created["url"] is None, created  # no viewer_url on this imaging server


def test_share_grants_viewing_that_study_only(world: World) -> None:
    token = share(world.plugin)["token"]
    answer = world.plugin.validate(token, "get", "study", **{"orthanc-id": STUDY_OID, "dicom-uid": STUDY_UID})
    assert answer["granted"] is True and answer["validity"] >= 1, answer
    # Orthanc may cache the grant, but never past the share's expiry.
    assert answer["validity"] <= 3600, answer
    assert world.plugin.granted(token, "get", "study", **{"orthanc-id": STUDY_OID, "dicom-uid": None})
    assert world.plugin.granted(token, "get", "study", **{"orthanc-id": None, "dicom-uid": STUDY_UID})

    denied = [
        ("get", "study", {"orthanc-id": OTHER_STUDY_OID, "dicom-uid": OTHER_STUDY_UID}),
        ("delete", "study", {}),
        ("post", "study", {}),
        ("put", "study", {}),
        ("get", "patient", {"orthanc-id": PATIENT_OID, "dicom-uid": PATIENT_ID}),
        ("get", "system", {"uri": "/patients"}),
        ("post", "system", {"uri": "/instances"}),
        ("get", "system", {"uri": "/tools/find"}),
    ]
    for method, level, fields in denied:
        assert world.plugin.granted(token, method, level, **fields) is False, (method, level, fields)




def test_share_is_refused_by_another_imaging_server_after_use(world: World) -> None:
    """A share belongs to the imaging server that made it, even once it is warm in the cache."""
    token = share(world.plugin)["token"]
    assert world.plugin.granted(token)
    assert world.other.decode(token) == {"error-code": "unknown"}
    assert world.other.granted(token) is False


def test_share_still_works_after_another_server_refused_it(world: World) -> None:
    token = share(world.plugin)["token"]
    assert world.other.granted(token) is False
    assert world.plugin.granted(token) is True


def test_share_is_refused_by_another_imaging_server_when_cold(world: World) -> None:
    token = share(world.plugin)["token"]
    world.admin.bump()  # nothing cached anywhere
    assert world.other.granted(token) is False
    assert world.other.decode(token) == {"error-code": "unknown"}


def test_decode_share(world: World) -> None:
    resources = [STUDY, {"level": "series", "orthanc-id": "574d969a-8ef00af6-2c8071ee-d84f5ef9-f0a89e75"}]
    token = share(world.plugin, resources)["token"]
    decoded = world.plugin.decode(token)
    assert decoded == {"token-type": "viewer-instant-link", "resources": resources}, decoded
    assert world.plugin.decode("Bearer " + token) == decoded


def test_share_url_names_the_study_and_the_token(world: World) -> None:
    """PATCH the imaging server's viewer_url: the next share opens in that viewer."""
    plugin = world.viewer_plugin
    assert share(plugin)["url"] is None
    server = world.viewer_server
    current = ok(world.admin.api.get(f"{API}/imaging-servers/{server['id']}"))
    ok(world.admin.api.patch(f"{API}/imaging-servers/{server['id']}", json={"viewer_url": VIEWER, "version": current["version"]}))

    created = share(plugin)
    url = created["url"]
    assert isinstance(url, str) and url.startswith(VIEWER + "?"), created
    query = parse_qs(urlsplit(url).query)
    assert STUDY_UID in ",".join(query.get("StudyInstanceUIDs", [])), url
    assert query.get("token") == [created["token"]], url
    decoded = plugin.decode(created["token"])
    assert decoded["token-type"] == "viewer-instant-link", decoded
    assert decoded.get("redirect-url") == url, decoded


def test_expired_share(world: World) -> None:
    token = share(world.plugin, None, **{"validity-duration": 1})["token"]
    answer = world.plugin.validate(token)
    assert answer == {"granted": True, "validity": 1}, answer
    time.sleep(1.5)
    decoded = world.plugin.decode(token)
    assert decoded.get("error-code") == "expired", decoded
    assert "resources" not in decoded, decoded
    assert world.plugin.granted(token) is False


def test_expiration_date_in_the_past(world: World) -> None:
    """An ``expiration-date`` already past: the share never works."""
    response = world.plugin.create([STUDY], **{"expiration-date": "2001-01-01T00:00:00Z"})
    if response.status_code == 200:
        token = strict_created(response)["token"]
        assert world.plugin.granted(token) is False
        assert world.plugin.decode(token).get("error-code") == "expired"
    else:
        assert response.status_code == 400, response.text


def test_unknown_share(world: World) -> None:
    token = f"pst_{secrets.token_hex(12)}_{secrets.token_urlsafe(32)}"
    assert world.plugin.decode(token) == {"error-code": "unknown"}
    assert world.plugin.granted(token) is False
    # A real share's id with another secret is no better.
    real = share(world.plugin)["token"]
    forged = real.rsplit("_", 1)[0] + "_" + secrets.token_urlsafe(32)
    assert world.plugin.decode(forged) == {"error-code": "unknown"}
    assert world.plugin.granted(forged) is False


@pytest.mark.parametrize("token", ["good-token", "pst_", "pst__", "not a token at all"])
def test_not_a_share_token(world: World, token: str) -> None:
    assert world.plugin.decode(token) == {"error-code": "invalid"}


def test_user_token_is_not_a_share(world: World) -> None:
    assert world.plugin.decode(world.member_token) == {"error-code": "invalid"}
    # ... but still the user's token at validate.
    assert world.plugin.granted(world.member_token)
