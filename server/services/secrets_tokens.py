"""Opaque secrets handed to clients: ``<prefix>_<public id>_<secret>``.

The public id finds the record with an index; only a SHA-256 of the secret is stored
(these secrets carry 256 bits of randomness, so a slow hash adds nothing), and the
comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from server.domain.vocabulary import TokenPrefix

PUBLIC_ID_BYTES = 12
SECRET_BYTES = 32


@dataclass(frozen=True)
class IssuedSecret:
    prefix: TokenPrefix
    public_id: str
    secret: str

    @property
    def token(self) -> str:
        return f"{self.prefix.value}_{self.public_id}_{self.secret}"

    @property
    def secret_hash(self) -> str:
        return hash_secret(self.secret)


@dataclass(frozen=True)
class PresentedSecret:
    prefix: str
    public_id: str
    secret: str


def new_public_id() -> str:
    # url-safe base64 may contain "_", the separator; hex never does.
    return secrets.token_hex(PUBLIC_ID_BYTES)


def issue(prefix: TokenPrefix) -> IssuedSecret:
    return IssuedSecret(prefix=prefix, public_id=new_public_id(), secret=secrets.token_urlsafe(SECRET_BYTES))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,512}$")


def is_plain(text: str) -> bool:
    """Only the characters Portico's tokens and ids are made of (so never a NUL, a quote...)."""
    return _TOKEN.match(text) is not None


def parse(token: str) -> PresentedSecret | None:
    if not is_plain(token):
        return None
    prefix, sep, rest = token.partition("_")
    public_id, sep2, secret = rest.partition("_")
    if not (sep and sep2 and prefix and public_id and secret) or len(token) > 512:
        return None
    return PresentedSecret(prefix=prefix, public_id=public_id, secret=secret)


def matches(secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_hash)
