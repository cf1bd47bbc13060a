"""AWS Cognito's naming rules and the URLs derived from them (no I/O, no Qt).

A user pool lives in one region and is named ``<region>_<suffix>`` (``eu-west-1_AbC123xyz``).
Its OpenID issuer is ``https://cognito-idp.<region>.amazonaws.com/<pool id>``, which also
serves the discovery document and the JWKS. The hosted UI (authorize, token, userInfo,
revoke) is served by a *domain*: a Cognito prefix domain
``<prefix>.auth.<region>.amazoncognito.com`` or a custom domain of the hospital's own.

For tests (and for any OpenID provider that imitates Cognito's paths) the domain may be
"any URL": then that URL is the issuer and the hosted UI at once, over http if on loopback.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "DomainKind",
    "Domain",
    "WizardDraft",
    "check_client_id",
    "check_pool_id",
    "check_prefix",
    "check_region",
    "discovery_url",
    "issuer_url",
    "jwks_url",
    "parse_issuer",
    "prefix_domain",
    "region_of",
]

REGION_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
POOL_ID_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d_[A-Za-z0-9]+$")
ISSUER_RE = re.compile(r"^https://cognito-idp\.(?P<region>[a-z]{2}(?:-gov)?-[a-z]+-\d)\.amazonaws\.com/(?P<pool>[^/]+)/?$")
PREFIX_DOMAIN_RE = re.compile(r"^(?P<prefix>[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\.auth\.(?P<region>[a-z]{2}(?:-gov)?-[a-z]+-\d)\.amazoncognito\.com$")
PREFIX_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$")
RESERVED_IN_PREFIX = ("aws", "amazon", "cognito")
CLIENT_ID_RE = re.compile(r"^[\w+]+$")


def check_region(region: str) -> str | None:
    """None when ``region`` looks like an AWS region, else what is wrong."""
    if not region:
        return "Enter the region the user pool was created in, e.g. eu-west-1."
    if not REGION_RE.match(region):
        return f"“{region}” is not an AWS region name (like eu-west-1 or us-gov-west-1)."
    return None


def check_pool_id(pool_id: str, region: str | None = None) -> str | None:
    """None when ``pool_id`` is a well-formed user pool id (of ``region``, when given)."""
    if not pool_id:
        return "Enter the user pool id shown on the pool's overview page, e.g. eu-west-1_AbC123xyz."
    if not POOL_ID_RE.match(pool_id):
        return (f"“{pool_id}” is not a user pool id: it is the region, an underscore and letters or digits, "
                "e.g. eu-west-1_AbC123xyz (the pool's name or ARN will not do).")
    if region and region_of(pool_id) != region:
        return f"The pool id belongs to region {region_of(pool_id)}, not {region}: check the region."
    return None


def check_client_id(client_id: str) -> str | None:
    if not client_id:
        return "Enter the app client id (App integration → App clients)."
    if not CLIENT_ID_RE.match(client_id) or len(client_id) > 128:
        return "An app client id has only letters and digits (26 of them at Cognito)."
    return None


def check_prefix(prefix: str) -> str | None:
    if not prefix:
        return "Enter the domain prefix chosen under App integration → Domain."
    if not PREFIX_RE.match(prefix):
        return "A Cognito domain prefix has lower-case letters, digits and inner hyphens only (at most 63)."
    reserved = next((word for word in RESERVED_IN_PREFIX if word in prefix), None)
    if reserved:
        return f"Cognito does not allow “{reserved}” in a domain prefix."
    return None


def region_of(pool_id: str) -> str:
    return pool_id.split("_", 1)[0]


def issuer_url(region: str, pool_id: str) -> str:
    return f"https://cognito-idp.{region}.amazonaws.com/{pool_id}"


def discovery_url(issuer: str) -> str:
    return f"{issuer.rstrip('/')}/.well-known/openid-configuration"


def jwks_url(issuer: str) -> str:
    return f"{issuer.rstrip('/')}/.well-known/jwks.json"


def prefix_domain(prefix: str, region: str) -> str:
    return f"{prefix}.auth.{region}.amazoncognito.com"


def parse_issuer(issuer: str | None) -> tuple[str, str] | None:
    """(region, pool id) of a Cognito issuer URL, or None."""
    match = ISSUER_RE.match(issuer or "")
    return (match["region"], match["pool"]) if match else None


class DomainKind(str, Enum):
    PREFIX = "prefix"  # <prefix>.auth.<region>.amazoncognito.com
    CUSTOM = "custom"  # auth.hospital.example (https, port 443)
    URL = "url"  # advanced: any base URL, which is then also the issuer (tests, look-alikes)


@dataclass(frozen=True)
class Domain:
    """Where the hosted UI is, as scheme/hostname/port (what an OpenID provider stores)."""

    kind: DomainKind
    scheme: str
    hostname: str
    port: int | None

    @property
    def base_url(self) -> str:
        default = {"https": 443, "http": 80}.get(self.scheme)
        port = f":{self.port}" if self.port is not None and self.port != default else ""
        return f"{self.scheme}://{self.hostname}{port}"

    @property
    def is_loopback(self) -> bool:
        return self.hostname in ("127.0.0.1", "localhost", "::1", "[::1]")


def domain_from(kind: DomainKind, value: str, region: str) -> tuple[Domain | None, str | None]:
    """The domain typed in the wizard, or why it is not one."""
    value = value.strip()
    if kind is DomainKind.PREFIX:
        # The whole host name pasted from the AWS console is accepted too.
        match = PREFIX_DOMAIN_RE.match(value.lower())
        if match:
            if match["region"] != region:
                return None, f"This domain is in region {match['region']}, but the user pool is in {region}."
            value = match["prefix"]
        problem = check_prefix(value)
        if problem:
            return None, problem
        return Domain(kind, "https", prefix_domain(value, region), None), None
    if kind is DomainKind.CUSTOM:
        host = value.lower().removeprefix("https://").rstrip("/")
        if not HOSTNAME_RE.match(host):
            return None, "Enter the custom domain's host name only, e.g. auth.hospital.example."
        return Domain(kind, "https", host, None), None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None, "Enter an absolute http(s) URL, e.g. http://127.0.0.1:9000."
    if parts.path not in ("", "/") or parts.query:
        return None, "Enter the base URL only (scheme, host and port), without a path."
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme == "http" and not loopback:
        return None, "Plain http is accepted on this computer's loopback address only (127.0.0.1 or localhost)."
    try:
        port = parts.port
    except ValueError:
        return None, "The port is not a number between 1 and 65535."
    return Domain(kind, parts.scheme, parts.hostname, port), None


@dataclass
class WizardDraft:
    """What the Cognito wizard remembers between runs: never the client secret."""

    page: int = 0
    region: str = ""
    pool_id: str = ""
    client_id: str = ""
    domain_kind: str = DomainKind.PREFIX.value
    domain: str = ""
    name: str = "Cognito"
    description: str = ""
    is_default: bool = True
    group_sync: str = "off"
    provider_id: int | None = None
    auth_server_id: int | None = None
    saved_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> WizardDraft | None:
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        known = {item.name for item in fields(cls)}
        data = {key: value for key, value in data.items() if key in known and "secret" not in key}
        try:
            return cls(**data)
        except TypeError:
            return None
