"""Only real Orthanc ids reach the URL of an ancestry look-up."""

from __future__ import annotations

from server.domain.orthanc import Level
from server.services.orthanc_authz import AncestryLookup, ServerInfo


def test_a_malformed_id_is_not_looked_up() -> None:
    lookup = AncestryLookup()
    # An address nothing listens on: any attempt to ask it would be counted.
    server = ServerInfo(id=1, token="t", name="T", is_active=True, viewer_url=None, rest_url="http://127.0.0.1:9", rest_auth=("u", "p"))
    for bad in ("../patients", "abc?x=1", "a#b", "6e2c0ec2-5d99c8ca-c1c21cee-79a09605-68391d1"):
        assert lookup.ancestors(server, Level.STUDY, bad) is None
    assert lookup.lookups == 0
    lookup.close()
