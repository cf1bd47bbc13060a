"""The pure decision function and the permission table, without any server."""

from __future__ import annotations

import pytest

from server.domain.decision import DENIAL_VALIDITY, CompiledRule, Identifiers, Resource, Subject, decide
from server.domain.orthanc import Level, Method, required_capabilities
from server.domain.vocabulary import Capability, ScopeKind

NOW = 1_000_000.0
STUDY = Resource(Level.STUDY, orthanc_id="s-orthanc", dicom_uid="1.2.3", labels=frozenset({"cardio"}))


def rule(rule_id: int = 1, scope: ScopeKind = ScopeKind.ALL, caps: tuple[str, ...] = ("view",), validity: int = 60, **kw: object) -> CompiledRule:
    return CompiledRule(rule_id=rule_id, group="Radiology", scope=scope, capabilities=frozenset(Capability(c) for c in caps), validity=validity, **kw)  # type: ignore[arg-type]


def user(*rules: CompiledRule, superuser: bool = False) -> Subject:
    return Subject(user_id=7, username="alice", is_superuser=superuser, rules=rules)


def need(method: str, level: Level, uri: str | None = None):  # type: ignore[no-untyped-def]
    return required_capabilities(Method(method), level, uri)


@pytest.mark.parametrize(
    ("method", "level", "uri", "expected"),
    [
        ("get", Level.STUDY, None, {"all", "view"}),
        ("delete", Level.SERIES, None, {"all", "delete"}),
        ("post", Level.INSTANCE, None, {"all", "modify"}),
        ("post", Level.SYSTEM, "/instances", {"all", "upload"}),
        ("get", Level.SYSTEM, "/patients", {"all", "view"}),
        ("post", Level.SYSTEM, "/tools/find", {"all", "view"}),
        ("get", Level.SYSTEM, "/auth/settings/roles", {"all", "admin-permissions"}),
        ("post", Level.SYSTEM, "/modalities/pacs/store", {"all", "send"}),
    ],
)
def test_permission_table(method: str, level: Level, uri: str | None, expected: set[str]) -> None:
    requirement = need(method, level, uri)
    assert requirement is not None
    assert {c.value for c in requirement.capabilities} == expected


def test_a_call_no_row_covers_is_denied() -> None:
    assert need("delete", Level.SYSTEM, "/nothing/like/this") is None
    decision = decide(user(rule(caps=("all",))), None, Resource(Level.SYSTEM, uri="/nothing"), NOW)
    assert not decision.granted and "no row of the permission table" in decision.trace[0]


def test_anonymous_is_denied_with_a_short_validity() -> None:
    decision = decide(None, need("get", Level.STUDY), STUDY, NOW)
    assert (decision.granted, decision.validity) == (False, DENIAL_VALIDITY)


def test_superuser_is_granted_everything() -> None:
    assert decide(user(superuser=True), need("delete", Level.STUDY), STUDY, NOW).granted


def test_user_without_rules_is_denied_and_told_so() -> None:
    decision = decide(user(), need("get", Level.STUDY), STUDY, NOW)
    assert not decision.granted
    assert "no access rule on this imaging server" in decision.trace[-1]


def test_capability_must_match() -> None:
    subject = user(rule(caps=("view",)))
    assert decide(subject, need("get", Level.STUDY), STUDY, NOW).granted
    denied = decide(subject, need("delete", Level.STUDY), STUDY, NOW)
    assert not denied.granted
    assert any("not all|delete" in line for line in denied.trace)


def test_validity_is_the_shortest_and_stops_at_expiry() -> None:
    subject = user(rule(1, validity=300), rule(2, validity=120), rule(3, validity=600, expires_at=NOW + 30))
    decision = decide(subject, need("get", Level.STUDY), STUDY, NOW)
    assert decision.granted and decision.validity == 30
    assert decision.matched_rules == (1, 2, 3)


def test_expired_rule_grants_nothing() -> None:
    decision = decide(user(rule(expires_at=NOW - 1)), need("get", Level.STUDY), STUDY, NOW)
    assert not decision.granted and "expired" in " ".join(decision.trace)


def test_label_rules() -> None:
    cardio = rule(scope=ScopeKind.LABELS, labels=frozenset({"cardio"}))
    neuro = rule(scope=ScopeKind.LABELS, labels=frozenset({"neuro"}))
    assert decide(user(cardio), need("get", Level.STUDY), STUDY, NOW).granted
    assert not decide(user(neuro), need("get", Level.STUDY), STUDY, NOW).granted
    system = Resource(Level.SYSTEM, uri="/patients")
    assert not decide(user(cardio), need("get", Level.SYSTEM, "/patients"), system, NOW).granted


def test_resource_selectors_at_their_own_level() -> None:
    by_uid = rule(scope=ScopeKind.RESOURCES, study_uids=frozenset({"1.2.3"}))
    by_id = rule(scope=ScopeKind.RESOURCES, orthanc_ids=frozenset({"s-orthanc"}))
    other = rule(scope=ScopeKind.RESOURCES, study_uids=frozenset({"9.9"}))
    assert decide(user(by_uid), need("get", Level.STUDY), STUDY, NOW).granted
    assert decide(user(by_id), need("get", Level.STUDY), STUDY, NOW).granted
    assert not decide(user(other), need("get", Level.STUDY), STUDY, NOW).granted


def test_patient_selector_below_its_level_needs_the_ancestry() -> None:
    patient_rule = rule(scope=ScopeKind.RESOURCES, patient_ids=frozenset({"PAT-1"}))
    unknown = decide(user(patient_rule), need("get", Level.STUDY), STUDY, NOW)
    assert not unknown.granted
    assert any("ancestry is unknown" in line for line in unknown.trace)
    known = Resource(Level.STUDY, orthanc_id="s-orthanc", dicom_uid="1.2.3", ancestors={Level.PATIENT: Identifiers("p-orthanc", "PAT-1")})
    granted = decide(user(patient_rule), need("get", Level.STUDY), known, NOW)
    assert granted.granted and any("PatientID PAT-1" in line for line in granted.trace)
    elsewhere = Resource(Level.STUDY, orthanc_id="s2", dicom_uid="4.5", ancestors={Level.PATIENT: Identifiers("p2", "PAT-2")})
    assert not decide(user(patient_rule), need("get", Level.STUDY), elsewhere, NOW).granted
