"""The web service of Orthanc's advanced authorization plugin, at /orthanc/{server}/.

Plain Starlette routes and orjson rather than FastAPI models: this is the path Orthanc
calls on every request (see ENVIRONMENT.md: FastAPI ~83 µs vs Starlette ~36 µs per call).
Lenient in (``identifier`` or ``server-id``, a ``Bearer `` prefix, an empty token is
anonymous, unknown fields ignored), strict out (every field, JSON types exact).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
import logging
from collections.abc import Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.domain.orthanc import Level, Method
from server.services.orthanc_authz import NeedsIO, OrthancAuthorizer, ServerInfo, basic_credentials, strip_bearer
from server.services.orthanc_shares import PluginRefusals, ShareRequest, ShareService

log = logging.getLogger("portico.orthanc")

MAX_BODY = 64 * 1024
MAX_TEXT = 4096
_JSON = "application/json"


class BadCall(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type=_JSON)


def _error(error: BadCall) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="portico-orthanc"'} if error.status == 401 else None
    return Response(
        orjson.dumps({"error": {"code": error.code, "message": error.message}}),
        status_code=error.status,
        media_type=_JSON,
        headers=headers,
    )


async def _raw_body(request: Request) -> bytes:
    """The body, chunked or not, refusing anything over 64 KiB."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BadCall(413, "payload_too_large", f"the body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        # orjson reports invalid UTF-8 as a decode error too, with its position.
        raise BadCall(400, "malformed_json", f"the body is not valid UTF-8 JSON: {error}") from None
    if not isinstance(body, dict):
        raise BadCall(400, "malformed_body", "the body must be a JSON object")
    return body


def _text(body: dict[str, Any], *names: str, required: bool = False) -> str | None:
    for name in names:
        if name in body and body[name] is not None:
            value = body[name]
            if not isinstance(value, str):
                raise BadCall(400, "bad_field", f"'{name}' must be a string, not {type(value).__name__}")
            if len(value) > MAX_TEXT:
                raise BadCall(400, "bad_field", f"'{name}' is longer than {MAX_TEXT} characters")
            return value
    if required:
        raise BadCall(400, "missing_field", f"'{names[0]}' is required")
    return None


def _enum(body: dict[str, Any], name: str, kind: type[Level] | type[Method]) -> Any:
    value = _text(body, name, required=True)
    try:
        return kind(value.lower())  # type: ignore[union-attr]
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise BadCall(400, "bad_field", f"'{name}' must be one of {allowed}, not {value!r}") from None


def _labels(body: dict[str, Any]) -> frozenset[str]:
    labels = body.get("labels")
    if labels is None:
        return frozenset()
    if not isinstance(labels, list) or len(labels) > 1000 or not all(isinstance(label, str) and len(label) <= 256 for label in labels):
        raise BadCall(400, "bad_field", "'labels' must be a list of at most 1000 strings of at most 256 characters")
    return frozenset(labels)


# Longer than any sensible share: the plugin has been seen sending uninitialised numbers.
MAX_SHARE_SECONDS = 10 * 366 * 24 * 3600
_LEVELS = {"patient", "study", "series", "instance"}


_RESERVED_TYPES = {"decode", "validate"}


def parse_share_request(share_type: str, body: dict[str, Any]) -> ShareRequest:
    if not share_type or len(share_type) > 64 or not all(ch.isalnum() or ch == "-" for ch in share_type) or share_type in _RESERVED_TYPES:
        raise BadCall(400, "bad_field", f"{share_type!r} is not a token type that can be created")
    resources = body.get("resources")
    if not isinstance(resources, list) or not resources or len(resources) > 1000:
        raise BadCall(400, "bad_field", "'resources' must be a non-empty list (at most 1000)")
    parsed: list[dict[str, str]] = []
    for index, resource in enumerate(resources):
        if not isinstance(resource, dict):
            raise BadCall(400, "bad_field", f"'resources[{index}]' must be an object")
        entry = {key: _text(resource, name) for key, name in (("level", "level"), ("orthanc_id", "orthanc-id"), ("dicom_uid", "dicom-uid"), ("url", "url"))}
        if entry["level"] not in _LEVELS:
            raise BadCall(400, "bad_field", f"'resources[{index}].level' must be one of patient, study, series, instance")
        if not (entry["orthanc_id"] or entry["dicom_uid"] or entry["url"]):
            raise BadCall(400, "bad_field", f"'resources[{index}]' names no resource (orthanc-id, dicom-uid or url)")
        parsed.append({key: value for key, value in entry.items() if value})
    duration = body.get("validity-duration")
    expires_at: datetime | None = None
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, int) or not 0 < duration <= MAX_SHARE_SECONDS:
            raise BadCall(400, "bad_field", f"'validity-duration' must be a whole number of seconds between 1 and {MAX_SHARE_SECONDS}, not {duration!r}")
        expires_at = datetime.now(UTC) + timedelta(seconds=duration)
    expiration = _text(body, "expiration-date")
    if expiration:
        try:
            parsed_date = datetime.fromisoformat(expiration.replace("Z", "+00:00"))
        except ValueError:
            raise BadCall(400, "bad_field", f"'expiration-date' is not an ISO 8601 date: {expiration!r}") from None
        if parsed_date.tzinfo is None:
            parsed_date = parsed_date.replace(tzinfo=UTC)
        now = datetime.now(UTC)
        try:
            in_range = now < parsed_date.astimezone(UTC) <= now + timedelta(seconds=MAX_SHARE_SECONDS)
        except OverflowError:
            in_range = False
        if not in_range:
            raise BadCall(400, "bad_field", f"'expiration-date' must be in the future and at most 10 years ahead, not {expiration!r}")
        parsed_date = parsed_date.astimezone(UTC)
        expires_at = parsed_date if expires_at is None else min(expires_at, parsed_date)
    return ShareRequest(type=share_type, resources=parsed, expires_at=expires_at)


Compute = Callable[[Request, bytes, bool], Any]


class OrthancService:
    def __init__(self, authorizer: OrthancAuthorizer, shares: ShareService, refusals: PluginRefusals) -> None:
        self.authorizer = authorizer
        self.shares = shares
        self.refusals = refusals

    async def _answer(self, request: Request, compute: Compute) -> Response:
        """Answer from memory on the event loop; anything that needs I/O (a first-seen token,
        an ancestry look-up, a refusal to audit, a share to store) runs in a worker thread."""
        try:
            raw = await _raw_body(request)
            try:
                content = compute(request, raw, False)
            except NeedsIO:
                content = await run_in_threadpool(compute, request, raw, True)
        except BadCall as error:
            return _error(error)
        except Exception:  # fail closed: the plugin denies on any non-2xx answer
            log.exception("unexpected error on %s %s", request.method, request.url.path)
            return _error(BadCall(500, "internal_error", "an internal error occurred; it has been logged on the server"))
        return _json(content)

    def _server(self, request: Request, io: bool) -> ServerInfo:
        """The imaging server named in the URL, if the caller holds a credential bound to it."""
        token = request.path_params["server"]
        header = request.headers.get("authorization", "")
        if header[:6].lower() != "basic ":
            raise BadCall(401, "not_authenticated", "HTTP Basic authentication with this imaging server's plugin credential is required")
        server = self.authorizer.caller(token, header, io=io)
        if server is None:
            if not io:
                raise NeedsIO  # a refusal is audited: that is a write
            self._refuse(request, token, header)
        assert server is not None
        if not server.is_active:
            raise BadCall(403, "server_inactive", f"the imaging server {server.name!r} is deactivated in Portico")
        return server

    def _refuse(self, request: Request, server_token: str, header: str) -> None:
        address = request.client.host if request.client else None
        # Only refusals count towards the limit: a well-configured Orthanc behind the same address keeps working.
        if not self.refusals.allowed(address):
            raise BadCall(429, "rate_limited", "too many refused plugin credentials from this address; try again later")
        credentials = basic_credentials(header)
        reason = (
            "malformed Basic credentials" if credentials is None
            else "unknown imaging server" if self.authorizer.server(server_token) is None
            else "unknown, wrong or expired credential, or one of another imaging server"
        )
        self.refusals.record(address, server_token, credentials[0] if credentials else "?", reason)
        # One answer for every cause.
        raise BadCall(401, "not_authenticated", "the credential is not valid for this imaging server")

    def _validate(self, request: Request, raw: bytes, io: bool) -> Any:
        server = self._server(request, io)
        body = _json_object(raw)
        level = _enum(body, "level", Level)
        method = _enum(body, "method", Method)
        decision = self.authorizer.validate(
            server,
            strip_bearer(_text(body, "token-value") or "") or None,
            method,
            level,
            _text(body, "orthanc-id"),
            _text(body, "dicom-uid"),
            _labels(body),
            _text(body, "uri") if level == Level.SYSTEM else None,
            io=io,
        )
        return {"granted": decision.granted, "validity": int(decision.validity)}

    def _profile(self, request: Request, raw: bytes, io: bool) -> Any:
        server = self._server(request, io)
        body = _json_object(raw)
        return self.authorizer.profile(server, strip_bearer(_text(body, "token-value") or "") or None, io=io)

    def _create_token(self, request: Request, raw: bytes, io: bool) -> Any:
        server = self._server(request, io)
        share_request = parse_share_request(request.path_params["type"], _json_object(raw))
        if not io:
            raise NeedsIO
        share = self.shares.create(server, share_request)
        return {"token": share.token, "url": share.url}

    def _decode_token(self, request: Request, raw: bytes, io: bool) -> Any:
        server = self._server(request, io)
        token = strip_bearer(_text(_json_object(raw), "token-value") or "")
        if not io:
            raise NeedsIO
        return self.shares.decode(server, token)

    def _roles(self, request: Request, raw: bytes, io: bool) -> Any:
        server = self._server(request, io)
        if request.method == "PUT":
            raise BadCall(405, "managed_in_portico", "roles are managed in Portico (groups and their access rules), not from Orthanc")
        if not io:
            raise NeedsIO
        return self.authorizer.roles(server)

    async def validate(self, request: Request) -> Response:
        return await self._answer(request, self._validate)

    async def profile(self, request: Request) -> Response:
        return await self._answer(request, self._profile)

    async def create_token(self, request: Request) -> Response:
        return await self._answer(request, self._create_token)

    async def decode_token(self, request: Request) -> Response:
        return await self._answer(request, self._decode_token)

    async def roles(self, request: Request) -> Response:
        return await self._answer(request, self._roles)


def routes(service: OrthancService) -> list[Route]:
    return [
        Route("/orthanc/{server}/tokens/validate", service.validate, methods=["POST"]),
        Route("/orthanc/{server}/user/get-profile", service.profile, methods=["POST"]),
        Route("/orthanc/{server}/settings/roles", service.roles, methods=["GET", "PUT"]),
        Route("/orthanc/{server}/tokens/decode", service.decode_token, methods=["POST"]),
        Route("/orthanc/{server}/tokens/{type}", service.create_token, methods=["PUT"]),
    ]
