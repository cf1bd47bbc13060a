"""Probe an OpenID provider from the administrator's computer (async httpx, no Qt).

``probe`` fetches the discovery document and the JWKS and says, check by check and in
words an administrator can act on, what it found: reachability, TLS, whether the document
names the expected issuer, which endpoints it lists (and whether they are on the hosted-UI
domain that was configured), and how many signing keys the JWKS holds. It never raises for
anything the network or the provider does: a failure is a failed check.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from app.oidc.cognito import discovery_url as discovery_url_of

__all__ = ["Check", "ProbeReport", "describe_transport_error", "probe"]

Status = Literal["ok", "warning", "failed", "skipped"]
ENDPOINTS = (
    ("authorization_endpoint", "authorization", True),
    ("token_endpoint", "token", True),
    ("userinfo_endpoint", "userinfo", False),
    ("jwks_uri", "JWKS", True),
    ("revocation_endpoint", "revocation", False),
)
DEFAULT_TIMEOUT = 8.0


@dataclass(frozen=True)
class Check:
    name: str  # reachability | tls | document | issuer | endpoints | domain | jwks
    status: Status
    message: str


@dataclass(frozen=True)
class ProbeReport:
    discovery_url: str
    checks: list[Check]
    document: dict[str, Any] = field(default_factory=dict)
    jwks_keys: int = 0
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return all(check.status != "failed" for check in self.checks)

    @property
    def reachable(self) -> bool:
        return any(check.name == "reachability" and check.status == "ok" for check in self.checks)

    def check(self, name: str) -> Check | None:
        return next((check for check in self.checks if check.name == name), None)

    @property
    def endpoints(self) -> dict[str, str]:
        return {key: str(self.document[key]) for key, _label, _required in ENDPOINTS if isinstance(self.document.get(key), str)}

    def summary(self) -> str:
        failed = [check.message for check in self.checks if check.status == "failed"]
        if failed:
            return failed[0]
        return f"The provider answers at {self.discovery_url} with {self.jwks_keys} signing key(s)."


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


def describe_transport_error(error: BaseException, url: str, timeout: float) -> tuple[str, str]:
    """(check name, message) for an error that left no HTTP answer."""
    host = _host(url)
    text = str(error)
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    # anyio says "All connection attempts failed"; the OSError underneath has the reason.
    if any(isinstance(item, socket.gaierror) for item in chain):
        return "reachability", (f"The name {urlsplit(url).hostname} does not resolve (DNS). Check its spelling; if it is right, "
                                "this computer is offline or its DNS server does not answer.")
    if any(isinstance(item, ConnectionRefusedError) for item in chain):
        return "reachability", (f"Nothing answers at {host} (connection refused): check the host and port, "
                                "and that the identity provider is running.")
    text = " / ".join(str(item) for item in chain if str(item))
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(cause):
            return "tls", (f"The TLS certificate of {host} could not be verified ({getattr(cause, 'verify_message', '') or cause}). "
                           "Check the domain name; a proxy that inspects TLS would need its certificate installed.")
        if isinstance(cause, ssl.SSLError):
            return "tls", f"The TLS handshake with {host} failed ({cause}): is this an https server on that port?"
    if isinstance(error, httpx.TimeoutException):
        return "reachability", (f"No answer from {host} within {timeout:g} s: the server may be down, or a firewall "
                                "or proxy drops the connection.")
    lowered = text.lower()
    if any(marker in lowered for marker in ("name or service not known", "nodename nor servname", "temporary failure in name resolution",
                                             "getaddrinfo", "no address associated", "name resolution")):
        return "reachability", (f"The name {urlsplit(url).hostname} does not resolve (DNS). Check its spelling; if it is right, "
                                "this computer is offline or its DNS server does not answer.")
    if "connection refused" in lowered or "errno 111" in lowered:
        return "reachability", (f"Nothing answers at {host} (connection refused): check the host and port, "
                                "and that the identity provider is running.")
    if "network is unreachable" in lowered or "no route to host" in lowered:
        return "reachability", f"{host} cannot be reached from this computer (no network route): it looks offline."
    return "reachability", f"Cannot connect to {host}: {text or type(error).__name__}."


async def _get_json(http: httpx.AsyncClient, url: str, what: str, timeout: float) -> tuple[dict[str, Any] | None, list[Check]]:
    try:
        response = await http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as error:
        name, message = describe_transport_error(error, url, timeout)
        return None, [Check(name, "failed", message)]
    checks = [Check("reachability", "ok", f"{_host(url)} answers (HTTP {response.status_code}).")] if what == "discovery" else []
    if response.status_code != 200:
        checks.append(Check("document" if what == "discovery" else "jwks", "failed",
                            f"The {what} URL {url} answered HTTP {response.status_code}: "
                            + ("check the user pool id and region (or the issuer URL)." if what == "discovery" else "check the JWKS URI.")))
        return None, checks
    try:
        body = response.json()
    except ValueError:
        checks.append(Check("document" if what == "discovery" else "jwks", "failed", f"The {what} URL {url} did not answer with JSON."))
        return None, checks
    if not isinstance(body, dict):
        checks.append(Check("document" if what == "discovery" else "jwks", "failed", f"The {what} at {url} is not a JSON object."))
        return None, checks
    return body, checks


def _same_origin(first: str, second: str) -> bool:
    a, b = urlsplit(first), urlsplit(second)
    default = {"https": 443, "http": 80}
    return (a.scheme, a.hostname, a.port or default.get(a.scheme)) == (b.scheme, b.hostname, b.port or default.get(b.scheme))


async def probe(issuer: str, *, hosted_ui: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                http: httpx.AsyncClient | None = None) -> ProbeReport:
    """Probe the provider whose issuer is ``issuer``; ``hosted_ui`` is the base URL where
    the login pages should be (Cognito's domain), when it differs from the issuer."""
    started = time.perf_counter()
    url = discovery_url_of(issuer) if not issuer.rstrip("/").endswith("/.well-known/openid-configuration") else issuer
    owned = http is None
    client = http or httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False)
    checks: list[Check] = []
    document: dict[str, Any] = {}
    keys = 0
    try:
        body, found = await _get_json(client, url, "discovery", timeout)
        checks.extend(found)
        if urlsplit(url).scheme == "https":
            if any(check.name == "reachability" and check.status == "ok" for check in checks):
                checks.append(Check("tls", "ok", f"TLS certificate of {_host(url)} verified."))
        else:
            loopback = urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")
            checks.append(Check("tls", "warning" if loopback else "failed",
                                "Plain http on this computer's loopback address: acceptable for a test identity provider only."
                                if loopback else f"{_host(url)} is plain http: an identity provider must be reached over https."))
        if body is not None:
            document = body
            checks.append(Check("document", "ok", "The discovery document was read."))
            expected = issuer.rstrip("/").removesuffix("/.well-known/openid-configuration")
            actual = str(body.get("issuer", "")).rstrip("/")
            if actual == expected:
                checks.append(Check("issuer", "ok", f"The document names the expected issuer {actual}."))
            else:
                checks.append(Check("issuer", "failed", f"The document names issuer {actual or '(none)'}, not {expected}: "
                                    "ID tokens would be refused. Check the region and user pool id."))
            listed, lacking = [], []
            for key, label, required in ENDPOINTS:
                if isinstance(body.get(key), str):
                    listed.append(label)
                elif required:
                    lacking.append(label)
            if lacking:
                checks.append(Check("endpoints", "failed", f"The document lacks the {', '.join(lacking)} endpoint(s)."))
            else:
                checks.append(Check("endpoints", "ok", f"Endpoints found: {', '.join(listed)}."))
            authorization = body.get("authorization_endpoint")
            if hosted_ui and isinstance(authorization, str):
                if _same_origin(authorization, hosted_ui):
                    checks.append(Check("domain", "ok", f"The login pages are on {_host(hosted_ui)}, the domain configured."))
                else:
                    checks.append(Check("domain", "warning", f"The document sends logins to {_host(authorization)}, not to "
                                        f"{_host(hosted_ui)}: check the domain (App integration → Domain)."))
            jwks_uri = body.get("jwks_uri")
            if isinstance(jwks_uri, str):
                jwks, found = await _get_json(client, jwks_uri, "JWKS", timeout)
                checks.extend(check if check.name != "reachability" else Check("jwks", check.status, check.message) for check in found)
                if jwks is not None:
                    listed_keys = [key for key in jwks.get("keys", []) if isinstance(key, dict)]
                    keys = len(listed_keys)
                    if keys:
                        algorithms = sorted({str(key.get("alg", key.get("kty", "?"))) for key in listed_keys})
                        checks.append(Check("jwks", "ok", f"The JWKS holds {keys} signing key(s) ({', '.join(algorithms)})."))
                    else:
                        checks.append(Check("jwks", "failed", "The JWKS holds no keys: ID tokens could not be verified."))
        if hosted_ui and not _same_origin(hosted_ui, url):
            try:
                response = await client.get(f"{hosted_ui.rstrip('/')}/oauth2/authorize")
            except httpx.HTTPError as error:
                name, message = describe_transport_error(error, hosted_ui, timeout)
                checks.append(Check("domain" if name == "reachability" else name, "failed",
                                    f"The hosted-UI domain: {message}"))
            else:
                checks.append(Check("domain", "ok", f"The hosted-UI domain {_host(hosted_ui)} answers (HTTP {response.status_code})."))
    finally:
        if owned:
            await client.aclose()
    return ProbeReport(url, checks, document, keys, round((time.perf_counter() - started) * 1000, 1))
