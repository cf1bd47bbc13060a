"""Orthanc's authorization web service: who is asking, about what, and the decision.

The hot path (``validate`` for a token seen before) reads only dictionaries; see
``authz_state`` for how those are kept current. Everything that fails on this path
denies (fail closed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, select

if TYPE_CHECKING:
    import httpx

from server.domain.decision import (
    DENIAL_VALIDITY,
    SUPERUSER_VALIDITY,
    CompiledRule,
    Decision,
    Identifiers,
    Resource,
    Subject,
    cacheable_for,
    decide,
)
from server.domain.orthanc import DEFAULT_PERMISSION_TABLE, Level, Method, PermissionEntry, Requirement, required_capabilities
from server.domain.vocabulary import Capability, CredentialKind, ScopeKind, SelectorKind, TokenPrefix
from server.services import secrets_tokens
from server.services.accounts import verify_user_token
from server.services.portico_tokens import PorticoTokens
from server.services.authz_state import Generation, PreparedReads, ReadConnection
from server.services.secretbox import SecretBox
from server.storage.database import Database
from server.storage.tables import (
    AccessRule,
    Credential,
    Group,
    ImagingServer,
    Membership,
    Session,
    Share,
    User,
)


log = logging.getLogger("portico.authz")


@dataclass(frozen=True)
class ServerInfo:
    id: int
    token: str
    name: str
    is_active: bool
    viewer_url: str | None
    permission_table: tuple[PermissionEntry, ...] = DEFAULT_PERMISSION_TABLE
    # Orthanc's own REST API, for ancestry look-ups; None without stored credentials.
    rest_url: str | None = None
    rest_auth: tuple[str, str] | None = field(default=None, repr=False)


def permission_table(rows: list[Any] | None) -> tuple[PermissionEntry, ...]:
    if rows is None:
        return DEFAULT_PERMISSION_TABLE
    return tuple(
        PermissionEntry(Method(row["method"]), row["pattern"], frozenset(Capability(c) for c in row["capabilities"]))
        for row in rows
    )


def server_info(row: ImagingServer, box: SecretBox) -> ServerInfo:
    port = f":{row.port}" if row.port else ""
    rest_auth = None
    if row.rest_username and row.rest_password_encrypted is not None:
        rest_auth = (row.rest_username, box.decrypt(row.rest_password_encrypted))
    return ServerInfo(
        id=row.id,
        token=row.token,
        name=row.name,
        is_active=row.is_active,
        viewer_url=row.viewer_url,
        permission_table=permission_table(row.permission_table),
        rest_url=f"{row.scheme}://{row.hostname}{port}",
        rest_auth=rest_auth,
    )


@dataclass(frozen=True)
class TokenInfo:
    """A verified token: whose it is and until when. ``share_id`` for share tokens."""

    user_id: int | None
    expires_at: float | None
    share_id: int | None = None


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def strip_bearer(value: str) -> str:
    value = value.strip()
    return value[7:].strip() if value[:7].lower() == "bearer " else value


def _epoch(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    # Core reads may hand back naive UTC (the ORM's type makes it aware).
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


# Built once (statement construction costs more than SQLite's answer). The rules are reached
# from the user's few memberships through the (group, imaging server) index; "+ 0" keeps
# the planner from walking every rule of the server by the imaging-server index instead,
# whatever statistics it has.
_SUBJECT_USER = select(User.id, User.username, User.is_superuser, User.is_active).where(User.id == bindparam("user_id"))
_SUBJECT_RULES = (
    select(
        AccessRule.id, AccessRule.scope, AccessRule.capabilities, AccessRule.validity, AccessRule.labels,
        AccessRule.selectors, AccessRule.expires_at, Group.name,
    )
    .select_from(Membership)
    .join(AccessRule, AccessRule.group_id == Membership.group_id)
    .join(Group, Group.id == AccessRule.group_id)
    .where(Membership.user_id == bindparam("user_id"), (AccessRule.imaging_server_id + 0) == bindparam("server_id"))
    .order_by(AccessRule.id)
)
_TOKEN_SESSION = (
    select(Session.user_id, Session.revoked_at, Session.expires_at, User.is_active)
    .join(User, User.id == Session.user_id)
    .where(Session.id == bindparam("session_id"))
)
# A first-seen Portico token on an imaging server: its session, its user and the user's
# rules on that server in one statement (a row per rule, and rows of NULL rule columns for
# a user without groups or a group without rules there). Flat outer joins: a parenthesised
# one makes SQLite materialise every rule. An outer join fixes the join order, so the rules
# are reached from the memberships by the (group, imaging server) index without "+ 0".
_TOKEN_SUBJECT = (
    select(
        Session.user_id, Session.revoked_at, Session.expires_at, User.is_active, User.username, User.is_superuser,
        AccessRule.id.label("rule_id"), AccessRule.scope, AccessRule.capabilities, AccessRule.validity, AccessRule.labels,
        AccessRule.selectors, AccessRule.expires_at.label("rule_expires_at"), Group.name.label("group_name"),
    )
    .select_from(Session)
    .join(User, User.id == Session.user_id)
    .outerjoin(Membership, Membership.user_id == User.id)
    .outerjoin(AccessRule, and_(AccessRule.group_id == Membership.group_id, AccessRule.imaging_server_id == bindparam("server_id")))
    .outerjoin(Group, Group.id == AccessRule.group_id)
    .where(Session.id == bindparam("session_id"))
    .order_by(AccessRule.id)
)
_SHARE_TOKEN = select(Share.id, Share.secret_hash, Share.expires_at).where(Share.public_id == bindparam("public_id"))


class NeedsIO(Exception):
    """The answer needs the database or Orthanc: compute it off the event loop."""


CACHE_CAPACITY = 100_000


class _Cache(dict[Any, tuple[int, Any]]):
    """A size-bounded memo whose entries carry the generation they were read under: an
    entry of an older generation is never served, so a value read just before a revocation
    can never outlive it, whatever the interleaving of threads. Full means start over (the
    working set of a deployment is far smaller; a flood of made-up tokens must not grow
    memory)."""

    def put(self, generation: int, key: Any, value: Any) -> None:
        if len(self) >= CACHE_CAPACITY:
            self.clear()
        self[key] = (generation, value)


_MISSING = object()


class OrthancAuthorizer:
    """Answers the plugin's questions for every imaging server of this Portico.

    Every look-up first tries memory; with ``io=False`` a miss raises ``NeedsIO`` instead of
    querying, so that the HTTP layer answers warm calls on the event loop and sends cold
    ones to a worker thread. A value computed while the generation moved on is not kept:
    it may already be stale.
    """

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        generation: Generation,
        clock: Callable[[], float] = time.time,
        ancestry: AncestryLookup | None = None,
        tokens: PorticoTokens | None = None,
    ) -> None:
        self._db = db
        self._reads = PreparedReads(db.engine)
        self._portico_tokens = tokens
        self._box = box
        self._ancestry = ancestry or AncestryLookup()
        self._generation = generation
        self._clock = clock
        self._seen_generation = -1
        self._servers = _Cache()  # server token -> ServerInfo | None
        self._callers = _Cache()  # (server token, Authorization header) -> ServerInfo | None
        self._tokens = _Cache()  # sha256(token) -> TokenInfo | None
        self._subjects = _Cache()  # (user id, server id) -> Subject | None
        # rule id -> CompiledRule: a group's rules serve all its members, so a first-seen
        # user of a known group compiles nothing (a third of a cold decision's CPU).
        self._rules = _Cache()
        self._shares = _Cache()  # (share id, server id) -> Subject | None
        self._requirements = _Cache()  # (server id, method, level, uri) -> Requirement | None
        # An indexed read of a local SQLite file takes tens of µs: less than handing it to a
        # worker thread, so it is done in place. PostgreSQL reads cross the network: a thread.
        self._inline_reads = db.is_sqlite

    # ------------------------------------------------------------ cache upkeep

    def _current(self) -> int:
        generation = self._generation.value
        if generation != self._seen_generation:
            for cache in (self._servers, self._callers, self._tokens, self._subjects, self._shares, self._requirements):
                cache.clear()
            self._seen_generation = generation
        return generation

    def _memo(self, cache: _Cache, key: Any, load: Callable[[], Any], io: bool, *, keep_none: bool = True, generation: int | None = None) -> Any:
        if generation is None:
            generation = self._current()
        entry = cache.get(key)
        if entry is not None and entry[0] == generation:
            return entry[1]
        if not (io or self._inline_reads):
            raise NeedsIO
        value = load()
        if value is not None or keep_none:
            cache.put(generation, key, value)
        return value

    # ------------------------------------------------------------ who is calling

    def server(self, token: str, *, io: bool = True) -> ServerInfo | None:
        if len(token) > 64:
            return None
        return self._memo(self._servers, token, lambda: self._load_server(token), io, keep_none=False)  # type: ignore[no-any-return]

    def _load_server(self, token: str) -> ServerInfo | None:
        if not secrets_tokens.is_plain(token.replace(".", "")):
            return None
        with self._db.reading() as session:
            row = session.scalar(select(ImagingServer).where(ImagingServer.token == token))
            return None if row is None else server_info(row, self._box)

    def server_by_id(self, server_id: int) -> ServerInfo | None:
        with self._db.reading() as session:
            row = session.get(ImagingServer, server_id)
            return None if row is None else self.server(row.token)

    def caller(self, server_token: str, authorization: str, *, io: bool = True) -> ServerInfo | None:
        """The imaging server, if ``authorization`` is HTTP Basic with a plugin credential bound to it.

        Only accepted callers are remembered (with their credential's expiry, checked on
        every call); refusals are not, so made-up headers cannot fill memory."""
        if len(server_token) > 64 or len(authorization) > 1024:
            return None
        accepted: tuple[ServerInfo, float | None] | None = self._memo(
            self._callers, (server_token, authorization), lambda: self._load_caller(server_token, authorization), io, keep_none=False
        )
        if accepted is None or (accepted[1] is not None and accepted[1] <= self._clock()):
            return None
        return accepted[0]

    def client(self, authorization: str) -> ServerInfo | None:
        """The imaging server whose plugin credential ``authorization`` (HTTP Basic) carries,
        for the token services (introspection) where no server is named in the URL."""
        credentials = basic_credentials(authorization) if len(authorization) <= 1024 else None
        if credentials is None or not secrets_tokens.is_plain(credentials[0]):
            return None
        with self._db.reading() as session:
            token = session.scalar(
                select(ImagingServer.token).join(Credential, Credential.imaging_server_id == ImagingServer.id).where(Credential.public_id == credentials[0])
            )
        return None if token is None else self.caller(token, authorization)

    def _load_caller(self, server_token: str, authorization: str) -> tuple[ServerInfo, float | None] | None:
        credentials = basic_credentials(authorization)
        server = self.server(server_token)
        if credentials is None or server is None:
            return None
        username, password = credentials
        if not secrets_tokens.is_plain(username):
            return None
        with self._db.reading() as session:
            row = session.scalar(select(Credential).where(Credential.public_id == username))
            if (
                row is None
                or row.kind != CredentialKind.ORTHANC_PLUGIN
                or row.imaging_server_id != server.id
                or not secrets_tokens.matches(password, row.secret_hash)
                or (row.expires_at is not None and row.expires_at.timestamp() <= self._clock())
            ):
                return None
            return server, _epoch(row.expires_at)

    # ------------------------------------------------------------ whose token

    def verify_token(
        self, token: str, *, io: bool = True, generation: int | None = None, server: ServerInfo | None = None
    ) -> TokenInfo | None:
        """Whose token this is and until when; None for anything not valid now.

        ``server``: the imaging server it is presented to; a first-seen token then also
        loads its user's rules there, in the same read (the subject cache keeps them)."""
        if generation is None:
            generation = self._current()
        info: TokenInfo | None = self._memo(
            self._tokens, token_digest(token), lambda: self._load_token(token, server, generation), io, generation=generation
        )
        if info is not None and info.expires_at is not None and info.expires_at <= self._clock():
            return None
        return info

    def _wants_subject(self, user_id: int, server: ServerInfo | None, generation: int) -> bool:
        if server is None:
            return False
        entry = self._subjects.get((user_id, server.id))
        return entry is None or entry[0] != generation

    def _load_token(self, token: str, server: ServerInfo | None = None, generation: int = -1) -> TokenInfo | None:
        if token.count(".") == 2 and self._portico_tokens is not None:
            return self._load_portico_token(token, server, generation)
        presented = secrets_tokens.parse(token)
        if presented is None:
            return None
        with self._reads.connect() as connection:
            if presented.prefix == TokenPrefix.SHARE:
                share = connection.execute(_SHARE_TOKEN, {"public_id": presented.public_id}).first()
                if share is None or not secrets_tokens.matches(presented.secret, share.secret_hash):
                    return None
                return TokenInfo(user_id=None, expires_at=_epoch(share.expires_at), share_id=share.id)
            verified = verify_user_token(connection, token, datetime.now(UTC))
            if verified is None:
                return None
            if server is not None and self._wants_subject(verified.user_id, server, generation):
                # The same connection for the subject the caller asks for next.
                self._subjects.put(generation, (verified.user_id, server.id), self._load_subject(verified.user_id, server.id, connection))
            return TokenInfo(user_id=verified.user_id, expires_at=_epoch(verified.expires_at))

    def _load_portico_token(self, token: str, server: ServerInfo | None = None, generation: int = -1) -> TokenInfo | None:
        """A Portico access token: signature, issuer, audience and times, then its session
        (not revoked, not expired) and its user (active); with ``server``, in the same
        statement, the user's rules there, kept as the subject."""
        assert self._portico_tokens is not None
        verified = self._portico_tokens.verify(token)
        if verified is None:
            return None
        with_subject = self._wants_subject(verified.user_id, server, generation)
        with self._reads.connect() as connection:
            if with_subject:
                assert server is not None
                rows = connection.execute(_TOKEN_SUBJECT, {"session_id": verified.session_id, "server_id": server.id}).all()
            else:
                rows = connection.execute(_TOKEN_SESSION, {"session_id": verified.session_id}).all()
        row = rows[0] if rows else None
        if row is None or row.user_id != verified.user_id or row.revoked_at is not None or not row.is_active:
            return None
        if with_subject:
            assert server is not None
            rules = tuple(
                self._compiled(generation, r.rule_id, r.group_name, r.scope, r.capabilities, r.validity, r.labels, r.selectors, r.rule_expires_at)
                for r in rows
                if r.rule_id is not None
            )
            subject = Subject(user_id=row.user_id, username=row.username, is_superuser=row.is_superuser, rules=rules)
            self._subjects.put(generation, (row.user_id, server.id), subject)
        session_end = _epoch(row.expires_at)
        expires_at = verified.expires_at if session_end is None else min(verified.expires_at, session_end)
        return TokenInfo(user_id=verified.user_id, expires_at=expires_at)

    def subject(self, info: TokenInfo, server: ServerInfo, *, io: bool = True, generation: int | None = None) -> Subject | None:
        if info.share_id is not None:
            share_id = info.share_id
            return self._memo(  # type: ignore[no-any-return]
                self._shares, (share_id, server.id), lambda: self._load_share_subject(share_id, server), io, generation=generation
            )
        user_id = info.user_id
        assert user_id is not None
        return self._memo(  # type: ignore[no-any-return]
            self._subjects, (user_id, server.id), lambda: self._load_subject(user_id, server.id), io, generation=generation
        )

    def _compiled(self, generation: int, rule_id: int, group: str, scope: str, capabilities: list[str], validity: int,
                  labels: list[str], selectors: list[dict[str, str]], expires_at: datetime | None) -> CompiledRule:
        """The compiled rule, from memory when it was compiled at this generation (the values
        were read after ``generation`` was: they are at least that fresh)."""
        entry = self._rules.get(rule_id)
        if entry is not None and entry[0] == generation and generation >= 0:
            return entry[1]  # type: ignore[no-any-return]
        rule = compile_rule(rule_id, group, scope, capabilities, validity, labels, selectors, expires_at)
        if generation >= 0 and generation == self._generation.value:
            self._rules.put(generation, rule_id, rule)
        return rule

    def _load_subject(self, user_id: int, server_id: int, connection: ReadConnection | None = None) -> Subject | None:
        if connection is None:
            with self._reads.connect() as connection:
                return self._load_subject(user_id, server_id, connection)
        generation = self._generation.value  # read before the rows: they are at least this fresh
        user = connection.execute(_SUBJECT_USER, {"user_id": user_id}).first()
        if user is None or not user.is_active:
            return None
        rows = connection.execute(_SUBJECT_RULES, {"user_id": user_id, "server_id": server_id}).all()
        return Subject(
            user_id=user.id,
            username=user.username,
            is_superuser=user.is_superuser,
            rules=tuple(
                self._compiled(generation, row.id, row.name, row.scope, row.capabilities, row.validity, row.labels, row.selectors, row.expires_at)
                for row in rows
            ),
        )

    def _load_share_subject(self, share_id: int, server: ServerInfo) -> Subject | None:
        with self._db.reading() as session:
            share = session.get(Share, share_id)
            if share is None or (share.imaging_server_id not in (None, server.id)):
                return None
            orthanc_ids = frozenset(r["orthanc_id"] for r in share.resources if r.get("orthanc_id"))
            study_uids = frozenset(r["dicom_uid"] for r in share.resources if r.get("dicom_uid") and r.get("level") == "study")
            patient_ids = frozenset(r["dicom_uid"] for r in share.resources if r.get("dicom_uid") and r.get("level") == "patient")
            capabilities = {Capability.VIEW} | ({Capability.DOWNLOAD} if "download" in share.type else set())
            rule = CompiledRule(
                rule_id=0,
                group=f"share {share.type}",
                scope=ScopeKind.RESOURCES,
                capabilities=frozenset(capabilities),
                validity=60,
                orthanc_ids=orthanc_ids,
                study_uids=study_uids,
                patient_ids=patient_ids,
                expires_at=_epoch(share.expires_at),
            )
            return Subject(user_id=0, username=f"share {share.public_id}", is_superuser=False, rules=(rule,))

    def subject_for_token(
        self, server: ServerInfo, token: str | None, *, io: bool = True, generation: int | None = None
    ) -> tuple[Subject | None, float | None]:
        """Whose token this is on this server, and until when the token itself is valid."""
        if not token:
            return None, None
        if generation is None:
            generation = self._current()
        info = self.verify_token(token, io=io, generation=generation, server=server)
        return (None, None) if info is None else (self.subject(info, server, io=io, generation=generation), info.expires_at)

    def subject_for_user(self, server: ServerInfo, user_id: int) -> Subject | None:
        return self.subject(TokenInfo(user_id=user_id, expires_at=None), server)

    # ------------------------------------------------------------ decisions

    def close(self) -> None:
        self._ancestry.close()
        self._reads.close()

    def requirement(self, server: ServerInfo, method: Method, level: Level, uri: str | None, generation: int | None = None) -> Requirement | None:
        key = (server.id, method, level, uri)
        if generation is None:
            generation = self._current()
        entry = self._requirements.get(key)
        if entry is not None and entry[0] == generation:
            return entry[1]  # type: ignore[no-any-return]
        found = required_capabilities(method, level, uri, server.permission_table)
        self._requirements.put(generation, key, found)
        return found

    def decide(self, server: ServerInfo, subject: Subject | None, method: Method, level: Level,
               orthanc_id: str | None, dicom_uid: str | None, labels: frozenset[str], uri: str | None,
               not_after: float | None = None, *, io: bool = True, explain: bool = True, generation: int | None = None) -> Decision:
        """The one decision, for Orthanc's validate calls and for the explain API alike.
        ``not_after``: when the presented token expires; no grant may be cached past it."""
        requirement = self.requirement(server, method, level, uri, generation)
        resource = Resource(level, orthanc_id, dicom_uid, labels, uri)
        now = self._clock()
        if requirement is not None and subject is not None and subject.has_resource_rules and _may_need_ancestry(subject, requirement, resource, now):
            if not io and not self._ancestry.known(server, level, orthanc_id):
                raise NeedsIO
            resource = replace(resource, ancestors=self._ancestry.ancestors(server, level, orthanc_id))
        return decide(subject, requirement, resource, now, not_after, explain=explain)

    def validate(self, server: ServerInfo, token: str | None, method: Method, level: Level,
                 orthanc_id: str | None, dicom_uid: str | None, labels: frozenset[str], uri: str | None,
                 *, io: bool = True) -> Decision:
        generation = self._current()  # once: every look-up of this call reads the same generation
        subject, not_after = self.subject_for_token(server, token, io=io, generation=generation)
        return self.decide(server, subject, method, level, orthanc_id, dicom_uid, labels, uri, not_after, io=io, explain=False, generation=generation)

    def profile(self, server: ServerInfo, token: str | None, *, io: bool = True) -> dict[str, Any]:
        """The user profile the plugin asks for in "user permissions" mode."""
        subject, not_after = self.subject_for_token(server, token, io=io)
        if subject is None:
            return {"name": "anonymous", "permissions": [], "authorized-labels": [], "validity": DENIAL_VALIDITY}
        now = self._clock()
        if subject.is_superuser:
            permissions = sorted(c.value for c in Capability)
            labels = ["*"]
            validity = SUPERUSER_VALIDITY
        else:
            live = [rule for rule in subject.rules if rule.expires_at is None or rule.expires_at > now]
            permissions, labels, used = profile_grants(live)
            validity = min((cacheable_for(rule.validity, rule.expires_at, now) for rule in used), default=DENIAL_VALIDITY)
        # 0 would mean "cache forever" to the plugin: never send it.
        validity = max(1, cacheable_for(validity, not_after, now))
        return {
            "name": subject.username,
            "permissions": permissions,
            "authorized-labels": labels,
            "validity": validity,
            "groups": sorted({rule.group for rule in subject.rules}),
            "user-id": str(subject.user_id),
        }

    def roles(self, server: ServerInfo) -> dict[str, Any]:
        """The groups with rules on this server, as Orthanc Explorer 2's role settings."""
        roles: dict[str, dict[str, set[str]]] = {}
        available: set[str] = set()
        with self._db.reading() as session:
            rows = session.execute(
                select(AccessRule, Group.name).join(Group, Group.id == AccessRule.group_id).where(AccessRule.imaging_server_id == server.id)
            ).all()
        now = self._clock()
        for rule, group in rows:
            if rule.expires_at is not None and rule.expires_at.timestamp() <= now:
                continue
            role = roles.setdefault(group, {"authorized-labels": set(), "permissions": set()})
            role["permissions"].update(rule.capabilities)
            if rule.scope == ScopeKind.ALL:
                role["authorized-labels"].add("*")
            role["authorized-labels"].update(rule.labels)
            available.update(rule.labels)
        return {
            "roles": {name: {key: sorted(values) for key, values in role.items()} for name, role in sorted(roles.items())},
            "available-labels": sorted(available),
        }


def profile_grants(rules: list[CompiledRule]) -> tuple[list[str], list[str], list[CompiledRule]]:
    """A profile is one list of permissions and one of labels, and the plugin allows any
    listed permission on any listed label. So a permission is listed only where the rules
    granting it cover every listed label: never more than validate would grant. Rules that
    name resources cannot be expressed in a profile; validate alone applies them."""
    everything = [rule for rule in rules if rule.scope == ScopeKind.ALL]
    if everything:
        return sorted({c.value for rule in everything for c in rule.capabilities}), ["*"], everything
    by_label = [rule for rule in rules if rule.scope == ScopeKind.LABELS]
    labels = {label for rule in by_label for label in rule.labels}
    permissions = sorted(
        capability.value
        for capability in {c for rule in by_label for c in rule.capabilities}
        if {label for rule in by_label if capability in rule.capabilities for label in rule.labels} >= labels
    )
    used = [rule for rule in by_label if any(c.value in permissions for c in rule.capabilities)]
    return permissions, sorted(labels) if permissions else [], used


def basic_credentials(authorization: str) -> tuple[str, str] | None:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        username, separator, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (username, password) if separator else None


def _may_need_ancestry(subject: Subject, requirement: Requirement, resource: Resource, now: float) -> bool:
    """Only a resource rule that names something above this level needs Orthanc to tell the ancestry."""
    if subject.is_superuser or resource.level in (Level.SYSTEM, Level.PATIENT) or not resource.orthanc_id:
        return False
    return any(
        rule.scope == ScopeKind.RESOURCES
        and rule.capabilities & requirement.capabilities
        and (rule.expires_at is None or rule.expires_at > now)
        for rule in subject.rules
    )


_ORTHANC_ID = re.compile(r"^[0-9a-f]{8}(?:-[0-9a-f]{8}){4}$")
_PARENT = {Level.INSTANCE: ("instances", "ParentSeries", Level.SERIES), Level.SERIES: ("series", "ParentStudy", Level.STUDY), Level.STUDY: ("studies", "ParentPatient", Level.PATIENT)}


class AncestryLookup:
    """A resource's parents, asked of the imaging server's own REST API.

    Orthanc ids never change, so answers are kept (bounded); failures are not, and a
    failed look-up means "unknown", which no selector matches (fail closed).
    """

    def __init__(self, timeout: float = 3.0, capacity: int = 200_000) -> None:
        self._timeout = timeout
        self._capacity = capacity
        self._known: dict[tuple[int, Level, str], dict[Level, Identifiers]] = {}
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self.lookups = 0

    def _http(self) -> httpx.Client:
        # Made on first use: most deployments never look up an ancestry, and building the
        # client (and importing httpx) is a tenth of a second of every start.
        with self._client_lock:
            if self._client is None:
                import httpx

                self._client = httpx.Client(timeout=self._timeout)
            return self._client

    def known(self, server: ServerInfo, level: Level, orthanc_id: str | None) -> bool:
        """Whether ``ancestors`` would answer without asking Orthanc."""
        if not orthanc_id or server.rest_auth is None or server.rest_url is None or level not in _PARENT:
            return True
        return (server.id, level, orthanc_id) in self._known

    def ancestors(self, server: ServerInfo, level: Level, orthanc_id: str | None) -> dict[Level, Identifiers] | None:
        if not orthanc_id or server.rest_auth is None or server.rest_url is None or level not in _PARENT:
            return None
        if not _ORTHANC_ID.match(orthanc_id):
            return None  # not an Orthanc id: it must not steer the URL we ask Orthanc
        key = (server.id, level, orthanc_id)
        known = self._known.get(key)
        if known is not None:
            return known
        found: dict[Level, Identifiers] = {}
        current_level, current_id = level, orthanc_id
        try:
            while current_level in _PARENT:
                path, parent_field, parent_level = _PARENT[current_level]
                self.lookups += 1
                response = self._http().get(f"{server.rest_url}/{path}/{current_id}", auth=server.rest_auth)
                if response.status_code != 200:
                    log.warning("ancestry of %s %s on %s: Orthanc answered %s", current_level.value, current_id, server.name, response.status_code)
                    return None
                document = response.json()
                if current_level == Level.STUDY and current_level != level:
                    # This document also tells the study's own UID, which a study selector names.
                    found[Level.STUDY] = Identifiers(current_id, document.get("MainDicomTags", {}).get("StudyInstanceUID"))
                parent_id = document[parent_field]
                if not isinstance(parent_id, str) or not _ORTHANC_ID.match(parent_id):
                    return None
                parent_uid = None
                if parent_level == Level.PATIENT:
                    parent_uid = document.get("PatientMainDicomTags", {}).get("PatientID")
                found[parent_level] = Identifiers(orthanc_id=parent_id, dicom_uid=parent_uid)
                current_level, current_id = parent_level, parent_id
        except Exception as error:  # any failure (network, HTTP, malformed answer) means "unknown": fail closed
            log.warning("ancestry of %s %s on %s failed: %s", level.value, orthanc_id, server.name, error)
            return None
        if len(self._known) >= self._capacity:
            self._known.clear()
        self._known[key] = found
        return found

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


_CAPABILITIES = {capability.value: capability for capability in Capability}
_SCOPES = {scope.value: scope for scope in ScopeKind}
_SELECTOR_KINDS = frozenset(kind.value for kind in SelectorKind)


def compile_rule(
    rule_id: int, group: str, scope: str, capabilities: list[str], validity: int,
    labels: list[str], selectors: list[dict[str, str]], expires_at: datetime | None,
) -> CompiledRule:
    # Members looked up by value in prepared tables (an Enum call costs a µs each); an
    # unknown value raises as the Enum call would.
    by_kind: dict[str, set[str]] = {kind: set() for kind in _SELECTOR_KINDS}
    for selector in selectors:
        by_kind[selector["kind"]].add(selector["value"])
    if expires_at is not None and expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)  # Core reads skip the ORM's UTC type on some backends
    return CompiledRule(
        rule_id=rule_id,
        group=group,
        scope=_SCOPES[scope],
        capabilities=frozenset(_CAPABILITIES[c] for c in capabilities),
        validity=validity,
        labels=frozenset(labels),
        patient_ids=frozenset(by_kind[SelectorKind.PATIENT_ID]),
        study_uids=frozenset(by_kind[SelectorKind.STUDY_INSTANCE_UID]),
        orthanc_ids=frozenset(by_kind[SelectorKind.ORTHANC_ID]),
        expires_at=_epoch(expires_at),
    )
