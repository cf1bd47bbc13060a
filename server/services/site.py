"""The Site: the one record that says where this deployment is reached from outside."""

from __future__ import annotations

from sqlalchemy.orm import Session

from server.contract.errors import ValidationFailed
from server.contract.schemas import SiteRead, SiteUpdate
from server.domain.vocabulary import EntityType, SiteEnvironment
from server.services import audit
from server.services.audit import Actor
from server.services.records import EntitySpec, check_version
from server.storage.tables import Site

SITE_ID = 1
DEFAULT_URL = "http://localhost:8000"

SITE_SPEC: EntitySpec[Site] = EntitySpec(entity=EntityType.SITE, table=Site, noun="site", label=lambda row: row.base_url)


def get_site(session: Session) -> Site:
    site = session.get(Site, SITE_ID)
    if site is None:
        site = Site(
            id=SITE_ID,
            production_url=DEFAULT_URL,
            development_url=DEFAULT_URL,
            environment=SiteEnvironment.PRODUCTION.value,
        )
        session.add(site)
        session.flush()
    return site


def site_read(site: Site) -> SiteRead:
    return SiteRead.model_validate(site)


def update_site(session: Session, actor: Actor, body: SiteUpdate) -> Site:
    site = session.get(Site, SITE_ID, with_for_update=True) or get_site(session)
    check_version(SITE_SPEC, site, body.version, lambda row: site_read(row).model_dump(mode="json"))
    before = {"production_url": site.production_url, "development_url": site.development_url, "environment": site.environment}
    for name, value in body.model_dump(exclude_unset=True, exclude={"version"}).items():
        if value is None:
            raise ValidationFailed.on_field(name, "may not be null")
        setattr(site, name, value)
    session.flush()
    after = {"production_url": site.production_url, "development_url": site.development_url, "environment": site.environment}
    changes = audit.diff(before, after)
    if changes:
        audit.record(session, actor, "site.update", target_type=EntityType.SITE.value, target_id=SITE_ID, target_label=site.base_url, changes=changes)
    return site
