"""Every failure becomes a typed JSON error; no stack trace ever reaches a client."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from server.api.middleware import BODY_SCOPE_KEY
from server.api.responses import OrjsonResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from server.contract.errors import (
    BadRequest,
    ErrorCode,
    FieldError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PorticoError,
    UnsupportedMediaType,
    ValidationFailed,
)

log = logging.getLogger("portico.api")


def error_response(error: PorticoError) -> OrjsonResponse:
    return OrjsonResponse(
        error.body().model_dump(mode="json", exclude_none=True), status_code=error.status, headers=error.headers
    )


def _field_path(location: tuple[Any, ...]) -> str:
    # ("body", "capabilities", 0) -> "capabilities.0"; ("query", "limit") -> "limit"
    parts = [str(part) for part in location if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(location[-1] if location else "body")


def _describe(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "field required"
    if kind == "model_attributes_type":
        return "must be a JSON object"
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


_NAMED = re.compile(r"^(?P<field>[a-z_][a-z0-9_.]*): (?P<message>.+)$", re.DOTALL)


def _field_error(error: dict[str, Any]) -> FieldError:
    location = tuple(error.get("loc", ()))
    if location == ("body",) and error.get("type") == "missing":
        return FieldError(field="body", message="a JSON body is required")
    path = _field_path(location)
    message = _describe(error)
    # A whole-model check names its field as "field: message" (see contract.schemas).
    named = _NAMED.match(message)
    if named:
        prefix = path if path not in ("body", "query") and location[-1:] != ("body",) else ""
        return FieldError(field=f"{prefix}.{named['field']}" if prefix else named["field"], message=named["message"])
    return FieldError(field=path, message=message)


def validation_error(exc: RequestValidationError) -> PorticoError:
    errors = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in errors):
        detail = next(error for error in errors if error.get("type") == "json_invalid")
        reason = detail.get("ctx", {}).get("error", "malformed JSON")
        return BadRequest(f"the request body is not valid JSON: {reason}", code=ErrorCode.MALFORMED_JSON)
    fields = [_field_error(error) for error in errors]
    summary = "; ".join(f"{field.field}: {field.message}" for field in fields[:5])
    return ValidationFailed(f"invalid request: {summary}", fields=fields)


def _routes(routes: list[Any]) -> Iterator[Any]:
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI keeps included routers whole
        if inner is not None:
            yield from _routes(inner.routes)
        else:
            yield route


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route offers on this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    scope = {**request.scope, "method": "__none__"}
    for route in _routes(request.app.router.routes):
        if getattr(route, "methods", None) and route.matches(scope)[0] != Match.NONE:
            methods.update(route.methods)
    return sorted(methods - {"HEAD"})


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


async def _undecodable_body(request: Request, detail: str) -> PorticoError:
    body: bytes = request.scope.get(BODY_SCOPE_KEY, b"")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        return BadRequest(
            f"the request body is not valid UTF-8 ({error.reason} at byte {error.start})", code=ErrorCode.MALFORMED_JSON
        )
    return BadRequest(f"the request body could not be read: {detail}", code=ErrorCode.MALFORMED_JSON)


def install(app: FastAPI) -> None:
    @app.exception_handler(PorticoError)
    async def _portico(_request: Request, exc: PorticoError) -> OrjsonResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> OrjsonResponse:
        content_type = request.headers.get("content-type", "")
        if request.method in ("POST", "PUT", "PATCH") and content_type and not _is_json(content_type):
            return error_response(
                UnsupportedMediaType(f"the body must be JSON: send 'Content-Type: application/json', not {content_type!r}")
            )
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> OrjsonResponse:
        if exc.status_code == 404:
            return error_response(NotFound("no such endpoint"))
        if exc.status_code == 405:
            allowed = _allowed_methods(request)
            return error_response(
                MethodNotAllowed(f"{request.method} is not allowed here; allowed: {', '.join(allowed)}", headers={"Allow": ", ".join(allowed)})
            )
        if exc.status_code == 400:
            # FastAPI raises this when a body cannot be decoded at all, e.g. bytes that are not UTF-8.
            return error_response(await _undecodable_body(request, str(exc.detail)))
        error = PorticoError(str(exc.detail))
        error.status = exc.status_code  # type: ignore[misc]
        return error_response(error)

    @app.exception_handler(UnicodeDecodeError)
    async def _unicode(_request: Request, exc: UnicodeDecodeError) -> OrjsonResponse:
        return error_response(BadRequest(f"the request body is not valid UTF-8 ({exc.reason} at byte {exc.start})", code=ErrorCode.MALFORMED_JSON))

    @app.exception_handler(json.JSONDecodeError)
    async def _json(_request: Request, exc: json.JSONDecodeError) -> OrjsonResponse:
        return error_response(BadRequest(f"the request body is not valid JSON: {exc.msg}", code=ErrorCode.MALFORMED_JSON))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> OrjsonResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(InternalError("an internal error occurred; it has been logged on the server"))
