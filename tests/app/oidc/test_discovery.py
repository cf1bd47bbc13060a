"""The discovery probe against the real test identity provider, a closed port, a name that
does not resolve, and a server that is not an identity provider."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from app.oidc.discovery import probe
from tests.support.idp import TestIdP


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdP]:
    server = TestIdP([], [])
    server.start()
    yield server
    assert server.stop() == 0


def _closed_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


def test_the_test_idp_passes_every_check(idp: TestIdP) -> None:
    report = asyncio.run(probe(idp.issuer))
    assert report.ok and report.reachable
    statuses = {check.name: check.status for check in report.checks}
    assert statuses == {"reachability": "ok", "tls": "warning", "document": "ok", "issuer": "ok", "endpoints": "ok", "jwks": "ok"}
    assert report.discovery_url == idp.discovery_url
    assert report.endpoints["authorization_endpoint"] == idp.authorization_endpoint
    assert report.endpoints["jwks_uri"] == idp.jwks_url
    assert report.jwks_keys >= 1
    assert "loopback" in (report.check("tls") or pytest.fail()).message


def test_a_hosted_ui_elsewhere_is_pointed_out(idp: TestIdP) -> None:
    other = f"http://127.0.0.1:{_closed_port()}"
    report = asyncio.run(probe(idp.issuer, hosted_ui=other))
    domain = [check for check in report.checks if check.name == "domain"]
    assert domain[0].status == "warning" and "not to" in domain[0].message
    assert domain[1].status == "failed" and "connection refused" in domain[1].message


def test_an_issuer_that_does_not_match_fails(idp: TestIdP) -> None:
    # The same document reached under another name of the loopback address.
    report = asyncio.run(probe(idp.issuer.replace("127.0.0.1", "localhost")))
    issuer = report.check("issuer")
    assert issuer is not None and issuer.status == "failed" and idp.issuer in issuer.message
    assert not report.ok


def test_a_closed_port_says_nothing_answers() -> None:
    report = asyncio.run(probe(f"http://127.0.0.1:{_closed_port()}"))
    assert not report.ok and not report.reachable
    reachability = report.check("reachability")
    assert reachability is not None and reachability.status == "failed"
    assert "Nothing answers at 127.0.0.1:" in reachability.message and "connection refused" in reachability.message
    assert report.summary() == reachability.message


def test_a_name_that_does_not_resolve_says_dns_or_offline() -> None:
    report = asyncio.run(probe("https://portico-no-such-pool.invalid"))
    reachability = report.check("reachability")
    assert reachability is not None and reachability.status == "failed"
    assert "does not resolve (DNS)" in reachability.message and "offline" in reachability.message


def test_something_that_is_not_a_provider(idp: TestIdP) -> None:
    report = asyncio.run(probe(idp.issuer + "/nowhere"))
    document = report.check("document")
    assert report.reachable and document is not None and document.status == "failed" and "HTTP 404" in document.message
