"""Typed errors with stable codes.

Every error a client can receive travels as ``{"error": {"code", "message", "fields"}}``.
The code is stable and machine-readable; the message is for people; ``fields`` names
each offending field (a dotted path into the request) and why it was refused.

    PorticoError
    ├── BadRequest              400 bad_request, malformed_json, malformed_body
    ├── NotAuthenticated        401 not_authenticated
    ├── PermissionDenied        403 permission_denied
    ├── NotFound                404 not_found
    ├── MethodNotAllowed        405 method_not_allowed
    ├── Conflict                409 version_conflict, duplicate, in_use, last_superuser
    ├── PayloadTooLarge         413 payload_too_large
    ├── UnsupportedMediaType    415 unsupported_media_type
    ├── ValidationFailed        422 validation_failed
    ├── RateLimited             429 rate_limited
    └── InternalError           500 internal_error (never carries details)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    MALFORMED_JSON = "malformed_json"
    NOT_AUTHENTICATED = "not_authenticated"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    VERSION_CONFLICT = "version_conflict"
    DUPLICATE = "duplicate"
    IN_USE = "in_use"
    LAST_SUPERUSER = "last_superuser"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    VALIDATION_FAILED = "validation_failed"
    RATE_LIMITED = "rate_limited"
    INTERNAL_ERROR = "internal_error"
    SERVICE_UNAVAILABLE = "service_unavailable"
    UPSTREAM_FAILED = "upstream_failed"


class FieldError(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    message: str


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: ErrorCode
    message: str
    fields: list[FieldError] = []
    # Present on version conflicts: the record as it is now, so a client can compare.
    current: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class PorticoError(Exception):
    status: ClassVar[int] = 500
    default_code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_ERROR

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        fields: list[FieldError] | None = None,
        current: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.fields = fields or []
        self.current = current
        self.headers = headers or {}

    @classmethod
    def on_field(cls, field: str, message: str, **kwargs: Any) -> PorticoError:
        return cls(f"{field}: {message}", fields=[FieldError(field=field, message=message)], **kwargs)

    def body(self) -> ErrorBody:
        return ErrorBody(
            error=ErrorDetail(code=self.code, message=self.message, fields=self.fields, current=self.current)
        )


class BadRequest(PorticoError):
    status = 400
    default_code = ErrorCode.BAD_REQUEST


class NotAuthenticated(PorticoError):
    status = 401
    default_code = ErrorCode.NOT_AUTHENTICATED


class PermissionDenied(PorticoError):
    status = 403
    default_code = ErrorCode.PERMISSION_DENIED


class NotFound(PorticoError):
    status = 404
    default_code = ErrorCode.NOT_FOUND


class MethodNotAllowed(PorticoError):
    status = 405
    default_code = ErrorCode.METHOD_NOT_ALLOWED


class Conflict(PorticoError):
    status = 409
    default_code = ErrorCode.VERSION_CONFLICT


class PayloadTooLarge(PorticoError):
    status = 413
    default_code = ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(PorticoError):
    status = 415
    default_code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class ValidationFailed(PorticoError):
    status = 422
    default_code = ErrorCode.VALIDATION_FAILED


class RateLimited(PorticoError):
    status = 429
    default_code = ErrorCode.RATE_LIMITED


class InternalError(PorticoError):
    status = 500
    default_code = ErrorCode.INTERNAL_ERROR


class UpstreamFailed(PorticoError):
    """Another server Portico needed (an identity provider, an Orthanc) failed or was unreachable."""

    status = 502
    default_code = ErrorCode.UPSTREAM_FAILED


class ServiceUnavailable(PorticoError):
    status = 503
    default_code = ErrorCode.SERVICE_UNAVAILABLE


ERROR_CLASSES: dict[int, type[PorticoError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        NotAuthenticated,
        PermissionDenied,
        NotFound,
        MethodNotAllowed,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        ValidationFailed,
        RateLimited,
        InternalError,
        UpstreamFailed,
        ServiceUnavailable,
    )
}


def error_from_body(status: int, body: dict[str, Any]) -> PorticoError:
    """Rebuild the typed error on the client side from a response."""
    detail = ErrorDetail.model_validate(body["error"])
    cls = ERROR_CLASSES.get(status, PorticoError)
    return cls(detail.message, code=detail.code, fields=list(detail.fields), current=detail.current)
