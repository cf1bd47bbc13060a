"""The web service of Orthanc's advanced authorization plugin, at /orthanc/{server}/.

A plain ASGI application with orjson, not FastAPI models nor Starlette's Request and
Response: Orthanc calls it on every request it serves, so its own cost should stay near
that of the HTTP server (bench/validate.py measures it against a bare endpoint).
Lenient in (``identifier`` or ``server-id``, a ``Bearer `` prefix, an empty token is
anonymous, unknown fields ignored), strict out (every field, JSON types exact).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.types import Message, Receive, Scope, Send

from server.api.middleware import ROUTE_SCOPE_KEY, STATUS_SCOPE_KEY

from server.domain.orthanc import Level, Method
from server.services.orthanc_authz import NeedsIO, OrthancAuthorizer, ServerInfo, basic_credentials, strip_bearer
from server.services.orthanc_shares import PluginRefusals, ShareRequest, ShareService

log = logging.getLogger("portico.orthanc")

MAX_BODY = 64 * 1024
MAX_TEXT = 4096


class BadCall(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True, slots=True)
class Call:
    """What the handlers need to know of one HTTP request."""

    method: str
    server_token: str
    operation: str  # the path below /orthanc/{server}/
    authorization: str
    client_address: str | None


_JSON_HEADERS = [(b"content-type", b"application/json")]
_CHALLENGE = (b"www-authenticate", b'Basic realm="portico-orthanc"')


def _start(status: int, length: int) -> dict[str, Any]:
    headers = [*_JSON_HEADERS, (b"content-length", str(length).encode())]
    if status == 401:
        headers.append(_CHALLENGE)
    return {"type": "http.response.start", "status": status, "headers": headers}


# Validate answers are few ({"granted", "validity"} pairs): encoded once, with their
# messages (the server only reads them).
_VALIDATE_ANSWERS: dict[tuple[bool, int], tuple[dict[str, Any], dict[str, Any]]] = {}


def _validate_answer(granted: bool, validity: int) -> tuple[dict[str, Any], dict[str, Any]]:
    messages = _VALIDATE_ANSWERS.get((granted, validity))
    if messages is None:
        body = orjson.dumps({"granted": granted, "validity": validity})
        messages = (_start(200, len(body)), {"type": "http.response.body", "body": body})
        if len(_VALIDATE_ANSWERS) < 10_000:
            _VALIDATE_ANSWERS[(granted, validity)] = messages
    return messages


async def _send_json(send: Send, status: int, content: Any) -> None:
    if type(content) is tuple:  # prepared messages (_validate_answer)
        await send(content[0])
        await send(content[1])
        return
    body = orjson.dumps(content)
    await send(_start(status, len(body)))
    await send({"type": "http.response.body", "body": body})


def _error_body(error: BadCall) -> dict[str, Any]:
    return {"error": {"code": error.code, "message": error.message}}


async def _raw_body(receive: Receive, message: Message | None = None) -> bytes:
    """The body, chunked or not, refusing anything over 64 KiB (``message``: the first one, already received)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        if message is None:
            message = await receive()
        if message["type"] != "http.request":
            raise BadCall(400, "incomplete_body", "the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise BadCall(413, "payload_too_large", f"the body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        message = None


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


_MEMBERS: dict[type, dict[str, Any]] = {kind: {member.value: member for member in kind} for kind in (Level, Method)}


def _enum(body: dict[str, Any], name: str, kind: type[Level] | type[Method]) -> Any:
    value = body.get(name)
    if type(value) is str:
        member = _MEMBERS[kind].get(value)  # as the plugin sends it: lower case
        if member is not None:
            return member
    value = _text(body, name, required=True)
    member = _MEMBERS[kind].get(value.lower())  # type: ignore[union-attr]
    if member is None:
        allowed = ", ".join(member.value for member in kind)
        raise BadCall(400, "bad_field", f"'{name}' must be one of {allowed}, not {value!r}")
    return member


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


Compute = Callable[[Call, bytes, bool], Any]


class OrthancService:
    """The plugin's endpoints, as one ASGI application mounted at /orthanc/."""

    # Counted by the Metrics middleware, not timed: it leaves route and status in the scope.
    counted_only = True

    def __init__(self, authorizer: OrthancAuthorizer, shares: ShareService, refusals: PluginRefusals) -> None:
        self.authorizer = authorizer
        self.shares = shares
        self.refusals = refusals
        self._exact: dict[str, tuple[frozenset[str], Compute, _Route]] = {
            "tokens/validate": (frozenset({"POST"}), self._validate, _Route("/orthanc/{server}/tokens/validate")),
            "user/get-profile": (frozenset({"POST"}), self._profile, _Route("/orthanc/{server}/user/get-profile")),
            "settings/roles": (frozenset({"GET", "PUT"}), self._roles, _Route("/orthanc/{server}/settings/roles")),
            "tokens/decode": (frozenset({"POST"}), self._decode_token, _Route("/orthanc/{server}/tokens/decode")),
        }
        self._create = (frozenset({"PUT"}), self._create_token, _Route("/orthanc/{server}/tokens/{type}"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server_token, _, operation = scope["path"][len("/orthanc/"):].partition("/")
        operation = operation.rstrip("/")
        route = self._exact.get(operation)
        if route is None and operation.startswith("tokens/") and operation.count("/") == 1:
            route = self._create
        if route is None or not server_token:
            scope[STATUS_SCOPE_KEY] = 404
            await _send_json(send, 404, {"error": {"code": "not_found", "message": "no such endpoint of the Orthanc authorization service"}})
            return
        methods, compute, template = route
        scope[ROUTE_SCOPE_KEY] = template  # for the metrics
        if scope["method"] not in methods:
            scope[STATUS_SCOPE_KEY] = 405
            await _send_json(send, 405, {"error": {"code": "method_not_allowed", "message": f"allowed: {', '.join(sorted(methods))}"}})
            return
        authorization = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        client = scope.get("client")
        call = Call(scope["method"], server_token, operation, authorization, client[0] if client else None)
        # Answered from memory on the event loop; anything that needs I/O (a first-seen
        # token on PostgreSQL, an ancestry look-up, a refusal to audit, a share to store)
        # runs in a worker thread. (Inline rather than in a helper coroutine: this runs on
        # every request Orthanc serves.)
        status = 200
        content: Any
        try:
            message = await receive()
            raw = message.get("body", b"")
            # The usual case, a body in one piece, without a second coroutine.
            if message["type"] != "http.request" or message.get("more_body", False) or len(raw) > MAX_BODY:
                raw = await _raw_body(receive, message)
            try:
                content = compute(call, raw, False)
            except NeedsIO:
                content = await run_in_threadpool(compute, call, raw, True)
        except BadCall as error:
            status, content = error.status, _error_body(error)
        except Exception:  # fail closed: the plugin denies on any non-2xx answer
            log.exception("unexpected error on %s /orthanc/%s/%s", call.method, call.server_token, call.operation)
            status = 500
            content = {"error": {"code": "internal_error", "message": "an internal error occurred; it has been logged on the server"}}
        scope[STATUS_SCOPE_KEY] = status
        await _send_json(send, status, content)

    def _server(self, call: Call, io: bool) -> ServerInfo:
        """The imaging server named in the URL, if the caller holds a credential bound to it."""
        if call.authorization[:6].lower() != "basic ":
            raise BadCall(401, "not_authenticated", "HTTP Basic authentication with this imaging server's plugin credential is required")
        server = self.authorizer.caller(call.server_token, call.authorization, io=io)
        if server is None:
            if not io:
                raise NeedsIO  # a refusal is audited: that is a write
            self._refuse(call)
        assert server is not None
        if not server.is_active:
            raise BadCall(403, "server_inactive", f"the imaging server {server.name!r} is deactivated in Portico")
        return server

    def _refuse(self, call: Call) -> None:
        # Only refusals count towards the limit: a well-configured Orthanc behind the same address keeps working.
        if not self.refusals.allowed(call.client_address):
            raise BadCall(429, "rate_limited", "too many refused plugin credentials from this address; try again later")
        credentials = basic_credentials(call.authorization)
        reason = (
            "malformed Basic credentials" if credentials is None
            else "unknown imaging server" if self.authorizer.server(call.server_token) is None
            else "unknown, wrong or expired credential, or one of another imaging server"
        )
        self.refusals.record(call.client_address, call.server_token, credentials[0] if credentials else "?", reason)
        # One answer for every cause.
        raise BadCall(401, "not_authenticated", "the credential is not valid for this imaging server")

    def _validate(self, call: Call, raw: bytes, io: bool) -> Any:
        server = self._server(call, io)
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
        return _validate_answer(decision.granted, int(decision.validity))

    def _profile(self, call: Call, raw: bytes, io: bool) -> Any:
        server = self._server(call, io)
        body = _json_object(raw)
        return self.authorizer.profile(server, strip_bearer(_text(body, "token-value") or "") or None, io=io)

    def _create_token(self, call: Call, raw: bytes, io: bool) -> Any:
        server = self._server(call, io)
        share_request = parse_share_request(call.operation.partition("/")[2], _json_object(raw))
        if not io:
            raise NeedsIO
        share = self.shares.create(server, share_request)
        return {"token": share.token, "url": share.url}

    def _decode_token(self, call: Call, raw: bytes, io: bool) -> Any:
        server = self._server(call, io)
        token = strip_bearer(_text(_json_object(raw), "token-value") or "")
        if not io:
            raise NeedsIO
        return self.shares.decode(server, token)

    def _roles(self, call: Call, raw: bytes, io: bool) -> Any:
        server = self._server(call, io)
        if call.method == "PUT":
            raise BadCall(405, "managed_in_portico", "roles are managed in Portico (groups and their access rules), not from Orthanc")
        if not io:
            raise NeedsIO
        return self.authorizer.roles(server)


@dataclass(frozen=True)
class _Route:
    path: str
