"""The web service of Orthanc's advanced authorization plugin, at /orthanc/{server}/.

Plain Starlette routes and orjson rather than FastAPI models: this is the path Orthanc
calls on every request (see ENVIRONMENT.md: FastAPI ~83 µs vs Starlette ~36 µs per call).
Lenient in (``identifier`` or ``server-id``, a ``Bearer `` prefix, an empty token is
anonymous, unknown fields ignored), strict out (every field, JSON types exact).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.domain.orthanc import Level, Method
from server.services.orthanc_authz import OrthancAuthorizer, ServerInfo, strip_bearer
from server.services.orthanc_shares import PluginRefusals, ShareRequest, ShareService

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


async def _body(request: Request) -> dict[str, Any]:
    """Read a JSON object body, chunked or not, refusing anything over 64 KiB."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BadCall(413, "payload_too_large", f"the body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
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


class OrthancService:
    def __init__(self, authorizer: OrthancAuthorizer, shares: ShareService, refusals: PluginRefusals) -> None:
        self.authorizer = authorizer
        self.shares = shares
        self.refusals = refusals

    def _server(self, request: Request) -> ServerInfo:
        """The imaging server named in the URL, if the caller holds a credential bound to it."""
        token = request.path_params["server"]
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise BadCall(401, "not_authenticated", "HTTP Basic authentication with this imaging server's plugin credential is required")
        try:
            username, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise BadCall(401, "not_authenticated", "malformed Basic credentials") from None
        address = request.client.host if request.client else None
        server = self.authorizer.server(token)
        bound_to = self.authorizer.plugin_credential_server(username, password)
        if server is None or bound_to is None or bound_to != server.id:
            # Only refusals count: a well-configured Orthanc behind the same address keeps working.
            if not self.refusals.allowed(address):
                raise BadCall(429, "rate_limited", "too many refused plugin credentials from this address; try again later")
            reason = (
                "unknown imaging server" if server is None
                else "unknown or wrong credential" if bound_to is None
                else "credential of another imaging server"
            )
            self.refusals.record(address, token, username, reason)
            # One answer for every cause: an unknown server, a wrong password, another server's credential.
            raise BadCall(401, "not_authenticated", "the credential is not valid for this imaging server")
        if not server.is_active:
            raise BadCall(403, "server_inactive", f"the imaging server {server.name!r} is deactivated in Portico")
        return server

    async def validate(self, request: Request) -> Response:
        try:
            server = self._server(request)
            body = await _body(request)
            level = _enum(body, "level", Level)
            method = _enum(body, "method", Method)
            token = strip_bearer(_text(body, "token-value") or "")
            decision = self.authorizer.validate(
                server,
                token or None,
                method,
                level,
                _text(body, "orthanc-id"),
                _text(body, "dicom-uid"),
                _labels(body),
                _text(body, "uri") if level == Level.SYSTEM else None,
            )
        except BadCall as error:
            return _error(error)
        return _json({"granted": decision.granted, "validity": int(decision.validity)})

    async def profile(self, request: Request) -> Response:
        try:
            server = self._server(request)
            body = await _body(request)
            token = strip_bearer(_text(body, "token-value") or "")
        except BadCall as error:
            return _error(error)
        return _json(self.authorizer.profile(server, token or None))

    async def create_token(self, request: Request) -> Response:
        try:
            server = self._server(request)
            body = await _body(request)
            request_ = parse_share_request(request.path_params["type"], body)
            share = self.shares.create(server, request_)
        except BadCall as error:
            return _error(error)
        return _json({"token": share.token, "url": share.url})

    async def decode_token(self, request: Request) -> Response:
        try:
            server = self._server(request)
            body = await _body(request)
            token = strip_bearer(_text(body, "token-value") or "")
        except BadCall as error:
            return _error(error)
        return _json(self.shares.decode(server, token))

    async def roles(self, request: Request) -> Response:
        try:
            server = self._server(request)
        except BadCall as error:
            return _error(error)
        if request.method == "PUT":
            return _error(BadCall(405, "managed_in_portico", "roles are managed in Portico (groups and their access rules), not from Orthanc"))
        return _json(self.authorizer.roles(server))


def routes(service: OrthancService) -> list[Route]:
    return [
        Route("/orthanc/{server}/tokens/validate", service.validate, methods=["POST"]),
        Route("/orthanc/{server}/user/get-profile", service.profile, methods=["POST"]),
        Route("/orthanc/{server}/settings/roles", service.roles, methods=["GET", "PUT"]),
        Route("/orthanc/{server}/tokens/decode", service.decode_token, methods=["POST"]),
        Route("/orthanc/{server}/tokens/{type}", service.create_token, methods=["PUT"]),
    ]
