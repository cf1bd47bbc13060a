"""The admin API that helps set single sign-on up: presets, discovery import, the claim
mapping sandbox, and the URLs an identity provider must register."""

from __future__ import annotations

import socket

import pytest

from tests.server.api.support import API, assert_error, create
from tests.server.sso.conftest import Wiring
from tests.support.idp import TestIdP

PRESET_NAMES = {"cognito", "keycloak", "entra-id", "google", "okta", "fusionauth", "generic"}


def test_presets_describe_every_provider_kind(portico) -> None:  # type: ignore[no-untyped-def]
    presets = {preset["preset"]: preset for preset in portico.client.get(f"{API}/provider-presets").json()}
    assert set(presets) == PRESET_NAMES
    cognito = presets["cognito"]
    assert (cognito["authorization_endpoint"], cognito["token_endpoint"], cognito["revoke_endpoint"], cognito["userinfo_endpoint"]) == (
        "/oauth2/authorize", "/oauth2/token", "/oauth2/revoke", "/oauth2/userInfo")
    assert cognito["login_classes"] == "cognito aws login"
    assert cognito["claim_mapping"]["groups"] == '"cognito:groups"'
    assert cognito["parameters"] == ["region", "user_pool_id"]
    assert presets["keycloak"]["parameters"] == ["realm"]
    assert "upn" in presets["entra-id"]["claim_mapping"]["username"]


def test_a_preset_fills_the_provider_from_its_parameters(portico) -> None:  # type: ignore[no-untyped-def]
    created = create(portico.client, "providers", {
        "name": portico.unique("kc"), "preset": "keycloak", "hostname": "sso.hospital.test", "parameters": {"realm": "radiology"},
    })
    assert created["authorization_endpoint"] == "/realms/radiology/protocol/openid-connect/auth"
    assert created["jwks_uri"] == "/realms/radiology/protocol/openid-connect/certs"
    assert created["issuer"] == "https://sso.hospital.test/realms/radiology"
    assert created["claim_mapping"]["username"] == "preferred_username"
    cognito = create(portico.client, "providers", {
        "name": portico.unique("cog"), "preset": "cognito", "hostname": "pacs.auth.eu-west-1.amazoncognito.com",
        "parameters": {"region": "eu-west-1", "user_pool_id": "eu-west-1_AbC123xyz"},
    })
    assert cognito["issuer"] == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123xyz"
    assert cognito["userinfo_endpoint"] == "/oauth2/userInfo"


def test_discovery_fills_a_provider_and_names_what_it_lacks(portico, idp: TestIdP) -> None:  # type: ignore[no-untyped-def]
    response = portico.client.post(f"{API}/providers/discover", json={"url": idp.issuer, "preset": "cognito"})
    assert response.status_code == 200, response.text
    found = response.json()
    assert found["discovery_url"] == idp.discovery_url
    provider = found["provider"]
    assert provider["issuer"] == idp.issuer and provider["scheme"] == "http"
    assert provider["authorization_endpoint"] == "/oauth2/authorize"  # same origin: kept as a path
    assert provider["token_endpoint_auth_method"] == "client_secret_basic"
    assert found["missing"] == []


def test_discovery_of_something_that_is_not_a_provider_says_so(portico) -> None:  # type: ignore[no-untyped-def]
    not_json = portico.client.post(f"{API}/providers/discover", json={"url": portico.url + "/healthz"})
    # /healthz/.well-known/openid-configuration does not exist on Portico: 404 → a field error.
    assert_error(not_json, 422, "validation_failed", field="url")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    unreachable = portico.client.post(f"{API}/providers/discover", json={"url": dead})
    assert unreachable.status_code == 502 and "cannot connect" in unreachable.json()["error"]["message"]
    assert_error(portico.client.post(f"{API}/providers/discover", json={"url": "ftp://x"}), 422, "validation_failed", field="url")


def test_discovery_reports_missing_endpoints(portico) -> None:  # type: ignore[no-untyped-def]
    # Portico's own discovery document has no userinfo endpoint: a real, partial document.
    found = portico.client.post(f"{API}/providers/discover", json={"url": portico.url}).json()
    missing = {item["field"]: item["message"] for item in found["missing"]}
    assert "userinfo_endpoint" in missing and "Portico works without it" in missing["userinfo_endpoint"]


CLAIMS = {"sub": "abc", "cognito:username": "alice", "email": "alice@hospital.test", "given_name": "Alice",
          "family_name": "Archer", "cognito:groups": ["radiology", "admins", 7]}


def test_the_sandbox_evaluates_a_mapping(portico) -> None:  # type: ignore[no-untyped-def]
    mapping = {"username": '"cognito:username" || sub', "email": "email", "first_name": "given_name",
               "last_name": "family_name", "groups": '"cognito:groups"'}
    mapped = portico.client.post(f"{API}/claim-mapping/evaluate", json={"mapping": mapping, "claims": CLAIMS}).json()
    assert (mapped["username"], mapped["email"], mapped["groups"], mapped["usable"]) == (
        "alice", "alice@hospital.test", ["radiology", "admins"], True)
    assert [problem["field"] for problem in mapped["problems"]] == ["groups"]  # the 7 is reported, not kept

    nothing = portico.client.post(f"{API}/claim-mapping/evaluate", json={"mapping": {**mapping, "username": "preferred_username"},
                                                                         "claims": CLAIMS}).json()
    assert nothing["usable"] is False and nothing["username"] is None
    assert "found no username" in nothing["problems"][0]["message"] and "cognito:username" in nothing["problems"][0]["message"]


@pytest.mark.parametrize("expression", ["cognito:username", "[", "foo.`bar"])
def test_a_bad_expression_is_refused_with_the_parsers_message(portico, expression: str) -> None:  # type: ignore[no-untyped-def]
    response = portico.client.post(f"{API}/claim-mapping/evaluate", json={"mapping": {"username": expression}, "claims": CLAIMS})
    error = assert_error(response, 422, "validation_failed", field="mapping.username")
    assert "not a valid JMESPath expression" in error["fields"][0]["message"]
    saved = portico.client.post(f"{API}/providers", json={"name": portico.unique("bad"), "hostname": "h", "authorization_endpoint": "/a",
                                                          "token_endpoint": "/t", "claim_mapping": {"username": expression}})
    assert_error(saved, 422, "validation_failed", field="claim_mapping.username")


def test_the_urls_to_register_follow_the_site(cognito: Wiring) -> None:
    urls = cognito.urls
    token = cognito.auth_server["token"]
    base = cognito.portico.url
    assert urls["callback"] == f"{base}/auth/openid/{token}/callback/"
    assert urls["login"] == f"{base}/auth/openid/{token}/"
    assert urls["logout"] == f"{base}/auth/openid/{token}/logout/"
    assert "register them exactly" in urls["policy"]
    assert urls["warnings"] == []  # loopback http is fine for a test setup


def test_cognito_urls_warn_when_not_https_and_omit_default_ports(portico, cognito: Wiring) -> None:  # type: ignore[no-untyped-def]
    api = portico.client
    site = api.get(f"{API}/site").json()
    try:
        changed = api.patch(f"{API}/site", json={"version": site["version"], "production_url": "http://PORTICO.hospital.test:80/"}).json()
        urls = api.get(f"{API}/auth-servers/{cognito.auth_server['id']}/urls").json()
        assert urls["callback"].startswith("http://portico.hospital.test/auth/openid/")  # lower case, no :80
        assert any("Cognito refuses callback URLs that are not https" in warning for warning in urls["warnings"])
        changed = api.patch(f"{API}/site", json={"version": changed["version"], "production_url": "https://portico.hospital.test:443"}).json()
        urls = api.get(f"{API}/auth-servers/{cognito.auth_server['id']}/urls").json()
        assert urls["callback"].startswith("https://portico.hospital.test/auth/openid/") and urls["warnings"] == []
    finally:
        current = api.get(f"{API}/site").json()
        api.patch(f"{API}/site", json={"version": current["version"], "production_url": portico.url})


def test_setup_calls_need_permission(portico) -> None:  # type: ignore[no-untyped-def]
    with portico.anonymous() as anonymous:
        for method, path in (("get", "provider-presets"), ("post", "providers/discover"), ("post", "claim-mapping/evaluate"),
                             ("get", "auth-servers/1/urls")):
            assert anonymous.request(method, f"{API}/{path}", json={}).status_code == 401


def test_a_cognito_provider_without_its_pool_is_refused(portico) -> None:  # type: ignore[no-untyped-def]
    body = {"name": portico.unique("cog"), "preset": "cognito", "hostname": "pacs.auth.eu-west-1.amazoncognito.com"}
    error = assert_error(portico.client.post(f"{API}/providers", json=body), 422, "validation_failed")
    assert {field["field"] for field in error["fields"]} == {"parameters.region"}
    # Without ID tokens required, the pool is not needed.
    create(portico.client, "providers", {**body, "require_id_token": False})


def test_an_overlong_email_claim_is_ignored_with_a_reason(portico) -> None:  # type: ignore[no-untyped-def]
    claims = {"sub": "abc", "preferred_username": "eve", "email": "e" * 400 + "@x.test"}
    mapped = portico.client.post(f"{API}/claim-mapping/evaluate", json={"mapping": {}, "claims": claims}).json()
    assert mapped["email"] is None and mapped["usable"] is True
    assert any(problem["field"] == "email" and "longer than 320" in problem["message"] for problem in mapped["problems"])
