"""Closed sets of values used across the server and the wire contract.

They are `StrEnum`s so that the value stored in the database, sent over the wire and
shown in the console is one and the same string.
"""

from enum import StrEnum


class ProviderPreset(StrEnum):
    COGNITO = "cognito"
    KEYCLOAK = "keycloak"
    ENTRA_ID = "entra-id"
    GOOGLE = "google"
    OKTA = "okta"
    FUSIONAUTH = "fusionauth"
    GENERIC = "generic"


class TokenEndpointAuthMethod(StrEnum):
    CLIENT_SECRET_BASIC = "client_secret_basic"
    CLIENT_SECRET_POST = "client_secret_post"
    NONE = "none"


class GroupSync(StrEnum):
    OFF = "off"
    ADD = "add"
    MIRROR = "mirror"


class SiteEnvironment(StrEnum):
    PRODUCTION = "production"
    DEVELOPMENT = "development"


class UserSource(StrEnum):
    DATABASE = "database"
    IDP = "idp"


class SessionKind(StrEnum):
    ADMIN = "admin"  # username + password at the admin API
    SSO = "sso"  # a login through an auth server


class CredentialKind(StrEnum):
    API_TOKEN = "api-token"
    ORTHANC_PLUGIN = "orthanc-plugin"


class ScopeKind(StrEnum):
    ALL = "all"
    LABELS = "labels"
    RESOURCES = "resources"


class SelectorKind(StrEnum):
    PATIENT_ID = "patient-id"
    STUDY_INSTANCE_UID = "study-instance-uid"
    ORTHANC_ID = "orthanc-id"


class Capability(StrEnum):
    """Orthanc's permission names, as the authorization plugin's default table uses them."""

    ALL = "all"
    VIEW = "view"
    DOWNLOAD = "download"
    UPLOAD = "upload"
    MODIFY = "modify"
    ANONYMIZE = "anonymize"
    DELETE = "delete"
    SEND = "send"
    SHARE = "share"
    EDIT_LABELS = "edit-labels"
    Q_R_REMOTE_MODALITIES = "q-r-remote-modalities"
    WORKLISTS = "worklists"
    SETTINGS = "settings"
    AUDIT_LOGS = "audit-logs"
    ADMIN_PERMISSIONS = "admin-permissions"


class SigningKeyState(StrEnum):
    NEXT = "next"
    ACTIVE = "active"
    RETIRED = "retired"


class AuditOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


class Action(StrEnum):
    """What a staff member may be granted on an entity type (Django's four verbs)."""

    VIEW = "view"
    ADD = "add"
    CHANGE = "change"
    DELETE = "delete"


class EntityType(StrEnum):
    """Every entity type a staff grant can name; also the audit log's target types."""

    PROVIDER = "provider"
    AUTH_SERVER = "auth-server"
    SITE = "site"
    USER = "user"
    EXTERNAL_IDENTITY = "external-identity"
    GROUP = "group"
    MEMBERSHIP = "membership"
    IMAGING_SERVER = "imaging-server"
    ACCESS_RULE = "access-rule"
    SESSION = "session"
    CREDENTIAL = "credential"
    SHARE = "share"
    SIGNING_KEY = "signing-key"
    AUDIT_EVENT = "audit-event"


def permission_name(entity: EntityType, action: Action) -> str:
    """The string a staff grant is stored and sent as, e.g. ``group.change``."""
    return f"{entity.value}.{action.value}"


ALL_PERMISSIONS: frozenset[str] = frozenset(
    permission_name(entity, action) for entity in EntityType for action in Action
)


class TokenPrefix(StrEnum):
    """Typed prefixes make a leaked secret recognisable by secret scanners."""

    ADMIN_SESSION = "pss"
    API_TOKEN = "pat"
    ORTHANC_PLUGIN = "poc"
    SHARE = "pst"
    REFRESH_TOKEN = "prt"
    LOGIN_CODE = "plc"  # the one-time code a viewer exchanges for its first tokens
