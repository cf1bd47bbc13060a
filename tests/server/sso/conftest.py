"""A real Portico server and a real identity provider (oidc-provider with Cognito's paths),
wired together as an administrator would: provider, auth server, Site URL, and the
callback URL registered at the IdP. Browsers are simulated (own cookie jar, real HTTP)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import LiveServer, start_live_server
from tests.server.api.support import API, create
from tests.support.idp import IdPUser, SimulatedBrowser, TestIdP

VIEWER_URL = "http://viewer.test/callback"
# A secret with every character that RFC 6749 §2.3.1's form-encoding changes.
CLIENT_SECRET = "s3cr+t/with%odd=chars&more"
IDP_TIMEOUT_SECONDS = "1.5"
OPEN_BROWSERS: list[SimulatedBrowser] = []

COGNITO_USERS = [
    IdPUser("alice", "alice-password", {
        "cognito:username": "alice", "email": "alice@hospital.test", "email_verified": True,
        "given_name": "Alice", "family_name": "Archer", "cognito:groups": ["radiology", "admins"],
    }),
    IdPUser("dave", "dave-password", {
        "cognito:username": "dave", "email": "dave@hospital.test", "given_name": "Dave", "family_name": "Idp",
        "cognito:groups": ["radiology"],
    }),
]
KEYCLOAK_USERS = [
    IdPUser("bob", "bob-password", {
        "preferred_username": "bob", "email": "bob@hospital.test", "given_name": "Bob", "family_name": "Baker",
        "groups": ["radiology"],
    }),
]


@dataclass
class Wiring:
    """One auth server of the Portico under test, and how to log in through it."""

    portico: LiveServer
    idp: TestIdP
    provider: dict[str, Any]
    auth_server: dict[str, Any]
    urls: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def api(self) -> httpx.Client:
        return self.portico.client

    @property
    def login_url(self) -> str:
        return self.urls["login"]

    def browser(self) -> SimulatedBrowser:
        browser = SimulatedBrowser(stop_at=VIEWER_URL)
        OPEN_BROWSERS.append(browser)
        return browser

    def login(self, username: str, password: str, *, state: str | None = "viewer-state",
              browser: SimulatedBrowser | None = None, stop_at: str = VIEWER_URL) -> tuple[SimulatedBrowser, Any]:
        """Browser: Portico login → IdP form → submit → back through Portico's callback."""
        browser = browser or self.browser()
        query: dict[str, str] = {"redirect_uri": VIEWER_URL}
        if state is not None:
            query["state"] = state
        page = browser.get(str(httpx.URL(self.login_url, params=query)), stop_at=stop_at)
        assert page.response is not None and page.response.status_code == 200, page
        landing = browser.login(username, password, stop_at=stop_at)
        return browser, landing

    def tokens(self, code: str, redirect_uri: str = VIEWER_URL) -> httpx.Response:
        return httpx.post(self.urls["token"], data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri})

    def refresh(self, refresh_token: str) -> httpx.Response:
        return httpx.post(self.urls["token"], data={"grant_type": "refresh_token", "refresh_token": refresh_token})

    def user(self, username: str) -> dict[str, Any] | None:
        found = self.api.get(f"{API}/users", params={"q": username, "limit": 500}).json()["items"]
        exact = [user for user in found if user["username"] == username]
        return exact[0] if exact else None

    def sso_session_count(self) -> int:
        return int(self.api.get(f"{API}/sessions", params={"kind": "sso", "limit": 1}).json()["total"])

    def user_count(self) -> int:
        return int(self.api.get(f"{API}/users", params={"limit": 1}).json()["total"])

    def decode(self, access_token: str) -> dict[str, Any]:
        """Verified against Portico's published JWKS, as a resource server would."""
        jwks = jwt.PyJWKSet.from_dict(httpx.get(f"{self.portico.url}/.well-known/jwks.json").json())
        kid = jwt.get_unverified_header(access_token)["kid"]
        key = next(k for k in jwks.keys if k.key_id == kid)
        claims: dict[str, Any] = jwt.decode(access_token, key.key, algorithms=["ES256"], audience="portico")
        return claims


def wire(portico: LiveServer, idp: TestIdP, *, preset: str, name: str | None = None, secret: str = CLIENT_SECRET,
         register_callback: bool = True, provider_overrides: dict[str, Any] | None = None,
         auth_server_overrides: dict[str, Any] | None = None) -> Wiring:
    """What an administrator does in the console: provider, auth server, callback at the IdP."""
    api = portico.client
    discovered = api.post(f"{API}/providers/discover", json={"url": idp.issuer, "preset": preset})
    assert discovered.status_code == 200, discovered.text
    fields = discovered.json()["provider"]
    provider = create(api, "providers", {**fields, "name": name or portico.unique(preset), **(provider_overrides or {})})
    client_id = portico.unique("portico-client")
    auth_server = create(api, "auth-servers", {
        "provider_id": provider["id"], "client_id": client_id, "client_secret": secret,
        "redirect_urls": [VIEWER_URL], **(auth_server_overrides or {}),
    })
    urls = api.get(f"{API}/auth-servers/{auth_server['id']}/urls").json()
    if register_callback:
        idp.add_client(client_id, CLIENT_SECRET, [urls["callback"]])
    return Wiring(portico, idp, provider, auth_server, urls)


def point_site_at(portico: LiveServer) -> None:
    site = portico.client.get(f"{API}/site").json()
    response = portico.client.patch(f"{API}/site", json={"version": site["version"], "production_url": portico.url,
                                                         "environment": "production"})
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdP]:
    server = TestIdP([], COGNITO_USERS + KEYCLOAK_USERS)
    server.start()
    try:
        yield server
    finally:
        assert server.stop() == 0


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def portico(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    database_url = None
    if request.param == "postgresql":
        database_url = request.getfixturevalue("fresh_postgres_database")()
    server = start_live_server(request.param, tmp_path_factory.mktemp(f"sso-{request.param}"), database_url,
                               PORTICO_IDP_TIMEOUT_SECONDS=IDP_TIMEOUT_SECONDS)
    point_site_at(server)
    yield server
    server.client.close()
    assert server.process.stop() == 0, "".join(server.process.output)


@pytest.fixture(scope="module")
def cognito(portico: LiveServer, idp: TestIdP) -> Wiring:
    return wire(portico, idp, preset="cognito")


@pytest.fixture
def fresh_user(idp: TestIdP) -> IdPUser:
    """A Cognito-style IdP user no test has logged in with yet."""
    name = f"user-{secrets.token_hex(4)}"
    return idp.add_user(name, f"{name}-password", {
        "cognito:username": name, "email": f"{name}@hospital.test", "given_name": "Fresh", "family_name": "User",
        "cognito:groups": ["radiology"],
    })


@pytest.fixture(autouse=True)
def _close_browsers() -> Iterator[None]:
    yield
    while OPEN_BROWSERS:
        OPEN_BROWSERS.pop().close()
