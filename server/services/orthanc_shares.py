"""Share tokens made for Orthanc's plugin (``PUT tokens/{type}``) and their decoding."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import select

from server.domain.vocabulary import AuditOutcome, EntityType, TokenPrefix
from server.services import audit, secrets_tokens
from server.services.audit import Actor
from server.services.orthanc_authz import ServerInfo
from server.storage.database import Database
from server.storage.tables import Share


class PluginRefusals:
    """Refused plugin credentials: each one audited, and an address that keeps trying is slowed down."""

    def __init__(self, db: Database, limit: str = "30/minute") -> None:
        self._db = db
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._limit = parse(limit)

    def allowed(self, address: str | None) -> bool:
        return self._limiter.test(self._limit, "orthanc-plugin", address or "?")

    def record(self, address: str | None, server_token: str, username: str, reason: str) -> None:
        self._limiter.hit(self._limit, "orthanc-plugin", address or "?")
        with self._db.writing() as session:
            audit.record(
                session,
                Actor(name=f"orthanc-plugin:{username[:100]}", address=address),
                "orthanc.authenticate",
                target_type=EntityType.IMAGING_SERVER.value,
                target_label=server_token[:200],
                outcome=AuditOutcome.DENIED,
                detail=reason,
            )


@dataclass(frozen=True)
class ShareRequest:
    type: str
    resources: list[dict[str, str]]
    expires_at: datetime | None


@dataclass(frozen=True)
class IssuedShare:
    token: str
    url: str | None


def share_url(server: ServerInfo, share_type: str, resources: list[dict[str, Any]], token: str) -> str | None:
    """Where the link leads, by token type: a download goes to Orthanc's archive of the
    study; a viewer link opens the imaging server's viewer on the shared studies."""
    studies = [r for r in resources if r.get("level") == "study"]
    if share_type.startswith("download") and server.rest_url and len(studies) == 1 and studies[0].get("orthanc_id"):
        return f"{server.rest_url}/studies/{quote(studies[0]['orthanc_id'])}/archive?token={quote(token)}"
    if not server.viewer_url:
        return None
    uids = ",".join(r["dicom_uid"] for r in studies if r.get("dicom_uid"))
    separator = "&" if "?" in server.viewer_url else "?"
    query = f"StudyInstanceUIDs={quote(uids, safe=',')}&" if uids else ""
    return f"{server.viewer_url}{separator}{query}token={quote(token)}"


class ShareService:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, server: ServerInfo, request: ShareRequest) -> IssuedShare:
        issued = secrets_tokens.issue(TokenPrefix.SHARE)
        with self._db.writing() as session:
            share = Share(
                public_id=issued.public_id,
                secret_hash=issued.secret_hash,
                type=request.type,
                resources=request.resources,
                imaging_server_id=server.id,
                expires_at=request.expires_at,
            )
            session.add(share)
            session.flush()
            audit.record(
                session,
                Actor(name=f"orthanc:{server.token}"),
                "share.create",
                target_type=EntityType.SHARE.value,
                target_id=share.id,
                target_label=f"{request.type} {issued.public_id}",
                changes={"type": [None, request.type], "resources": [None, request.resources], "expires_at": [None, request.expires_at]},
            )
        return IssuedShare(token=issued.token, url=share_url(server, request.type, request.resources, issued.token))

    def decode(self, server: ServerInfo, token: str) -> dict[str, Any]:
        presented = secrets_tokens.parse(token) if token else None
        if presented is None or presented.prefix != TokenPrefix.SHARE:
            return {"error-code": "invalid"}
        with self._db.reading() as session:
            share = session.scalar(select(Share).where(Share.public_id == presented.public_id))
            if share is None or not secrets_tokens.matches(presented.secret, share.secret_hash):
                return {"error-code": "unknown"}
            if share.imaging_server_id not in (None, server.id):
                return {"error-code": "unknown"}
            if share.expires_at is not None and share.expires_at <= datetime.now(UTC):
                return {"error-code": "expired", "token-type": share.type}
            answer: dict[str, Any] = {
                "token-type": share.type,
                "resources": [
                    {key.replace("_", "-"): value for key, value in resource.items()} for resource in share.resources
                ],
            }
            url = share_url(server, share.type, share.resources, token)
            if url:
                answer["redirect-url"] = url
            return answer
