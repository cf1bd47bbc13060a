"""The test IdP (tests/idp/idp.mjs, driven by tests/support/idp.py) behaves as a strict,
Cognito-shaped OpenID provider, and each fault it injects produces the token or answer
described. Everything goes over real HTTP on loopback, as an OIDC client would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.support.idp import (  # noqa: F401 (fixtures)
    IDP_SCRIPT,
    IdPError,
    Landing,
    SimulatedBrowser,
    TestIdP,
    _idp_faults,
    _simulated_browser,
    _test_idp,
    form_encoded_basic_auth,
    pkce_pair,
    raw_basic_auth,
)

# The "portico" client is native: any port on this loopback redirect URI is accepted.
REDIRECT = "http://127.0.0.1:48123/callback"
SCOPE = "openid email profile"


@dataclass
class Login:
    landing: Landing
    state: str
    nonce: str
    verifier: str | None

    @property
    def code(self) -> str:
        assert "code" in self.landing.query, f"no code in {self.landing.url}"
        return self.landing.query["code"]


def start_login(idp: TestIdP, browser: SimulatedBrowser, *, client: str = "portico", redirect_uri: str = REDIRECT, pkce: bool = True, **extra: str) -> Login:
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    verifier, challenge = pkce_pair() if pkce else (None, None)
    url = idp.authorize_url(client, redirect_uri=redirect_uri, scope=SCOPE, state=state, nonce=nonce, code_challenge=challenge, **extra)
    landing = browser.get(url, stop_at=redirect_uri)
    return Login(landing, state, nonce, verifier)


def log_in(idp: TestIdP, browser: SimulatedBrowser, username: str, *, client: str = "portico", redirect_uri: str = REDIRECT, pkce: bool = True, **extra: str) -> Login:
    login = start_login(idp, browser, client=client, redirect_uri=redirect_uri, pkce=pkce, **extra)
    assert not login.landing.stopped, "expected the login page, the browser already had a session"
    login.landing = browser.login(username, idp.user(username).password, stop_at=redirect_uri)
    assert login.landing.stopped, f"login did not come back to the client: {browser.text[:300]}"
    assert login.landing.query.get("state") == login.state
    return login


def exchange(
    idp: TestIdP,
    code: str,
    *,
    client: str = "portico",
    redirect_uri: str = REDIRECT,
    verifier: str | None = None,
    authorization: str | None = None,
) -> httpx.Response:
    registered = idp.client(client)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if verifier is not None:
        data["code_verifier"] = verifier
    headers = {}
    if registered.token_endpoint_auth_method == "client_secret_post":
        data.update(client_id=registered.client_id, client_secret=registered.client_secret)
    else:
        headers["Authorization"] = authorization or registered.basic_auth()
    return httpx.post(idp.token_endpoint, data=data, headers=headers, timeout=10)


def tokens_for(idp: TestIdP, browser: SimulatedBrowser, username: str, **kwargs: Any) -> tuple[Login, dict[str, Any]]:
    login = log_in(idp, browser, username, **kwargs)
    response = exchange(idp, login.code, verifier=login.verifier)
    assert response.status_code == 200, response.text
    return login, response.json()


def jwks_key(idp: TestIdP, kid: str) -> Any:
    jwks = httpx.get(idp.jwks_url, timeout=10).json()
    return jwt.PyJWKSet.from_dict(jwks)[kid].key


def verify(idp: TestIdP, id_token: str, audience: str = "portico") -> dict[str, Any]:
    key = jwks_key(idp, jwt.get_unverified_header(id_token)["kid"])
    claims: dict[str, Any] = jwt.decode(id_token, key=key, algorithms=["RS256"], audience=audience, issuer=idp.issuer)
    return claims


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    header, payload, signature = (base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in token.split("."))
    return json.loads(header), json.loads(payload), signature


# ---------------------------------------------------------------------------------------
# Discovery and the plain flow


def test_discovery_has_cognito_paths_and_a_path_less_issuer(test_idp: TestIdP) -> None:
    document = httpx.get(test_idp.discovery_url, timeout=10).json()
    base = test_idp.issuer
    assert urlsplit(base).path == "" and urlsplit(base).hostname == "127.0.0.1"
    assert document["issuer"] == base
    assert document["authorization_endpoint"] == f"{base}/oauth2/authorize"
    assert document["token_endpoint"] == f"{base}/oauth2/token"
    assert document["userinfo_endpoint"] == f"{base}/oauth2/userInfo"
    assert document["revocation_endpoint"] == f"{base}/oauth2/revoke"
    assert document["jwks_uri"] == f"{base}/.well-known/jwks.json"
    assert document["end_session_endpoint"] == f"{base}/logout"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["response_types_supported"] == ["code"]
    keys = httpx.get(document["jwks_uri"], timeout=10).json()["keys"]
    assert [(key["kty"], key["alg"], key["use"]) for key in keys] == [("RSA", "RS256", "sig")]
    assert all("d" not in key for key in keys), "the JWKS must not publish the private key"


def test_login_page_is_a_labelled_form(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    login = start_login(test_idp, simulated_browser)
    assert not login.landing.stopped and login.landing.status_code == 200
    assert urlsplit(login.landing.url).path.startswith("/interaction/")
    html = login.landing.text
    assert simulated_browser.title
    for snippet in ('<label for="username">', '<label for="password">', 'id="username"', 'id="password"', 'id="submit"', 'id="cancel"', 'name="cancel"'):
        assert snippet in html
    form = simulated_browser.find_form(fields=("username", "password"), button="cancel")
    assert form.method == "POST"
    assert simulated_browser.urls[0].startswith(test_idp.authorization_endpoint)


@pytest.mark.parametrize("pkce", [True, False], ids=["pkce", "no-pkce"])
def test_code_flow_gives_a_verifiable_id_token_with_cognito_claims(test_idp: TestIdP, simulated_browser: SimulatedBrowser, pkce: bool) -> None:
    login, tokens = tokens_for(test_idp, simulated_browser, "alice", pkce=pkce)
    interactions = {url.split("/interaction/")[1] for url in simulated_browser.urls if "/interaction/" in url}
    assert len(interactions) == 1, f"a login, and no consent step: {simulated_browser.urls}"
    assert tokens["token_type"].lower() == "bearer"
    assert tokens["refresh_token"], "Cognito returns a refresh token with every code exchange"
    claims = verify(test_idp, tokens["id_token"])
    alice = test_idp.user("alice")
    assert claims["sub"] == alice.subject
    assert claims["nonce"] == login.nonce
    assert claims["cognito:username"] == "alice"
    assert claims["cognito:groups"] == ["radiology", "admins"]
    assert (claims["given_name"], claims["family_name"], claims["email"]) == ("Alice", "Liddell", "alice@example.org")
    assert claims["exp"] > time.time() > claims["iat"] - 5

    info = httpx.get(test_idp.userinfo_endpoint, headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10)
    assert info.status_code == 200, info.text
    body = info.json()
    assert body["sub"] == alice.subject
    assert body["cognito:groups"] == ["radiology", "admins"]
    assert body["cognito:username"] == "alice"
    assert body["email"] == "alice@example.org" and body["email_verified"] is True


def test_keycloak_style_claims_come_back_too(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    _, tokens = tokens_for(test_idp, simulated_browser, "bob")
    claims = verify(test_idp, tokens["id_token"])
    assert claims["preferred_username"] == "bob" and claims["groups"] == ["radiology"]
    assert "cognito:groups" not in claims
    info = httpx.get(test_idp.userinfo_endpoint, headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10).json()
    assert info["preferred_username"] == "bob" and info["groups"] == ["radiology"] and info["name"] == "Bob Marley"


def test_a_password_with_plus_percent_ampersand_logs_in(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    assert set("+%&") <= set(test_idp.user("carol").password)
    _, tokens = tokens_for(test_idp, simulated_browser, "carol")
    assert verify(test_idp, tokens["id_token"])["cognito:username"] == "carol"


def test_client_secret_post_client(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    viewer = test_idp.client("viewer")
    login = log_in(test_idp, simulated_browser, "bob", client="viewer", redirect_uri=viewer.redirect_uri)
    response = exchange(test_idp, login.code, client="viewer", redirect_uri=viewer.redirect_uri, verifier=login.verifier)
    assert response.status_code == 200, response.text
    assert verify(test_idp, response.json()["id_token"], audience="viewer")["preferred_username"] == "bob"


def test_a_web_client_redirect_uri_must_match_exactly(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    wrong = "http://127.0.0.1:10/viewer/callback"  # another port than the registered one
    landing = simulated_browser.get(test_idp.authorize_url("viewer", redirect_uri=wrong, state="s"), stop_at=wrong)
    assert not landing.stopped and landing.status_code == 400
    assert "redirect_uri did not match" in simulated_browser.text


def test_a_second_login_reuses_the_idp_session_but_a_new_browser_does_not(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    log_in(test_idp, simulated_browser, "alice")
    seen = len(simulated_browser.urls)
    again = start_login(test_idp, simulated_browser)
    assert again.landing.stopped and "code" in again.landing.query, "the IdP session should skip the form"
    assert len(simulated_browser.urls) == seen + 2, "straight back to the client: no login, no consent"
    with SimulatedBrowser() as other:
        fresh = start_login(test_idp, other)
        assert not fresh.landing.stopped and other.find_form(fields=("username", "password"))


def test_a_stray_resource_parameter_does_not_break_authorize(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    login = log_in(test_idp, simulated_browser, "alice", resource="https://api.example.org/")
    assert exchange(test_idp, login.code, verifier=login.verifier).status_code == 200


# ---------------------------------------------------------------------------------------
# Strictness


def test_client_secret_basic_must_be_form_encoded(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    portico = test_idp.client("portico")
    assert set("+%/=") <= set(portico.client_secret)
    assert portico.basic_auth() == form_encoded_basic_auth("portico", portico.client_secret)
    assert portico.basic_auth() != raw_basic_auth("portico", portico.client_secret)

    login = log_in(test_idp, simulated_browser, "alice")
    refused = exchange(test_idp, login.code, verifier=login.verifier, authorization=raw_basic_auth("portico", portico.client_secret))
    # "%ic" is no percent-escape: the IdP cannot even decode the raw secret.
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"
    assert "not properly encoded" in refused.json()["error_description"]
    # httpx's own Basic auth does not form-encode either.
    by_httpx = httpx.post(
        test_idp.token_endpoint,
        data={"grant_type": "authorization_code", "code": login.code, "redirect_uri": REDIRECT, "code_verifier": login.verifier or ""},
        auth=("portico", portico.client_secret),
        timeout=10,
    )
    assert by_httpx.status_code == 400 and by_httpx.json()["error"] == "invalid_request"
    # The refusals did not consume the code: the correctly encoded request still works.
    accepted = exchange(test_idp, login.code, verifier=login.verifier)
    assert accepted.status_code == 200, accepted.text


def test_a_raw_secret_that_decodes_to_something_else_is_refused(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    """A raw "+" decodes to a space and "%2B" to "+": the IdP compares the decoded secret."""
    redirect = "http://127.0.0.1:5998/cb"
    secret = "a+b/c=d%2Be"
    client = test_idp.add_client(f"enc-{secrets.token_hex(3)}", secret, [redirect])
    login = log_in(test_idp, simulated_browser, "alice", client=client.client_id, redirect_uri=redirect)
    raw = exchange(test_idp, login.code, client=client.client_id, redirect_uri=redirect, verifier=login.verifier, authorization=raw_basic_auth(client.client_id, secret))
    assert raw.status_code == 401 and raw.json()["error"] == "invalid_client"
    encoded = exchange(test_idp, login.code, client=client.client_id, redirect_uri=redirect, verifier=login.verifier)
    assert encoded.status_code == 200, encoded.text


def test_a_wrong_secret_is_refused(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    login = log_in(test_idp, simulated_browser, "alice")
    response = exchange(test_idp, login.code, verifier=login.verifier, authorization=form_encoded_basic_auth("portico", "not-the-secret"))
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_pkce_is_checked_when_used(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    login = log_in(test_idp, simulated_browser, "alice", pkce=True)
    wrong = exchange(test_idp, login.code, verifier=pkce_pair()[0])
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    missing = exchange(test_idp, login.code, verifier=None)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_grant"


def test_plain_pkce_is_refused(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    url = test_idp.authorize_url("portico", redirect_uri=REDIRECT, state="st", code_challenge="x" * 43)
    url = url.replace("code_challenge_method=S256", "code_challenge_method=plain")
    landing = simulated_browser.get(url, stop_at=REDIRECT)
    assert landing.stopped and landing.query["error"] == "invalid_request" and landing.query["state"] == "st"


def test_a_code_is_single_use(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    login = log_in(test_idp, simulated_browser, "alice", pkce=False)
    assert exchange(test_idp, login.code).status_code == 200
    replay = exchange(test_idp, login.code)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"


# ---------------------------------------------------------------------------------------
# The login page


def test_a_wrong_password_shows_the_message_and_the_form_again(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    login = start_login(test_idp, simulated_browser)
    wrong = simulated_browser.login("alice", "not-her-password", stop_at=REDIRECT)
    assert not wrong.stopped and wrong.status_code == 200
    assert "Incorrect username or password." in simulated_browser.text
    assert 'value="alice"' in wrong.text
    unknown = simulated_browser.login("nobody", "x", stop_at=REDIRECT)
    assert "Incorrect username or password." in simulated_browser.text and not unknown.stopped
    right = simulated_browser.login("alice", "alice-password", stop_at=REDIRECT)
    assert right.stopped and right.query["state"] == login.state and right.query["code"]


def test_cancel_returns_access_denied_to_the_client(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    login = start_login(test_idp, simulated_browser)
    landing = simulated_browser.cancel(stop_at=REDIRECT)
    assert landing.stopped and landing.url.startswith(REDIRECT)
    assert landing.query["error"] == "access_denied"
    assert landing.query["state"] == login.state
    assert "code" not in landing.query


def test_logins_are_counted(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    before = test_idp.logins().get("carol", 0)
    log_in(test_idp, simulated_browser, "carol")
    assert test_idp.logins()["carol"] == before + 1


def test_cognito_logout_ends_the_idp_session(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    log_in(test_idp, simulated_browser, "alice")
    signed_out = "http://127.0.0.1/signed-out"
    landing = simulated_browser.get(f"{test_idp.end_session_endpoint}?client_id=portico&logout_uri={signed_out}", stop_at=signed_out)
    assert landing.stopped and landing.url.startswith(signed_out), simulated_browser.urls
    again = start_login(test_idp, simulated_browser)
    assert not again.landing.stopped, "after logout the IdP must ask for the password again"


# ---------------------------------------------------------------------------------------
# Runtime users and clients, revocation


def test_a_user_added_at_runtime_logs_in(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    name = f"dave{secrets.token_hex(3)}"
    user = test_idp.add_user(name, "dave+pw", {"cognito:username": name, "cognito:groups": ["x"], "email": f"{name}@example.org"})
    _, tokens = tokens_for(test_idp, simulated_browser, name)
    claims = verify(test_idp, tokens["id_token"])
    assert claims["sub"] == user.subject and claims["cognito:groups"] == ["x"]
    with pytest.raises(IdPError, match="custom:unknown"):
        test_idp.add_user("erin", "pw", {"custom:unknown": "1"})


def test_a_client_added_at_runtime_works_with_its_exact_redirect(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    redirect = "http://127.0.0.1:5999/auth/openid/abc/callback/"
    client = test_idp.add_client(f"rt-{secrets.token_hex(3)}", "rt/secret+%=", [redirect])
    login = log_in(test_idp, simulated_browser, "alice", client=client.client_id, redirect_uri=redirect)
    response = exchange(test_idp, login.code, client=client.client_id, redirect_uri=redirect, verifier=login.verifier)
    assert response.status_code == 200, response.text
    assert verify(test_idp, response.json()["id_token"], audience=client.client_id)["cognito:username"] == "alice"
    with pytest.raises(IdPError, match="400"):
        test_idp.add_client("broken", "s", ["not a url"])


def test_revocation_is_real_and_recorded(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    _, tokens = tokens_for(test_idp, simulated_browser, "alice")
    portico = test_idp.client("portico")
    response = httpx.post(
        test_idp.revocation_endpoint,
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        headers={"Authorization": portico.basic_auth()},
        timeout=10,
    )
    assert response.status_code == 200
    records = [r for r in test_idp.revocations() if r["token"] == tokens["refresh_token"]]
    assert len(records) == 1
    assert records[0]["prefix"] == tokens["refresh_token"][:12]
    assert records[0]["kind"] == "refresh_token" and records[0]["client_id"] == "portico"
    assert records[0]["token_type_hint"] == "refresh_token"
    refreshed = httpx.post(
        test_idp.token_endpoint,
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers={"Authorization": portico.basic_auth()},
        timeout=10,
    )
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    # Revoking a refresh token revokes its grant, access token included (as Cognito does).
    info = httpx.get(test_idp.userinfo_endpoint, headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10)
    assert info.status_code == 401


def test_a_refresh_token_works_until_revoked(test_idp: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    _, tokens = tokens_for(test_idp, simulated_browser, "bob")
    refreshed = httpx.post(
        test_idp.token_endpoint,
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers={"Authorization": test_idp.client("portico").basic_auth()},
        timeout=10,
    )
    assert refreshed.status_code == 200, refreshed.text
    assert verify(test_idp, refreshed.json()["id_token"])["groups"] == ["radiology"]


# ---------------------------------------------------------------------------------------
# Faults


@pytest.fixture
def faulty_tokens(idp_faults: TestIdP, simulated_browser: SimulatedBrowser) -> Iterator[Any]:
    """Sets an id_token fault, logs alice in, returns (tokens, nonce)."""

    def make(mode: str) -> tuple[dict[str, Any], str]:
        login = log_in(idp_faults, simulated_browser, "alice")
        idp_faults.set_faults(id_token=mode)
        response = exchange(idp_faults, login.code, verifier=login.verifier)
        assert response.status_code == 200, response.text
        return response.json(), login.nonce

    yield make


def real_kid(idp: TestIdP) -> str:
    kid: str = httpx.get(idp.jwks_url, timeout=10).json()["keys"][0]["kid"]
    return kid


def test_fault_bad_signature(idp_faults: TestIdP, faulty_tokens: Any) -> None:
    tokens, nonce = faulty_tokens("bad_signature")
    header, claims, _ = unverified(tokens["id_token"])
    assert header["alg"] == "RS256" and header["kid"] == real_kid(idp_faults)
    assert claims["nonce"] == nonce and claims["iss"] == idp_faults.issuer
    with pytest.raises(jwt.InvalidSignatureError):
        verify(idp_faults, tokens["id_token"])


def test_fault_alg_none(idp_faults: TestIdP, faulty_tokens: Any) -> None:
    tokens, nonce = faulty_tokens("alg_none")
    header, claims, signature = unverified(tokens["id_token"])
    assert header["alg"] == "none" and signature == b""
    assert tokens["id_token"].endswith(".")
    assert claims["nonce"] == nonce and claims["aud"] == "portico"
    with pytest.raises(jwt.InvalidTokenError):
        verify(idp_faults, tokens["id_token"])


def test_fault_hs256_with_the_public_key(idp_faults: TestIdP, faulty_tokens: Any) -> None:
    tokens, _ = faulty_tokens("hs256_public_key")
    token = tokens["id_token"]
    header, claims, signature = unverified(token)
    assert header["alg"] == "HS256" and header["kid"] == real_kid(idp_faults)
    jwk = httpx.get(idp_faults.jwks_url, timeout=10).json()["keys"][0]
    public_key = RSAAlgorithm.from_jwk(json.dumps(jwk))
    assert isinstance(public_key, rsa.RSAPublicKey)
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = token.rsplit(".", 1)[0].encode()
    assert hmac.compare_digest(signature, hmac.new(pem, signing_input, hashlib.sha256).digest())
    assert claims["aud"] == "portico"
    with pytest.raises(jwt.InvalidTokenError):
        verify(idp_faults, token)


def test_fault_wrong_iss(idp_faults: TestIdP, faulty_tokens: Any) -> None:
    tokens, _ = faulty_tokens("wrong_iss")
    _, claims, _ = unverified(tokens["id_token"])
    assert claims["iss"] != idp_faults.issuer
    with pytest.raises(jwt.InvalidIssuerError):
        verify(idp_faults, tokens["id_token"])
    # Signed with the real key: only the issuer is wrong.
    key = jwks_key(idp_faults, real_kid(idp_faults))
    jwt.decode(tokens["id_token"], key=key, algorithms=["RS256"], audience="portico")


def test_fault_wrong_aud(idp_faults: TestIdP, faulty_tokens: Any) -> None:
    tokens, _ = faulty_tokens("wrong_aud")
    _, claims, _ = unverified(tokens["id_token"])
    assert claims["aud"] != "portico"
    with pytest.raises(jwt.InvalidAudienceError):
        verify(idp_faults, tokens["id_token"])
    key = jwks_key(idp_faults, real_kid(idp_faults))
    jwt.decode(tokens["id_token"], key=key, algorithms=["RS256"], audience=claims["aud"], issuer=idp_faults.issuer)


def test_fault_expired(idp_faults: TestIdP, faulty_tokens: Any) -> None:
    tokens, _ = faulty_tokens("expired")
    _, claims, _ = unverified(tokens["id_token"])
    now = time.time()
    assert now - 2 * 3600 - 60 < claims["exp"] <= now - 2 * 3600 + 1
    assert claims["iat"] < claims["exp"]
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(idp_faults, tokens["id_token"])
    key = jwks_key(idp_faults, real_kid(idp_faults))
    jwt.decode(tokens["id_token"], key=key, algorithms=["RS256"], audience="portico", options={"verify_exp": False})


def test_fault_not_yet_valid(idp_faults: TestIdP, faulty_tokens: Any) -> None:
    tokens, _ = faulty_tokens("not_yet_valid")
    _, claims, _ = unverified(tokens["id_token"])
    now = time.time()
    assert now + 540 < claims["iat"] <= now + 601 and claims["nbf"] == claims["iat"]
    assert claims["exp"] > claims["iat"]
    with pytest.raises(jwt.ImmatureSignatureError):
        verify(idp_faults, tokens["id_token"])


def test_faults_reset_gives_real_tokens_again(idp_faults: TestIdP, faulty_tokens: Any, simulated_browser: SimulatedBrowser) -> None:
    tokens, _ = faulty_tokens("alg_none")
    assert unverified(tokens["id_token"])[0]["alg"] == "none"
    idp_faults.reset_faults()
    assert idp_faults.faults()["id_token"] is None
    again = start_login(idp_faults, simulated_browser)  # the IdP session skips the form
    response = exchange(idp_faults, again.code, verifier=again.verifier)
    assert verify(idp_faults, response.json()["id_token"])["nonce"] == again.nonce


def test_fault_token_delay(idp_faults: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    login = log_in(idp_faults, simulated_browser, "alice")
    idp_faults.set_faults(token_delay_ms=700)
    started = time.monotonic()
    response = exchange(idp_faults, login.code, verifier=login.verifier)
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and elapsed >= 0.7
    idp_faults.set_faults(token_delay_ms=0)
    login = start_login(idp_faults, simulated_browser)
    started = time.monotonic()
    assert exchange(idp_faults, login.code, verifier=login.verifier).status_code == 200
    assert time.monotonic() - started < 0.5


def test_fault_token_error(idp_faults: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    login = log_in(idp_faults, simulated_browser, "alice")
    idp_faults.set_faults(token_error="invalid_grant")
    response = exchange(idp_faults, login.code, verifier=login.verifier)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    idp_faults.set_faults(token_error=None)
    assert exchange(idp_faults, login.code, verifier=login.verifier).status_code == 200, "the fault must not consume the code"


@pytest.mark.parametrize("mode", ["malformed", "missing_sub", "error"])
def test_fault_userinfo(idp_faults: TestIdP, simulated_browser: SimulatedBrowser, mode: str) -> None:
    _, tokens = tokens_for(idp_faults, simulated_browser, "alice")
    idp_faults.set_faults(userinfo=mode)
    response = httpx.get(idp_faults.userinfo_endpoint, headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10)
    if mode == "malformed":
        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            response.json()
    elif mode == "missing_sub":
        assert response.status_code == 200
        body = response.json()
        assert "sub" not in body and body["cognito:username"] == "alice"
    else:
        assert response.status_code == 500
    idp_faults.reset_faults()
    response = httpx.get(idp_faults.userinfo_endpoint, headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10)
    assert response.status_code == 200 and response.json()["sub"] == idp_faults.user("alice").subject


def test_fault_authorize_error(idp_faults: TestIdP, simulated_browser: SimulatedBrowser) -> None:
    idp_faults.set_faults(authorize_error="unauthorized_client")
    login = start_login(idp_faults, simulated_browser)
    assert login.landing.stopped
    assert login.landing.query["error"] == "unauthorized_client"
    assert login.landing.query["state"] == login.state
    assert not any("/interaction/" in url for url in simulated_browser.urls)


def test_unknown_faults_are_refused(idp_faults: TestIdP) -> None:
    with pytest.raises(IdPError, match="unknown fault"):
        idp_faults.set_faults(id_tokn="alg_none")
    with pytest.raises(IdPError, match="id_token fault"):
        idp_faults.set_faults(id_token="sideways")
    assert idp_faults.faults()["id_token"] is None


# ---------------------------------------------------------------------------------------
# Storage and the process


@pytest.mark.slow
def test_tokens_survive_many_later_logins(test_idp: TestIdP) -> None:
    """oidc-provider's built-in store is an LRU of 1,000 entries in two generations: past
    2,000 newer entries a token is gone (measured: 430 logins, then userinfo answers 401).
    Each login stores about five entries; this one keeps everything until it expires."""
    with SimulatedBrowser() as first:
        _, tokens = tokens_for(test_idp, first, "bob")

    def stored() -> int:
        count: int = httpx.get(f"{test_idp.issuer}/__test/health", timeout=10).json()["stored"]
        return count

    logins = 0
    start = stored()
    while stored() < start + 2100:
        for _ in range(50):
            with SimulatedBrowser() as browser:
                log_in(test_idp, browser, "bob", pkce=False)
        logins += 50
        assert logins <= 800, "logins store fewer entries than expected"
    info = httpx.get(test_idp.userinfo_endpoint, headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10)
    assert info.status_code == 200, info.text


@pytest.mark.slow
def test_the_idp_stops_on_sigterm_and_on_stdin_eof() -> None:
    for how in ("sigterm", "stdin"):
        idp = TestIdP([], [])
        idp.start()
        try:
            assert httpx.get(idp.discovery_url, timeout=10).status_code == 200
            process = idp.process
            if how == "sigterm":
                process.send_signal(signal.SIGTERM)
            else:
                assert process.stdin is not None
                process.stdin.close()
            assert process.wait(timeout=5) == 0
            assert "stopping" in idp.stderr_text()
        finally:
            idp.stop()


def test_a_missing_install_says_what_to_run(tmp_path: Path) -> None:
    script = tmp_path / "idp.mjs"
    script.write_text(IDP_SCRIPT.read_text())
    with pytest.raises(IdPError, match=r"npm ci --prefix tests/idp"):
        TestIdP([], [], script=script).start()


def test_a_failing_start_reports_stderr(tmp_path: Path) -> None:
    (tmp_path / "node_modules" / "oidc-provider").mkdir(parents=True)
    script = tmp_path / "idp.mjs"
    script.write_text("console.error('boom: cannot start'); process.exit(3);\n")
    with pytest.raises(IdPError, match=r"(?s)code 3.*boom: cannot start"):
        TestIdP([], [], script=script).start()
