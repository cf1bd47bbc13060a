"""Helpers shared by the API walk and the permission tests: error assertions, the OpenAPI
operations, logins and throw-away records on a shared server."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from tests.conftest import LiveServer

API = "/api/v1"
MASK = "********"
HTTP_METHODS = ("get", "post", "put", "patch", "delete")

# The single-sign-on broker: browsers and viewers, before they have any token
# (tests/server/sso/). Logout and RFC 7009 take the token they end as credential.
SSO_BROKER_OPERATIONS = frozenset(
    {
        ("get", "/auth/openid/"),
        ("get", "/auth/openid/{token}/"),
        ("get", "/auth/openid/{token}/callback/"),
        ("post", "/auth/openid/token/"),
        ("post", "/auth/openid/{token}/token/"),
        ("post", "/auth/openid/logout/"),
        ("post", "/auth/openid/{token}/logout/"),
        ("get", "/auth/openid/logout/"),
        ("get", "/auth/openid/{token}/logout/"),
        ("post", "/oauth2/revoke"),
    }
)

# Reachable without credentials by design.
PUBLIC_OPERATIONS = frozenset(
    {
        ("post", f"{API}/auth/login"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", f"{API}/openapi.json"),
        ("get", f"{API}/docs"),
        ("get", "/.well-known/jwks.json"),
        ("get", "/.well-known/openid-configuration"),
        # RFC 7662: its own client authentication and error format (tests/server/authz/test_introspection.py).
        ("post", "/oauth2/introspect"),
        # The console's single-sign-on sign-in: the Portico access token is the credential.
        ("post", f"{API}/auth/sso-exchange"),
    }
) | SSO_BROKER_OPERATIONS


def assert_error(
    response: httpx.Response,
    status: int,
    code: str,
    *,
    field: str | None = None,
    field_message: str | None = None,
) -> dict[str, Any]:
    """The response is ``status`` with ``{"error": {"code", "message", "fields"}}``.

    With ``field``, ``fields`` names exactly that one field (and, with ``field_message``,
    says exactly that about it). Returns ``error``.
    """
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.status_code} {response.text[:1000]}"
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    assert isinstance(error.get("fields", []), list), error
    if field is not None:
        named = [item["field"] for item in error["fields"]]
        assert named == [field], f"expected exactly {field!r} to be named, got {named}: {error['message']}"
        if field_message is not None:
            assert error["fields"][0]["message"] == field_message, error
    return error  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    spec: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.template)

    @property
    def has_body(self) -> bool:
        return "requestBody" in self.spec

    def path(self, **values: Any) -> str:
        """The template with every path parameter filled: by name from ``values``, else a
        plausible value of the parameter's type."""
        path = self.template
        for parameter in self.spec.get("parameters", []):
            if parameter["in"] != "path":
                continue
            name = parameter["name"]
            if name in values:
                value = values[name]
            elif parameter["schema"].get("type") == "integer":
                value = values.get("integer", 999_999_999)
            else:
                value = values.get("string", "no-such-record-0000")
            path = path.replace("{" + name + "}", str(value))
        assert "{" not in path, f"unfilled path parameter in {path}"
        return path

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.template}"


def operations(doc: dict[str, Any]) -> Iterator[Operation]:
    for template, item in doc["paths"].items():
        for method, spec in item.items():
            if method in HTTP_METHODS:
                yield Operation(method, template, spec)


def list_operations(doc: dict[str, Any]) -> list[Operation]:
    """The paged list endpoints: GET operations that take ``limit``."""
    return [
        op
        for op in operations(doc)
        if op.method == "get" and any(p["name"] == "limit" and p["in"] == "query" for p in op.spec.get("parameters", []))
    ]


def call(client: httpx.Client, op: Operation, path: str, **kwargs: Any) -> httpx.Response:
    return client.request(op.method.upper(), path, **kwargs)


def login(server: LiveServer, username: str, password: str) -> dict[str, Any]:
    with server.anonymous() as anonymous:
        response = anonymous.post(f"{API}/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def create(api: httpx.Client, entity: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(f"{API}/{entity}", json=body)
    assert response.status_code == 201, f"POST {entity}: {response.status_code} {response.text}"
    return response.json()  # type: ignore[no-any-return]


def new_password() -> str:
    return "pw-" + secrets.token_urlsafe(12)


def make_user(api: httpx.Client, server: LiveServer, *, password: str | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"username": server.unique(fields.pop("stem", "user")), **fields}
    if password is not None:
        body["password"] = password
    return create(api, "users", body)


def strings_in(value: Any) -> Iterator[str]:
    """Every string value (not key) in a JSON document."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def assert_subset(actual: Any, expected: Any, path: str = "") -> None:
    """Every key of ``expected`` is in ``actual`` with the same value (recursively for objects)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path or 'record'}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{path}{key} missing from {actual!r}"
            assert_subset(actual[key], value, f"{path}{key}.")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_subset(a, e, f"{path}{index}.")
    else:
        assert actual == expected, f"{path.rstrip('.')}: {actual!r} != {expected!r}"
