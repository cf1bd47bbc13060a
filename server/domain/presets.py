"""What each kind of identity provider looks like out of the box.

A preset fills what is the same for every deployment of that product: endpoint paths,
scopes, the login button's classes, the token-endpoint authentication method and the
claim mapping. What differs per deployment (the host, a Keycloak realm, an Entra tenant,
a Cognito pool) is either a ``{placeholder}`` the administrator fills, or comes from the
provider's discovery document ("import from discovery URL").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from server.domain.vocabulary import ProviderPreset, TokenEndpointAuthMethod

PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class ClaimDefaults:
    """JMESPath expressions over the ID-token claims merged with userinfo."""

    username: str = "preferred_username || username || sub"
    email: str = "email"
    first_name: str = "given_name"
    last_name: str = "family_name"
    groups: str = "groups"


@dataclass(frozen=True)
class Preset:
    preset: ProviderPreset
    title: str
    # Endpoints are paths on the provider's host, or absolute URLs where the product
    # serves them from another host (Google, Entra's userinfo).
    authorization_endpoint: str | None
    token_endpoint: str | None
    revoke_endpoint: str | None
    userinfo_endpoint: str | None
    jwks_uri: str | None
    issuer: str | None  # "{origin}" stands for scheme://host[:port] of the provider
    hostname_hint: str
    claim_mapping: ClaimDefaults = field(default_factory=ClaimDefaults)
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    login_classes: str = ""
    token_endpoint_auth_method: TokenEndpointAuthMethod = TokenEndpointAuthMethod.CLIENT_SECRET_BASIC
    notes: str = ""

    @property
    def parameters(self) -> list[str]:
        """The placeholders an administrator must fill (``realm``, ``tenant``, ...)."""
        names: list[str] = []
        for template in (self.authorization_endpoint, self.token_endpoint, self.revoke_endpoint,
                         self.userinfo_endpoint, self.jwks_uri, self.issuer):
            for name in PLACEHOLDER.findall(template or ""):
                if name != "origin" and name not in names:
                    names.append(name)
        return names

    @property
    def endpoint_fields(self) -> dict[str, str | None]:
        return {
            "authorization_endpoint": self.authorization_endpoint,
            "token_endpoint": self.token_endpoint,
            "revoke_endpoint": self.revoke_endpoint,
            "userinfo_endpoint": self.userinfo_endpoint,
            "jwks_uri": self.jwks_uri,
            "issuer": self.issuer,
        }


PRESETS: dict[ProviderPreset, Preset] = {
    preset.preset: preset
    for preset in (
        Preset(
            ProviderPreset.COGNITO,
            "AWS Cognito",
            # The hosted UI's paths (the seed article's "Configure Cognito" section).
            authorization_endpoint="/oauth2/authorize",
            token_endpoint="/oauth2/token",
            revoke_endpoint="/oauth2/revoke",
            userinfo_endpoint="/oauth2/userInfo",
            # The pool, not the hosted-UI domain, issues and signs the tokens.
            jwks_uri="https://cognito-idp.{region}.amazonaws.com/{user_pool_id}/.well-known/jwks.json",
            issuer="https://cognito-idp.{region}.amazonaws.com/{user_pool_id}",
            hostname_hint="<prefix>.auth.<region>.amazoncognito.com, or the pool's custom domain",
            claim_mapping=ClaimDefaults(
                username='"cognito:username" || preferred_username || username',
                groups='"cognito:groups"',
            ),
            login_classes="cognito aws login",
            notes="The app client must have a client secret; callback and sign-out URLs must be https and match exactly.",
        ),
        Preset(
            ProviderPreset.KEYCLOAK,
            "Keycloak",
            authorization_endpoint="/realms/{realm}/protocol/openid-connect/auth",
            token_endpoint="/realms/{realm}/protocol/openid-connect/token",
            revoke_endpoint="/realms/{realm}/protocol/openid-connect/revoke",
            userinfo_endpoint="/realms/{realm}/protocol/openid-connect/userinfo",
            jwks_uri="/realms/{realm}/protocol/openid-connect/certs",
            issuer="{origin}/realms/{realm}",
            hostname_hint="the Keycloak server's host",
            claim_mapping=ClaimDefaults(username="preferred_username", groups="groups"),
            login_classes="keycloak login",
            notes="Add a 'groups' mapper to the client scope to receive group names.",
        ),
        Preset(
            ProviderPreset.ENTRA_ID,
            "Microsoft Entra ID",
            authorization_endpoint="/{tenant}/oauth2/v2.0/authorize",
            token_endpoint="/{tenant}/oauth2/v2.0/token",
            revoke_endpoint=None,  # Entra has no RFC 7009 endpoint
            userinfo_endpoint="https://graph.microsoft.com/oidc/userinfo",
            jwks_uri="/{tenant}/discovery/v2.0/keys",
            issuer="{origin}/{tenant}/v2.0",
            hostname_hint="login.microsoftonline.com",
            claim_mapping=ClaimDefaults(username="preferred_username || upn", groups="groups"),
            login_classes="microsoft login",
            notes="Groups arrive as object ids unless the app registration emits names.",
        ),
        Preset(
            ProviderPreset.GOOGLE,
            "Google",
            authorization_endpoint="/o/oauth2/v2/auth",
            token_endpoint="https://oauth2.googleapis.com/token",
            revoke_endpoint="https://oauth2.googleapis.com/revoke",
            userinfo_endpoint="https://openidconnect.googleapis.com/v1/userinfo",
            jwks_uri="https://www.googleapis.com/oauth2/v3/certs",
            issuer="https://accounts.google.com",
            hostname_hint="accounts.google.com",
            # Google has no groups claim; usernames are e-mail addresses.
            claim_mapping=ClaimDefaults(username="email", groups="`[]`"),
            login_classes="google login",
        ),
        Preset(
            ProviderPreset.OKTA,
            "Okta",
            authorization_endpoint="/oauth2/{authorization_server}/v1/authorize",
            token_endpoint="/oauth2/{authorization_server}/v1/token",
            revoke_endpoint="/oauth2/{authorization_server}/v1/revoke",
            userinfo_endpoint="/oauth2/{authorization_server}/v1/userinfo",
            jwks_uri="/oauth2/{authorization_server}/v1/keys",
            issuer="{origin}/oauth2/{authorization_server}",
            hostname_hint="<org>.okta.com (authorization_server is usually 'default')",
            claim_mapping=ClaimDefaults(username="preferred_username", groups="groups"),
            login_classes="okta login",
        ),
        Preset(
            ProviderPreset.FUSIONAUTH,
            "FusionAuth",
            authorization_endpoint="/oauth2/authorize",
            token_endpoint="/oauth2/token",
            revoke_endpoint=None,
            userinfo_endpoint="/oauth2/userinfo",
            jwks_uri="/.well-known/jwks.json",
            issuer="{origin}",
            hostname_hint="the FusionAuth server's host",
            claim_mapping=ClaimDefaults(username="preferred_username || email", groups="roles"),
            login_classes="fusionauth login",
        ),
        Preset(
            ProviderPreset.GENERIC,
            "Generic OpenID Connect",
            authorization_endpoint=None,
            token_endpoint=None,
            revoke_endpoint=None,
            userinfo_endpoint=None,
            jwks_uri=None,
            issuer=None,
            hostname_hint="any OpenID Connect provider: import its discovery URL",
        ),
    )
}


def origin(scheme: str, hostname: str, port: int | None) -> str:
    """scheme://host[:port], the port left out when it is the scheme's default."""
    default = {"https": 443, "http": 80}.get(scheme)
    return f"{scheme}://{hostname}" if port is None or port == default else f"{scheme}://{hostname}:{port}"


def fill(template: str | None, values: dict[str, str]) -> tuple[str | None, list[str]]:
    """The template with its placeholders filled, and the names that had no value."""
    if template is None:
        return None, []
    missing = [name for name in PLACEHOLDER.findall(template) if not values.get(name)]
    if missing:
        return None, missing
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template), []
