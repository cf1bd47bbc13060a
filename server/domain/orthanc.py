"""What Orthanc's authorization plugin asks, and which capability each question needs.

Pure data and functions: no I/O, no framework, so that the decision path and the explain
API share them and so that they are tested on their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from server.domain.vocabulary import Capability


class Level(StrEnum):
    PATIENT = "patient"
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"
    SYSTEM = "system"


RESOURCE_LEVELS = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE)


class Method(StrEnum):
    GET = "get"
    POST = "post"
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True)
class PermissionEntry:
    """One row of the plugin's ``Permissions`` table: method + URI regex -> capabilities.

    An empty ``capabilities`` means "no permission needed" (e.g. decoding a share token).
    """

    method: Method
    pattern: str
    capabilities: frozenset[Capability]

    def matches(self, method: Method, uri: str) -> bool:
        return self.method == method and _compiled(self.pattern).search(uri) is not None


_PATTERN_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    compiled = _PATTERN_CACHE.get(pattern)
    if compiled is None:
        compiled = _PATTERN_CACHE[pattern] = re.compile(pattern)
    return compiled


def _entry(method: str, pattern: str, *capabilities: str) -> PermissionEntry:
    return PermissionEntry(Method(method), pattern, frozenset(Capability(name) for name in capabilities))


_RESOURCE = r"(patients|studies|series|instances)/([a-f0-9-]+)"

# Mirrors the plugin's default table (Orthanc Explorer 2 / OHIF oriented). First match wins.
DEFAULT_PERMISSION_TABLE: tuple[PermissionEntry, ...] = (
    _entry("post", r"^/auth/tokens/decode$"),
    _entry("post", r"^/tools/lookup$"),
    # browsing
    _entry("post", r"^/tools/find$", "all", "view"),
    _entry("get", rf"^/{_RESOURCE}$", "all", "view"),
    _entry("get", rf"^/{_RESOURCE}/(studies|study|series|instances|patient|statistics|shared-tags|metadata.*|attachments.*|labels)$", "all", "view"),
    _entry("get", r"^/instances/([a-f0-9-]+)/(tags|header|simplified-tags|content.*|preview|rendered|frames.*|image-.*|matlab|numpy|pdf)$", "all", "view"),
    _entry("get", r"^/(patients|studies|series|instances)$", "all", "view"),
    _entry("get", r"^/(statistics|changes|exports|system|plugins.*|tools/.*|labels)$", "all", "view"),
    _entry("get", r"^/(dicom-web|wado|ohif|stone-webviewer|ui|volview)/.*$", "all", "view"),
    _entry("post", r"^/dicom-web/.*/(query|studies)$", "all", "view"),
    # download
    _entry("get", rf"^/{_RESOURCE}/(archive|media)$", "all", "download"),
    _entry("post", r"^/tools/create-(archive|media|media-extended)$", "all", "download"),
    _entry("get", r"^/instances/([a-f0-9-]+)/(file|attachments/dicom/data)$", "all", "download"),
    # upload
    _entry("post", r"^/instances$", "all", "upload"),
    _entry("post", r"^/tools/(import|create-dicom)$", "all", "upload"),
    _entry("post", r"^/dicom-web/studies$", "all", "upload"),
    # delete
    _entry("delete", rf"^/{_RESOURCE}$", "all", "delete"),
    _entry("post", r"^/tools/bulk-delete$", "all", "delete"),
    # send
    _entry("post", r"^/(modalities|peers|dicom-web/servers|transfers)/.*/(store|send|stow|push)$", "all", "send"),
    _entry("post", r"^/transfers/(send|pull)$", "all", "send"),
    # modify / anonymize
    _entry("post", rf"^/{_RESOURCE}/modify$", "all", "modify"),
    _entry("post", r"^/tools/bulk-modify$", "all", "modify"),
    _entry("post", rf"^/{_RESOURCE}/anonymize$", "all", "anonymize"),
    _entry("post", r"^/tools/bulk-anonymize$", "all", "anonymize"),
    # labels
    _entry("put", rf"^/{_RESOURCE}/labels/.*$", "all", "edit-labels"),
    _entry("delete", rf"^/{_RESOURCE}/labels/.*$", "all", "edit-labels"),
    # share
    _entry("put", r"^/auth/tokens/.*$", "all", "share"),
    # query/retrieve and worklists
    _entry("post", r"^/modalities/.*/(query|find|move|get|echo)$", "all", "q-r-remote-modalities"),
    _entry("get", r"^/(modalities|queries).*$", "all", "q-r-remote-modalities"),
    _entry("post", r"^/queries/.*$", "all", "q-r-remote-modalities"),
    _entry("get", r"^/worklists.*$", "all", "worklists"),
    _entry("post", r"^/worklists.*$", "all", "worklists"),
    _entry("delete", r"^/worklists.*$", "all", "worklists"),
    # administration
    _entry("get", r"^/auth/settings/roles$", "all", "admin-permissions"),
    _entry("put", r"^/auth/settings/roles$", "all", "admin-permissions"),
    _entry("get", r"^/auditlogs.*$", "all", "audit-logs"),
    _entry("put", r"^/tools/(log-level.*|default-encoding|metrics)$", "all", "settings"),
    _entry("post", r"^/tools/(reset|shutdown|reconstruct|execute-script)$", "all", "settings"),
)

# A resource-level validate call carries only the method, not the URI: the plugin asks
# once per level of GET /studies/{id}/archive as for GET /studies/{id}. So at resource
# levels the method decides: reading is view, deleting is delete, any other write is modify.
RESOURCE_METHOD_CAPABILITY: dict[Method, Capability] = {
    Method.GET: Capability.VIEW,
    Method.DELETE: Capability.DELETE,
    Method.POST: Capability.MODIFY,
    Method.PUT: Capability.MODIFY,
}


@dataclass(frozen=True)
class Requirement:
    """Which capabilities would satisfy a call (any one of them), and why."""

    capabilities: frozenset[Capability]
    reason: str

    @property
    def free(self) -> bool:
        return not self.capabilities


def required_capabilities(
    method: Method, level: Level, uri: str | None, table: tuple[PermissionEntry, ...] = DEFAULT_PERMISSION_TABLE
) -> Requirement | None:
    """The capabilities a call needs; ``None`` when no table row covers it (then: deny)."""
    if level != Level.SYSTEM:
        capability = RESOURCE_METHOD_CAPABILITY[method]
        return Requirement(frozenset({Capability.ALL, capability}), f"{method.value} on a {level.value} needs {capability.value}")
    path = (uri or "").rstrip("/") or "/"
    for entry in table:
        if entry.matches(method, path):
            if not entry.capabilities:
                return Requirement(frozenset(), f"{method.value} {path} needs no permission (table row {entry.pattern})")
            names = "|".join(sorted(c.value for c in entry.capabilities))
            return Requirement(entry.capabilities, f"{method.value} {path} needs {names} (table row {entry.pattern})")
    return None
