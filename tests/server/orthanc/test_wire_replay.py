"""Replays, byte for byte, every request a real Orthanc 1.10.1 with the authorization
plugin 0.11.4 sent to its web service (tests/data/orthanc-authorization-0.11.4.jsonl),
against a running `portico serve`, over a raw socket: chunked body in two chunks, no
Content-Length, the token copied into a ``token`` header.

The captured tokens are arbitrary strings; each one that stood for a user is replaced
(in the body and in the header alike) by a real Portico token of a user with the matching
rights. Everything else is sent as captured, under Portico's root ``/orthanc/rig-orthanc/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveServer
from tests.server.orthanc.support import (
    PATIENT_ID,
    RIG_SERVER,
    STUDY_UID,
    Admin,
    RawConnection,
    RawResponse,
    chunked,
    error_of,
    host_of,
    raw_exchange,
    request_head,
    seed_plugin_credential,
    strict_created,
    strict_decoded,
    strict_profile,
    strict_validate,
)

CAPTURE = Path(__file__).resolve().parents[2] / "data" / "orthanc-authorization-0.11.4.jsonl"
ENTRIES: list[dict[str, Any]] = [json.loads(line) for line in CAPTURE.read_text().splitlines() if line.strip()]
BASIC = "WebServiceRootUrl+Basic"
URL_ONLY = "WebServiceTokenValidationUrl only"
ROOT = f"/orthanc/{RIG_SERVER}"

# Captured token -> the role of the Portico user that stands for it. Tokens not listed
# (bad-token, never-seen-token, cache-a/b/c) are sent unchanged: unknown to Portico.
ROLE_OF_CAPTURED = {
    "good-token": "all",
    "user-good": "all-session",
    "user-viewonly": "view",
    "user-labels": "labels",
    "user-rev": "revoked",
    "user-perm": "perm",
}
DENIED_ROLES = {"anonymous", "unknown", "revoked"}

# What each role's profile holds: (permissions, authorized-labels).
PROFILES = {
    "all": (["all"], ["*"]),
    "all-session": (["all"], ["*"]),
    "view": (["view"], ["*"]),
    "labels": (["view"], ["rig-label"]),
    # Rules that name patients or studies cannot be expressed in a profile (one list of
    # permissions for one list of labels): the profile grants nothing, validate decides.
    "perm": ([], []),
    "revoked": ([], []),
    "unknown": ([], []),
    "anonymous": ([], []),
}


def expected_grant(role: str, method: str, level: str, uri: str | None) -> bool:
    """The decision table: which role may do what (the captured requests carry no labels)."""
    if role in DENIED_ROLES:
        return False
    if role in ("all", "all-session", "superuser"):
        return True
    if role == "view":
        # GET anything is viewing; uploads (POST /instances) and deletions are not.
        return method == "get"
    if role == "labels":
        # A labels rule names resources by their labels: no system call, no unlabelled resource.
        return False
    if role == "perm":
        # Named by PatientID and StudyInstanceUID; below them the ancestry is unknown to
        # Portico (no REST credentials), and a system call names no resource.
        return method == "get" and level in ("patient", "study")
    raise AssertionError(role)


@dataclass
class Rig:
    live: LiveServer
    tokens: dict[str, str]  # captured token -> the token sent
    by_role: dict[str, str]  # role -> a token of a user in that role

    def role(self, captured: str | None) -> str:
        if not captured:
            return "anonymous"
        return ROLE_OF_CAPTURED.get(captured, "unknown")

    def send(
        self, method: str, path: str, headers: dict[str, str], raw_body: bytes, *, pieces: int = 2, connection: RawConnection | None = None
    ) -> RawResponse:
        head = request_head(method, ROOT + path, [("Host", host_of(self.live.url)), *headers.items()])
        if connection is not None:
            return connection.exchange(head, chunked(raw_body, pieces))
        return raw_exchange(self.live.url, head, chunked(raw_body, pieces))

    def replay(self, entry: dict[str, Any], substitute: str | None = None, connection: RawConnection | None = None) -> tuple[RawResponse, bytes]:
        """Send ``entry`` with its token mapped (or replaced by ``substitute``); returns the answer and the body sent."""
        raw = entry["raw_body"].encode()
        captured = json.loads(raw).get("token-value")
        headers = dict(entry["headers"])
        if captured:
            new = substitute if substitute is not None else self.tokens.get(captured, captured)
            old_field = f'"token-value":{json.dumps(captured)}'.encode()
            assert raw.count(old_field) == 1, raw
            raw = raw.replace(old_field, f'"token-value":{json.dumps(new)}'.encode())
            if "token" in headers:
                assert headers["token"] == captured, headers
                headers["token"] = new
        return self.send(entry["method"], entry["path"], headers, raw, connection=connection), raw


@pytest.fixture(scope="module")
def rig(orthanc_live: LiveServer) -> Rig:
    """The capture's imaging server and plugin credential, and a user for each captured token."""
    live = orthanc_live
    admin = Admin(live)
    server_id = admin.imaging_server(RIG_SERVER)["id"]
    everything = admin.member("rig-good", server_id, ["all"], can_log_in=True)
    viewer = admin.member("rig-view", server_id, ["view"])
    labelled = admin.member("rig-labels", server_id, ["view"], scope="labels", labels=["rig-label"])
    revoked = admin.member("rig-rev", server_id, ["view"])
    selected = admin.member(
        "rig-perm",
        server_id,
        ["view"],
        scope="resources",
        selectors=[{"kind": "patient-id", "value": PATIENT_ID}, {"kind": "study-instance-uid", "value": STUDY_UID}],
    )
    session_token, _ = admin.login(everything.username, everything.password)
    # The revoked user's token is deleted before the replay: it must be worth nothing.
    assert live.client.delete(f"/api/v1/credentials/{revoked.credential_id}").status_code == 204
    seed_plugin_credential(live, server_id)
    admin.bump()
    tokens = {
        "good-token": everything.token,
        "user-good": session_token,
        "user-viewonly": viewer.token,
        "user-labels": labelled.token,
        "user-rev": revoked.token,
        "user-perm": selected.token,
    }
    by_role = {
        "all": everything.token,
        "all-session": session_token,
        "superuser": live.token,
        "view": viewer.token,
        "labels": labelled.token,
        "perm": selected.token,
        "revoked": revoked.token,
        "unknown": "bad-token",
    }
    return Rig(live, tokens, by_role)


def _entry_id(index: int, entry: dict[str, Any]) -> str:
    body = json.loads(entry["raw_body"])
    config = "basic" if entry["config"] == BASIC else "urlonly"
    what = body.get("uri") or body.get("level") or ""
    return f"{index:02d}-{config}-{entry['method']}{entry['path']}-{body.get('method', '')}-{what}-{body.get('token-value', 'anonymous') or 'empty'}"


def test_the_capture_is_the_shared_one() -> None:
    shared = Path("/work/shared/wire/orthanc-authorization-0.11.4.jsonl")
    if shared.exists():
        assert CAPTURE.read_bytes() == shared.read_bytes()
    assert len(ENTRIES) == 60
    for entry in ENTRIES:
        assert entry["config"] in (BASIC, URL_ONLY)
        assert entry["headers"]["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in entry["headers"]
        assert ("Authorization" in entry["headers"]) == (entry["config"] == BASIC)


@pytest.mark.parametrize("index", range(len(ENTRIES)), ids=[_entry_id(i, e) for i, e in enumerate(ENTRIES)])
def test_replay(rig: Rig, index: int) -> None:
    entry = ENTRIES[index]
    response, sent = rig.replay(entry)
    body = json.loads(sent)
    role = rig.role(json.loads(entry["raw_body"]).get("token-value"))

    if entry["config"] == URL_ONLY:
        # Without Basic credentials nobody may ask Portico anything.
        error = error_of(response, 401)
        assert error["code"] == "not_authenticated", error
        assert response.headers.get("www-authenticate", "").lower().startswith("basic"), response.headers
        return

    path = entry["path"]
    if path == "/tokens/validate":
        answer = strict_validate(response)
        expected = expected_grant(role, body["method"], body["level"], body.get("uri"))
        assert answer["granted"] is expected, (role, body, answer)
        if not expected:
            # A denial is cached by Orthanc: a short validity lets a new grant work soon.
            assert answer["validity"] <= 10, answer
    elif path == "/user/get-profile":
        answer = strict_profile(response)
        permissions, labels = PROFILES[role]
        assert answer["permissions"] == permissions, (role, answer)
        assert answer["authorized-labels"] == labels, (role, answer)
    elif path.startswith("/tokens/") and entry["method"] == "PUT":
        answer = strict_created(response)
        assert answer["token"].startswith("pst_"), answer
        assert answer["url"] is None, answer  # the imaging server has no viewer_url
    elif path == "/tokens/decode":
        answer = strict_decoded(response)
        # A user's API token is not a share token.
        assert answer == {"error-code": "invalid"}, answer
    else:
        raise AssertionError(f"unexpected captured path {path}")


# Every distinct validate question of the capture that carried a token, asked with every role's token.
_SHAPES: dict[tuple[str, str, str], dict[str, Any]] = {}
for _entry in ENTRIES:
    _body = json.loads(_entry["raw_body"])
    if _entry["config"] == BASIC and _entry["path"] == "/tokens/validate" and _body.get("token-value"):
        _SHAPES.setdefault((_body["method"], _body["level"], _body.get("uri") or ""), _entry)
ROLES = ["all", "all-session", "superuser", "view", "labels", "perm", "revoked", "unknown"]


def test_the_capture_has_the_expected_questions() -> None:
    assert sorted(_SHAPES) == sorted(
        [
            ("post", "system", "/instances"),
            ("get", "system", "/patients"),
            ("get", "patient", ""),
            ("get", "study", ""),
            ("get", "series", ""),
            ("get", "instance", ""),
            ("delete", "patient", ""),
            ("delete", "study", ""),
        ]
    )


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("shape", sorted(_SHAPES), ids=["-".join(filter(None, shape)) for shape in sorted(_SHAPES)])
def test_decision_table(rig: Rig, shape: tuple[str, str, str], role: str) -> None:
    method, level, uri = shape
    token = rig.by_role[role]
    response, _ = rig.replay(_SHAPES[shape], substitute=token)
    answer = strict_validate(response)
    assert answer["granted"] is expected_grant(role, method, level, uri or None), (role, shape, answer)


@pytest.mark.parametrize(("labels", "granted"), [(["rig-label"], True), (["other", "rig-label"], True), (["other"], False)])
def test_labels_user_sees_labelled_resources(rig: Rig, labels: list[str], granted: bool) -> None:
    """The captured study GET, with the ``labels`` field Orthanc adds for a labelled study."""
    entry = _SHAPES[("get", "study", "")]
    raw = entry["raw_body"].encode()
    token = rig.by_role["labels"]
    captured = json.loads(raw)["token-value"]
    raw = raw.replace(f'"token-value":"{captured}"'.encode(), f'"token-value":"{token}"'.encode())
    raw = raw.replace(b',"level"', f',"labels":{json.dumps(labels, separators=(",", ":"))},"level"'.encode(), 1)
    headers = {**entry["headers"], "token": token}
    answer = strict_validate(rig.send(entry["method"], entry["path"], headers, raw))
    assert answer["granted"] is granted, (labels, answer)


@pytest.mark.parametrize("pieces", [1, 3, 40])
def test_chunking_does_not_matter(rig: Rig, pieces: int) -> None:
    """One chunk, three, or one per few bytes: the body is reassembled the same."""
    entry = _SHAPES[("get", "study", "")]
    token = rig.by_role["view"]
    raw = entry["raw_body"].encode().replace(b'"token-value":"good-token"', f'"token-value":"{token}"'.encode())
    headers = {**entry["headers"], "token": token}
    answer = strict_validate(rig.send(entry["method"], entry["path"], headers, raw, pieces=pieces))
    assert answer["granted"] is True, answer


def test_replay_on_one_keep_alive_connection(rig: Rig) -> None:
    """Orthanc keeps its connection to the web service open: the captured Basic requests,
    one after the other on a single connection, get the same answers as one by one."""
    basic_entries = [entry for entry in ENTRIES if entry["config"] == BASIC]
    with RawConnection(rig.live.url) as connection:
        for entry in basic_entries:
            response, _ = rig.replay(entry, connection=connection)
            alone, _ = rig.replay(entry)
            assert response.status_code == alone.status_code == 200, (entry, response, alone)
            if entry["method"] != "PUT":  # a new share token each time
                assert json.loads(response.content) == json.loads(alone.content), entry


def test_chunked_body_over_64_kib(rig: Rig) -> None:
    """The size limit holds for a chunked body, which announces no length."""
    entry = _SHAPES[("get", "study", "")]
    raw = entry["raw_body"].encode().replace(b'"token-value":"good-token"', ('"token-value":"' + "x" * 100_000 + '"').encode())
    response = rig.send(entry["method"], entry["path"], {**entry["headers"], "token": "x"}, raw, pieces=25)
    error = error_of(response, 413)
    assert error["code"] == "payload_too_large", error
