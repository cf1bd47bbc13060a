"""Servers starting together on one PostgreSQL make one active and one next key, not two of each."""

from __future__ import annotations

import threading
from collections import Counter

from cryptography.fernet import Fernet
from sqlalchemy import select

from server.services.secretbox import SecretBox
from server.services.signing_keys import ensure_keys
from server.storage import migrate
from server.storage.database import Database
from server.storage.tables import SigningKey


def test_concurrent_first_starts_make_one_key_per_state(fresh_postgres_database: object) -> None:
    db = Database(fresh_postgres_database())  # type: ignore[operator]
    try:
        migrate.upgrade(db.engine)
        box = SecretBox([Fernet.generate_key()])
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def start() -> None:
            barrier.wait()
            try:
                with db.writing() as session:
                    ensure_keys(session, box)
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=start) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with db.reading() as session:
            states = Counter(session.scalars(select(SigningKey.state)))
        assert states == {"active": 1, "next": 1}
    finally:
        db.dispose()
