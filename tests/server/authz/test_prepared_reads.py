"""The decision path's cold reads run prepared Core statements on a raw DBAPI cursor
(``authz_state.PreparedReads``): their rows must hold what a Core ``Connection`` returns,
value for value and type for type, on SQLite and on PostgreSQL."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from server.services import accounts, orthanc_authz
from server.services.authz_state import PreparedReads, ReadConnection
from server.services.portico import Portico, open_portico
from server.settings import Settings
from server.storage.tables import AccessRule, Credential, Group, ImagingServer, Membership, Session, User, utcnow


@pytest.fixture(params=["sqlite", "postgresql"])
def portico(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Portico]:
    url = request.getfixturevalue("fresh_postgres_database")() if request.param == "postgresql" else None
    opened = open_portico(Settings(data_dir=tmp_path, database_url=url))
    yield opened
    opened.close()


def _seed(portico: Portico) -> dict[str, Any]:
    with portico.db.writing() as session:
        user = User(username="rita", username_key="rita", source="database", is_superuser=False)
        group = Group(name="Radiology")
        server = ImagingServer(token="pacs", name="PACS", scheme="http", hostname="pacs", dicomweb_root="/dicom-web")
        session.add_all([user, group, server])
        session.flush()
        session.add(Membership(user_id=user.id, group_id=group.id))
        session.add_all([
            AccessRule(group_id=group.id, imaging_server_id=server.id, scope="all", labels=[], selectors=[], capabilities=["view"], validity=60),
            AccessRule(
                group_id=group.id, imaging_server_id=server.id, scope="resources", labels=["a", "b"], capabilities=["view", "download"],
                selectors=[{"kind": "study-instance-uid", "value": "1.2.3"}], validity=30, expires_at=utcnow() + timedelta(days=1),
            ),
        ])
        session.add(Session(id="s-1", user_id=user.id, kind="sso", expires_at=utcnow() + timedelta(hours=1), revoked_at=utcnow()))
        session.add(Credential(
            kind="api-token", public_id="pat_" + secrets.token_hex(12), secret_hash="0" * 64, user_id=user.id,
            expires_at=utcnow() + timedelta(days=3),
        ))
        session.flush()
        credential = session.query(Credential).filter(Credential.user_id == user.id).one()
        return {"user_id": user.id, "server_id": server.id, "session_id": "s-1", "public_id": credential.public_id}


def test_prepared_rows_equal_core_rows(portico: Portico) -> None:
    ids = _seed(portico)
    statements = [
        (orthanc_authz._SUBJECT_USER, {"user_id": ids["user_id"]}),
        (orthanc_authz._SUBJECT_RULES, {"user_id": ids["user_id"], "server_id": ids["server_id"]}),
        (orthanc_authz._SUBJECT_RULES, {"user_id": ids["user_id"], "server_id": ids["server_id"] + 1}),
        (orthanc_authz._TOKEN_SESSION, {"session_id": ids["session_id"]}),
        (orthanc_authz._TOKEN_SESSION, {"session_id": "nope"}),
        (accounts._API_TOKEN, {"public_id": ids["public_id"]}),
    ]
    reads = PreparedReads(portico.db.engine)
    for statement, parameters in statements:
        with portico.db.engine.connect() as connection:
            expected = [tuple(row) for row in connection.execute(statement, parameters).all()]
        with reads.connect() as connection:
            rows = connection.execute(statement, parameters).all()
            first = connection.execute(statement, parameters).first()
        assert [tuple(row) for row in rows] == expected
        assert [[type(value) for value in row] for row in rows] == [[type(value) for value in row] for row in expected]
        assert (first is None) == (not expected)
    with reads.connect() as connection:
        rule = connection.execute(orthanc_authz._SUBJECT_RULES, statements[1][1]).all()[1]
    assert rule.selectors == [{"kind": "study-instance-uid", "value": "1.2.3"}] and rule.expires_at.tzinfo is not None


def test_a_first_seen_token_loads_the_same_subject_as_a_known_user(portico: Portico) -> None:
    """A first-seen Portico token reads session, user and rules in one statement; the
    subject it leaves in the cache is the one the separate reads build."""
    ids = _seed(portico)
    with portico.db.writing() as session:
        rita = session.get(User, ids["user_id"])
        lonely = User(username="lonely", username_key="lonely", source="database")
        other_server = ImagingServer(token="other", name="Other", scheme="http", hostname="other", dicomweb_root="/dicom-web")
        session.add_all([lonely, other_server])
        session.flush()
        tokens = {}
        for name, user in (("rita", rita), ("lonely", lonely)):
            session.add(Session(id=f"live-{name}", user_id=user.id, kind="sso", expires_at=utcnow() + timedelta(hours=1)))
            session.flush()
            tokens[name] = (user.id, portico.tokens.issue(user, f"live-{name}"))
        revoked = portico.tokens.issue(rita, "s-1")  # the seeded session is revoked
    authorizer = portico.authorizer
    for token_server in ("pacs", "other"):
        server = authorizer.server(token_server)
        assert server is not None
        for user_id, token in tokens.values():
            authorizer._subjects.clear()
            authorizer._tokens.clear()
            info = authorizer.verify_token(token, server=server)
            assert info is not None and info.user_id == user_id
            cached = authorizer._subjects.get((user_id, server.id))
            assert cached is not None
            assert cached[1] == authorizer._load_subject(user_id, server.id)
        assert authorizer.verify_token(revoked, server=server) is None
    pacs = authorizer.server("pacs")
    assert pacs is not None
    subject, _ = authorizer.subject_for_token(pacs, tokens["rita"][1])
    assert subject is not None and [rule.validity for rule in subject.rules] == [60, 30]


def test_each_thread_keeps_one_read_connection_that_sees_every_commit(portico: Portico) -> None:
    ids = _seed(portico)
    reads = PreparedReads(portico.db.engine)
    statement, parameters = orthanc_authz._TOKEN_SESSION, {"session_id": "fresh"}
    with portico.db.writing() as session:
        session.add(Session(id="fresh", user_id=ids["user_id"], kind="sso", expires_at=utcnow() + timedelta(hours=1)))
    with reads.connect() as first:
        assert first.execute(statement, parameters).first().revoked_at is None
    # Committed by another connection after this one last read: the next read sees it.
    with portico.db.writing() as session:
        row = session.get(Session, "fresh")
        assert row is not None
        row.revoked_at = utcnow()
    with reads.connect() as second:
        assert second.execute(statement, parameters).first().revoked_at is not None
    if portico.db.is_sqlite:
        assert second is first  # kept for the thread
        seen: list[ReadConnection] = []

        def other_thread() -> None:
            with reads.connect() as connection:
                seen.append(connection)
                assert connection.execute(statement, parameters).first() is not None

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert seen and seen[0] is not first
    # After an error the connection is not reused.
    with pytest.raises(ZeroDivisionError):
        with reads.connect() as connection:
            1 / 0
    with reads.connect() as third:
        assert third.execute(statement, parameters).first() is not None
    if portico.db.is_sqlite:
        assert third is not first
    reads.close()
    if portico.db.is_sqlite:
        with pytest.raises(RuntimeError):
            with reads.connect():
                pass
