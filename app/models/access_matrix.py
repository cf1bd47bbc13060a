"""A group's access as a matrix: imaging servers × capabilities, with scope and validity.

Qt-free. Each imaging server column stands for the group's one rule on that server (none
when no capability is ticked). ``diff`` turns the edited matrix into the rules to create,
update and delete; each change is checked with the server's own request models before
anything is sent. A server on which the group has several rules is shown read-only (they
are edited one by one in the Access Rules panel).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from app.models.entities import ACCESS_RULES, plain, validate
from server.domain.vocabulary import Capability, ScopeKind, SelectorKind

CAPABILITIES: tuple[str, ...] = tuple(str(member.value) for member in Capability)
SCOPES: tuple[str, ...] = tuple(str(member.value) for member in ScopeKind)
SELECTOR_KINDS: tuple[str, ...] = tuple(str(member.value) for member in SelectorKind)
DEFAULT_VALIDITY = 60
_SPLIT = re.compile(r"[,\s]+")


class ChangeKind(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass
class Cell:
    """What the matrix says for one imaging server."""

    server_id: int
    capabilities: set[str] = field(default_factory=set)
    scope: str = "all"
    scope_text: str = ""  # labels, or selectors as kind=value, separated by commas
    validity: int = DEFAULT_VALIDITY


@dataclass
class Column:
    """One imaging server and the group's rules on it as read."""

    server_id: int
    name: str
    rules: list[Any]  # AccessRuleRead

    @property
    def editable(self) -> bool:
        return len(self.rules) <= 1

    @property
    def rule(self) -> Any:
        return self.rules[0] if len(self.rules) == 1 else None

    def cell(self) -> Cell:
        rule = self.rule
        if rule is None:
            return Cell(self.server_id)
        return Cell(self.server_id, set(plain(rule.capabilities)), str(plain(rule.scope)), scope_text(plain(rule.scope), plain(rule.labels), plain(rule.selectors)), int(rule.validity))


@dataclass
class Change:
    kind: ChangeKind
    server_id: int
    server_name: str
    rule_id: int | None
    version: int | None
    old: dict[str, Any]  # the rule's values before (empty for a create), for the words
    new: dict[str, Any]  # after (capabilities empty for a delete)
    body: dict[str, Any]  # what is sent
    errors: dict[str, str] = field(default_factory=dict)


def scope_text(scope: str, labels: Sequence[str], selectors: Sequence[Mapping[str, Any]]) -> str:
    if scope == "labels":
        return ", ".join(labels)
    if scope == "resources":
        return ", ".join(f"{item['kind']}={item['value']}" for item in selectors)
    return ""


def parse_scope(scope: str, text: str) -> tuple[list[str], list[dict[str, str]], str | None]:
    """Labels, selectors, and a problem with the text (None when fine)."""
    parts = [part for part in _SPLIT.split(text.strip()) if part]
    if scope == "labels":
        return parts, [], None
    if scope == "resources":
        selectors: list[dict[str, str]] = []
        for part in parts:
            kind, separator, value = part.replace(":", "=", 1).partition("=")
            if not separator or kind not in SELECTOR_KINDS:
                return [], [], f"“{part}” is not kind=value (kinds: {', '.join(SELECTOR_KINDS)})"
            selectors.append({"kind": kind, "value": value})
        return [], selectors, None
    return [], [], None


def rule_values(rule: Any) -> dict[str, Any]:
    return {name: plain(getattr(rule, name)) for name in ("group_id", "imaging_server_id", "scope", "labels", "selectors", "capabilities", "validity")}


def diff(group_id: int, columns: Sequence[Column], cells: Mapping[int, Cell]) -> list[Change]:
    """The rules to create, update and delete so that the server says what the matrix says."""
    changes: list[Change] = []
    for column in columns:
        cell = cells.get(column.server_id)
        if cell is None or not column.editable:
            continue
        labels, selectors, problem = parse_scope(cell.scope, cell.scope_text)
        capabilities = [name for name in CAPABILITIES if name in cell.capabilities]
        new = {"group_id": group_id, "imaging_server_id": column.server_id, "scope": cell.scope, "labels": labels,
               "selectors": selectors, "capabilities": capabilities, "validity": cell.validity}
        rule = column.rule
        if rule is None:
            if not capabilities:
                continue
            change = Change(ChangeKind.CREATE, column.server_id, column.name, None, None, {}, new, dict(new))
            change.errors = validate(ACCESS_RULES.endpoint.create, ACCESS_RULES.fields, change.body)
        else:
            old = rule_values(rule)
            if not capabilities:
                gone = {**old, "capabilities": []}
                changes.append(Change(ChangeKind.DELETE, column.server_id, column.name, rule.id, rule.version, old, gone, {}))
                continue
            body: dict[str, Any] = {}
            if (old["scope"], old["labels"], old["selectors"]) != (new["scope"], new["labels"], new["selectors"]):
                body.update(scope=new["scope"], labels=labels, selectors=selectors)  # checked together by the server
            if sorted(old["capabilities"]) != sorted(capabilities):
                body["capabilities"] = capabilities
            if old["validity"] != new["validity"]:
                body["validity"] = new["validity"]
            if not body:
                continue
            change = Change(ChangeKind.UPDATE, column.server_id, column.name, rule.id, rule.version, old, new, {**body, "version": rule.version})
            change.errors = validate(ACCESS_RULES.endpoint.update, ACCESS_RULES.fields, change.body)
        if problem:
            change.errors["selectors"] = problem  # the reason, rather than "needs at least one selector"
        changes.append(change)
    return changes
