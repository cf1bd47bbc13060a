"""The one decision function: may this subject do this to this resource on this server?

Both Orthanc's validate calls and the explain API call ``decide``, so an explanation can
never disagree with a decision. It is pure (the caller resolves tokens, rules and the
resource's ancestry beforehand) and cheap: a handful of set look-ups per rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from server.domain.orthanc import Level, Requirement
from server.domain.vocabulary import Capability, ScopeKind

# A denial is cached by Orthanc for this long: short, so that a grant made now works soon.
DENIAL_VALIDITY = 5
SUPERUSER_VALIDITY = 60


@dataclass(frozen=True, slots=True)
class Identifiers:
    orthanc_id: str | None = None
    dicom_uid: str | None = None


@dataclass(frozen=True, slots=True)
class Resource:
    level: Level
    orthanc_id: str | None = None
    dicom_uid: str | None = None
    labels: frozenset[str] = frozenset()
    uri: str | None = None
    # The resource's ancestors, when they were looked up (None: not known).
    ancestors: Mapping[Level, Identifiers] | None = None


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule_id: int
    group: str
    scope: ScopeKind
    capabilities: frozenset[Capability]
    validity: int
    labels: frozenset[str] = frozenset()
    patient_ids: frozenset[str] = frozenset()
    study_uids: frozenset[str] = frozenset()
    orthanc_ids: frozenset[str] = frozenset()
    expires_at: float | None = None  # epoch seconds

    @property
    def has_selectors_below_patient(self) -> bool:
        return bool(self.patient_ids or self.study_uids or self.orthanc_ids)


@dataclass(frozen=True)
class Subject:
    user_id: int
    username: str
    is_superuser: bool
    rules: tuple[CompiledRule, ...] = ()
    # Computed once: only a subject with resource rules may need an ancestry look-up.
    has_resource_rules: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "has_resource_rules", any(rule.scope == ScopeKind.RESOURCES for rule in self.rules))


@dataclass(frozen=True, slots=True)
class Decision:
    granted: bool
    validity: int
    trace: tuple[str, ...]
    matched_rules: tuple[int, ...] = ()
    considered_rules: tuple[int, ...] = ()


@dataclass
class _Trace:
    """The decision's reasons. Lines are given as callables so that Orthanc's calls, which
    need only the verdict, do not pay for formatting them (``explain=False``)."""

    explain: bool
    lines: list[str] = field(default_factory=list)

    def __call__(self, line: Callable[[], str]) -> None:
        if self.explain:
            self.lines.append(line())


_SILENT = _Trace(False)


def _scope_matches(rule: CompiledRule, resource: Resource, note: _Trace) -> bool:
    if rule.scope == ScopeKind.ALL:
        note(lambda: f"rule {rule.rule_id} ({rule.group}): scope all covers every resource")
        return True
    if resource.level == Level.SYSTEM:
        note(lambda: f"rule {rule.rule_id} ({rule.group}): scope {rule.scope.value} names resources, and a system call ({resource.uri}) is none of them")
        return False
    if rule.scope == ScopeKind.LABELS:
        shared = rule.labels & resource.labels
        if shared:
            note(lambda: f"rule {rule.rule_id} ({rule.group}): label {sorted(shared)[0]!r} of the {resource.level.value} is in the rule's labels")
            return True
        note(
            lambda: f"rule {rule.rule_id} ({rule.group}): the {resource.level.value}'s labels {sorted(resource.labels) or '(none)'} "
            f"share none with the rule's {sorted(rule.labels)}"
        )
        return False
    return _selectors_match(rule, resource, note)


def _selectors_match(rule: CompiledRule, resource: Resource, note: _Trace) -> bool:
    prefix = f"rule {rule.rule_id} ({rule.group})"
    if resource.orthanc_id in rule.orthanc_ids:
        note(lambda: f"{prefix}: names this {resource.level.value}'s Orthanc id {resource.orthanc_id}")
        return True
    if resource.level == Level.PATIENT and resource.dicom_uid in rule.patient_ids:
        note(lambda: f"{prefix}: names PatientID {resource.dicom_uid}")
        return True
    if resource.level == Level.STUDY and resource.dicom_uid in rule.study_uids:
        note(lambda: f"{prefix}: names StudyInstanceUID {resource.dicom_uid}")
        return True
    below_a_named_level = (rule.patient_ids and resource.level != Level.PATIENT) or (
        rule.study_uids and resource.level in (Level.SERIES, Level.INSTANCE)
    ) or (rule.orthanc_ids and resource.level != Level.PATIENT)
    if not below_a_named_level:
        note(lambda: f"{prefix}: its selectors name no {resource.level.value} with these ids")
        return False
    if resource.ancestors is None:
        note(
            lambda: f"{prefix}: the {resource.level.value} may lie below a resource the rule names, but its ancestry is unknown "
            "(the imaging server has no REST credentials in Portico, or Orthanc did not answer), so it does not match"
        )
        return False
    for level, ids in resource.ancestors.items():
        if ids.orthanc_id is not None and ids.orthanc_id in rule.orthanc_ids:
            note(lambda: f"{prefix}: names the {level.value} {ids.orthanc_id} that contains this {resource.level.value}")
            return True
        if level == Level.PATIENT and ids.dicom_uid in rule.patient_ids:
            note(lambda: f"{prefix}: names PatientID {ids.dicom_uid}, the patient of this {resource.level.value}")
            return True
        if level == Level.STUDY and ids.dicom_uid in rule.study_uids:
            note(lambda: f"{prefix}: names StudyInstanceUID {ids.dicom_uid}, the study of this {resource.level.value}")
            return True
    note(lambda: f"{prefix}: none of this {resource.level.value}'s ancestors is named by the rule")
    return False


def cacheable_for(validity: int, expires_at: float | None, now: float) -> int:
    """``validity``, shortened so that nothing is cached past ``expires_at`` (at least 1 s)."""
    return validity if expires_at is None else min(validity, max(1, int(expires_at - now)))


def decide(
    subject: Subject | None,
    requirement: Requirement | None,
    resource: Resource,
    now: float,
    not_after: float | None = None,
    *,
    explain: bool = True,
) -> Decision:
    # Every reason is given as ``note(lambda: ...)``, guarded by ``if explain`` on the
    # per-rule path, so that Orthanc's calls (explain=False) build no closure per rule.
    note = _Trace(explain) if explain else _SILENT
    if requirement is None:
        note(lambda: f"no row of the permission table covers this call ({resource.uri}): denied")
        return Decision(False, DENIAL_VALIDITY, tuple(note.lines))
    if explain:
        note(lambda: requirement.reason)
    if subject is None:
        note(lambda: "no valid token (anonymous, unknown, expired or revoked): denied")
        return _DENIED if not explain else Decision(False, DENIAL_VALIDITY, tuple(note.lines))
    needed = requirement.capabilities
    if not needed:
        note(lambda: f"{subject.username}: granted, the call needs no permission")
        return Decision(True, DENIAL_VALIDITY, tuple(note.lines))
    if subject.is_superuser:
        note(lambda: f"{subject.username} is a superuser: granted")
        return Decision(True, cacheable_for(SUPERUSER_VALIDITY, not_after, now), tuple(note.lines))
    matched: list[CompiledRule] = []
    considered: list[int] = []
    for rule in subject.rules:
        considered.append(rule.rule_id)
        if rule.expires_at is not None and rule.expires_at <= now:
            if explain:
                note(lambda: f"rule {rule.rule_id} ({rule.group}): expired")
            continue
        if rule.capabilities.isdisjoint(needed):
            if explain:
                note(
                    lambda: f"rule {rule.rule_id} ({rule.group}): grants {sorted(c.value for c in rule.capabilities)}, "
                    f"not {'|'.join(sorted(c.value for c in needed))}"
                )
            continue
        if (rule.scope is ScopeKind.ALL and not explain) or _scope_matches(rule, resource, note):
            matched.append(rule)
    if not considered:
        note(lambda: f"{subject.username} has no access rule on this imaging server (through any group): denied")
        return Decision(False, DENIAL_VALIDITY, tuple(note.lines))
    if not matched:
        note(lambda: f"{subject.username}: no rule grants this: denied")
        return Decision(False, DENIAL_VALIDITY, tuple(note.lines), (), tuple(considered))
    # The shortest validity of the granting rules, never past a rule's or the token's expiry.
    validity = cacheable_for(min(cacheable_for(rule.validity, rule.expires_at, now) for rule in matched), not_after, now)
    note(lambda: f"{subject.username}: granted by rule(s) {', '.join(str(r.rule_id) for r in matched)}; Orthanc may cache this for {validity} s")
    return Decision(True, validity, tuple(note.lines), tuple(r.rule_id for r in matched), tuple(considered))


_DENIED = Decision(False, DENIAL_VALIDITY, ())
