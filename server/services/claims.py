"""Claim mapping: JMESPath expressions turn an IdP's claims into a Portico user.

The expressions are data, not code (Sonador pasted Python into the database, which made
everyone who may edit a provider able to run code on the server). They are evaluated over
the ID-token claims merged with userinfo, userinfo winning where both say something.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import re
import unicodedata

import jmespath
import jmespath.exceptions
import jmespath.parser

from server.contract.errors import FieldError

FIELDS = ("username", "email", "first_name", "last_name", "groups")
MAX_GROUPS = 500
MAX_EMAIL = 320
# The characters an administrator may use in a username (contract.schemas.Username): an IdP
# must not be able to create "аdmin" with a Cyrillic "а", or names with spaces or controls.
USERNAME_CHARACTERS = re.compile(r"^[A-Za-z0-9_.@+-]{1,150}$")


@dataclass(frozen=True)
class MappedUser:
    username: str | None
    email: str | None
    first_name: str
    last_name: str
    groups: list[str]
    problems: list[FieldError] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """A login needs at least a username; other problems are reported, not fatal."""
        return self.username is not None and not any(problem.field == "username" for problem in self.problems)


@lru_cache(maxsize=512)
def _compiled(expression: str) -> jmespath.parser.ParsedResult:
    return jmespath.compile(expression)


def merge_claims(id_token_claims: dict[str, Any], userinfo: dict[str, Any] | None) -> dict[str, Any]:
    return {**id_token_claims, **(userinfo or {})}


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return None


def _groups(value: Any, problems: list[FieldError]) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        # Some IdPs send one group as a string, others a space- or comma-separated list.
        value = [part for part in value.replace(",", " ").split() if part]
    if not isinstance(value, list):
        problems.append(FieldError(field="groups", message=f"the expression gave a {type(value).__name__}, not a list of names"))
        return []
    names: list[str] = []
    for item in value:
        name = _text(item) if isinstance(item, str) else None
        if name is None:
            problems.append(FieldError(field="groups", message=f"ignored a group that is not a name: {item!r:.60}"))
        elif name not in names:
            names.append(name[:255])
    if len(names) > MAX_GROUPS:
        problems.append(FieldError(field="groups", message=f"{len(names)} groups; only the first {MAX_GROUPS} are used"))
        names = names[:MAX_GROUPS]
    return names


def map_claims(mapping: dict[str, str], claims: dict[str, Any]) -> MappedUser:
    """Evaluate each expression; an expression that fails is reported on its field."""
    problems: list[FieldError] = []
    results: dict[str, Any] = {}
    for name in FIELDS:
        expression = mapping.get(name)
        if not expression:
            results[name] = None
            continue
        try:
            results[name] = _compiled(expression).search(claims)
        except jmespath.exceptions.JMESPathError as error:
            problems.append(FieldError(field=name, message=f"the expression {expression!r} failed: {error}"))
            results[name] = None
    username = _text(results["username"])
    if username is not None:
        username = unicodedata.normalize("NFKC", username)
    if username is None:
        problems.append(FieldError(
            field="username",
            message=f"the expression {mapping.get('username')!r} found no username in the claims "
            f"(claims present: {', '.join(sorted(claims)) or 'none'})",
        ))
    elif len(username) > 150:
        problems.append(FieldError(field="username", message="longer than 150 characters"))
    elif not USERNAME_CHARACTERS.match(username):
        problems.append(FieldError(field="username", message=f"{username!r:.80} has characters Portico does not allow in "
                                   "usernames (letters A-Z, digits and _ . @ + -): map another claim to the username"))
    email = _text(results["email"])
    if email is not None and len(email) > MAX_EMAIL:
        problems.append(FieldError(field="email", message=f"longer than {MAX_EMAIL} characters; ignored"))
        email = None
    if email is not None and "@" not in email:
        problems.append(FieldError(field="email", message=f"{email!r:.80} is not an e-mail address; ignored"))
        email = None
    return MappedUser(
        username=username,
        email=email,
        first_name=(_text(results["first_name"]) or "")[:150],
        last_name=(_text(results["last_name"]) or "")[:150],
        groups=_groups(results["groups"], problems),
        problems=problems,
    )
