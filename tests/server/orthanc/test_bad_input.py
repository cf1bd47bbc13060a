"""Malformed calls to the Orthanc web service: every field of validate, get-profile,
create and decode broken in turn. Each must get a 4xx with an error body that names the
field, or a denial; never a 500 and never a grant. And the lenient side: ``identifier``
for ``server-id``, a ``Bearer `` prefix, an empty token, unknown fields.

Then client authentication: no credentials, malformed ones, a wrong secret, another
imaging server's credential; each refused with 401, the credential refusals audited.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.server.orthanc.support import (
    OTHER_STUDY_OID,
    STUDY_OID,
    STUDY_UID,
    Admin,
    Member,
    Plugin,
    basic,
    error_of,
    strict_created,
    strict_decoded,
    strict_profile,
    strict_validate,
)

MISSING = object()
FIVE_KB = "x" * 5000
HUNDRED_KB = "x" * 100_000
# Wrong JSON types for a string field.
NOT_STRINGS: list[tuple[str, Any]] = [("int", 5), ("float", 5.0), ("true", True), ("list", ["get"]), ("object", {"a": "b"})]


@dataclass
class World:
    live: LiveServer
    admin: Admin
    plugin: Plugin
    scoped: Member  # view on exactly one study, named by its Orthanc id
    viewer: Member  # view on everything of the imaging server
    server: str  # its token, in the URL
    server_id: int
    other_server: str
    other_plugin: Plugin  # holds the other imaging server's credential


@pytest.fixture(scope="module")
def world(orthanc_live: LiveServer) -> Iterator[World]:
    live = orthanc_live
    admin = Admin(live)
    server = admin.unique("bad-orthanc")
    server_id = admin.imaging_server(server)["id"]
    username, secret = admin.plugin_credential(server_id)
    other = admin.unique("other-orthanc")
    other_id = admin.imaging_server(other)["id"]
    other_username, other_secret = admin.plugin_credential(other_id)
    scoped = admin.member("scoped", server_id, ["view"], scope="resources", selectors=[{"kind": "orthanc-id", "value": STUDY_OID}])
    viewer = admin.member("viewer", server_id, ["view"])
    with Plugin(live.url, server, username, secret) as plugin, Plugin(live.url, other, other_username, other_secret) as other_plugin:
        yield World(live, admin, plugin, scoped, viewer, server, server_id, other, other_plugin)


def refused_or_denied(response: httpx.Response, field: str | None) -> None:
    """A 4xx naming ``field`` (when given), or a well-formed denial."""
    assert response.status_code < 500, f"{response.status_code} {response.text[:500]}"
    if response.status_code == 200:
        answer = strict_validate(response)
        assert answer["granted"] is False, answer
        return
    error = error_of(response)
    if field is not None:
        assert field in error["message"], error


def refused(response: httpx.Response, field: str | None, status: int = 400) -> dict[str, Any]:
    error = error_of(response, status)
    if field is not None:
        assert field in error["message"], error
    return error


def patched(base: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    body = dict(base)
    if value is MISSING:
        body.pop(field, None)
    else:
        body[field] = value
    return body


def study_body(world: World, token: str | None = None) -> dict[str, Any]:
    return {
        "dicom-uid": STUDY_UID,
        "level": "study",
        "method": "get",
        "orthanc-id": STUDY_OID,
        "server-id": world.server,
        "token-key": "token",
        "token-value": token or world.scoped.token,
    }


def system_body(world: World) -> dict[str, Any]:
    return {"level": "system", "method": "get", "server-id": world.server, "token-key": "token", "token-value": world.viewer.token, "uri": "/patients"}


# ---------------------------------------------------------------- validate


def test_the_unbroken_calls_are_granted(world: World) -> None:
    """The baselines the cases below break: each is granted as it stands."""
    assert strict_validate(world.plugin.validate_response(study_body(world)))["granted"] is True
    assert strict_validate(world.plugin.validate_response(system_body(world)))["granted"] is True


VALIDATE_STUDY_CASES: list[tuple[str, str, Any]] = [
    *[("method", f"method-{name}", value) for name, value in NOT_STRINGS],
    ("method", "method-missing", MISSING),
    ("method", "method-null", None),
    ("method", "method-empty", ""),
    ("method", "method-unknown", "patch"),
    ("method", "method-head", "head"),
    ("method", "method-5kb", FIVE_KB),
    *[("level", f"level-{name}", value) for name, value in NOT_STRINGS],
    ("level", "level-missing", MISSING),
    ("level", "level-null", None),
    ("level", "level-empty", ""),
    ("level", "level-unknown", "studies"),
    ("level", "level-unknown-2", "frame"),
    ("level", "level-5kb", FIVE_KB),
    *[("token-value", f"token-{name}", value) for name, value in NOT_STRINGS],
    ("token-value", "token-missing", MISSING),
    ("token-value", "token-null", None),
    ("token-value", "token-empty", ""),
    ("token-value", "token-blank", "   "),
    ("token-value", "token-5kb", FIVE_KB),
    ("token-value", "token-truncated", "TRUNCATE"),
    ("token-value", "token-nul", "pat_\u0000_\u0000"),
    *[("orthanc-id", f"orthanc-id-{name}", value) for name, value in NOT_STRINGS],
    ("orthanc-id", "orthanc-id-missing", MISSING),
    ("orthanc-id", "orthanc-id-null", None),
    ("orthanc-id", "orthanc-id-empty", ""),
    ("orthanc-id", "orthanc-id-5kb", FIVE_KB),
    ("orthanc-id", "orthanc-id-other", OTHER_STUDY_OID),
    ("orthanc-id", "orthanc-id-nul", STUDY_OID + "\u0000"),
    *[("dicom-uid", f"dicom-uid-{name}", value) for name, value in NOT_STRINGS],
    ("dicom-uid", "dicom-uid-5kb", FIVE_KB),
    ("labels", "labels-int", 5),
    ("labels", "labels-string", "rig-label"),
    ("labels", "labels-object", {"rig-label": True}),
    ("labels", "labels-of-ints", [5]),
    ("labels", "labels-of-lists", [["rig-label"]]),
    ("labels", "labels-too-many", [f"label-{index}" for index in range(1001)]),
    ("labels", "labels-5kb", [FIVE_KB]),
]




@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param(field, value, id=case)
        for field, case, value in VALIDATE_STUDY_CASES
    ],
)
def test_validate_field_malformed(world: World, field: str, value: Any) -> None:
    base = study_body(world)
    if value == "TRUNCATE":
        value = world.scoped.token[:-1]
    response = world.plugin.validate_response(patched(base, field, value), fresh=True)
    refused_or_denied(response, field)
    if isinstance(value, str) and len(value) == len(FIVE_KB):
        # Longer than any id or token: refused outright, not merely denied.
        refused(response, field)
    elif field in ("method", "level") or (value is not MISSING and value is not None and not isinstance(value, str) and field != "labels"):
        refused(response, field)


SYSTEM_CASES: list[tuple[str, Any]] = [*NOT_STRINGS, ("missing", MISSING), ("null", None), ("empty", ""), ("root", "/"), ("5kb", "/" + FIVE_KB)]


@pytest.mark.parametrize("value", [value for _, value in SYSTEM_CASES], ids=[name for name, _ in SYSTEM_CASES])
def test_validate_uri_malformed(world: World, value: Any) -> None:
    response = world.plugin.validate_response(patched(system_body(world), "uri", value))
    refused_or_denied(response, "uri")
    if not (value is MISSING or value is None or isinstance(value, str) and len(value) < 100):
        refused(response, "uri")


@pytest.mark.parametrize("field", ["token-value", "orthanc-id", "dicom-uid", "uri"])
def test_validate_body_over_64_kib(world: World, field: str) -> None:
    body = system_body(world) if field == "uri" else study_body(world)
    response = world.plugin.validate_response(patched(body, field, HUNDRED_KB))
    refused(response, None, 413)


BROKEN_BODIES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("array", b"[]"),
    ("number", b"5"),
    ("null", b"null"),
    ("string", b'"get"'),
    ("truncated", b'{"method":"get","level":'),
    ("trailing-garbage", b'{"method":"get","level":"study"} x'),
    ("deep", b"[" * 5000 + b"]" * 5000),
    ("not-json", b"method=get&level=study"),
    ("lone-surrogate", b'{"method":"get","level":"study","token-value":"\\ud800"}'),
]


@pytest.mark.parametrize("path", ["tokens/validate", "user/get-profile", "tokens/decode", "tokens/viewer-instant-link"])
@pytest.mark.parametrize("raw", [raw for _, raw in BROKEN_BODIES], ids=[name for name, _ in BROKEN_BODIES])
def test_broken_bodies(world: World, path: str, raw: bytes) -> None:
    method = "PUT" if path.endswith("instant-link") else "POST"
    refused(world.plugin.call(method, path, raw=raw), None)


@pytest.mark.parametrize("field", ["token-value", "method", "level", "orthanc-id"])
def test_validate_invalid_utf8(world: World, field: str) -> None:
    """A field whose bytes are not UTF-8 (as a broken client might send them)."""
    body = study_body(world)
    body[field] = "PLACEHOLDER"
    raw = json.dumps(body).encode().replace(b"PLACEHOLDER", b"\xff\xfe\xc3(")
    refused(world.plugin.validate_response(raw=raw), None)


@pytest.mark.parametrize(
    ("field", "value"),
    [("server-id", 5), ("server-id", ["rig"]), ("server-id", FIVE_KB), ("identifier", {"a": 1}), ("token-key", 5), ("token-key", FIVE_KB)],
    ids=["server-id-int", "server-id-list", "server-id-5kb", "identifier-object", "token-key-int", "token-key-5kb"],
)
def test_informational_fields_malformed(world: World, field: str, value: Any) -> None:
    """Fields Portico does not decide on (the URL names the server, the body carries the token):
    refused naming the field, or ignored (the same answer as without them); never a 500."""
    response = world.plugin.validate_response(patched(study_body(world), field, value))
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        refused(response, field)
    else:
        assert strict_validate(response)["granted"] is True


def test_validate_unknown_fields_are_ignored(world: World) -> None:
    body = {**study_body(world), "future-field": {"nested": [1, 2.5, None]}, "x": "y", "validity": "forever"}
    assert strict_validate(world.plugin.validate_response(body))["granted"] is True
    body = {**system_body(world), "labels-v2": 7}
    assert strict_validate(world.plugin.validate_response(body))["granted"] is True


@pytest.mark.parametrize("prefix", ["Bearer ", "bearer ", "BEARER  ", " Bearer "])
def test_validate_strips_bearer(world: World, prefix: str) -> None:
    assert strict_validate(world.plugin.validate_response(study_body(world, prefix + world.scoped.token)))["granted"] is True


def test_validate_identifier_instead_of_server_id(world: World) -> None:
    body = study_body(world)
    body["identifier"] = body.pop("server-id")
    assert strict_validate(world.plugin.validate_response(body))["granted"] is True
    body.pop("identifier")
    assert strict_validate(world.plugin.validate_response(body))["granted"] is True


def test_validate_reads_the_token_from_the_body_not_the_header(world: World) -> None:
    """The header copy is optional and never trusted on its own."""
    body = study_body(world)
    body.pop("token-value")
    response = world.plugin.validate_response(body, headers={"token": world.scoped.token})
    assert strict_validate(response)["granted"] is False


# ---------------------------------------------------------------- get-profile


THIS_SERVER = "<the imaging server of the URL>"


def here(body: dict[str, Any], world: World) -> dict[str, Any]:
    """``body`` with ``THIS_SERVER`` replaced by the token of the imaging server called."""
    return {key: world.server if value == THIS_SERVER else value for key, value in body.items()}


def profile_body(token: Any = MISSING, **extra: Any) -> dict[str, Any]:
    body = {"server-id": THIS_SERVER, "token-key": "token", **extra}
    if token is not MISSING:
        body["token-value"] = token
    return body


def is_anonymous(profile: dict[str, Any]) -> bool:
    return bool(profile["permissions"] == [] and profile["authorized-labels"] == [])


@pytest.mark.parametrize("value", [value for _, value in NOT_STRINGS] + [FIVE_KB], ids=[name for name, _ in NOT_STRINGS] + ["5kb"])
def test_profile_token_malformed(world: World, value: Any) -> None:
    refused(world.plugin.call("POST", "user/get-profile", here(profile_body(value), world)), "token-value")


def test_profile_token_over_64_kib(world: World) -> None:
    refused(world.plugin.call("POST", "user/get-profile", here(profile_body(HUNDRED_KB), world)), None, 413)


def test_profile_token_invalid_utf8(world: World) -> None:
    raw = json.dumps(here(profile_body("PLACEHOLDER"), world)).encode().replace(b"PLACEHOLDER", b"pat_\xff\xfe")
    refused(world.plugin.call("POST", "user/get-profile", raw=raw), None)


@pytest.mark.parametrize(
    "body",
    [profile_body(""), profile_body(None), profile_body(MISSING), {"token-key": "", "token-value": "", "server-id": THIS_SERVER}, {}, profile_body("   "), profile_body("Bearer ")],
    ids=["empty", "null", "missing", "captured-anonymous", "empty-object", "blank", "bearer-only"],
)
def test_profile_without_a_token_is_anonymous(world: World, body: dict[str, Any]) -> None:
    profile = strict_profile(world.plugin.call("POST", "user/get-profile", here(body, world)))
    assert is_anonymous(profile), profile
    assert profile["validity"] >= 1, profile


@pytest.mark.parametrize("token", ["pat_x_y", "pat_" + "0" * 24 + "_" + "x" * 43, "pss_nothing_here", "pst_nothing_here", "pat_\u0000_\u0000"], ids=["short", "unknown", "session", "share", "nul"])
def test_profile_unknown_token_is_anonymous(world: World, token: str) -> None:
    assert is_anonymous(strict_profile(world.plugin.call("POST", "user/get-profile", here(profile_body(token), world), fresh=True)))


def test_profile_lenient_forms(world: World) -> None:
    expected = strict_profile(world.plugin.call("POST", "user/get-profile", here(profile_body(world.viewer.token), world)))
    assert expected["permissions"] == ["view"] and expected["authorized-labels"] == ["*"], expected
    assert expected["name"] == world.viewer.username
    # Plugins 0.5-0.9 say "identifier"; a Bearer prefix; fields Portico does not know.
    lenient = [
        {"identifier": world.server, "token-key": "token", "token-value": world.viewer.token},
        profile_body("Bearer " + world.viewer.token),
        profile_body(world.viewer.token, **{"user-id": None, "future": [1, {"a": 2}]}),
        {"token-value": world.viewer.token},
    ]
    for body in lenient:
        assert strict_profile(world.plugin.call("POST", "user/get-profile", here(body, world))) == expected, body


# ---------------------------------------------------------------- create (PUT tokens/{type})


def share_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "share-1",
        "resources": [{"dicom-uid": STUDY_UID, "level": "study", "orthanc-id": STUDY_OID}],
        "server-id": THIS_SERVER,
        "type": "viewer-instant-link",
        "validity-duration": 3600,
    }
    for key, value in changes.items():
        key = key.replace("_", "-")
        if value is MISSING:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def create(world: World, body: dict[str, Any], path: str = "tokens/viewer-instant-link", **kwargs: Any) -> httpx.Response:
    return world.plugin.call("PUT", path, here(body, world), **kwargs)


def test_create_baseline(world: World) -> None:
    answer = strict_created(create(world, share_body()))
    assert answer["token"].startswith("pst_")


CREATE_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("resources", "resources-missing", {"resources": MISSING}),
    ("resources", "resources-null", {"resources": None}),
    ("resources", "resources-empty", {"resources": []}),
    ("resources", "resources-string", {"resources": "study"}),
    ("resources", "resources-int", {"resources": 5}),
    ("resources", "resources-object", {"resources": {"level": "study", "orthanc-id": STUDY_OID}}),
    ("resources", "resources-of-ints", {"resources": [5]}),
    ("resources", "resources-of-empty", {"resources": [{}]}),
    ("resources", "resources-names-nothing", {"resources": [{"level": "study"}]}),
    ("resources", "resources-empty-ids", {"resources": [{"level": "study", "orthanc-id": "", "dicom-uid": ""}]}),
    ("level", "level-unknown", {"resources": [{"level": "studies", "orthanc-id": STUDY_OID}]}),
    ("level", "level-missing", {"resources": [{"orthanc-id": STUDY_OID}]}),
    ("level", "level-int", {"resources": [{"level": 2, "orthanc-id": STUDY_OID}]}),
    ("orthanc-id", "orthanc-id-int", {"resources": [{"level": "study", "orthanc-id": 5}]}),
    ("orthanc-id", "orthanc-id-list", {"resources": [{"level": "study", "orthanc-id": [STUDY_OID]}]}),
    ("orthanc-id", "orthanc-id-5kb", {"resources": [{"level": "study", "orthanc-id": FIVE_KB}]}),
    ("dicom-uid", "dicom-uid-float", {"resources": [{"level": "study", "dicom-uid": 1.2}]}),
    ("url", "url-true", {"resources": [{"level": "study", "url": True}]}),
    ("resources", "resources-too-many", {"resources": [{"level": "study", "orthanc-id": f"{index:x}"} for index in range(1001)]}),
    ("validity-duration", "duration-uninitialised", {"validity_duration": 94848292778896}),
    ("validity-duration", "duration-1e14", {"validity_duration": 10**14}),
    ("validity-duration", "duration-2e63", {"validity_duration": 2**63}),
    ("validity-duration", "duration-beyond-64-bits", {"validity_duration": 10**30}),
    ("validity-duration", "duration-negative", {"validity_duration": -1}),
    ("validity-duration", "duration-zero", {"validity_duration": 0}),
    ("validity-duration", "duration-float", {"validity_duration": 5.0}),
    ("validity-duration", "duration-string", {"validity_duration": "5"}),
    ("validity-duration", "duration-true", {"validity_duration": True}),
    ("validity-duration", "duration-list", {"validity_duration": [5]}),
    ("expiration-date", "expiration-int", {"expiration_date": 5}),
    ("expiration-date", "expiration-not-a-date", {"expiration_date": "tomorrow"}),
    ("expiration-date", "expiration-bad-offset", {"expiration_date": "2030-01-01T00:00:00+25:00"}),
    ("expiration-date", "expiration-5kb", {"expiration_date": FIVE_KB}),
]


@pytest.mark.parametrize(("field", "changes"), [(field, changes) for field, _, changes in CREATE_CASES], ids=[case for _, case, _ in CREATE_CASES])
def test_create_field_malformed(world: World, field: str, changes: dict[str, Any]) -> None:
    error = refused(create(world, share_body(**changes)), field)
    if field == "validity-duration":
        assert error["code"] == "bad_field", error


@pytest.mark.parametrize(
    "expiration",
    ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"],
    ids=["past-year-9999-in-utc", "before-year-1-in-utc"],
)
def test_create_expiration_date_out_of_range(world: World, expiration: str) -> None:
    """Valid ISO 8601, but not a representable UTC time: a 400 naming the field, not a 500."""
    response = create(world, share_body(validity_duration=MISSING, expiration_date=expiration), fresh=True)
    refused(response, "expiration-date")


def test_create_over_64_kib(world: World) -> None:
    body = share_body(resources=[{"level": "study", "orthanc-id": HUNDRED_KB}])
    refused(create(world, body), None, 413)


@pytest.mark.parametrize("share_type", ["bad type", "x" * 65, "a.b", "%00"], ids=["space", "65-chars", "dot", "nul"])
def test_create_bad_token_type(world: World, share_type: str) -> None:
    response = create(world, share_body(), f"tokens/{share_type}")
    assert response.status_code < 500, response.text
    error_of(response)


def test_create_lenient(world: World) -> None:
    """No server-id (plugin 0.9), no validity-duration (or null: absent), unknown fields."""
    for body in (
        share_body(server_id=MISSING),
        share_body(validity_duration=MISSING),
        share_body(validity_duration=None),
        share_body(future={"x": [1]}, id=None),
    ):
        strict_created(create(world, body))


# ---------------------------------------------------------------- decode


@pytest.mark.parametrize("value", [value for _, value in NOT_STRINGS] + [FIVE_KB], ids=[name for name, _ in NOT_STRINGS] + ["5kb"])
def test_decode_token_malformed(world: World, value: Any) -> None:
    refused(world.plugin.call("POST", "tokens/decode", {"token-key": "token", "token-value": value}), "token-value")


def test_decode_over_64_kib(world: World) -> None:
    refused(world.plugin.call("POST", "tokens/decode", {"token-key": "token", "token-value": HUNDRED_KB}), None, 413)


@pytest.mark.parametrize(
    "body",
    [{}, {"token-value": None}, {"token-value": ""}, {"token-key": "token", "token-value": "pst_\u0000_\u0000"}, {"token-value": "pst__"}],
    ids=["missing", "null", "empty", "nul", "empty-parts"],
)
def test_decode_nothing_to_decode(world: World, body: dict[str, Any]) -> None:
    answer = strict_decoded(world.plugin.call("POST", "tokens/decode", body, fresh=True))
    assert answer.get("error-code") in ("invalid", "unknown"), answer
    assert "resources" not in answer


# ---------------------------------------------------------------- client authentication


PATHS = [("POST", "tokens/validate"), ("POST", "user/get-profile"), ("PUT", "tokens/viewer-instant-link"), ("POST", "tokens/decode"), ("GET", "settings/roles")]


@pytest.mark.parametrize(("method", "path"), PATHS, ids=[path for _, path in PATHS])
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer ADMIN", "Basic", "Basic !!!notbase64", "Basic " + "//79", "Digest username=x", "Basic " + "b3J0aGFuYy1wbHVnaW4="],
    ids=["none", "bearer", "basic-empty", "basic-garbage", "basic-not-utf8", "digest", "basic-no-colon"],
)
def test_no_or_malformed_credentials(world: World, method: str, path: str, authorization: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization.replace("ADMIN", world.live.token)
    with httpx.Client(base_url=world.live.url, timeout=30) as client:
        response = client.request(method, f"/orthanc/{world.server}/{path}", content=json.dumps(study_body(world)).encode(), headers=headers)
    error = refused(response, None, 401)
    assert error["code"] == "not_authenticated", error
    assert response.headers.get("www-authenticate", "").lower().startswith("basic"), response.headers


def test_refused_credentials_are_audited(world: World) -> None:
    """A wrong secret, an unknown username, another server's credential, an unknown server,
    an API token offered as a plugin credential: 401 each, each in the audit log as denied."""
    before = {event["id"] for event in world.admin.audit("orthanc.authenticate")}
    plugin_username = world.plugin.client.headers["Authorization"]
    other_auth = world.other_plugin.client.headers["Authorization"]
    user_token_public, _, user_token_secret = world.viewer.token.rpartition("_")
    attempts = [
        (world.server, basic("orthanc-plugin", "no-such-secret")),  # an unknown or wrong credential
        (world.server, basic(user_token_public, user_token_secret)),  # a user's API token
        (world.server, other_auth),  # another imaging server's credential
        ("no-such-orthanc", plugin_username),  # a valid credential, an unknown server
        (world.other_server, plugin_username),  # ... and the other way round
    ]
    body = json.dumps(study_body(world)).encode()
    with httpx.Client(base_url=world.live.url, timeout=30) as client:
        for server, authorization in attempts:
            response = client.post(f"/orthanc/{server}/tokens/validate", content=body, headers={"Authorization": authorization})
            error = refused(response, None, 401)
            assert error["code"] == "not_authenticated", error
            assert "www-authenticate" in response.headers
    events = [event for event in world.admin.audit("orthanc.authenticate") if event["id"] not in before]
    assert len(events) == len(attempts), events
    assert {event["outcome"] for event in events} == {"denied"}, events
    assert all(event["actor"].startswith("orthanc-plugin:") for event in events), events
    labels = sorted(event["target_label"] for event in events)
    assert labels == sorted(server for server, _ in attempts), events
    # The genuine credential still works afterwards.
    assert world.plugin.granted(world.scoped.token)


def test_the_other_servers_plugin_gets_its_own_answers(world: World) -> None:
    """A token is judged by the rules on the imaging server whose credential asks."""
    assert world.plugin.granted(world.viewer.token)
    assert not world.other_plugin.granted(world.viewer.token)
    profile = strict_profile(world.other_plugin.call("POST", "user/get-profile", here(profile_body(world.viewer.token), world)))
    assert profile["permissions"] == [], profile




def test_nul_in_the_server_of_the_url(request: pytest.FixtureRequest, world: World) -> None:
    response = world.plugin.call("POST", "tokens/validate", study_body(world), server="rig%00orthanc", fresh=True)
    assert refused(response, None, 401)["code"] == "not_authenticated"


def test_nul_in_the_basic_username(request: pytest.FixtureRequest, world: World) -> None:
    with httpx.Client(base_url=world.live.url, timeout=30) as client:
        response = client.post(
            f"/orthanc/{world.server}/tokens/validate",
            content=json.dumps(study_body(world)).encode(),
            headers={"Authorization": basic("poc_\u0000", "secret")},
        )
    assert refused(response, None, 401)["code"] == "not_authenticated"
