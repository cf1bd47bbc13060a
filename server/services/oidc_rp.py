"""The OpenID Connect relying party: what Portico says to an identity provider.

Authorization request (state, nonce, PKCE S256), code exchange with the client
authenticated as the provider wants (client_secret_basic with id and secret form-encoded
before base64, RFC 6749 §2.3.1 — httpx's and authlib's Basic auth skip that step),
ID-token validation against the provider's JWKS, userinfo, and upstream revocation.

Every failure is an ``IdPError`` naming the step and saying, in words an administrator can
act on, what went wrong and what to fix. Nothing here touches the database.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlsplit

import httpx
import jwt
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from server.domain.presets import origin
from server.domain.vocabulary import TokenEndpointAuthMethod

# Only asymmetric algorithms for tokens Portico did not issue: no "none", and no HS*
# (which would let anyone holding the provider's public key forge tokens).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_KEY_TYPE_OF = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
ID_TOKEN_LEEWAY_SECONDS = 120
JWKS_MIN_REFRESH_SECONDS = 60.0
JWKS_MAX_AGE_SECONDS = 3600.0
MAX_RESPONSE_BYTES = 1_000_000


class IdPError(Exception):
    """A login step failed. ``code`` is stable (tests, the console's timeline); ``message``
    says what happened and what to fix."""

    def __init__(self, step: str, code: str, message: str, *, status: int = 502) -> None:
        super().__init__(message)
        self.step = step
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Endpoints:
    authorization: str
    token: str
    revoke: str | None
    userinfo: str | None
    jwks_uri: str | None
    issuer: str | None


def _absolute(base: str, endpoint: str | None) -> str | None:
    if endpoint is None:
        return None
    return base + endpoint if endpoint.startswith("/") else endpoint


def endpoints_of(scheme: str, hostname: str, port: int | None, *, authorization: str, token: str,
                 revoke: str | None, userinfo: str | None, jwks_uri: str | None, issuer: str | None) -> Endpoints:
    base = origin(scheme, hostname, port)
    return Endpoints(
        authorization=_absolute(base, authorization) or "",
        token=_absolute(base, token) or "",
        revoke=_absolute(base, revoke),
        userinfo=_absolute(base, userinfo),
        jwks_uri=_absolute(base, jwks_uri),
        issuer=issuer,
    )


# ---------------------------------------------------------------- the authorization request


def code_challenge(verifier: str) -> str:
    return str(create_s256_code_challenge(verifier))


def authorization_url(endpoints: Endpoints, *, client_id: str, callback_url: str, scopes: list[str],
                      state: str | None, nonce: str | None, code_verifier: str | None) -> str:
    params: list[tuple[str, str]] = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", callback_url),
        ("scope", " ".join(scopes)),
    ]
    if state is not None:
        params.append(("state", state))
    if nonce is not None:
        params.append(("nonce", nonce))
    if code_verifier is not None:
        params += [("code_challenge", code_challenge(code_verifier)), ("code_challenge_method", "S256")]
    return str(add_params_to_uri(endpoints.authorization, params))


# ---------------------------------------------------------------- talking to the provider


def basic_authorization(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1: each part form-encoded, then joined by ':' and base64-encoded."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def send_request(http: httpx.Client, step: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
    try:
        response = http.request(method, url, **kwargs)
    except httpx.TimeoutException:
        raise IdPError(step, "idp_timeout", f"the identity provider at {_host(url)} did not answer within "
                       f"{http.timeout.read or http.timeout.connect} s ({step}); it may be down or overloaded, "
                       "or a firewall drops the connection", status=504) from None
    except httpx.ConnectError as error:
        raise IdPError(step, "idp_unreachable", f"cannot connect to the identity provider at {_host(url)} ({step}): "
                       f"{error}. Check the provider's host name and port, DNS, and that Portico may reach it") from None
    except httpx.HTTPError as error:
        raise IdPError(step, "idp_unreachable", f"the request to {_host(url)} failed ({step}): {error}") from None
    if len(response.content) > MAX_RESPONSE_BYTES:
        raise IdPError(step, "idp_bad_response", f"the identity provider's answer at {url} is larger than {MAX_RESPONSE_BYTES} bytes")
    return response


def json_object(response: httpx.Response, step: str, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        snippet = response.text[:80].replace("\n", " ")
        raise IdPError(step, "idp_bad_response", f"the {what} answered HTTP {response.status_code} with something "
                       f"that is not JSON ({snippet!r}...); check the endpoint URL") from None
    if not isinstance(body, dict):
        raise IdPError(step, "idp_bad_response", f"the {what} answered with JSON that is not an object")
    return body


_TOKEN_ERRORS = {
    "invalid_client": "the identity provider refused the client credentials: check the client id and client "
                      "secret of this auth server (and that the app client has a secret)",
    "unauthorized_client": "the identity provider does not allow this client to use the authorization code flow: "
                           "enable 'Authorization code grant' for the app client",
    "invalid_grant": "the identity provider refused the authorization code: it expired, was already used, "
                     "or the callback URL differs from the one used to log in",
    "redirect_mismatch": "the callback URL is not registered at the identity provider",
}


def exchange_code(http: httpx.Client, endpoints: Endpoints, *, auth_method: str, client_id: str,
                  client_secret: str | None, code: str, callback_url: str, code_verifier: str | None) -> dict[str, Any]:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": callback_url}
    headers = {"Accept": "application/json"}
    if code_verifier is not None:
        form["code_verifier"] = code_verifier
    if auth_method == TokenEndpointAuthMethod.CLIENT_SECRET_BASIC.value:
        if client_secret is None:
            raise IdPError("code_exchange", "client_secret_missing", "the auth server has no client secret, but the "
                           "provider authenticates clients with client_secret_basic: set the secret", status=500)
        headers["Authorization"] = basic_authorization(client_id, client_secret)
    elif auth_method == TokenEndpointAuthMethod.CLIENT_SECRET_POST.value:
        form["client_id"] = client_id
        form["client_secret"] = client_secret or ""
    else:
        form["client_id"] = client_id
    response = send_request(http, "code_exchange", "POST", endpoints.token, data=form, headers=headers)
    body = json_object(response, "code_exchange", "token endpoint")
    if response.status_code != 200 or "error" in body:
        error = str(body.get("error", f"HTTP {response.status_code}"))[:100]
        description = str(body.get("error_description", ""))[:300]
        advice = _TOKEN_ERRORS.get(error, "see the provider's description")
        raise IdPError("code_exchange", f"token_{error}" if error in _TOKEN_ERRORS else "token_error",
                       f"the token endpoint answered {error}{f' ({description})' if description else ''}: {advice}")
    if not isinstance(body.get("access_token"), str):
        raise IdPError("code_exchange", "idp_bad_response", "the token endpoint's answer has no access_token")
    return body


def fetch_userinfo(http: httpx.Client, endpoints: Endpoints, access_token: str, expected_subject: str | None) -> dict[str, Any]:
    assert endpoints.userinfo is not None
    response = send_request(http, "userinfo", "GET", endpoints.userinfo,
                     headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"})
    if response.status_code != 200:
        raise IdPError("userinfo", "userinfo_error", f"the userinfo endpoint answered HTTP {response.status_code}; "
                       "check that the 'openid' scope is granted and the endpoint URL is right")
    claims = json_object(response, "userinfo", "userinfo endpoint")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise IdPError("userinfo", "userinfo_malformed", "the userinfo answer has no 'sub' (subject) claim")
    if expected_subject is not None and subject != expected_subject:
        # OpenID Connect Core §5.3.2: a different subject means the answer is not about this user.
        raise IdPError("userinfo", "userinfo_subject_mismatch",
                       f"userinfo is about subject {subject!r:.60}, the ID token about {expected_subject!r:.60}; refused")
    return claims


def revoke_upstream(http: httpx.Client, endpoints: Endpoints, *, auth_method: str, client_id: str,
                    client_secret: str | None, token: str, hint: str) -> bool:
    """RFC 7009 at the provider. False (logged by the caller) when it did not work:
    the Portico session ends whatever the provider says."""
    if endpoints.revoke is None:
        return False
    form = {"token": token, "token_type_hint": hint}
    headers: dict[str, str] = {}
    if auth_method == TokenEndpointAuthMethod.CLIENT_SECRET_BASIC.value and client_secret is not None:
        headers["Authorization"] = basic_authorization(client_id, client_secret)
    else:
        form["client_id"] = client_id
        if client_secret is not None and auth_method == TokenEndpointAuthMethod.CLIENT_SECRET_POST.value:
            form["client_secret"] = client_secret
    try:
        response = send_request(http, "revoke", "POST", endpoints.revoke, data=form, headers=headers)
    except IdPError:
        return False
    return response.status_code == 200


# ---------------------------------------------------------------- the provider's keys


class JwksCache:
    """The providers' public keys, fetched once and kept; an unknown ``kid`` refetches the
    set once, and never more often than every ``min_refresh`` seconds per provider (a
    stream of tokens with made-up kids must not turn Portico into a request amplifier)."""

    def __init__(self, min_refresh: float = JWKS_MIN_REFRESH_SECONDS, max_age: float = JWKS_MAX_AGE_SECONDS) -> None:
        self._sets: dict[str, tuple[float, jwt.PyJWKSet]] = {}
        self._lock = threading.Lock()
        self._min_refresh = min_refresh
        self._max_age = max_age

    def _fetch(self, http: httpx.Client, uri: str) -> jwt.PyJWKSet:
        response = send_request(http, "jwks", "GET", uri, headers={"Accept": "application/json"})
        if response.status_code != 200:
            raise IdPError("jwks", "jwks_error", f"the provider's JWKS at {uri} answered HTTP {response.status_code}; check jwks_uri")
        body = json_object(response, "jwks", "JWKS endpoint")
        try:
            return jwt.PyJWKSet.from_dict(body)
        except jwt.PyJWTError as error:
            raise IdPError("jwks", "jwks_error", f"the provider's JWKS at {uri} holds no usable key: {error}") from None

    def key(self, http: httpx.Client, uri: str, kid: str | None) -> jwt.PyJWK:
        with self._lock:
            cached = self._sets.get(uri)
        now = time.monotonic()
        if cached is None or now - cached[0] > self._max_age:
            cached = (now, self._fetch(http, uri))
            with self._lock:
                self._sets[uri] = cached
        found = _find_key(cached[1], kid)
        if found is None and now - cached[0] >= self._min_refresh:
            # A kid we have not seen: the provider may have rotated its keys. Once.
            cached = (now, self._fetch(http, uri))
            with self._lock:
                self._sets[uri] = cached
            found = _find_key(cached[1], kid)
        if found is None:
            raise IdPError("id_token", "id_token_unknown_key", f"the ID token names key {kid!r:.60}, which the provider's "
                           f"JWKS ({uri}) does not hold; the token was not signed by this provider")
        return found


def _find_key(keys: jwt.PyJWKSet, kid: str | None) -> jwt.PyJWK | None:
    candidates = [key for key in keys.keys if kid is None or key.key_id == kid]
    if kid is None and len(candidates) != 1:
        return None
    return candidates[0] if candidates else None


def _signing_key(http: httpx.Client, jwks: JwksCache, endpoints: Endpoints, token: str, step: str,
                 what: str) -> tuple[str, jwt.PyJWK]:
    """(algorithm, key) a provider's token must be verified with: an asymmetric algorithm
    only, a key the provider publishes, of the type the algorithm needs (no RS/HS confusion)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as error:
        raise IdPError(step, f"{step}_malformed", f"the {what} is not a JWT: {error}") from None
    algorithm = header.get("alg")
    if algorithm not in ASYMMETRIC_ALGORITHMS:
        raise IdPError(step, f"{step}_algorithm", f"the {what} is signed with {algorithm!r:.20}; Portico accepts "
                       f"only asymmetric algorithms ({', '.join(sorted(ASYMMETRIC_ALGORITHMS))}) from a provider")
    if endpoints.jwks_uri is None or not endpoints.issuer:
        raise IdPError(step, "provider_incomplete", f"the provider has no JWKS URI or issuer configured, so its {what}s "
                       "cannot be checked: import the provider's discovery document", status=500)
    key = jwks.key(http, endpoints.jwks_uri, header.get("kid") if isinstance(header.get("kid"), str) else None)
    if _KEY_TYPE_OF.get(algorithm[:2]) != key.key_type:
        raise IdPError(step, f"{step}_algorithm", f"the {what} says {algorithm} but key {key.key_id!r} is a "
                       f"{key.key_type} key; refused")
    return algorithm, key


def validate_id_token(http: httpx.Client, jwks: JwksCache, endpoints: Endpoints, token: str, *,
                      client_id: str, nonce: str | None, now: float | None = None) -> dict[str, Any]:
    """The ID token's claims, after checking signature, algorithm, iss, aud, azp, exp, iat, nbf and nonce."""
    algorithm, key = _signing_key(http, jwks, endpoints, token, "id_token", "ID token")
    current = time.time() if now is None else now
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[algorithm],
            audience=client_id,
            issuer=endpoints.issuer,
            leeway=ID_TOKEN_LEEWAY_SECONDS,
            options={"require": ["iss", "aud", "exp", "iat", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise IdPError("id_token", "id_token_expired", "the ID token has expired; if this repeats, Portico's clock or "
                       "the provider's is wrong (synchronise both with NTP)") from None
    except jwt.ImmatureSignatureError:
        issued = jwt.decode(token, options={"verify_signature": False}).get("iat")
        skew = f" by about {int(float(issued) - current)} s" if isinstance(issued, int | float) else ""
        raise IdPError("id_token", "id_token_not_yet_valid", f"the ID token is not valid yet: the provider's clock is "
                       f"ahead of Portico's{skew} (more than the {ID_TOKEN_LEEWAY_SECONDS} s allowed); synchronise "
                       "both clocks with NTP") from None
    except jwt.InvalidIssuerError:
        actual = jwt.decode(token, options={"verify_signature": False}).get("iss")
        raise IdPError("id_token", "id_token_issuer", f"the ID token was issued by {actual!r:.200}, but the provider is "
                       f"configured with issuer {endpoints.issuer!r}; correct the provider's issuer") from None
    except jwt.InvalidAudienceError:
        actual = jwt.decode(token, options={"verify_signature": False}).get("aud")
        raise IdPError("id_token", "id_token_audience", f"the ID token is meant for {actual!r:.200}, not for client id "
                       f"{client_id!r}; check the auth server's client id") from None
    except jwt.InvalidSignatureError:
        raise IdPError("id_token", "id_token_signature", "the ID token's signature does not verify with the provider's "
                       "key: it was not issued by this provider, or was altered") from None
    except jwt.MissingRequiredClaimError as error:
        raise IdPError("id_token", "id_token_malformed", f"the ID token lacks the {error.claim!r} claim") from None
    except jwt.PyJWTError as error:
        raise IdPError("id_token", "id_token_invalid", f"the ID token was refused: {error}") from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise IdPError("id_token", "id_token_audience", "the ID token has several audiences and its azp is not this client")
    if nonce is not None and claims.get("nonce") != nonce:
        raise IdPError("id_token", "id_token_nonce", "the ID token's nonce does not match the one this login sent: the "
                       "token belongs to another login (replay?); refused")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise IdPError("id_token", "id_token_malformed", "the ID token's subject (sub) is empty")
    return claims


def verify_access_token(http: httpx.Client, jwks: JwksCache, endpoints: Endpoints, token: str) -> dict[str, Any]:
    """A provider's JWT access token (RFC 9068 and Cognito's): signature with the provider's
    key (asymmetric algorithms only), issuer, expiry. The audience is the caller's to check:
    providers put the client in ``aud`` or in ``client_id``."""
    algorithm, key = _signing_key(http, jwks, endpoints, token, "access_token", "access token")
    try:
        claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=[algorithm], issuer=endpoints.issuer,
                                            leeway=ID_TOKEN_LEEWAY_SECONDS, options={"verify_aud": False, "require": ["iss", "exp", "sub"]})
    except jwt.PyJWTError as error:
        raise IdPError("access_token", "access_token_invalid", f"the access token was refused: {error}") from None
    return claims


def http_client(timeout: float) -> httpx.Client:
    # No redirects: an endpoint that moves must be reconfigured, not followed blindly.
    return httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False, headers={"User-Agent": "Portico"})
