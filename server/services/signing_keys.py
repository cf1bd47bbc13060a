"""Portico's signing keys: ES256, one active, the next one published before it signs.

States: ``next`` (published in the JWKS, not yet signing) → ``active`` (signs) →
``retired`` (published until every token it signed has expired, then dropped from the
JWKS). ``rotate`` promotes ``next`` and makes a new ``next``, so verifiers that cache the
JWKS already know a key before any token carries its ``kid``.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from server.domain.vocabulary import EntityType, SigningKeyState
from server.services import audit
from server.services.audit import Actor
from server.services.authz_state import Generation
from server.services.secretbox import SecretBox
from server.storage.database import Database
from server.storage.tables import SigningKey, utcnow

ALGORITHM = "ES256"
RELOAD_INTERVAL = 1.0


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    state: SigningKeyState
    public_jwk: dict[str, Any]
    public_key: ec.EllipticCurvePublicKey
    private_key: ec.EllipticCurvePrivateKey | None
    retired_at: datetime | None


def _new_key(session: Session, box: SecretBox, state: SigningKeyState, actor: Actor) -> SigningKey:
    private_key = ec.generate_private_key(ec.SECP256R1())
    kid = secrets.token_urlsafe(12)
    public_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private_key.public_key()))
    public_jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    row = SigningKey(
        kid=kid,
        algorithm=ALGORITHM,
        private_key_encrypted=box.encrypt(pem),
        public_jwk=public_jwk,
        state=state.value,
        activated_at=utcnow() if state == SigningKeyState.ACTIVE else None,
    )
    session.add(row)
    session.flush()
    audit.record(
        session, actor, "signing-key.create", target_type=EntityType.SIGNING_KEY.value, target_id=row.id,
        target_label=kid, changes={"state": [None, state.value], "private_key": [None, audit.MASK]},
    )
    return row


_PG_KEYS_LOCK = 0x4B455953  # "KEYS"


def _lock(session: Session) -> None:
    # Replicas starting together (or a rotation during a start) must not each add keys.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_KEYS_LOCK})


def ensure_keys(session: Session, box: SecretBox) -> None:
    """An installation always has an active key and a next one (made on first start)."""
    _lock(session)
    states = {row.state for row in session.scalars(select(SigningKey).where(SigningKey.state != SigningKeyState.RETIRED))}
    actor = Actor.system("keys")
    if SigningKeyState.ACTIVE not in states:
        _new_key(session, box, SigningKeyState.ACTIVE, actor)
    if SigningKeyState.NEXT not in states:
        _new_key(session, box, SigningKeyState.NEXT, actor)


def rotate(db: Database, box: SecretBox, actor: Actor) -> tuple[str, str]:
    """next → active, active → retired, and a new next. Returns (new active kid, new next kid)."""
    with db.writing() as session:
        ensure_keys(session, box)
        current = list(session.scalars(select(SigningKey).where(SigningKey.state != SigningKeyState.RETIRED)))
        rows = {row.state: row for row in current}
        if len(current) != 2:
            raise RuntimeError(f"expected one active and one next signing key, found {sorted(row.state for row in current)}")
        now = utcnow()
        old, promoted = rows[SigningKeyState.ACTIVE], rows[SigningKeyState.NEXT]
        # One step at a time: at no moment may two keys be active (a unique index says so).
        old.state, old.retired_at = SigningKeyState.RETIRED.value, now
        session.flush()
        promoted.state, promoted.activated_at = SigningKeyState.ACTIVE.value, now
        session.flush()
        created = _new_key(session, box, SigningKeyState.NEXT, actor)
        audit.record(
            session, actor, "signing-key.rotate", target_type=EntityType.SIGNING_KEY.value, target_id=promoted.id,
            target_label=promoted.kid, changes={"active": [old.kid, promoted.kid], "next": [promoted.kid, created.kid]},
        )
        return promoted.kid, created.kid


class KeyRing:
    """The keys in memory: the active one signs, every published one verifies.

    Reloaded when the generation moves: a rotation, by this process or another, is a
    watched commit like any other."""

    def __init__(self, db: Database, box: SecretBox, token_lifetime: timedelta, generation: Generation) -> None:
        self._db = db
        self._box = box
        self._generation = generation
        self._loaded_generation = -1
        self._token_lifetime = token_lifetime
        self._lock = threading.Lock()
        self._keys: dict[str, LoadedKey] = {}
        self._active: LoadedKey | None = None
        self._loaded_at = 0.0

    def _current(self) -> None:
        if self._loaded_generation != self._generation.value:
            self.reload()

    def reload(self) -> None:
        self._loaded_generation = self._generation.value
        self._loaded_at = time.monotonic()
        keys: dict[str, LoadedKey] = {}
        active = None
        with self._db.reading() as session:
            for row in session.scalars(select(SigningKey)):
                private = None
                if row.state == SigningKeyState.ACTIVE:
                    loaded = serialization.load_pem_private_key(self._box.decrypt(row.private_key_encrypted).encode(), password=None)
                    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
                    private = loaded
                public = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(row.public_jwk))
                assert isinstance(public, ec.EllipticCurvePublicKey)
                key = LoadedKey(row.kid, SigningKeyState(row.state), row.public_jwk, public, private, row.retired_at)
                keys[row.kid] = key
                if private is not None:
                    active = key
        with self._lock:
            self._keys, self._active = keys, active

    @property
    def active(self) -> LoadedKey:
        self._current()
        assert self._active is not None, "no active signing key: start the server once, or run `portico keys rotate`"
        return self._active

    def verification_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        self._current()
        if kid not in self._keys and time.monotonic() - self._loaded_at > RELOAD_INTERVAL:
            # Perhaps a key made by another process since we last looked; at most once a
            # second, so that made-up kids cannot turn every request into a database read.
            self.reload()
        key = self._keys.get(kid)
        if key is None or not self._published(key):
            return None
        return key.public_key

    def _published(self, key: LoadedKey) -> bool:
        # A retired key verifies (and is published) until the last token it signed expires.
        return key.retired_at is None or key.retired_at + self._token_lifetime > utcnow()

    def jwks(self) -> dict[str, Any]:
        self._current()
        return {"keys": [key.public_jwk for key in self._keys.values() if self._published(key)]}
