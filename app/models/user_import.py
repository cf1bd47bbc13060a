"""Bulk import of users and their memberships from CSV: reading, checking, planning.

Qt-free. Each row is checked here before anything is sent, with the server's own request
model (``UserCreate``) and against what the server holds (group names, existing
usernames, looked up by the facade): the preview then says per row what will happen.
The import itself (``ConsoleService.import_user_row``) goes row by row and records a
result on each row; failed rows can be written back out with the reason in a column, so
nothing is lost.

Columns: username (required), email, first_name, last_name, is_active, is_staff, groups
(names separated by ``;``, each must exist), password (optional). For a new user an empty
cell means the server's default; for an existing user (policy "update") an empty cell
leaves the value as it is, and groups are added (never removed).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.models.csv_files import read_text, write_csv
from app.models.entities import USERS, validate
from server.contract.schemas import UserCreate

COLUMNS = ("username", "email", "first_name", "last_name", "is_active", "is_staff", "groups", "password")
BOOLEAN_COLUMNS = ("is_active", "is_staff")
TEXT_COLUMNS = ("email", "first_name", "last_name")
GROUP_SEPARATOR = ";"
_TRUE = {"true", "yes", "y", "1", "x", "✓"}
_FALSE = {"false", "no", "n", "0"}


class CsvProblem(ValueError):
    """The file as a whole cannot be imported (no username column, unknown columns...)."""


class ExistingPolicy(StrEnum):
    UPDATE = "update"
    SKIP = "skip"


class Action(StrEnum):
    """What the preview says will happen to a row."""

    CREATE = "create"
    UPDATE = "update"
    SKIP = "skip"
    INVALID = "invalid"


class Outcome(StrEnum):
    """What did happen to a row."""

    CREATED = "created"
    UPDATED = "updated"
    SKIPPED = "skipped"
    FAILED = "failed"
    NOT_IMPORTED = "not imported"  # cancelled before its turn


@dataclass
class ImportRow:
    line: int  # in the file (the header is line 1)
    cells: dict[str, str]  # as read, every known column ("" when absent)
    problems: list[str] = field(default_factory=list)  # this row on its own (validator)
    references: list[str] = field(default_factory=list)  # against the file and the server
    action: Action = Action.CREATE
    existing_id: int | None = None
    group_ids: list[int] = field(default_factory=list)
    outcome: Outcome | None = None
    message: str = ""

    @property
    def username(self) -> str:
        return self.cells.get("username", "").strip()

    @property
    def key(self) -> str:
        """Usernames are unique regardless of case on the server."""
        return self.username.lower()

    @property
    def groups(self) -> list[str]:
        return [name.strip() for name in self.cells.get("groups", "").split(GROUP_SEPARATOR) if name.strip()]

    @property
    def errors(self) -> list[str]:
        return self.problems + self.references

    def create_body(self) -> dict[str, Any]:
        """A new user: every given cell; empty ones take the server's default."""
        body: dict[str, Any] = {"username": self.username}
        for name in TEXT_COLUMNS:
            value = self.cells.get(name, "").strip()
            if value:
                body[name] = value
        for name in BOOLEAN_COLUMNS:
            flag = _boolean(self.cells.get(name, ""))
            if isinstance(flag, bool):
                body[name] = flag
        if self.cells.get("password"):
            body["password"] = self.cells["password"]
        return body

    def update_body(self) -> dict[str, Any]:
        """An existing user: only the cells that hold something (the username stays)."""
        body = self.create_body()
        body.pop("username")
        return body


@dataclass
class ImportPlan:
    columns: tuple[str, ...]  # the file's own header, in its order
    rows: list[ImportRow]

    def count(self, action: Action) -> int:
        return sum(1 for row in self.rows if row.action == action)

    def outcomes(self, outcome: Outcome) -> list[ImportRow]:
        return [row for row in self.rows if row.outcome == outcome]

    def summary(self) -> str:
        parts = [f"{len(self.rows):,} row{'' if len(self.rows) == 1 else 's'}"]
        for action, words in ((Action.CREATE, "to create"), (Action.UPDATE, "to update"), (Action.SKIP, "to skip"), (Action.INVALID, "invalid")):
            if self.count(action):
                parts.append(f"{self.count(action):,} {words}")
        return parts[0] + (": " + ", ".join(parts[1:]) if len(parts) > 1 else "")

    def result_summary(self) -> str:
        parts = [f"{len(self.outcomes(outcome)):,} {outcome.value}" for outcome in Outcome if self.outcomes(outcome)]
        return ", ".join(parts) if parts else "nothing imported yet"


def _boolean(text: str) -> bool | None | str:
    """True/False, None when empty, or the text itself when it is neither."""
    value = text.strip().lower()
    if not value:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return text


def read_csv(text: str) -> ImportPlan:
    """Rows of a CSV text, each checked on its own (the server is not asked yet)."""
    text = text.lstrip("\ufeff")  # Excel writes a byte-order mark
    try:
        dialect: Any = csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = [name.strip().lower() for name in next(reader)]
    except StopIteration:
        raise CsvProblem("The file is empty.") from None
    if "username" not in header:
        raise CsvProblem("The file has no “username” column (the first line must name the columns).")
    unknown = [name for name in header if name and name not in COLUMNS]
    if unknown:
        raise CsvProblem(f"Unknown column{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}. The columns are: {', '.join(COLUMNS)}.")
    rows: list[ImportRow] = []
    for values in reader:
        if not any(value.strip() for value in values):
            continue  # blank lines
        line = reader.line_num
        cells = {name: "" for name in COLUMNS}
        extra = values[len(header):]
        for name, value in zip(header, values, strict=False):
            if name:
                cells[name] = value
        row = ImportRow(line, cells)
        if any(value.strip() for value in extra):
            row.problems.append(f"more cells ({len(values)}) than columns ({len(header)})")
        check_row(row)
        rows.append(row)
    return ImportPlan(tuple(header), rows)


def read_csv_file(path: Path) -> ImportPlan:
    return read_csv(read_text(path))


def check_row(row: ImportRow) -> None:
    """The row on its own, by the server's own model of a new user."""
    for name in BOOLEAN_COLUMNS:
        if isinstance(_boolean(row.cells.get(name, "")), str):
            row.problems.append(f"{name}: “{row.cells[name]}” is not true or false")
    body = row.create_body()
    for name, message in validate(UserCreate, USERS.fields, body).items():
        row.problems.append(f"{name}: {message}" if name else message)


def plan(rows: Sequence[ImportRow], groups: Mapping[str, int], existing: Mapping[str, int], policy: ExistingPolicy) -> None:
    """Each row's action, checked against the file (duplicates) and the server (group names,
    existing usernames as lower-case username -> id). Run again when the policy changes."""
    by_name = {name: group_id for name, group_id in groups.items()}
    folded = {name.lower(): group_id for name, group_id in groups.items()}
    first_line: dict[str, int] = {}
    for row in rows:
        row.references = []
        row.group_ids = []
        row.existing_id = None
        unknown = []
        for name in row.groups:
            group_id = by_name.get(name, folded.get(name.lower()))
            if group_id is None:
                unknown.append(name)
            elif group_id not in row.group_ids:
                row.group_ids.append(group_id)
        if unknown:
            row.references.append(f"unknown group{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        if row.key:
            if row.key in first_line:
                row.references.append(f"duplicate username: also on line {first_line[row.key]}")
            else:
                first_line[row.key] = row.line
        row.existing_id = existing.get(row.key)
        if row.errors:
            row.action = Action.INVALID
        elif row.existing_id is not None:
            row.action = Action.UPDATE if policy == ExistingPolicy.UPDATE else Action.SKIP
        else:
            row.action = Action.CREATE


def failed_rows_table(plan_: ImportPlan) -> tuple[list[str], list[list[str]]]:
    """The rows that did not go in, as the file had them, plus the reason: fix and import again."""
    header = [name for name in plan_.columns if name] + ["error"]
    rows = [
        [row.cells.get(name, "") for name in plan_.columns if name] + [row.message or "; ".join(row.errors)]
        for row in plan_.rows
        if row.outcome in (Outcome.FAILED, Outcome.NOT_IMPORTED)
    ]
    return header, rows


def export_failed_rows(plan_: ImportPlan, path: Path) -> int:
    header, rows = failed_rows_table(plan_)
    return write_csv(path, header, rows)
