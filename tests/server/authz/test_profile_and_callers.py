"""get-profile never lists more than validate grants; an expired plugin credential stops at once."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.domain.decision import CompiledRule
from server.domain.vocabulary import Capability, ScopeKind
from server.services.orthanc_authz import profile_grants
from tests.conftest import start_live_server


def rule(scope: ScopeKind, caps: set[str], labels: set[str] = frozenset(), rule_id: int = 1) -> CompiledRule:  # type: ignore[assignment]
    return CompiledRule(rule_id, "G", scope, frozenset(Capability(c) for c in caps), 60, labels=frozenset(labels))


def test_a_label_rule_does_not_lend_its_permission_to_everything() -> None:
    permissions, labels, used = profile_grants([rule(ScopeKind.ALL, {"view"}), rule(ScopeKind.LABELS, {"delete"}, {"research"}, 2)])
    assert (permissions, labels) == (["view"], ["*"])
    assert [r.rule_id for r in used] == [1]


def test_label_rules_list_only_permissions_that_cover_every_listed_label() -> None:
    rules = [rule(ScopeKind.LABELS, {"view", "delete"}, {"a"}, 1), rule(ScopeKind.LABELS, {"view"}, {"b"}, 2)]
    assert profile_grants(rules)[:2] == (["view"], ["a", "b"])


def test_resource_rules_give_a_profile_nothing() -> None:
    assert profile_grants([rule(ScopeKind.RESOURCES, {"view"})])[:2] == ([], [])


@pytest.mark.slow
def test_an_expired_plugin_credential_is_refused_without_any_other_change(tmp_path: Path) -> None:
    server = start_live_server("sqlite", tmp_path, None)
    try:
        pacs = server.client.post("/api/v1/imaging-servers", json={"token": "pacs", "name": "PACS", "hostname": "pacs"}).json()
        expires_at = datetime.now(UTC) + timedelta(seconds=2)
        credential = server.client.post(
            "/api/v1/credentials", json={"kind": "orthanc-plugin", "imaging_server_id": pacs["id"], "expires_at": expires_at.isoformat()}
        ).json()
        body = {"level": "system", "method": "get", "uri": "/patients"}
        with server.anonymous() as orthanc:
            auth = (credential["username"], credential["secret"])
            assert orthanc.post("/orthanc/pacs/tokens/validate", json=body, auth=auth).status_code == 200
            time.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.3)
            assert orthanc.post("/orthanc/pacs/tokens/validate", json=body, auth=auth).status_code == 401
    finally:
        server.client.close()
        assert server.process.stop() == 0
