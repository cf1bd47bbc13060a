"""The explain API: the decision Orthanc would get, with its trace, from the same function."""

from __future__ import annotations

from sqlalchemy import select

from server.contract.errors import FieldError, ValidationFailed
from server.contract.schemas import ExplainRequest, ExplainResponse
from server.domain.orthanc import Level, Method
from server.services.orthanc_authz import OrthancAuthorizer, strip_bearer
from server.storage.database import Database
from server.storage.tables import User


def explain(db: Database, authorizer: OrthancAuthorizer, request: ExplainRequest) -> ExplainResponse:
    server = authorizer.server_by_id(request.imaging_server_id)
    if server is None:
        raise ValidationFailed(
            f"imaging_server_id: no imaging server with id {request.imaging_server_id}",
            fields=[FieldError(field="imaging_server_id", message=f"no imaging server with id {request.imaging_server_id}")],
        )
    not_after = None
    if request.token is not None:
        subject, not_after = authorizer.subject_for_token(server, strip_bearer(request.token))
    else:
        with db.reading() as session:
            if request.user_id is not None:
                user = session.get(User, request.user_id)
                field, value = "user_id", str(request.user_id)
            else:
                user = session.scalar(select(User).where(User.username_key == (request.username or "").lower()))
                field, value = "username", repr(request.username)
            if user is None:
                raise ValidationFailed(f"{field}: no user with {field} {value}", fields=[FieldError(field=field, message=f"no user with {field} {value}")])
            active = user.is_active
            user_id = user.id
        # An inactive user gets nothing, exactly as at validate (where the token no longer verifies).
        subject = authorizer.subject_for_user(server, user_id) if active else None
    decision = authorizer.decide(
        server,
        subject,
        Method(request.method),
        Level(request.level),
        request.orthanc_id,
        request.dicom_uid,
        frozenset(request.labels),
        request.uri if request.level == "system" else None,
        not_after,
    )
    trace = list(decision.trace)
    if subject is None and request.token is None:
        trace.insert(0, "the user is inactive")
    return ExplainResponse(
        granted=decision.granted,
        validity=decision.validity,
        subject=None if subject is None else subject.username,
        trace=trace,
        matched_rules=list(decision.matched_rules),
        considered_rules=list(decision.considered_rules),
    )
