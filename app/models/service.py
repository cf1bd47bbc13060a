"""The one facade the views talk to: a QObject over the Qt-free client and embedded server.

Views hold a ``ConsoleService``; they never see HTTP. Every call is ``async`` on the qasync
loop; the service counts calls in flight and reports "busy" only when one takes longer
than ``BUSY_DELAY_MS`` (a flicker for every fast call would be noise). Expected failures
are raised to the caller (typed: ``ApiError`` with ``.code``/``.fields``/``.current``,
``ServerUnreachable``); unexpected ones from background tasks go to ``notification``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from PySide6.QtCore import QObject, QTimer, Signal

from app.client import (
    ApiError,
    ConflictError,
    Endpoint,
    ENDPOINTS,
    ErrorCode,
    NotAuthenticatedError,
    PorticoClient,
    ServerUnreachable,
    USERS,
)
from app.embedded import EmbeddedServer, EmbeddedServerError, default_data_dir
from app.models.entities import LABELS
from app.models.user_import import Action, ImportRow, Outcome
from app.settings import ConsoleSettings, RecentConnection, keyring_available, store_password, stored_password

__all__ = [
    "ApiError",
    "BUSY_DELAY_MS",
    "ConflictError",
    "ConsoleService",
    "EmbeddedServerError",
    "ErrorCode",
    "NotAuthenticatedError",
    "RecentConnection",
    "ServerUnreachable",
    "api_error_text",
]

log = logging.getLogger("portico.console")
BUSY_DELAY_MS = 300
PAGE_LIMIT = 500
LOOKUP_PAGES = 4  # an import's username looked up among at most this many pages of matches


def api_error_text(error: ApiError) -> str:
    """The server's message, with what it said about each field."""
    details = "; ".join(f"{item.field}: {item.message}" if item.field else item.message for item in error.fields)
    return f"{error.message} ({details})" if details and details not in error.message else error.message


class ConsoleService(QObject):
    busy_changed = Signal(bool)
    notification = Signal(str, str)  # level ("error", "warning", "info"), message
    server_died = Signal(str)  # what happened, with the end of the server's log
    connection_changed = Signal()
    site_changed = Signal(object)  # the Site as saved: every URL Portico prints follows it

    def __init__(self, settings: ConsoleSettings | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings or ConsoleSettings()
        self.client: PorticoClient | None = None
        self.embedded: EmbeddedServer | None = None
        self.mode = "none"  # "embedded" | "remote" | "attached" | "none"
        self.url = ""
        self.username: str | None = None
        self.target = "not connected"
        self.server_alive = False
        self._in_flight = 0
        self._busy_shown = False
        self._busy_timer = QTimer(self)
        self._busy_timer.setSingleShot(True)
        self._busy_timer.setInterval(BUSY_DELAY_MS)
        self._busy_timer.timeout.connect(self._show_busy)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._label_cache: dict[str, dict[int, str]] = {}

    # ------------------------------------------------------------ busy and errors

    @property
    def busy(self) -> bool:
        return self._busy_shown

    def _show_busy(self) -> None:
        if self._in_flight and not self._busy_shown:
            self._busy_shown = True
            self.busy_changed.emit(True)

    @contextlib.asynccontextmanager
    async def _tracked(self) -> AsyncIterator[PorticoClient]:
        if self.client is None or self.client.closed:
            raise ServerUnreachable(self.url or "(none)", "not connected")
        self._in_flight += 1
        if self._in_flight == 1:
            self._busy_timer.start()
        try:
            yield self.client
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._busy_timer.stop()
                if self._busy_shown:
                    self._busy_shown = False
                    self.busy_changed.emit(False)

    def report(self, error: BaseException) -> None:
        """The one sink for what nobody handled: a non-modal notification, never silence."""
        if isinstance(error, asyncio.CancelledError):
            return
        if isinstance(error, ServerUnreachable | ApiError):
            self.notification.emit("error", str(error) if isinstance(error, ServerUnreachable) else error.message)
            return
        log.error("unexpected error", exc_info=error)
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        self.notification.emit("error", f"Unexpected error: {detail}")

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run in the background; its failure is reported, its cancellation is not."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self.report(error)

    # ------------------------------------------------------------ connections

    def _describe(self) -> None:
        if self.mode == "embedded" and self.embedded is not None:
            self.target = f"Embedded server ({self.embedded.data_dir})"
        elif self.mode == "remote":
            self.target = f"{self.url} as {self.username}"
        elif self.mode == "attached":
            self.target = self.url
        else:
            self.target = "not connected"
        self.connection_changed.emit()

    async def _close_client(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.aclose()

    def _embedded_exited(self, code: int) -> None:
        self.server_alive = False
        tail = self.embedded.log_tail() if self.embedded is not None else ""
        how = f"it was killed (signal {-code})" if code < 0 else f"exit code {code}"
        message = f"The embedded Portico server stopped unexpectedly ({how})."
        if tail:
            message += f"\n\nIts last log lines:\n{tail}"
        self.server_died.emit(message)

    @staticmethod
    def prepare_embedded(data_dir: Path | None = None) -> EmbeddedServer:
        """An embedded server to ``spawn`` early and hand to ``start_embedded`` later."""
        return EmbeddedServer(data_dir or default_data_dir())

    async def start_embedded(self, data_dir: Path | None = None, *, spawned: EmbeddedServer | None = None) -> None:
        """Start (or restart) the embedded server and sign in with its one-time credential."""
        await self._close_client()
        if self.embedded is not None and self.embedded is not spawned:
            await self.embedded.stop()
        self.embedded = spawned or EmbeddedServer(data_dir or default_data_dir())
        self.embedded.on_exit = self._embedded_exited
        info = await self.embedded.start()
        self.client = PorticoClient(info.url, info.token)
        self.mode, self.url, self.username = "embedded", info.url, None
        self.server_alive = True
        self._label_cache.clear()
        self._describe()

    async def restart_embedded(self) -> None:
        data_dir = self.embedded.data_dir if self.embedded is not None else None
        if self.embedded is not None:
            await self.embedded.forget()
        await self.start_embedded(data_dir)

    async def connect_remote(self, url: str, username: str, password: str, *, remember_password: bool = False) -> None:
        """Log in to a remote Portico; on success it replaces the current connection."""
        client = PorticoClient(url)
        try:
            await client.login(username, password)
        except BaseException:
            await client.aclose()
            raise
        await self._close_client()
        if self.embedded is not None:
            await self.embedded.stop()
            self.embedded = None
        self.client = client
        self.mode, self.url, self.username = "remote", client.base_url, username
        self.server_alive = True
        self._label_cache.clear()
        self.settings.remember_connection(client.base_url, username)
        if remember_password:
            store_password(client.base_url, username, password)
        self._describe()

    async def connect_sso(self, url: str, code: str, redirect_uri: str, code_verifier: str) -> None:
        """Finish a single sign-on in the console's pane: the one-time code for a Portico access
        token, that token for an admin session; on success it replaces the current connection."""
        client = PorticoClient(url)
        try:
            grant = await client.exchange_login_code(code, redirect_uri, code_verifier)
            result = await client.sso_exchange(str(grant.get("access_token", "")))
        except BaseException:
            await client.aclose()
            raise
        await self._close_client()
        if self.embedded is not None:
            await self.embedded.stop()
            self.embedded = None
        self.client = client
        self.mode, self.url, self.username = "remote", client.base_url, result.user.username
        self.server_alive = True
        self._label_cache.clear()
        self.settings.remember_connection(client.base_url, result.user.username)  # no secret is kept
        self._describe()

    async def attach(self, url: str, token: str) -> None:
        """Use a server someone else started (tests and benchmarks), with its token."""
        await self._close_client()
        self.client = PorticoClient(url, token)
        self.mode, self.url, self.username = "attached", url, None
        self.server_alive = True
        self._label_cache.clear()
        self._describe()

    def recent_connections(self) -> list[RecentConnection]:
        return self.settings.recent_connections()

    def stored_password(self, url: str, username: str) -> str | None:
        return stored_password(url, username)

    @staticmethod
    def keyring_available() -> bool:
        """Passwords are remembered only in the OS keyring, and only where one is installed."""
        return keyring_available()

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._close_client()
        if self.embedded is not None:
            await self.embedded.stop()
        self.server_alive = False

    # ------------------------------------------------------------ first start

    async def needs_first_superuser(self) -> bool:
        """An empty database (embedded) has no superuser yet: the console asks for one."""
        if self.mode not in ("embedded", "attached"):
            return False
        page = await self.list_page("users", {"is_superuser": True, "is_active": True, "limit": 1})
        return bool(page.total == 0)

    async def create_first_superuser(self, username: str, password: str, email: str | None) -> BaseModel:
        body: dict[str, Any] = {"username": username, "password": password, "is_superuser": True, "is_staff": True}
        if email:
            body["email"] = email
        return await self.create("users", body)

    # ------------------------------------------------------------ records

    @staticmethod
    def endpoint(key: str) -> Endpoint[Any]:
        return ENDPOINTS[key]

    async def list_page(self, key: str, params: dict[str, Any]) -> Any:
        async with self._tracked() as client:
            return await client.list(ENDPOINTS[key], params)

    async def get(self, key: str, record_id: int | str) -> BaseModel:
        async with self._tracked() as client:
            record: BaseModel = await client.get(ENDPOINTS[key], record_id)
            return record

    async def create(self, key: str, body: dict[str, Any]) -> BaseModel:
        record, _created = await self.create_returning(key, body)
        return record

    async def create_returning(self, key: str, body: dict[str, Any]) -> tuple[BaseModel, BaseModel | None]:
        async with self._tracked() as client:
            result = await client.create_returning(ENDPOINTS[key], body)
        self._label_cache.pop(key, None)
        return result

    async def update(self, key: str, record_id: int | str, body: dict[str, Any]) -> BaseModel:
        async with self._tracked() as client:
            record: BaseModel = await client.update(ENDPOINTS[key], record_id, body)
        self._label_cache.pop(key, None)
        return record

    async def delete(self, key: str, record_id: int | str, version: int | None) -> None:
        async with self._tracked() as client:
            await client.delete(ENDPOINTS[key], record_id, version)
        self._label_cache.pop(key, None)

    async def delete_impact(self, key: str, record_id: int | str) -> Any:
        async with self._tracked() as client:
            return await client.delete_impact(ENDPOINTS[key], record_id)

    async def labels(self, key: str, *, refresh: bool = False) -> dict[int, str]:
        """id -> label of a small referenced entity (providers, groups, imaging servers...).

        At most the first PAGE_LIMIT records: enough for what other records refer to,
        and users are shown by id past that."""
        if not refresh and key in self._label_cache:
            return self._label_cache[key]
        page = await self.list_page(key, {"limit": PAGE_LIMIT})
        label = LABELS[key]
        found = {record.id: label(record) for record in page.items}
        self._label_cache[key] = found
        return found

    async def all_records(self, key: str, params: dict[str, Any]) -> list[BaseModel]:
        """Every record matching a query (for exports), a page of PAGE_LIMIT at a time."""
        records: list[BaseModel] = []
        offset = 0
        while True:
            page = await self.list_page(key, {**params, "offset": offset, "limit": PAGE_LIMIT})
            records.extend(page.items)
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return records

    async def site(self) -> BaseModel:
        async with self._tracked() as client:
            return await client.site()

    async def update_site(self, body: dict[str, Any]) -> BaseModel:
        async with self._tracked() as client:
            site = await client.update_site(body)
        self.site_changed.emit(site)
        return site

    async def explain(self, body: dict[str, Any]) -> Any:
        async with self._tracked() as client:
            return await client.explain(body)

    async def revoke_session(self, session_id: str, reason: str) -> BaseModel:
        async with self._tracked() as client:
            return await client.revoke_session(session_id, reason)

    async def change_group_members(self, group_id: int, user_ids: list[int], *, add: bool) -> Any:
        async with self._tracked() as client:
            return await client.change_group_members(group_id, user_ids, add=add)

    async def change_user_groups(self, user_id: int, group_ids: list[int], *, add: bool) -> Any:
        async with self._tracked() as client:
            return await client.change_user_groups(user_id, group_ids, add=add)

    async def group_access(self, group_id: int) -> tuple[list[BaseModel], list[BaseModel]]:
        """The imaging servers (the first PAGE_LIMIT) and every access rule of a group."""
        servers = await self.list_page("imaging-servers", {"limit": PAGE_LIMIT, "sort": "name"})
        rules = await self.all_records("access-rules", {"group_id": group_id})
        return list(servers.items), rules

    # ------------------------------------------------------------ bulk import of users

    async def group_ids_by_name(self) -> dict[str, int]:
        """Group name -> id (the first PAGE_LIMIT groups), fresh: for the import's checks."""
        return {name: group_id for group_id, name in (await self.labels("groups", refresh=True)).items()}

    async def existing_usernames(self, usernames: list[str], *, concurrency: int = 8) -> dict[str, int]:
        """Lower-case username -> id of those of ``usernames`` that exist (usernames are
        unique regardless of case). Searched by name, a few at a time."""
        limit = asyncio.Semaphore(concurrency)
        found: dict[str, int] = {}

        async def look_up(name: str) -> None:
            key = name.lower()
            async with limit:
                for page_number in range(LOOKUP_PAGES):
                    page = await self.list_page("users", {"q": name, "sort": "username", "offset": page_number * PAGE_LIMIT, "limit": PAGE_LIMIT})
                    match = next((user.id for user in page.items if user.username.lower() == key), None)
                    if match is not None:
                        found[key] = match
                        return
                    if (page_number + 1) * PAGE_LIMIT >= page.total:
                        return

        await asyncio.gather(*(look_up(name) for name in dict.fromkeys(n for n in usernames if n)))
        return found

    async def import_user_row(self, row: ImportRow) -> None:
        """Send one planned row (create or update, then add its groups); its outcome and the
        server's message are set on the row. Raises only ServerUnreachable and cancellation."""
        if row.action == Action.INVALID:
            row.outcome, row.message = Outcome.FAILED, "; ".join(row.errors)
            return
        if row.action == Action.SKIP:
            row.outcome, row.message = Outcome.SKIPPED, "the user exists (existing users are skipped)"
            return
        user_id = row.existing_id
        try:
            if row.action == Action.CREATE:
                user = await self.create("users", row.create_body())
                user_id = int(getattr(user, "id"))
                row.existing_id, row.outcome, row.message = user_id, Outcome.CREATED, ""
            else:
                assert user_id is not None
                body = row.update_body()
                if body:
                    for attempt in range(2):  # a version conflict: read again once
                        current = await self.get("users", user_id)
                        try:
                            await self.update("users", user_id, {**body, "version": getattr(current, "version")})
                            break
                        except ApiError as error:
                            if error.code != ErrorCode.VERSION_CONFLICT or attempt:
                                raise
                row.outcome, row.message = Outcome.UPDATED, "" if body else "nothing to change but its groups"
        except ApiError as error:
            row.outcome, row.message = Outcome.FAILED, api_error_text(error)
            return
        if row.group_ids and user_id is not None:
            try:
                change = await self.change_user_groups(user_id, row.group_ids, add=True)
            except ApiError as error:
                done = "created" if row.outcome == Outcome.CREATED else "updated"
                row.outcome, row.message = Outcome.FAILED, f"the user was {done}, but not added to its groups: {api_error_text(error)}"
                return
            added = int(getattr(change, "changed", 0))
            row.message = "; ".join(filter(None, [row.message, f"{added} group{'' if added == 1 else 's'} added" if added else ""]))

    async def orthanc_config(self, imaging_server_id: int) -> dict[str, Any]:
        async with self._tracked() as client:
            return await client.orthanc_config(imaging_server_id)

    async def user_count(self) -> int:
        async with self._tracked() as client:
            page = await client.list(USERS, {"limit": 1})
            return page.total

    # ------------------------------------------------------------ single sign-on set-up and test logins

    async def provider_presets(self) -> list[Any]:
        async with self._tracked() as client:
            return list(await client.provider_presets())

    async def discover_provider(self, url: str, preset: str = "generic") -> Any:
        async with self._tracked() as client:
            return await client.discover_provider(url, preset)

    async def evaluate_claim_mapping(self, mapping: dict[str, str], claims: dict[str, Any]) -> Any:
        async with self._tracked() as client:
            return await client.evaluate_claim_mapping(mapping, claims)

    async def auth_server_urls(self, auth_server_id: int) -> Any:
        async with self._tracked() as client:
            return await client.auth_server_urls(auth_server_id)

    async def start_test_login(self, auth_server_id: int, *, dry_run: bool, code_challenge: str | None = None) -> Any:
        async with self._tracked() as client:
            return await client.start_test_login(auth_server_id, dry_run=dry_run, code_challenge=code_challenge)

    async def test_login(self, test_login_id: str) -> Any:
        async with self._tracked() as client:
            return await client.test_login(test_login_id)

    async def introspect(self, token: str) -> dict[str, Any]:
        async with self._tracked() as client:
            return await client.introspect(token)

    async def exchange_login_code(self, code: str, redirect_uri: str, code_verifier: str | None = None) -> dict[str, Any]:
        async with self._tracked() as client:
            return await client.exchange_login_code(code, redirect_uri, code_verifier)

    async def decode_portico_token(self, token: str) -> Any:
        """The token's header and claims, verified against the JWKS Portico publishes."""
        from app.oidc.tokens import decode_token

        async with self._tracked() as client:
            jwks = await client.jwks()
        return decode_token(token, jwks)

    async def probe_provider(self, issuer: str, hosted_ui: str | None = None) -> Any:
        """Discovery and JWKS fetched from this computer (not from the server): what the
        administrator's browser will meet. Never raises for network trouble."""
        from app.oidc.discovery import probe

        return await probe(issuer, hosted_ui=hosted_ui)

    def cognito_draft_path(self) -> Path:
        return self.settings.directory / "cognito-wizard.json"

    def load_cognito_draft(self) -> Any:
        """The Cognito wizard's unfinished run (never holds the client secret), or None."""
        from app.oidc.cognito import WizardDraft

        try:
            return WizardDraft.from_json(self.cognito_draft_path().read_text(encoding="utf-8"))
        except OSError:
            return None

    def save_cognito_draft(self, draft: Any) -> None:
        path = self.cognito_draft_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(draft.to_json(), encoding="utf-8")
        temporary.replace(path)

    def discard_cognito_draft(self) -> None:
        with contextlib.suppress(OSError):
            self.cognito_draft_path().unlink()
