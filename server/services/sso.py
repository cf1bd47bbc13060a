"""The single-sign-on broker (DESIGN.md §4): login → IdP → callback → local user →
one-time code → Portico access and refresh tokens.

Each step of a login is timed and recorded in a ``LoginReport`` (the console's test-login
timeline shows it); a failed step raises ``LoginFailed`` carrying the report so far, and
leaves nothing behind: no session, no code, no user.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
from authlib.common.urls import add_params_to_uri
from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session as DbSession

from server.contract.errors import NotAuthenticated, NotFound, PermissionDenied, ValidationFailed
from server.domain.presets import origin
from server.domain.vocabulary import AuditOutcome, EntityType, GroupSync, ProviderPreset, SessionKind, TokenPrefix, UserSource
from server.services import audit, secrets_tokens
from server.services.audit import Actor
from server.services.accounts import LoginResult
from server.services.authz_state import BOOKKEEPING
from server.services.claims import MappedUser, map_claims, merge_claims
from server.services.oidc_rp import (
    Endpoints,
    IdPError,
    JwksCache,
    authorization_url,
    code_challenge,
    endpoints_of,
    exchange_code,
    fetch_userinfo,
    http_client,
    revoke_upstream,
    validate_id_token,
    verify_access_token,
)
from server.services.portico_tokens import PorticoTokens
from server.services.secretbox import SecretBox
from server.services.site import get_site
from server.settings import Settings
from server.storage.database import Database
from server.storage.tables import (
    AuthServer,
    ConsoleTestLogin,
    ExternalIdentity,
    Group,
    Membership,
    OneTimeCode,
    PendingLogin,
    Provider,
    RefreshToken,
    Session,
    User,
    utcnow,
)

log = logging.getLogger(__name__)

LOGIN_COOKIE = "portico_login"
BROKER_PATH = "/auth/openid/"
URL_POLICY = (
    "Every Portico URL ends with a slash and leaves out the port when it is the scheme's default. "
    "Identity providers compare callback URLs character for character: register them exactly as shown."
)
MAX_USERNAME_SUFFIX = 1000
# Where a console test login returns: the console's browser pane intercepts the navigation,
# so nothing listens there, and no whitelist entry is needed (an administrator started it).
CONSOLE_TEST_REDIRECT = "http://127.0.0.1/portico-console/test-login"
# Where the console signs an administrator in to a remote Portico through single sign-on:
# a native app's loopback redirect (RFC 8252), allowed for every auth server, but only with
# a PKCE S256 challenge, so the code it receives is useless to anything but that console.
CONSOLE_SIGN_IN_REDIRECT = "http://127.0.0.1/portico-console/sign-in"
PKCE_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
PKCE_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- URLs, from the Site settings


def normalized_base(base_url: str) -> str:
    """scheme://host[:port][/path] in lower case, default port left out, no trailing slash."""
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return origin(scheme, host, parts.port) + parts.path.rstrip("/")


@dataclass(frozen=True)
class BrokerUrls:
    login: str
    callback: str
    logout: str
    token: str
    default_login: str | None
    warnings: list[str]
    policy: str = URL_POLICY


def broker_urls(base_url: str, auth_server: AuthServer, preset: str) -> BrokerUrls:
    base = normalized_base(base_url)
    root = f"{base}{BROKER_PATH}{auth_server.token}/"
    warnings: list[str] = []
    parts = urlsplit(base)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme != "https":
        if preset == ProviderPreset.COGNITO.value and not loopback:
            warnings.append(f"Cognito refuses callback URLs that are not https (except for localhost): {root}callback/ "
                            "will be rejected. Set the Site's URL to https.")
        elif not loopback:
            warnings.append("The callback URL is plain http: identity providers and browsers expect https outside a test setup.")
    return BrokerUrls(
        login=root,
        callback=f"{root}callback/",
        logout=f"{root}logout/",
        token=f"{root}token/",
        default_login=f"{base}{BROKER_PATH}" if auth_server.is_default else None,
        warnings=warnings,
    )


def auth_server_urls(session: DbSession, auth_server: AuthServer) -> BrokerUrls:
    """The auth server's URLs under the current Site settings."""
    provider = session.get(Provider, auth_server.provider_id)
    return broker_urls(get_site(session).base_url, auth_server, provider.preset if provider else "")


# ---------------------------------------------------------------- the report of one login


@dataclass
class Step:
    name: str
    status: str  # ok | failed | skipped
    duration_ms: float
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoginReport:
    steps: list[Step] = field(default_factory=list)
    mapped: MappedUser | None = None
    user_id: int | None = None
    username: str | None = None
    created: bool = False
    group_changes: dict[str, list[str]] = field(default_factory=dict)
    test_login_id: str | None = None
    dry_run: bool = False
    consumed: bool = False  # the pending login was used up (its cookie is no longer needed)

    @contextmanager
    def step(self, name: str) -> Iterator[Step]:
        record = Step(name, "ok", 0.0)
        started = time.perf_counter()
        try:
            yield record
        except IdPError as error:
            record.status, record.detail = "failed", error.message
            raise
        except Exception:
            record.status, record.detail = "failed", "internal error (in the server's log)"
            raise
        finally:
            record.duration_ms = round((time.perf_counter() - started) * 1000, 2)
            self.steps.append(record)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "steps": [vars(step) for step in self.steps],
            "user_id": self.user_id,
            "username": self.username,
            "created": self.created,
            "group_changes": self.group_changes,
            "mapped": None if self.mapped is None else {
                "username": self.mapped.username, "email": self.mapped.email, "first_name": self.mapped.first_name,
                "last_name": self.mapped.last_name, "groups": self.mapped.groups,
                "problems": [problem.model_dump() for problem in self.mapped.problems],
            },
        }


class LoginFailed(Exception):
    def __init__(self, error: IdPError, report: LoginReport, auth_server: str | None = None, redirect_to: str | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.report = report
        self.auth_server = auth_server
        self.redirect_to = redirect_to  # console test logins return to the console even when they fail


def _pkce_matches(verifier: str | None, challenge: str) -> bool:
    if verifier is None or not PKCE_VERIFIER.match(verifier):
        return False
    return secrets.compare_digest(code_challenge(verifier), challenge)


def _fail(step: str, code: str, message: str, status: int = 400) -> IdPError:
    return IdPError(step, code, message, status=status)


# ---------------------------------------------------------------- tokens handed to viewers


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    refresh_token: str
    expires_in: int
    session_id: str

    def as_response(self) -> dict[str, Any]:
        return {"access_token": self.access_token, "token_type": "Bearer", "expires_in": self.expires_in,
                "refresh_token": self.refresh_token}


class GrantRefused(Exception):
    """RFC 6749 §5.2: ``error`` is the OAuth error code; the description says why."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True)
class StartedLogin:
    cookie_secret: str
    authorize_url: str
    secure_cookie: bool
    cookie_path: str


@dataclass(frozen=True)
class FinishedLogin:
    redirect_to: str | None
    report: LoginReport


# ---------------------------------------------------------------- the broker


class SingleSignOn:
    def __init__(self, db: Database, box: SecretBox, settings: Settings, tokens: PorticoTokens) -> None:
        self._db = db
        self._box = box
        self._settings = settings
        self._tokens = tokens
        self.jwks = JwksCache()
        self._http = http_client(settings.idp_timeout_seconds)

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------ lookups

    def _auth_server(self, session: DbSession, token: str | None) -> AuthServer:
        query = select(AuthServer).where(AuthServer.is_default) if token is None else select(AuthServer).where(AuthServer.token == token)
        row = session.scalar(query)
        if row is None:
            if token is None:
                raise _fail("login", "no_auth_server", "no auth server is set up yet: an administrator must create one "
                            "(OpenID provider + auth server) in the Portico console", status=404)
            raise _fail("login", "unknown_auth_server", f"there is no auth server {token!r:.40} here; check the login URL", status=404)
        return row

    def _endpoints(self, provider: Provider) -> Endpoints:
        return endpoints_of(provider.scheme, provider.hostname, provider.port,
                            authorization=provider.authorization_endpoint, token=provider.token_endpoint,
                            revoke=provider.revoke_endpoint, userinfo=provider.userinfo_endpoint,
                            jwks_uri=provider.jwks_uri, issuer=provider.issuer)

    def cookie_path(self, auth_server_token: str) -> str | None:
        """The path of an auth server's login cookie: its login URL's path (under the Site's prefix)."""
        with self._db.reading() as session:
            auth_server = session.scalar(select(AuthServer).where(AuthServer.token == auth_server_token))
            return urlsplit(auth_server_urls(session, auth_server).login).path if auth_server else None

    # ------------------------------------------------------------ 1. login: send the browser to the IdP

    def start(self, auth_server_token: str | None, *, redirect_uri: str | None, client_state: str | None,
              test_ticket: str | None = None, code_challenge: str | None = None,
              code_challenge_method: str | None = None) -> StartedLogin:
        with self._db.writing() as session:
            auth_server = self._auth_server(session, auth_server_token)
            provider = session.get(Provider, auth_server.provider_id)
            assert provider is not None
            urls = auth_server_urls(session, auth_server)
            test: ConsoleTestLogin | None = None
            if test_ticket is not None:
                test = self._claim_test_ticket(session, auth_server, test_ticket)
                redirect_uri, client_state, code_challenge = CONSOLE_TEST_REDIRECT, None, test.code_challenge
            elif not redirect_uri:
                raise _fail("login", "redirect_uri_missing", "the login link has no redirect_uri: the viewer must say "
                            "where to return after the login")
            console_sign_in = redirect_uri == CONSOLE_SIGN_IN_REDIRECT and code_challenge is not None
            if test is None and not console_sign_in and redirect_uri not in auth_server.redirect_urls:
                # No redirect happens: an open redirector would hand codes to anyone.
                raise _fail("login", "redirect_uri_not_allowed", f"{redirect_uri!r:.300} is not in the redirect URL "
                            f"whitelist of auth server {auth_server.token}; an administrator must add it (exact match)")
            if code_challenge is not None and test is None:
                if code_challenge_method != "S256":
                    raise _fail("login", "pkce_method", "code_challenge_method must be S256 (plain is not accepted)")
                if not PKCE_CHALLENGE.match(code_challenge):
                    raise _fail("login", "pkce_challenge", "code_challenge must be 43 url-safe base64 characters (S256 of the verifier)")
            if client_state is not None and len(client_state) > 500:
                raise _fail("login", "state_too_long", "the viewer's state parameter is longer than 500 characters")
            cookie_secret = secrets.token_urlsafe(32)
            state = secrets.token_urlsafe(32) if provider.use_state else None
            nonce = secrets.token_urlsafe(32) if provider.use_nonce else None
            verifier = secrets.token_urlsafe(48) if provider.use_pkce else None
            now = utcnow()
            session.add(PendingLogin(
                id=_sha256(cookie_secret),
                auth_server_id=auth_server.id,
                state_hash=_sha256(state) if state else None,
                nonce=nonce,
                code_verifier_encrypted=self._box.encrypt(verifier) if verifier else None,
                callback_url=urls.callback,
                redirect_uri=redirect_uri,
                client_state=client_state,
                dry_run=test.dry_run if test else False,
                test_login_id=test.id if test else None,
                code_challenge=code_challenge,
                created_at=now,
                expires_at=now + timedelta(seconds=self._settings.pending_login_seconds),
            ))
            # Old, unfinished logins of abandoned browsers are cleared as new ones start.
            session.execute(delete(PendingLogin).where(PendingLogin.expires_at < now - timedelta(hours=1)))
            url = authorization_url(self._endpoints(provider), client_id=auth_server.client_id, callback_url=urls.callback,
                                    scopes=list(provider.scopes), state=state, nonce=nonce, code_verifier=verifier)
        return StartedLogin(cookie_secret, url, secure_cookie=urls.callback.startswith("https://"), cookie_path=urlsplit(urls.login).path)

    def _claim_test_ticket(self, session: DbSession, auth_server: AuthServer, ticket: str) -> ConsoleTestLogin:
        test = session.scalar(select(ConsoleTestLogin).where(ConsoleTestLogin.ticket_hash == _sha256(ticket)).with_for_update())
        if test is None or test.auth_server_id != auth_server.id:
            raise _fail("login", "test_login_unknown", "this test-login link is unknown: start the test again from the console", status=404)
        if test.started_at is not None:
            raise _fail("login", "test_login_used", "this test-login link was already used: start the test again from the console")
        if test.expires_at < utcnow():
            raise _fail("login", "test_login_expired", "this test-login link has expired: start the test again from the console")
        test.started_at = utcnow()
        return test

    # ------------------------------------------------------------ console test logins

    def create_test_login(self, auth_server_id: int, actor: Actor, *, dry_run: bool, code_challenge: str | None = None) -> tuple[str, str]:
        """(test login id, the URL the console's browser pane opens)."""
        if code_challenge is None and not dry_run:
            # The code goes to a fixed plain-http loopback URL that anything on the machine
            # could read: only the holder of the verifier may exchange it.
            raise ValidationFailed.on_field("code_challenge", "required unless dry_run: the one-time code must be bound to "
                                            "the console's PKCE verifier")
        with self._db.writing() as session:
            auth_server = session.get(AuthServer, auth_server_id)
            if auth_server is None:
                raise NotFound(f"no auth server with id {auth_server_id}")
            ticket = secrets.token_urlsafe(32)
            test = ConsoleTestLogin(id=secrets.token_hex(12), ticket_hash=_sha256(ticket), auth_server_id=auth_server.id,
                                    created_by=actor.name, dry_run=dry_run, code_challenge=code_challenge,
                                    expires_at=utcnow() + timedelta(seconds=self._settings.pending_login_seconds))
            session.add(test)
            session.flush()
            audit.record(session, actor, "auth.test_login.start", target_type=EntityType.AUTH_SERVER.value,
                         target_id=auth_server.id, target_label=auth_server.token, detail="dry run" if dry_run else "")
            login_url = str(add_params_to_uri(auth_server_urls(session, auth_server).login, [("test_login", ticket)]))
            return test.id, login_url

    def test_login(self, test_login_id: str) -> ConsoleTestLogin:
        with self._db.reading() as session:
            test = session.get(ConsoleTestLogin, test_login_id)
            if test is None:
                raise NotFound(f"no test login {test_login_id!r:.40}")
            session.expunge(test)
            return test

    def _record_test(self, report: LoginReport, outcome: str, error: IdPError | None, code: str | None) -> str | None:
        """Keep the timeline for the console; the URL its browser pane intercepts."""
        if report.test_login_id is None:
            return None
        body = report.as_dict()
        if error is not None:
            body["error"] = {"step": error.step, "code": error.code, "message": error.message}
        with self._db.writing() as session:
            session.execute(update(ConsoleTestLogin).where(ConsoleTestLogin.id == report.test_login_id)
                            .values(finished_at=utcnow(), outcome=outcome, report=body))
        params = [("test_login", report.test_login_id), ("outcome", outcome)] + ([("code", code)] if code else [])
        return str(add_params_to_uri(CONSOLE_TEST_REDIRECT, params))

    # ------------------------------------------------------------ 2. callback: finish the login

    def finish(self, auth_server_token: str, cookie_secret: str | None, params: dict[str, str], *,
               address: str | None, user_agent: str | None) -> FinishedLogin:
        report = LoginReport()
        try:
            finished = self._finish(auth_server_token, cookie_secret, params, address, user_agent, report)
        except IdPError as error:
            self._audit_failure(auth_server_token, error, address)
            raise LoginFailed(error, report, auth_server_token, self._record_test(report, "failed", error, None)) from None
        except Exception:
            # Fail closed, and still as a page that says so (never a stack trace): a database
            # refusal (a concurrent first login, a value too long) or an undecryptable secret.
            log.exception("login through auth server %s failed", auth_server_token)
            internal = IdPError("user", "internal_error", "Portico could not finish the login because of an internal "
                                "error; it is in the server's log. Try again; if it repeats, tell your administrator", status=500)
            self._audit_failure(auth_server_token, internal, address)
            raise LoginFailed(internal, report, auth_server_token, self._record_test(report, "failed", internal, None)) from None
        if report.test_login_id is not None:
            code = dict(parse_qsl(urlsplit(finished.redirect_to).query)).get("code") if finished.redirect_to else None
            return FinishedLogin(self._record_test(report, "ok", None, code), report)
        return finished

    def _finish(self, auth_server_token: str, cookie_secret: str | None, params: dict[str, str],
                address: str | None, user_agent: str | None, report: LoginReport) -> FinishedLogin:
        with report.step("callback"):
            with self._db.writing() as session:
                auth_server = self._auth_server(session, auth_server_token)
                provider = session.get(Provider, auth_server.provider_id)
                assert provider is not None
                pending = session.get(PendingLogin, _sha256(cookie_secret)) if cookie_secret else None
                if pending is None or pending.auth_server_id != auth_server.id:
                    raise _fail("callback", "login_unknown", "this browser has no login in progress here (it expired, "
                                "another browser started it, or cookies are blocked): start again from the login page")
                report.test_login_id, report.dry_run = pending.test_login_id, pending.dry_run
                # The state is compared before the login is used up: a forged callback (a
                # page sending this browser to ".../callback/?state=x") must not destroy the
                # login in progress.
                if provider.use_state:
                    if not params.get("state"):
                        raise _fail("callback", "state_missing", "the identity provider's answer carries no state: refused "
                                    "(a forged or replayed callback, or the provider drops the parameter)")
                    if not secrets.compare_digest(_sha256(params["state"]), pending.state_hash or ""):
                        raise _fail("callback", "state_mismatch", "the state in the callback does not match this browser's "
                                    "login: refused (cross-site request forgery, or two logins in one browser)")
                # Single use from here on, whatever happens next (committed now, even if a later
                # step fails): a replayed callback finds it finished.
                outcome = session.execute(
                    update(PendingLogin).where(PendingLogin.id == pending.id, PendingLogin.finished_at.is_(None))
                    .values(finished_at=utcnow())
                )
                claimed = isinstance(outcome, CursorResult) and outcome.rowcount == 1
                report.consumed = True
                endpoints = self._endpoints(provider)
                verifier = self._box.decrypt(pending.code_verifier_encrypted) if pending.code_verifier_encrypted else None
                secret = self._box.decrypt(auth_server.client_secret_encrypted) if auth_server.client_secret_encrypted else None
                expires_at = pending.expires_at
                context = _LoginContext(
                    auth_server_id=auth_server.id, auth_server_token=auth_server.token, group_sync=auth_server.group_sync,
                    client_id=auth_server.client_id, client_secret=secret, provider_id=provider.id,
                    provider_name=provider.name, auth_method=provider.token_endpoint_auth_method,
                    require_id_token=provider.require_id_token, claim_mapping=dict(provider.claim_mapping),
                    callback_url=pending.callback_url, redirect_uri=pending.redirect_uri, client_state=pending.client_state,
                    nonce=pending.nonce, dry_run=pending.dry_run, code_challenge=pending.code_challenge,
                )
            if not claimed:
                raise _fail("callback", "login_replayed", "this login was already finished: a callback URL can be used "
                            "once; start again from the login page")
            if expires_at < utcnow():
                raise _fail("callback", "login_expired", f"the login took longer than {self._settings.pending_login_seconds} s; start again")
        if "error" in params:
            # The callback itself was fine; the sign-in at the provider was not.
            with report.step("idp_login"):
                raise self._idp_error(params, context.callback_url)
        code = params.get("code")
        if not code:
            with report.step("callback"):
                raise _fail("callback", "code_missing", "the identity provider's answer has neither a code nor an error")
        # The IdP is called outside any transaction: a slow provider holds no lock.
        with report.step("code_exchange") as step:
            upstream = exchange_code(self._http, endpoints, auth_method=context.auth_method, client_id=context.client_id,
                                     client_secret=context.client_secret, code=code, callback_url=context.callback_url,
                                     code_verifier=verifier)
            step.data = {"token_type": upstream.get("token_type"), "scope": upstream.get("scope"),
                         "id_token": "id_token" in upstream, "refresh_token": "refresh_token" in upstream}
        id_claims: dict[str, Any] = {}
        with report.step("id_token") as step:
            if isinstance(upstream.get("id_token"), str):
                id_claims = validate_id_token(self._http, self.jwks, endpoints, upstream["id_token"],
                                              client_id=context.client_id, nonce=context.nonce)
                step.data = {"claims": id_claims}
            elif context.require_id_token:
                raise _fail("id_token", "id_token_missing", "the token endpoint returned no ID token: add the 'openid' "
                            "scope, or turn off 'ID token required' for this provider", status=502)
            else:
                step.status, step.detail = "skipped", "no ID token, and the provider does not require one"
        userinfo: dict[str, Any] | None = None
        with report.step("userinfo") as step:
            if endpoints.userinfo:
                userinfo = fetch_userinfo(self._http, endpoints, upstream["access_token"], id_claims.get("sub"))
                step.data = {"claims": userinfo}
            else:
                step.status, step.detail = "skipped", "the provider has no userinfo endpoint"
        subject = id_claims.get("sub") or (userinfo or {}).get("sub")
        with report.step("claim_mapping") as step:
            mapped = map_claims(context.claim_mapping, merge_claims(id_claims, userinfo))
            report.mapped = mapped
            step.data = {"username": mapped.username, "email": mapped.email, "groups": mapped.groups}
            if not mapped.usable or not subject:
                raise _fail("claim_mapping", "claim_mapping_failed", "; ".join(p.message for p in mapped.problems)
                            or "the provider gave no subject", status=502)
        with report.step("user"), self._db.writing() as session:
            user = self._link_user(session, context, str(subject), mapped, report, address)
            if context.dry_run:
                session.rollback()
                return FinishedLogin(None, report)
            session_row = self._open_session(session, context, user, upstream, address, user_agent)
            code_value = f"{TokenPrefix.LOGIN_CODE.value}_{secrets.token_urlsafe(32)}"
            session.add(OneTimeCode(id=_sha256(code_value), session_id=session_row.id, redirect_uri=context.redirect_uri,
                                    code_challenge=context.code_challenge,
                                    expires_at=utcnow() + timedelta(seconds=self._settings.login_code_seconds)))
        params_out = [("code", code_value)] + ([("state", context.client_state)] if context.client_state else [])
        return FinishedLogin(str(add_params_to_uri(context.redirect_uri, params_out)), report)

    def _idp_error(self, params: dict[str, str], callback_url: str) -> IdPError:
        error = params.get("error", "")[:100]
        description = params.get("error_description", "")[:300]
        said = f"{error}{f' ({description})' if description else ''}"
        if error == "access_denied":
            return _fail("idp_login", "idp_access_denied", f"the sign-in was cancelled or refused at the identity provider ({said})")
        if error in ("redirect_mismatch", "invalid_redirect_uri"):
            return _fail("idp_login", "idp_redirect_mismatch", f"the IdP returned {said}: register {callback_url} as callback URL")
        if error in ("unauthorized_client", "invalid_client"):
            return _fail("idp_login", "idp_client_refused", f"the IdP returned {said}: check the client id and that the "
                         "app client may use the authorization code flow")
        if error == "invalid_scope":
            return _fail("idp_login", "idp_invalid_scope", f"the IdP returned {said}: allow the provider's scopes for the app client")
        return _fail("idp_login", "idp_error", f"the identity provider returned an error: {said or 'no details'}")

    # ------------------------------------------------------------ 3. the local user

    def _link_user(self, session: DbSession, ctx: _LoginContext, subject: str, mapped: MappedUser,
                   report: LoginReport, address: str | None) -> User:
        actor = Actor(name=f"sso:{ctx.provider_name}"[:150], address=address)
        identity = session.scalar(select(ExternalIdentity).where(
            ExternalIdentity.provider_id == ctx.provider_id, ExternalIdentity.subject == subject))
        assert mapped.username is not None
        if identity is not None:
            user = session.get(User, identity.user_id)
            assert user is not None
            if not user.is_active:
                raise _fail("user", "user_inactive", f"the Portico account {user.username!r} linked to this identity is "
                            "deactivated: an administrator must reactivate it", status=403)
            before = {"email": user.email, "first_name": user.first_name, "last_name": user.last_name}
            after = {"email": mapped.email or user.email, "first_name": mapped.first_name or user.first_name,
                     "last_name": mapped.last_name or user.last_name}
            changes = audit.diff(before, after)
            if changes and not ctx.dry_run:
                for name, value in after.items():
                    setattr(user, name, value)
                audit.record(session, actor, "user.update", target_type=EntityType.USER.value, target_id=user.id,
                             target_label=user.username, changes=changes, detail="updated from the identity provider's claims")
        else:
            username, taken = self._free_username(session, mapped.username)
            user = User(username=username, username_key=username.lower(), email=mapped.email, first_name=mapped.first_name,
                        last_name=mapped.last_name, source=UserSource.IDP.value, password_hash=None)
            session.add(user)
            session.flush()
            session.add(ExternalIdentity(provider_id=ctx.provider_id, subject=subject, user_id=user.id, email=mapped.email))
            session.flush()
            report.created = True
            detail = f"first login through {ctx.provider_name}"
            if taken:
                detail += f"; the username {mapped.username!r} was taken, so the user is {username!r}"
            audit.record(session, actor, "user.create", target_type=EntityType.USER.value, target_id=user.id,
                         target_label=user.username, changes={"username": [None, username], "source": [None, "idp"],
                                                              "subject": [None, subject]}, detail=detail)
        report.user_id, report.username = user.id, user.username
        report.group_changes = self._sync_groups(session, ctx, user, mapped.groups, actor)
        return user

    @staticmethod
    def _free_username(session: DbSession, wanted: str) -> tuple[str, bool]:
        """The mapped username, or the first free ``name-2``, ``name-3``... (deterministic)."""
        candidates = [wanted] + [f"{wanted[:140]}-{n}" for n in range(2, MAX_USERNAME_SUFFIX)]
        for candidate in candidates:
            if session.scalar(select(User.id).where(User.username_key == candidate.lower())) is None:
                return candidate, candidate != wanted
        raise _fail("user", "username_exhausted", f"no free username near {wanted!r}", status=409)

    def _sync_groups(self, session: DbSession, ctx: _LoginContext, user: User, names: list[str], actor: Actor) -> dict[str, list[str]]:
        if ctx.group_sync == GroupSync.OFF.value:
            return {}
        synced = {group.id: group for group in session.scalars(select(Group).where(Group.idp_group_name.is_not(None)))}
        wanted = {group_id for group_id, group in synced.items() if group.idp_group_name in names}
        current = set(session.scalars(select(Membership.group_id).where(Membership.user_id == user.id)))
        added = sorted(wanted - current)
        removed = sorted((current & set(synced)) - wanted) if ctx.group_sync == GroupSync.MIRROR.value else []
        for group_id in added:
            session.add(Membership(user_id=user.id, group_id=group_id))
        if removed:
            session.execute(delete(Membership).where(Membership.user_id == user.id, Membership.group_id.in_(removed)))
        session.flush()
        changes = {"added": [synced[g].name for g in added], "removed": [synced[g].name for g in removed]}
        if added or removed:
            audit.record(session, actor, "user.groups.sync", target_type=EntityType.USER.value, target_id=user.id,
                         target_label=user.username, changes={"groups": [changes["removed"], changes["added"]]},
                         detail=f"group sync ({ctx.group_sync}) from the identity provider's groups")
        return changes

    def _open_session(self, session: DbSession, ctx: _LoginContext, user: User, upstream: dict[str, Any],
                      address: str | None, user_agent: str | None) -> Session:
        now = utcnow()
        kept = {name: upstream[name] for name in ("access_token", "refresh_token") if isinstance(upstream.get(name), str)}
        row = Session(id=secrets.token_hex(12), user_id=user.id, kind=SessionKind.SSO.value, auth_server_id=ctx.auth_server_id,
                      created_at=now, last_seen_at=now, expires_at=now + timedelta(seconds=self._settings.sso_session_seconds),
                      client_address=address, user_agent=(user_agent or "")[:500] or None,
                      upstream_tokens_encrypted=self._box.encrypt(json.dumps(kept)) if kept else None)
        session.add(row)
        session.execute(update(User).where(User.id == user.id).values(last_login=now).execution_options(**{BOOKKEEPING: True}))
        session.flush()
        audit.record(session, Actor(name=user.username, user_id=user.id, address=address), "auth.sso.login",
                     target_type=EntityType.SESSION.value, target_id=row.id, target_label=user.username,
                     detail=f"through auth server {ctx.auth_server_token} ({ctx.provider_name})")
        return row

    def _audit_failure(self, auth_server_token: str | None, error: IdPError, address: str | None) -> None:
        try:
            with self._db.writing() as session:
                audit.record(session, Actor(name="sso", address=address), "auth.sso.login", outcome=AuditOutcome.FAILURE,
                             target_type=EntityType.AUTH_SERVER.value, target_label=auth_server_token,
                             detail=f"{error.step}: {error.code}: {error.message}"[:2000])
        except Exception:  # the refusal stands even if it cannot be recorded
            log.exception("could not record a failed login")

    # ------------------------------------------------------------ 4. the token endpoint

    def exchange_login_code(self, code: str, redirect_uri: str, address: str | None, code_verifier: str | None = None) -> TokenGrant:
        refused: GrantRefused | None = None
        with self._db.writing() as session:
            # FOR UPDATE: on PostgreSQL a concurrent exchange of the same code waits here and
            # then sees it used (SQLite serialises writers anyway).
            row = (session.get(OneTimeCode, _sha256(code), with_for_update=True)
                   if code.startswith(f"{TokenPrefix.LOGIN_CODE.value}_") else None)
            if row is None:
                refused = GrantRefused("invalid_grant", "unknown code")
            elif row.used_at is not None:
                # RFC 6749 §4.1.2: a code used twice revokes what it gave. The revocation is
                # committed before the refusal is raised.
                self._revoke(session, row.session_id, "login code replayed", address)
                refused = GrantRefused("invalid_grant", "the code was already used; the session it opened is revoked")
            elif row.expires_at < utcnow():
                refused = GrantRefused("invalid_grant", "the code has expired")
            elif row.redirect_uri != redirect_uri:
                refused = GrantRefused("invalid_grant", "redirect_uri differs from the one the login used")
            elif row.code_challenge is not None and not _pkce_matches(code_verifier, row.code_challenge):
                refused = GrantRefused("invalid_grant", "code_verifier missing or wrong (this login used PKCE)")
            else:
                row.used_at = utcnow()
                return self._grant(session, row.session_id)
        raise refused

    def refresh(self, token: str, address: str | None) -> TokenGrant:
        presented = secrets_tokens.parse(token)
        refused: GrantRefused | None = None
        with self._db.writing() as session:
            row = (session.get(RefreshToken, presented.public_id, with_for_update=True)
                   if presented is not None and presented.prefix == TokenPrefix.REFRESH_TOKEN.value else None)
            if row is None or presented is None or not secrets_tokens.matches(presented.secret, row.secret_hash):
                refused = GrantRefused("invalid_grant", "unknown refresh token")
            elif row.used_at is not None:
                self._revoke(session, row.session_id, "refresh token reused", address)
                refused = GrantRefused("invalid_grant", "the refresh token was already used: its session is revoked "
                                       "(a copy may have leaked)")
            elif row.expires_at < utcnow():
                refused = GrantRefused("invalid_grant", "the refresh token has expired")
            else:
                row.used_at = utcnow()
                return self._grant(session, row.session_id)
        raise refused

    def _grant(self, session: DbSession, session_id: str) -> TokenGrant:
        sso_session = session.get(Session, session_id)
        user = session.get(User, sso_session.user_id) if sso_session else None
        if sso_session is None or user is None or not sso_session.active:
            raise GrantRefused("invalid_grant", "the session has ended")
        if not user.is_active:
            raise GrantRefused("invalid_grant", "the user is deactivated")
        issued = secrets_tokens.issue(TokenPrefix.REFRESH_TOKEN)
        lifetime = min(timedelta(seconds=self._settings.refresh_token_seconds), sso_session.expires_at - utcnow())
        session.add(RefreshToken(id=issued.public_id, secret_hash=issued.secret_hash, session_id=session_id,
                                 expires_at=utcnow() + lifetime))
        # Bookkeeping: it must not move the generation (and empty every replica's caches).
        session.execute(update(Session).where(Session.id == session_id).values(last_seen_at=utcnow())
                        .execution_options(**{BOOKKEEPING: True}))
        session.flush()
        return TokenGrant(self._tokens.issue(user, session_id), issued.token, int(self._tokens.lifetime.total_seconds()), session_id)

    # ------------------------------------------------------------ the console, signed in through SSO

    def console_session(self, access_token: str, *, address: str | None, user_agent: str | None,
                        lifetime: timedelta) -> LoginResult:
        """An admin-API session for the holder of a current Portico access token, as a
        password login gives one: how the console signs in to a remote Portico through single
        sign-on. Only staff and superusers may use the console."""
        claims = self._tokens.verify(access_token)
        refused = NotAuthenticated("the access token is not valid (expired, revoked, or not Portico's); sign in again")
        with self._db.writing() as session:
            sso_session = session.get(Session, claims.session_id) if claims is not None else None
            user = session.get(User, claims.user_id) if claims is not None else None
            if claims is None or sso_session is None or user is None or not sso_session.active or sso_session.user_id != user.id:
                raise refused
            if not user.is_active:
                raise refused
            if not (user.is_staff or user.is_superuser):
                raise PermissionDenied(f"{user.username!r} signed in, but only staff and superusers may use the console: "
                                       "an administrator must make this user staff (and grant what they may manage)")
            issued = secrets_tokens.issue(TokenPrefix.ADMIN_SESSION)
            now = utcnow()
            row = Session(id=issued.public_id, user_id=user.id, kind=SessionKind.ADMIN.value, secret_hash=issued.secret_hash,
                          created_at=now, last_seen_at=now, expires_at=min(now + lifetime, sso_session.expires_at),
                          client_address=address, user_agent=(user_agent or "")[:500] or None)
            session.add(row)
            session.execute(update(User).where(User.id == user.id).values(last_login=now).execution_options(**{BOOKKEEPING: True}))
            session.flush()
            audit.record(session, Actor(name=user.username, user_id=user.id, address=address), "auth.login",
                         target_type=EntityType.SESSION.value, target_id=row.id, target_label=user.username,
                         detail=f"console, through single-sign-on session {sso_session.id}")
            return LoginResult(token=issued.token, session=row, user=user)

    # ------------------------------------------------------------ the IdP's own access tokens

    def introspect_idp_token(self, token: str) -> dict[str, Any] | None:
        """An identity provider's JWT access token, for auth servers that accept them at
        introspection: verified against that provider's JWKS (asymmetric algorithms only),
        current, issued to the auth server's client, and mapped to the user linked to its
        subject. None for anything else (the caller answers ``active: false``)."""
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        issuer, client = unverified.get("iss"), unverified.get("client_id") or unverified.get("azp")
        if not isinstance(issuer, str) or not isinstance(unverified.get("sub"), str):
            return None
        with self._db.reading() as session:
            candidates = session.execute(
                select(AuthServer.client_id, Provider.id, Provider.scheme, Provider.hostname, Provider.port, Provider.jwks_uri,
                       Provider.issuer, Provider.authorization_endpoint, Provider.token_endpoint)
                .join(Provider, Provider.id == AuthServer.provider_id)
                .where(AuthServer.accept_idp_tokens, Provider.issuer == issuer)
            ).all()
        audiences = unverified.get("aud")
        audiences = audiences if isinstance(audiences, list) else [audiences]
        for row in candidates:
            if client != row.client_id and row.client_id not in audiences:
                continue  # issued to another application of that provider
            endpoints = endpoints_of(row.scheme, row.hostname, row.port, authorization=row.authorization_endpoint,
                                     token=row.token_endpoint, revoke=None, userinfo=None, jwks_uri=row.jwks_uri, issuer=row.issuer)
            try:
                claims = verify_access_token(self._http, self.jwks, endpoints, token)
            except IdPError:
                return None
            with self._db.reading() as session:
                user = session.execute(
                    select(User.id, User.username, User.email, User.is_active)
                    .join(ExternalIdentity, ExternalIdentity.user_id == User.id)
                    .where(ExternalIdentity.provider_id == row.id, ExternalIdentity.subject == claims["sub"])
                ).first()
            if user is None or not user.is_active:
                return None
            answer: dict[str, Any] = {"active": True, "sub": str(user.id), "username": user.username, "exp": int(claims["exp"]),
                                      "iss": issuer, "client_id": row.client_id, "token_type": "idp_access_token"}
            if user.email:
                answer["email"] = user.email
            return answer
        return None

    # ------------------------------------------------------------ 5. revocation (RFC 7009) and logout

    def _session_of(self, session: DbSession, token: str) -> str | None:
        presented = secrets_tokens.parse(token)
        if presented is not None and presented.prefix == TokenPrefix.REFRESH_TOKEN.value:
            row = session.get(RefreshToken, presented.public_id)
            if row is not None and secrets_tokens.matches(presented.secret, row.secret_hash):
                return row.session_id
            return None
        claims = self._tokens.verify(token)
        return claims.session_id if claims is not None else None

    def _revoke(self, session: DbSession, session_id: str, reason: str, address: str | None) -> Session | None:
        row = session.get(Session, session_id)
        if row is None or row.revoked_at is not None:
            return row
        row.revoked_at = utcnow()
        row.revoked_reason = reason
        session.flush()
        audit.record(session, Actor(name="sso", address=address), "session.revoke", target_type=EntityType.SESSION.value,
                     target_id=row.id, target_label=f"session of user {row.user_id}",
                     changes={"revoked_at": [None, row.revoked_at], "revoked_reason": [None, reason]})
        return row

    def revoke_token(self, token: str, address: str | None) -> None:
        """RFC 7009: revoking an access or refresh token ends its session. Unknown tokens are
        not an error (§2.2): the answer never says whether a token existed."""
        with self._db.writing() as session:
            session_id = self._session_of(session, token)
            if session_id is not None:
                self._revoke(session, session_id, "token revoked (RFC 7009)", address)

    def logout(self, token: str, address: str | None) -> dict[str, Any]:
        """End the Portico session of ``token`` and revoke the upstream tokens at the provider."""
        with self._db.writing() as session:
            session_id = self._session_of(session, token)
            row = session.get(Session, session_id) if session_id else None
            if row is None or row.revoked_at is not None:
                return {"ended": False, "upstream_revoked": False}
            self._revoke(session, row.id, "logout", address)
            upstream = json.loads(self._box.decrypt(row.upstream_tokens_encrypted)) if row.upstream_tokens_encrypted else {}
            auth_server = session.get(AuthServer, row.auth_server_id) if row.auth_server_id else None
            provider = session.get(Provider, auth_server.provider_id) if auth_server else None
            secret = self._box.decrypt(auth_server.client_secret_encrypted) if auth_server and auth_server.client_secret_encrypted else None
            row.upstream_tokens_encrypted = None
        revoked = False
        if provider is not None and auth_server is not None and upstream:
            endpoints = self._endpoints(provider)
            # Cognito revokes by refresh token (which also ends its access tokens).
            token_name, hint = ("refresh_token", "refresh_token") if "refresh_token" in upstream else ("access_token", "access_token")
            revoked = revoke_upstream(self._http, endpoints, auth_method=provider.token_endpoint_auth_method,
                                      client_id=auth_server.client_id, client_secret=secret, token=upstream[token_name], hint=hint)
        return {"ended": True, "upstream_revoked": revoked}


@dataclass(frozen=True)
class _LoginContext:
    """What the callback read from the database, so the IdP is called outside a transaction."""

    auth_server_id: int
    auth_server_token: str
    group_sync: str
    client_id: str
    client_secret: str | None = field(repr=False)
    provider_id: int
    provider_name: str
    auth_method: str
    require_id_token: bool
    claim_mapping: dict[str, str]
    callback_url: str
    redirect_uri: str
    client_state: str | None
    nonce: str | None
    dry_run: bool
    code_challenge: str | None  # the viewer's (or console's) PKCE challenge for Portico's own code
