"""Import a provider from its OpenID Connect discovery document, and say what is missing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from server.contract.errors import FieldError
from server.domain.presets import PRESETS, origin
from server.domain.vocabulary import ProviderPreset, TokenEndpointAuthMethod
from server.services.oidc_rp import ASYMMETRIC_ALGORITHMS, IdPError, http_client, json_object, send_request

WELL_KNOWN = "/.well-known/openid-configuration"


@dataclass
class Discovered:
    discovery_url: str
    provider: dict[str, Any]
    missing: list[FieldError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def discovery_url_of(url: str) -> str:
    url = url.strip()
    return url if url.rstrip("/").endswith(WELL_KNOWN) else url.rstrip("/") + WELL_KNOWN


def _relative(base: str, url: Any) -> str | None:
    """Endpoints on the provider's own origin are kept as paths (they follow a host change)."""
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        return None
    return url[len(base):] if url.startswith(base + "/") else url


def discover(url: str, preset: ProviderPreset, timeout: float) -> Discovered:
    target = discovery_url_of(url)
    if not target.startswith(("https://", "http://")):
        raise IdPError("discovery", "discovery_url_invalid", f"{url!r:.200} is not an http(s) URL", status=422)
    with http_client(timeout) as http:
        response = send_request(http, "discovery", "GET", target, headers={"Accept": "application/json"})
        if response.status_code != 200:
            raise IdPError("discovery", "discovery_error", f"{target} answered HTTP {response.status_code}: "
                           "is this the provider's issuer URL?", status=422)
        document = json_object(response, "discovery", "discovery document")
    issuer = document.get("issuer")
    result = Discovered(target, {"preset": preset.value})
    if not isinstance(issuer, str) or not issuer.startswith(("https://", "http://")):
        result.missing.append(FieldError(field="issuer", message="the document has no issuer URL"))
        base_source = target[: -len(WELL_KNOWN)]
    else:
        base_source = issuer
        result.provider["issuer"] = issuer
        # OpenID Connect Discovery §4.3: the issuer must be the URL the document was fetched under.
        if discovery_url_of(issuer) != target:
            result.warnings.append(f"the document's issuer {issuer} differs from the URL it was fetched from; "
                                   "ID tokens will be checked against the document's issuer")
    parts = urlsplit(base_source)
    scheme = parts.scheme
    result.provider.update(scheme=scheme, hostname=parts.hostname or "", port=parts.port)
    base = origin(scheme, parts.hostname or "", parts.port)
    for name, key, required in (
        ("authorization_endpoint", "authorization_endpoint", True),
        ("token_endpoint", "token_endpoint", True),
        ("userinfo_endpoint", "userinfo_endpoint", False),
        ("revoke_endpoint", "revocation_endpoint", False),
        ("jwks_uri", "jwks_uri", True),
    ):
        value = _relative(base, document.get(key))
        if value is None:
            result.missing.append(FieldError(
                field=name,
                message=f"the document has no {key}" + ("" if required else
                        "; Portico works without it" + (" (logout cannot revoke the provider's tokens)" if key == "revocation_endpoint" else "")),
            ))
        else:
            result.provider[name] = value
    methods = document.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        result.provider["use_pkce"] = False
        result.warnings.append("the provider does not announce PKCE S256; PKCE is turned off for it")
    elif methods is None:
        result.warnings.append("the document does not say whether PKCE is supported; PKCE stays on (turn it off if logins fail)")
    auth_methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if isinstance(auth_methods, list):
        if "client_secret_basic" in auth_methods:
            result.provider["token_endpoint_auth_method"] = TokenEndpointAuthMethod.CLIENT_SECRET_BASIC.value
        elif "client_secret_post" in auth_methods:
            result.provider["token_endpoint_auth_method"] = TokenEndpointAuthMethod.CLIENT_SECRET_POST.value
        else:
            result.warnings.append(f"the provider supports none of client_secret_basic/client_secret_post ({auth_methods})")
    algorithms = document.get("id_token_signing_alg_values_supported")
    if isinstance(algorithms, list) and not set(algorithms) & ASYMMETRIC_ALGORITHMS:
        result.warnings.append(f"the provider signs ID tokens only with {algorithms}; Portico accepts only asymmetric algorithms")
    supported_scopes = document.get("scopes_supported")
    defaults = PRESETS[preset]
    scopes = list(defaults.scopes)
    if isinstance(supported_scopes, list):
        scopes = [scope for scope in scopes if scope in supported_scopes or scope == "openid"]
    result.provider["scopes"] = scopes
    result.provider["login_classes"] = defaults.login_classes
    return result
