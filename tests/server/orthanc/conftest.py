"""One `portico serve` per backend for every test of the Orthanc web service (each module
makes its own imaging servers, users and rules on it); the replica test starts its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import LiveServer
from tests.server.orthanc.support import backend_database, running


@pytest.fixture(scope="package", params=["sqlite", "postgresql"])
def orthanc_live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    database_url = backend_database(request, request.param)
    with running(request.param, tmp_path_factory.mktemp(f"orthanc-{request.param}"), database_url) as live:
        yield live
