"""Seed a Portico SQLite data directory with a realistic authorization workload, fast.

Used by ``bench/validate.py``. The schema comes from ``python -m server migrate`` (run
by the caller); the rows go in with SQLAlchemy Core bulk inserts (one executemany per
table, one transaction) through the tables of ``server.storage.tables``, so seeding
10,000 users and 20,000 rules takes about a second instead of minutes through the API.

Secrets follow ``server.services.secrets_tokens``: an API token is
``pat_<24 hex>_<urlsafe secret>`` and its credential row stores ``public_id`` =
``pat_<24 hex>`` and ``secret_hash`` = sha256(secret).hexdigest(); a plugin credential is
``poc_<24 hex>`` (the Basic username) with the sha256 of its password (the Basic password).
"""

from __future__ import annotations

import hashlib
import random
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert

from server.settings import DATABASE_FILENAME
from server.storage.database import Database
from server.storage.tables import (
    AccessRule,
    Base,
    Credential,
    Group,
    ImagingServer,
    Membership,
    User,
)

LABELS = tuple(f"label-{n:02d}" for n in range(30))


@dataclass(frozen=True)
class ApiToken:
    user_id: int
    token: str


@dataclass(frozen=True)
class PluginCredential:
    server_id: int
    server_token: str
    username: str
    password: str


@dataclass
class Seeded:
    users: int
    groups: int
    servers: int
    rules: int
    memberships: int
    tokens: list[ApiToken]
    plugins: dict[int, PluginCredential]
    # (user id -> set of server ids on which one of the user's groups has a rule)
    servers_of_user: dict[int, set[int]] = field(default_factory=dict)
    # server id -> study UIDs named by resource rules on it (to make some selectors match)
    study_uids: dict[int, list[str]] = field(default_factory=dict)
    # server id -> labels named by label rules on it
    labels: dict[int, list[str]] = field(default_factory=dict)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _study_uid(rng: random.Random) -> str:
    return f"1.2.826.0.1.3680043.8.498.{rng.randrange(10**11, 10**12)}.{rng.randrange(10**5)}"


def seed(
    data_dir: Path,
    *,
    users: int = 10_000,
    groups: int = 500,
    servers: int = 50,
    rules: int = 20_000,
    tokens: int = 6_000,
    seed_value: int = 20240611,
) -> Seeded:
    """Insert the rows into the (migrated) SQLite database of ``data_dir``."""
    rng = random.Random(seed_value)
    now = datetime.now(UTC)  # stored naive UTC by UtcDateTime
    common = {"version": 1, "created_at": now, "updated_at": now}

    user_rows = [
        {
            **common,
            "id": uid,
            "username": f"user{uid:05d}",
            "username_key": f"user{uid:05d}",
            "email": f"user{uid:05d}@hospital.example",
            "first_name": "Bench",
            "last_name": f"User {uid}",
            "is_active": True,
            "is_staff": False,
            "is_superuser": False,
            "source": "database",
            "password_hash": None,
            "last_login": None,
        }
        for uid in range(1, users + 1)
    ]
    group_rows = [
        {**common, "id": gid, "name": f"group-{gid:03d}", "description": "", "idp_group_name": None}
        for gid in range(1, groups + 1)
    ]
    server_rows = [
        {
            **common,
            "id": sid,
            "token": f"orthanc-{sid:02d}",
            "name": f"Orthanc {sid:02d}",
            "scheme": "http",
            "hostname": f"orthanc-{sid:02d}.hospital.example",
            "port": 8042,
            "dicomweb_root": "/dicom-web",
            "viewer_url": None,
            "is_active": True,
            "is_default": sid == 1,
            # No REST credentials: a resource rule never triggers an ancestry look-up.
            "rest_username": None,
            "rest_password_encrypted": None,
            "permission_table": None,
        }
        for sid in range(1, servers + 1)
    ]

    membership_rows: list[dict[str, object]] = []
    groups_of_user: dict[int, list[int]] = {}
    for uid in range(1, users + 1):
        chosen = rng.sample(range(1, groups + 1), rng.randint(1, 3))
        groups_of_user[uid] = chosen
        membership_rows.extend({"version": 1, "user_id": uid, "group_id": gid, "created_at": now} for gid in chosen)

    capability_sets = (["view"], ["view"], ["view", "download"], ["view", "download"], ["download"], ["view", "edit-labels"])
    rule_rows = []
    servers_of_group: dict[int, set[int]] = {}
    study_uids: dict[int, list[str]] = {}
    labels_on: dict[int, list[str]] = {}
    for rid in range(1, rules + 1):
        gid = rng.randint(1, groups)
        sid = rng.randint(1, servers)
        servers_of_group.setdefault(gid, set()).add(sid)
        draw = rng.random()
        labels: list[str] = []
        selectors: list[dict[str, str]] = []
        if draw < 0.70:
            scope = "all"
        elif draw < 0.92:
            scope = "labels"
            labels = rng.sample(LABELS, rng.randint(1, 3))
            labels_on.setdefault(sid, []).extend(labels)
        else:
            scope = "resources"
            for _ in range(rng.randint(1, 4)):
                study = _study_uid(rng)
                selectors.append({"kind": "study-instance-uid", "value": study})
                study_uids.setdefault(sid, []).append(study)
        rule_rows.append(
            {
                **common,
                "id": rid,
                "group_id": gid,
                "imaging_server_id": sid,
                "scope": scope,
                "labels": labels,
                "selectors": selectors,
                "capabilities": list(rng.choice(capability_sets)),
                "validity": 60,
                "expires_at": None,
                "description": "",
            }
        )

    credential_rows = []
    plugins: dict[int, PluginCredential] = {}
    for sid in range(1, servers + 1):
        public_id = f"poc_{secrets.token_hex(12)}"
        password = secrets.token_urlsafe(32)
        plugins[sid] = PluginCredential(sid, f"orthanc-{sid:02d}", public_id, password)
        credential_rows.append(
            {
                **common,
                "kind": "orthanc-plugin",
                "public_id": public_id,
                "secret_hash": _hash(password),
                "description": f"plugin of orthanc-{sid:02d}",
                "user_id": None,
                "imaging_server_id": sid,
                "last_used_at": None,
                "expires_at": None,
            }
        )
    issued: list[ApiToken] = []
    for uid in rng.sample(range(1, users + 1), min(tokens, users)):  # one token per sampled user
        public = secrets.token_hex(12)
        secret = secrets.token_urlsafe(32)
        issued.append(ApiToken(uid, f"pat_{public}_{secret}"))
        credential_rows.append(
            {
                **common,
                "kind": "api-token",
                "public_id": f"pat_{public}",
                "secret_hash": _hash(secret),
                "description": "bench",
                "user_id": uid,
                "imaging_server_id": None,
                "last_used_at": None,
                "expires_at": None,
            }
        )

    db = Database(f"sqlite:///{data_dir / DATABASE_FILENAME}")
    try:
        with db.engine.begin() as connection:
            tables: tuple[tuple[type[Base], list[dict[str, object]]], ...] = (
                (User, user_rows),
                (Group, group_rows),
                (ImagingServer, server_rows),
                (Membership, membership_rows),
                (AccessRule, rule_rows),
                (Credential, credential_rows),
            )
            for table, rows in tables:
                connection.execute(insert(table), rows)
    finally:
        db.dispose()

    servers_of_user = {
        uid: set().union(*(servers_of_group.get(gid, set()) for gid in gids)) for uid, gids in groups_of_user.items()
    }
    return Seeded(
        users=users,
        groups=groups,
        servers=servers,
        rules=rules,
        memberships=len(membership_rows),
        tokens=issued,
        plugins=plugins,
        servers_of_user=servers_of_user,
        study_uids=study_uids,
        labels=labels_on,
    )
