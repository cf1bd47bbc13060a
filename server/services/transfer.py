"""Export and import of the whole configuration.

Import validates the entire document first (types, then references between records),
and reports every problem with its path; only a clean document is applied, in one
transaction, through the same record service as the admin API (same rules, same audit).
It adds and updates, and never deletes: a record missing from the document is left alone.
``dry_run`` applies everything inside the transaction and rolls it back, so the report is
exactly what a real import would do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.contract import schemas as s
from server.contract.errors import PorticoError
from server.contract.transfer import (
    AccessRuleDoc,
    AuthServerDoc,
    ConfigurationDocument,
    GroupDoc,
    ImagingServerDoc,
    ProviderDoc,
    SiteDoc,
    UserDoc,
)
from server.domain.vocabulary import EntityType
from server.services import audit, entities, records
from server.services.principal import Principal
from server.services.portico import Portico
from server.services.records import EntitySpec, WriteContext
from server.services.secretbox import SecretBox
from server.services.site import get_site, update_site
from server.storage.tables import (
    AccessRule,
    AuthServer,
    Group,
    ImagingServer,
    Membership,
    Provider,
    User,
    utcnow,
)

IMPORTER = Principal(user_id=0, username="system:import", is_superuser=True, is_staff=True, permissions=frozenset())


class ImportRefused(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = problems


class _DryRun(Exception):
    """Raised to leave the transaction by rolling it back."""


@dataclass(frozen=True)
class RecordOutcome:
    kind: str
    key: str
    action: str  # create | update | unchanged
    fields: tuple[str, ...] = ()

    def line(self) -> str:
        suffix = f": {', '.join(self.fields)}" if self.fields else ""
        return f"{self.action:9} {self.kind} {self.key}{suffix}"


@dataclass
class ImportReport:
    outcomes: list[RecordOutcome] = field(default_factory=list)

    def lines(self) -> Iterator[str]:
        return (outcome.line() for outcome in self.outcomes)

    def count(self, action: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.action == action)

    def summary(self, *, dry_run: bool) -> str:
        verb = "would create" if dry_run else "created"
        return (
            f"{'dry run: ' if dry_run else ''}{verb} {self.count('create')}, "
            f"{'would update' if dry_run else 'updated'} {self.count('update')}, "
            f"{self.count('unchanged')} unchanged" + ("; nothing was changed" if dry_run else "")
        )


# ---------------------------------------------------------------- export


def _secret(box: SecretBox, ciphertext: bytes | None, include: bool) -> str | None:
    return box.decrypt(ciphertext) if include and ciphertext is not None else None


def export_configuration(portico: Portico, *, include_secrets: bool) -> dict[str, Any]:
    box = portico.box
    with portico.db.reading() as session:
        site = get_site(session)
        providers = {row.id: row for row in session.scalars(select(Provider).order_by(Provider.name))}
        groups = {row.id: row for row in session.scalars(select(Group).order_by(Group.name))}
        servers = {row.id: row for row in session.scalars(select(ImagingServer).order_by(ImagingServer.name))}
        member_of: dict[int, list[str]] = {}
        for user_id, group_id in session.execute(select(Membership.user_id, Membership.group_id)).tuples():
            member_of.setdefault(user_id, []).append(groups[group_id].name)
        document = ConfigurationDocument(
            exported_at=utcnow(),
            includes_secrets=include_secrets,
            site=SiteDoc(production_url=site.production_url, development_url=site.development_url, environment=site.environment),
            providers=[ProviderDoc.model_validate(s.ProviderRead.model_validate(row).model_dump(exclude={"id", "version", "created_at", "updated_at"})) for row in providers.values()],
            auth_servers=[
                AuthServerDoc(
                    token=row.token,
                    provider=providers[row.provider_id].name,
                    description=row.description,
                    client_id=row.client_id,
                    client_secret=_secret(box, row.client_secret_encrypted, include_secrets),
                    is_default=row.is_default,
                    redirect_urls=row.redirect_urls,
                    accept_idp_tokens=row.accept_idp_tokens,
                    group_sync=row.group_sync,
                )
                for row in session.scalars(select(AuthServer).order_by(AuthServer.token))
            ],
            groups=[GroupDoc(name=row.name, description=row.description, idp_group_name=row.idp_group_name) for row in groups.values()],
            users=[
                UserDoc(
                    username=row.username,
                    email=row.email,
                    first_name=row.first_name,
                    last_name=row.last_name,
                    is_active=row.is_active,
                    is_staff=row.is_staff,
                    is_superuser=row.is_superuser,
                    permissions=row.permissions,
                    groups=sorted(member_of.get(row.id, [])),
                    password_hash=row.password_hash if include_secrets else None,
                )
                for row in session.scalars(select(User).order_by(User.username))
            ],
            imaging_servers=[
                ImagingServerDoc(
                    **s.ImagingServerRead.model_validate(row).model_dump(
                        exclude={"id", "version", "created_at", "updated_at", "rest_password_set"}
                    ),
                    rest_password=_secret(box, row.rest_password_encrypted, include_secrets),
                )
                for row in servers.values()
            ],
            access_rules=[
                AccessRuleDoc(
                    group=groups[row.group_id].name,
                    imaging_server=servers[row.imaging_server_id].token,
                    scope=row.scope,
                    labels=row.labels,
                    selectors=[s.Selector.model_validate(selector) for selector in row.selectors],
                    capabilities=row.capabilities,
                    validity=row.validity,
                    expires_at=row.expires_at,
                    description=row.description,
                )
                for row in session.scalars(select(AccessRule).order_by(AccessRule.id))
            ],
        )
    return document.model_dump(mode="json", exclude_none=not include_secrets)


# ---------------------------------------------------------------- import


def _validation_problems(error: ValidationError) -> list[str]:
    return [
        f"{'.'.join(str(part) for part in problem['loc']) or 'document'}: {problem['msg'].removeprefix('Value error, ')}"
        for problem in error.errors()
    ]


def _duplicates(document: ConfigurationDocument) -> list[str]:
    problems = []
    keyed: list[tuple[str, list[Any], Callable[[Any], str]]] = [
        ("providers", document.providers, lambda row: row.name),
        ("auth_servers", document.auth_servers, lambda row: row.token),
        ("groups", document.groups, lambda row: row.name),
        ("users", document.users, lambda row: row.username.lower()),
        ("imaging_servers", document.imaging_servers, lambda row: row.token),
    ]
    for section, rows, key in keyed:
        seen: dict[str, int] = {}
        for index, row in enumerate(rows):
            if key(row) in seen:
                problems.append(f"{section}.{index}: {key(row)!r} appears twice (first at {section}.{seen[key(row)]})")
            seen.setdefault(key(row), index)
    return problems


class _Importer:
    def __init__(self, session: Session, box: SecretBox) -> None:
        self.session = session
        self.box = box
        self.ctx = WriteContext(session=session, principal=IMPORTER, box=box)
        self.report = ImportReport()
        self.problems: list[str] = []

    def _by(self, table: Any, column: Any, value: Any) -> Any:
        return self.session.scalar(select(table).where(column == value))

    def _upsert(
        self,
        kind: str,
        path: str,
        key: str,
        spec: EntitySpec[Any],
        row: Any,
        read: type[BaseModel],
        wanted: dict[str, Any],
        create: type[BaseModel],
        update: type[BaseModel],
        secrets: dict[str, str | None] | None = None,
    ) -> Any:
        """Create the record, or update just the fields that differ; note what happened."""
        given = {name: value for name, value in (secrets or {}).items() if value is not None}
        try:
            # A savepoint per record: a refused record leaves the transaction usable for the rest.
            with self.session.begin_nested():
                return self._write(kind, key, spec, row, read, wanted, create, update, given)
        except (PorticoError, ValidationError) as error:
            message = error.message if isinstance(error, PorticoError) else "; ".join(_validation_problems(error))
            self.problems.append(f"{path} ({key}): {message}")
            return None

    def _write(
        self,
        kind: str,
        key: str,
        spec: EntitySpec[Any],
        row: Any,
        read: type[BaseModel],
        wanted: dict[str, Any],
        create: type[BaseModel],
        update: type[BaseModel],
        secrets: dict[str, str],
    ) -> Any:
        if row is None:
            created = records.create_record(spec, create.model_validate({**wanted, **secrets}), self.ctx)
            self.report.outcomes.append(RecordOutcome(kind, key, "create"))
            return created
        current = read.model_validate(row).model_dump(mode="json")
        wanted_json = create.model_validate({**wanted}).model_dump(mode="json", include=set(wanted))
        changed = {name: wanted[name] for name, value in wanted_json.items() if current.get(name) != value}
        for name, value in secrets.items():
            stored = getattr(row, spec.secrets[name])
            if stored is None or self.box.decrypt(stored) != value:
                changed[name] = SecretStr(value)
        if not changed:
            self.report.outcomes.append(RecordOutcome(kind, key, "unchanged"))
            return row
        records.update_record(spec, row.id, update.model_validate({**changed, "version": row.version}), self.ctx, lambda r: {})
        self.report.outcomes.append(RecordOutcome(kind, key, "update", tuple(sorted(changed))))
        return row

    def _note_field(self, outcome: RecordOutcome) -> None:
        """Merge a change into the record's existing line of the report."""
        for index, earlier in enumerate(self.report.outcomes):
            if (earlier.kind, earlier.key) == (outcome.kind, outcome.key):
                if earlier.action == "create":
                    return
                fields = tuple(sorted(set(earlier.fields) | set(outcome.fields)))
                self.report.outcomes[index] = RecordOutcome(outcome.kind, outcome.key, "update", fields)
                return
        self.report.outcomes.append(outcome)

    def site(self, doc: SiteDoc) -> None:
        site = get_site(self.session)
        wanted = doc.model_dump(mode="json")
        changed = {name: value for name, value in wanted.items() if getattr(site, name) != value}
        if changed:
            update_site(self.session, IMPORTER.actor, s.SiteUpdate.model_validate({**changed, "version": site.version}))
        self.report.outcomes.append(RecordOutcome("site", site.base_url, "update" if changed else "unchanged", tuple(sorted(changed))))

    def run(self, document: ConfigurationDocument) -> None:
        if document.site is not None:
            self.site(document.site)
        for index, provider in enumerate(document.providers):
            self._upsert("provider", f"providers.{index}", repr(provider.name), entities.PROVIDERS,
                         self._by(Provider, Provider.name, provider.name), s.ProviderRead,
                         provider.model_dump(exclude_unset=False, exclude={"parameters"}), s.ProviderCreate, s.ProviderUpdate)
        for index, group in enumerate(document.groups):
            self._upsert("group", f"groups.{index}", repr(group.name), entities.GROUPS,
                         self._by(Group, Group.name, group.name), s.GroupRead, group.model_dump(), s.GroupCreate, s.GroupUpdate)
        for index, server in enumerate(document.imaging_servers):
            self._upsert("imaging server", f"imaging_servers.{index}", repr(server.token), entities.IMAGING_SERVERS,
                         self._by(ImagingServer, ImagingServer.token, server.token), s.ImagingServerRead,
                         server.model_dump(exclude={"rest_password"}), s.ImagingServerCreate, s.ImagingServerUpdate,
                         {"rest_password": server.rest_password})
        for index, auth in enumerate(document.auth_servers):
            path = f"auth_servers.{index}"
            provider = self._by(Provider, Provider.name, auth.provider)
            if provider is None:
                self.problems.append(f"{path}.provider: no OpenID provider named {auth.provider!r} in the document or the database")
                continue
            wanted = auth.model_dump(exclude={"provider", "client_secret"}) | {"provider_id": provider.id}
            self._upsert("auth server", path, repr(auth.token), entities.AUTH_SERVERS,
                         self._by(AuthServer, AuthServer.token, auth.token), s.AuthServerRead, wanted,
                         s.AuthServerCreate, s.AuthServerUpdate, {"client_secret": auth.client_secret})
        for index, user in enumerate(document.users):
            self.user(index, user)
        for index, rule in enumerate(document.access_rules):
            self.access_rule(index, rule)

    def user(self, index: int, doc: UserDoc) -> None:
        path = f"users.{index}"
        wanted = doc.model_dump(exclude={"groups", "password_hash"})
        row = self._by(User, User.username_key, doc.username.lower())
        row = self._upsert("user", path, repr(doc.username), entities.USERS, row, s.UserRead, wanted, s.UserCreate, s.UserUpdate)
        if row is None:
            return
        if doc.password_hash is not None and row.password_hash != doc.password_hash:
            row.password_hash = doc.password_hash
            self.session.flush()
            audit.record(
                self.session, IMPORTER.actor, "user.update", target_type=EntityType.USER.value,
                target_id=row.id, target_label=row.username, changes={"password_hash": [audit.MASK if row.password_hash else None, audit.MASK]},
            )
            self._note_field(RecordOutcome("user", repr(doc.username), "update", ("password_hash",)))
        for group_name in doc.groups:
            group = self._by(Group, Group.name, group_name)
            if group is None:
                self.problems.append(f"{path}.groups: no group named {group_name!r} in the document or the database")
                continue
            member = self.session.scalar(select(Membership.id).where(Membership.user_id == row.id, Membership.group_id == group.id))
            if member is None:
                records.create_record(entities.MEMBERSHIPS, s.MembershipCreate(user_id=row.id, group_id=group.id), self.ctx)
                self.report.outcomes.append(RecordOutcome("membership", f"{doc.username!r} in {group_name!r}", "create"))

    def access_rule(self, index: int, doc: AccessRuleDoc) -> None:
        path = f"access_rules.{index}"
        group = self._by(Group, Group.name, doc.group)
        server = self._by(ImagingServer, ImagingServer.token, doc.imaging_server)
        if group is None:
            self.problems.append(f"{path}.group: no group named {doc.group!r} in the document or the database")
        if server is None:
            self.problems.append(f"{path}.imaging_server: no imaging server {doc.imaging_server!r} in the document or the database")
        if group is None or server is None:
            return
        selectors = sorted((sel.kind.value, sel.value) for sel in doc.selectors)
        row = next(
            (
                rule
                for rule in self.session.scalars(
                    select(AccessRule).where(AccessRule.group_id == group.id, AccessRule.imaging_server_id == server.id, AccessRule.scope == doc.scope)
                )
                if sorted(rule.labels) == sorted(doc.labels) and sorted((sel["kind"], sel["value"]) for sel in rule.selectors) == selectors
            ),
            None,
        )
        wanted = doc.model_dump(exclude={"group", "imaging_server"}) | {"group_id": group.id, "imaging_server_id": server.id}
        key = f"{doc.group!r} on {doc.imaging_server!r} ({doc.scope.value})"
        self._upsert("access rule", path, key, entities.ACCESS_RULES, row, s.AccessRuleRead, wanted, s.AccessRuleCreate, s.AccessRuleUpdate)


def _names(raw: dict[str, Any], section: str, key: str) -> set[str]:
    rows = raw.get(section)
    return {row[key] for row in rows if isinstance(row, dict) and isinstance(row.get(key), str)} if isinstance(rows, list) else set()


def _reference_problems(raw: Any, session: Session) -> list[str]:
    """References between records, checked on the raw document so that they are reported
    together with type problems (every problem at once, not one round after another)."""
    if not isinstance(raw, dict):
        return []
    providers = _names(raw, "providers", "name") | set(session.scalars(select(Provider.name)))
    groups = _names(raw, "groups", "name") | set(session.scalars(select(Group.name)))
    servers = _names(raw, "imaging_servers", "token") | set(session.scalars(select(ImagingServer.token)))
    checks = [
        ("auth_servers", "provider", providers, "OpenID provider named"),
        ("access_rules", "group", groups, "group named"),
        ("access_rules", "imaging_server", servers, "imaging server"),
    ]
    problems = []
    for section, key, known, noun in checks:
        rows = raw.get(section)
        for index, row in enumerate(rows if isinstance(rows, list) else []):
            value = row.get(key) if isinstance(row, dict) else None
            if isinstance(value, str) and value not in known:
                problems.append(f"{section}.{index}.{key}: no {noun} {value!r} in the document or the database")
    users = raw.get("users")
    for index, user in enumerate(users if isinstance(users, list) else []):
        member_of = user.get("groups") if isinstance(user, dict) else None
        for name in member_of if isinstance(member_of, list) else []:
            if isinstance(name, str) and name not in groups:
                problems.append(f"users.{index}.groups: no group named {name!r} in the document or the database")
    return problems


def import_configuration(portico: Portico, raw: Any, *, dry_run: bool) -> ImportReport:
    try:
        document = ConfigurationDocument.model_validate(raw)
    except ValidationError as error:
        with portico.db.reading() as session:
            references = _reference_problems(raw, session)
        raise ImportRefused(_validation_problems(error) + references) from None
    duplicates = _duplicates(document)
    if duplicates:
        raise ImportRefused(duplicates)
    importer: _Importer | None = None
    try:
        with portico.db.writing() as session:
            importer = _Importer(session, portico.box)
            importer.run(document)
            if importer.problems:
                raise ImportRefused(importer.problems)
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    assert importer is not None
    return importer.report
