"""The ``"Authorization"`` block of Orthanc's configuration for one imaging server."""

from __future__ import annotations

from typing import Any

from server.contract.schemas import CredentialCreate
from server.domain.vocabulary import CredentialKind
from server.services import entities, records
from server.services.records import WriteContext
from server.services.site import get_site
from server.storage.tables import ImagingServer


def orthanc_configuration(ctx: WriteContext, server: ImagingServer) -> dict[str, Any]:
    """Mint a plugin credential bound to ``server`` and return the block that uses it.

    The credential's secret appears here once; Portico keeps only its hash.
    """
    credential = records.create_record(
        entities.CREDENTIALS,
        CredentialCreate(
            kind=CredentialKind.ORTHANC_PLUGIN,
            imaging_server_id=server.id,
            description=f"Orthanc plugin of {server.name} (configuration block)",
        ),
        ctx,
    )
    assert ctx.issued_secret is not None
    base = get_site(ctx.session).base_url.rstrip("/")
    return {
        "Authorization": {
            "WebServiceRootUrl": f"{base}/orthanc/{server.token}/",
            "WebServiceUsername": credential.public_id,
            "WebServicePassword": ctx.issued_secret,
            "WebServiceIdentifier": server.token,
            "TokenHttpHeaders": ["Authorization", "token"],
            "TokenGetArguments": ["token"],
            "CheckedLevel": "studies",
            "StandardConfigurations": ["orthanc-explorer-2", "ohif"],
        }
    }
