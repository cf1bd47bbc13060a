"""PKCE (RFC 7636) for the console's own test logins: the one-time code Portico hands to the
console's loopback URL is useless without the verifier, which never leaves the console."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from authlib.oauth2.rfc7636 import create_s256_code_challenge


@dataclass(frozen=True)
class PkcePair:
    verifier: str = field(repr=False)

    @property
    def challenge(self) -> str:
        return str(create_s256_code_challenge(self.verifier))


def new_pair() -> PkcePair:
    return PkcePair(secrets.token_urlsafe(48))  # 64 characters, within RFC 7636's 43-128
