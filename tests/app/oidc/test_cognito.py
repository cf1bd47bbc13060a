"""Cognito's naming rules and derived URLs, and the wizard's draft (no network)."""

from __future__ import annotations

import pytest

from app.oidc.cognito import (
    DomainKind,
    WizardDraft,
    check_client_id,
    check_pool_id,
    check_prefix,
    check_region,
    discovery_url,
    domain_from,
    issuer_url,
    jwks_url,
    parse_issuer,
    prefix_domain,
    region_of,
)


@pytest.mark.parametrize("pool_id", ["eu-west-1_AbC123xyz", "us-gov-west-1_x1", "ap-southeast-2_Z"])
def test_well_formed_pool_ids_pass(pool_id: str) -> None:
    assert check_pool_id(pool_id) is None
    assert check_region(region_of(pool_id)) is None


@pytest.mark.parametrize("pool_id", ["", "eu-west-1", "eu-west-1_", "EU-WEST-1_abc", "my-pool", "eu-west-1_ab-c",
                                     "arn:aws:cognito-idp:eu-west-1:123:userpool/eu-west-1_AbC"])
def test_malformed_pool_ids_are_refused_with_an_example(pool_id: str) -> None:
    problem = check_pool_id(pool_id)
    assert problem is not None and "eu-west-1_AbC123xyz" in problem


def test_a_pool_id_of_another_region_is_named() -> None:
    assert check_pool_id("eu-west-1_AbC", "us-east-1") == "The pool id belongs to region eu-west-1, not us-east-1: check the region."


def test_regions() -> None:
    assert check_region("eu-central-1") is None and check_region("us-gov-east-1") is None
    assert "not an AWS region" in (check_region("europe") or "")
    assert check_region("") is not None


def test_derived_urls() -> None:
    issuer = issuer_url("eu-west-1", "eu-west-1_AbC123xyz")
    assert issuer == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123xyz"
    assert discovery_url(issuer) == issuer + "/.well-known/openid-configuration"
    assert jwks_url(issuer + "/") == issuer + "/.well-known/jwks.json"
    assert parse_issuer(issuer) == ("eu-west-1", "eu-west-1_AbC123xyz")
    assert parse_issuer("https://login.example.org/realms/x") is None
    assert prefix_domain("hospital-pacs", "eu-west-1") == "hospital-pacs.auth.eu-west-1.amazoncognito.com"


def test_prefixes_follow_cognitos_rules() -> None:
    assert check_prefix("hospital-pacs") is None
    assert "aws" in (check_prefix("my-aws-login") or "")
    assert check_prefix("-bad") is not None and check_prefix("Upper") is not None and check_prefix("") is not None


def test_client_ids() -> None:
    assert check_client_id("1h57kf5cpq17m0eml12EXAMPLE") is None
    assert check_client_id("") is not None and check_client_id("has space") is not None


def test_domains_of_each_kind() -> None:
    domain, problem = domain_from(DomainKind.PREFIX, "hospital-pacs", "eu-west-1")
    assert problem is None and domain is not None
    assert domain.base_url == "https://hospital-pacs.auth.eu-west-1.amazoncognito.com"
    pasted, _ = domain_from(DomainKind.PREFIX, "hospital-pacs.auth.eu-west-1.amazoncognito.com", "eu-west-1")
    assert pasted == domain
    _, other_region = domain_from(DomainKind.PREFIX, "x.auth.us-east-1.amazoncognito.com", "eu-west-1")
    assert other_region == "This domain is in region us-east-1, but the user pool is in eu-west-1."
    custom, _ = domain_from(DomainKind.CUSTOM, "https://Auth.Hospital.example/", "eu-west-1")
    assert custom is not None and custom.base_url == "https://auth.hospital.example"
    assert domain_from(DomainKind.CUSTOM, "not a host", "eu-west-1")[0] is None
    loopback, _ = domain_from(DomainKind.URL, "http://127.0.0.1:9000", "eu-west-1")
    assert loopback is not None and (loopback.scheme, loopback.hostname, loopback.port) == ("http", "127.0.0.1", 9000)
    assert loopback.is_loopback and loopback.base_url == "http://127.0.0.1:9000"
    _, remote_http = domain_from(DomainKind.URL, "http://idp.example.org", "eu-west-1")
    assert remote_http is not None and "loopback" in remote_http
    assert domain_from(DomainKind.URL, "https://idp.example.org/some/path", "eu-west-1")[1] is not None


def test_the_draft_never_keeps_a_secret() -> None:
    draft = WizardDraft(page=3, region="eu-west-1", pool_id="eu-west-1_AbC", client_id="abc", provider_id=4)
    text = draft.to_json()
    assert "secret" not in text
    assert WizardDraft.from_json(text) == draft
    smuggled = WizardDraft.from_json('{"region": "eu-west-1", "client_secret": "s3cret"}')
    assert smuggled is not None and "s3cret" not in smuggled.to_json()
    assert WizardDraft.from_json("not json") is None and WizardDraft.from_json("[1]") is None
