"""Admin-side help for setting up single sign-on: presets, discovery import, the
claim-mapping sandbox and the URLs an identity provider must register."""

from __future__ import annotations

import dataclasses

from sqlalchemy.orm import Session as DbSession

from server.contract import schemas as s
from server.contract.errors import UpstreamFailed, ValidationFailed
from server.domain.presets import PRESETS
from server.services import entities
from server.services.claims import map_claims
from server.services.oidc_discovery import discover as discover_document
from server.services.oidc_rp import IdPError
from server.services.records import get_record
from server.services.sso import auth_server_urls


def presets() -> list[s.PresetRead]:
    return [
        s.PresetRead(
            preset=preset.preset, title=preset.title, hostname_hint=preset.hostname_hint, parameters=preset.parameters,
            authorization_endpoint=preset.authorization_endpoint, token_endpoint=preset.token_endpoint,
            revoke_endpoint=preset.revoke_endpoint, userinfo_endpoint=preset.userinfo_endpoint, jwks_uri=preset.jwks_uri,
            issuer=preset.issuer, scopes=list(preset.scopes), login_classes=preset.login_classes,
            token_endpoint_auth_method=preset.token_endpoint_auth_method,
            claim_mapping=s.ClaimMapping(**dataclasses.asdict(preset.claim_mapping)), notes=preset.notes,
        )
        for preset in PRESETS.values()
    ]


def discover(body: s.DiscoveryRequest, timeout: float) -> s.DiscoveryResponse:
    try:
        found = discover_document(body.url, body.preset, timeout)
    except IdPError as error:
        if error.status == 422:
            raise ValidationFailed.on_field("url", error.message) from None
        raise UpstreamFailed(error.message) from None
    return s.DiscoveryResponse(discovery_url=found.discovery_url, provider=found.provider, missing=found.missing, warnings=found.warnings)


def evaluate(body: s.ClaimMappingEvaluation) -> s.MappedUserRead:
    mapped = map_claims(body.mapping.model_dump(), body.claims)
    return s.MappedUserRead(username=mapped.username, email=mapped.email, first_name=mapped.first_name,
                            last_name=mapped.last_name, groups=mapped.groups, usable=mapped.usable, problems=mapped.problems)


def urls(session: DbSession, auth_server_id: int) -> s.AuthServerUrls:
    found = auth_server_urls(session, get_record(session, entities.AUTH_SERVERS, auth_server_id))
    return s.AuthServerUrls(**dataclasses.asdict(found))


