"""A real OpenID Connect identity provider for the tests, and a browser without JavaScript.

``TestIdP`` runs ``node tests/idp/idp.mjs`` (panva's certified ``oidc-provider``, dressed
with AWS Cognito's hosted-UI paths) as a child process on 127.0.0.1 and drives its
test-only control endpoints (``/__test/...``): fault injection, users and clients added at
runtime, recorded revocations and logins. The IdP exits when its stdin closes, so it is
never orphaned by a dying pytest.

``SimulatedBrowser`` is an ``httpx.Client`` with its own cookie jar that follows redirects
itself, records every URL it went through, stops before fetching a URL that starts with a
given prefix (a client's redirect URI, say), fills and submits HTML forms (the IdP's login
page, or any other) and submits forms marked ``data-autosubmit`` as a browser's script
would.

Config file that ``idp.mjs`` reads (``TestIdP`` writes it)::

    {"port": 0,
     "clients": [{"client_id", "client_secret", "redirect_uris", "post_logout_redirect_uris"?,
                  "token_endpoint_auth_method"? (client_secret_basic), "application_type"? (web),
                  "grant_types"? (authorization_code, refresh_token)}],
     "users": [{"username", "password", "sub"?, "claims": {...}}],
     "extra_claims"?: ["custom:claim", ...], "ttl"?: {"AccessToken": 3600, ...}}

The fixtures (``test_idp``, ``simulated_browser``, ``idp_faults``) are a pytest plugin:
``pytest_plugins = ["tests.support.idp"]`` in tests/conftest.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import selectors
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode, urljoin, urlsplit

import httpx
import pytest

IDP_DIR = Path(__file__).resolve().parents[1] / "idp"
IDP_SCRIPT = IDP_DIR / "idp.mjs"
READY_TIMEOUT = 15.0
INSTALL_HINT = "run `make test` or `npm ci --prefix tests/idp`"

ID_TOKEN_FAULTS = ("bad_signature", "alg_none", "hs256_public_key", "wrong_iss", "wrong_aud", "expired", "not_yet_valid")
USERINFO_FAULTS = ("malformed", "missing_sub", "error")


class IdPError(RuntimeError):
    """The test IdP could not start, or a control request failed."""


class BrowserError(AssertionError):
    """The simulated browser met a page it cannot go on from (no such form, too many hops)."""


# ---------------------------------------------------------------------------------------
# Clients and users


def form_encoded_basic_auth(client_id: str, client_secret: str) -> str:
    """The ``Authorization`` header value for client_secret_basic as RFC 6749 §2.3.1 says:
    id and secret form-encoded (``application/x-www-form-urlencoded``) before base64."""
    raw = f"{quote_plus(client_id, safe='')}:{quote_plus(client_secret, safe='')}"
    return "Basic " + base64.b64encode(raw.encode()).decode("ascii")


def raw_basic_auth(client_id: str, client_secret: str) -> str:
    """client_secret_basic without the form-encoding (what httpx's ``auth=(id, secret)``
    sends): a strict IdP refuses it when the secret has ``+``, ``%`` and the like."""
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode("ascii")


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode("ascii")
    return verifier, challenge


def default_sub(username: str) -> str:
    """The stable ``sub`` the IdP gives a user without one (a UUID, as Cognito's are);
    the same derivation as ``defaultSub`` in idp.mjs."""
    digest = hashlib.sha256(f"portico-test-idp:{username}".encode()).hexdigest()
    return str(uuid.UUID(hex=digest[:32]))


@dataclass(frozen=True)
class IdPClient:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...] = ()
    token_endpoint_auth_method: str = "client_secret_basic"
    # "native" matches a loopback redirect URI on any port (RFC 8252 §7.3); "web" is exact.
    application_type: str = "web"

    @property
    def redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def basic_auth(self) -> str:
        return form_encoded_basic_auth(self.client_id, self.client_secret)

    def config(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": list(self.redirect_uris),
            "post_logout_redirect_uris": list(self.post_logout_redirect_uris),
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "application_type": self.application_type,
        }


@dataclass(frozen=True)
class IdPUser:
    username: str
    password: str
    claims: Mapping[str, Any] = field(default_factory=dict)
    sub: str | None = None

    @property
    def subject(self) -> str:
        return self.sub if self.sub is not None else default_sub(self.username)

    def config(self) -> dict[str, Any]:
        return {"username": self.username, "password": self.password, "sub": self.subject, "claims": dict(self.claims)}


# ---------------------------------------------------------------------------------------
# The IdP process


class TestIdP:
    """``node tests/idp/idp.mjs`` as a child process; see the module docstring."""

    __test__ = False  # a helper, not a test class, whatever its name

    def __init__(
        self,
        clients: Iterable[IdPClient],
        users: Iterable[IdPUser],
        *,
        port: int = 0,
        extra_claims: Sequence[str] = (),
        ttl: Mapping[str, int] | None = None,
        node: str | None = None,
        script: Path = IDP_SCRIPT,
        startup_timeout: float = READY_TIMEOUT,
    ) -> None:
        self._clients = {client.client_id: client for client in clients}
        self._users = {user.username: user for user in users}
        self._port = port
        self._extra_claims = list(extra_claims)
        self._ttl = dict(ttl or {})
        self._node = node
        self._script = script
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._stderr_path: Path | None = None
        self._http: httpx.Client | None = None
        self._issuer: str | None = None
        self.startup_seconds: float | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> TestIdP:
        if self._process is not None:
            raise IdPError("the test IdP is already running")
        node = self._node or shutil.which("node")
        if node is None:
            raise IdPError(f"Node.js (`node`) is not installed: {INSTALL_HINT}")
        if not (self._script.parent / "node_modules" / "oidc-provider").is_dir():
            raise IdPError(f"{self._script.parent / 'node_modules'} is missing: {INSTALL_HINT}")
        self._workdir = Path(tempfile.mkdtemp(prefix="portico-test-idp-"))
        config_path = self._workdir / "config.json"
        config_path.write_text(json.dumps(self._config()), encoding="utf-8")
        self._stderr_path = self._workdir / "stderr.log"
        started = time.monotonic()
        with self._stderr_path.open("wb") as stderr:
            self._process = subprocess.Popen(
                [node, str(self._script), str(config_path)],
                cwd=self._script.parent,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, "NODE_ENV": "test"},
            )
        try:
            ready = self._read_ready_line()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        self._issuer = str(ready["issuer"])
        self._http = httpx.Client(base_url=self._issuer, timeout=10.0)
        return self

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "port": self._port,
            "clients": [client.config() for client in self._clients.values()],
            "users": [user.config() for user in self._users.values()],
            "extra_claims": self._extra_claims,
        }
        if self._ttl:
            config["ttl"] = self._ttl
        return config

    def _read_ready_line(self) -> dict[str, Any]:
        process = self._process
        assert process is not None and process.stdout is not None
        deadline = time.monotonic() + self._startup_timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise IdPError(f"the test IdP did not say it was ready within {self._startup_timeout:.0f} s{self._stderr_tail()}")
                if not selector.select(timeout=remaining):
                    continue
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    code = process.wait(timeout=5)
                    raise IdPError(f"the test IdP exited with code {code} before it was ready{self._stderr_tail()}")
                buffer += chunk
        line = buffer.split(b"\n", 1)[0]
        try:
            ready = json.loads(line)
        except ValueError as error:
            raise IdPError(f"the test IdP printed {line!r} instead of its ready line{self._stderr_tail()}") from error
        if not isinstance(ready, dict) or ready.get("event") != "ready" or not ready.get("issuer"):
            raise IdPError(f"unexpected first line from the test IdP: {line!r}{self._stderr_tail()}")
        return ready

    def stderr_text(self) -> str:
        if self._stderr_path is None or not self._stderr_path.exists():
            return ""
        return self._stderr_path.read_text(encoding="utf-8", errors="replace")

    def _stderr_tail(self) -> str:
        text = self.stderr_text().strip()
        return f"\n--- its stderr ---\n{text[-4000:]}" if text else " (nothing on stderr)"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise IdPError("the test IdP is not running")
        return self._process

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code (0 for a clean stop)."""
        if self._http is not None:
            self._http.close()
            self._http = None
        process, self._process = self._process, None
        code: int | None = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=timeout)
            code = process.returncode
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._stderr_path = None
        return code

    def __enter__(self) -> TestIdP:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- where things are ---------------------------------------------------------------

    @property
    def issuer(self) -> str:
        if self._issuer is None:
            raise IdPError("the test IdP has not started")
        return self._issuer

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/.well-known/jwks.json"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/oauth2/authorize"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/oauth2/token"

    @property
    def userinfo_endpoint(self) -> str:
        return f"{self.issuer}/oauth2/userInfo"

    @property
    def revocation_endpoint(self) -> str:
        return f"{self.issuer}/oauth2/revoke"

    @property
    def end_session_endpoint(self) -> str:
        return f"{self.issuer}/logout"

    def client(self, client_id: str) -> IdPClient:
        return self._clients[client_id]

    def user(self, username: str) -> IdPUser:
        return self._users[username]

    def authorize_url(
        self,
        client: IdPClient | str,
        *,
        redirect_uri: str | None = None,
        scope: str = "openid email profile",
        state: str | None = None,
        nonce: str | None = None,
        code_challenge: str | None = None,
        **extra: str,
    ) -> str:
        """An authorization request URL as a client would build it (code flow; S256 when a
        challenge is given; state and nonce only when given)."""
        registered = self.client(client) if isinstance(client, str) else client
        params = {
            "response_type": "code",
            "client_id": registered.client_id,
            "redirect_uri": redirect_uri or registered.redirect_uri,
            "scope": scope,
        }
        if state is not None:
            params["state"] = state
        if nonce is not None:
            params["nonce"] = nonce
        if code_challenge is not None:
            params["code_challenge"] = code_challenge
            params["code_challenge_method"] = "S256"
        params.update(extra)
        return f"{self.authorization_endpoint}?{urlencode(params)}"

    # -- control (/__test/) -------------------------------------------------------------

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        if self._http is None:
            raise IdPError("the test IdP is not running")
        response = self._http.request(method, f"/__test/{path}", json=body)
        if response.status_code != 200:
            raise IdPError(f"{method} /__test/{path} answered {response.status_code}: {response.text}")
        return response.json()

    def set_faults(self, **modes: Any) -> dict[str, Any]:
        """Fault modes, kept until reset: id_token (one of ID_TOKEN_FAULTS), token_delay_ms,
        token_error (an OAuth error code), userinfo (one of USERINFO_FAULTS),
        authorize_error (an OAuth error code). None clears one. Returns all modes."""
        result: dict[str, Any] = self._control("POST", "faults", modes)
        return result

    def reset_faults(self) -> None:
        self._control("DELETE", "faults")

    def faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._control("GET", "faults")
        return result

    def revocations(self) -> list[dict[str, Any]]:
        """Every successful /oauth2/revoke: token, prefix (12 chars), token_type_hint,
        client_id, kind ("refresh_token", "access_token", or None for an unknown token), at."""
        result: list[dict[str, Any]] = self._control("GET", "revocations")
        return result

    def clear_revocations(self) -> None:
        self._control("DELETE", "revocations")

    def logins(self) -> dict[str, int]:
        """Successful logins per username since start."""
        result: dict[str, int] = self._control("GET", "logins")
        return result

    def add_user(self, username: str, password: str, claims: Mapping[str, Any] | None = None, sub: str | None = None) -> IdPUser:
        """Adds or replaces a user. Claims named neither in the start-up users, the standard
        OIDC claims, the Cognito/Keycloak group claims nor ``extra_claims`` are not returned
        (the provider's claim list is fixed at start): that raises IdPError."""
        user = IdPUser(username, password, dict(claims or {}), sub)
        answer = self._control("POST", "users", user.config())
        if answer.get("claims_not_returned"):
            raise IdPError(f"claims {answer['claims_not_returned']} would not be returned; pass extra_claims= at start")
        self._users[username] = user
        return user

    def add_client(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: Sequence[str],
        *,
        post_logout_redirect_uris: Sequence[str] = (),
        token_endpoint_auth_method: str = "client_secret_basic",
        application_type: str = "web",
    ) -> IdPClient:
        """Adds or replaces a client (for a redirect URI known only once Portico runs)."""
        client = IdPClient(
            client_id,
            client_secret,
            tuple(redirect_uris),
            tuple(post_logout_redirect_uris),
            token_endpoint_auth_method,
            application_type,
        )
        self._control("POST", "clients", client.config())
        self._clients[client_id] = client
        return client


# ---------------------------------------------------------------------------------------
# The browser


@dataclass(frozen=True)
class Hop:
    method: str
    url: str
    status: int | None  # None: not fetched (the browser stopped there)


@dataclass(frozen=True)
class Landing:
    """Where a navigation ended: at a stop prefix (not fetched) or on a page that is not a
    redirect (``response`` is that page)."""

    url: str
    stopped: bool
    response: httpx.Response | None

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.url).query, keep_blank_values=True))

    @property
    def status_code(self) -> int | None:
        return None if self.response is None else self.response.status_code

    @property
    def text(self) -> str:
        return "" if self.response is None else self.response.text


@dataclass
class Form:
    action: str  # absolute
    method: str  # "GET" or "POST"
    attrs: dict[str, str]
    fields: list[tuple[str, str, str]] = field(default_factory=list)  # (name, value, type) of named inputs
    buttons: list[dict[str, str]] = field(default_factory=list)  # submit buttons' attributes

    def field_names(self) -> set[str]:
        return {name for name, _, _ in self.fields}

    def button(self, key: str) -> dict[str, str] | None:
        """The submit button with this id or name."""
        for button in self.buttons:
            if key in (button.get("id"), button.get("name")):
                return button
        return None


_TEXT_INPUT_TYPES = {"hidden", "text", "password", "email", "number", "search", "tel", "url"}


class _PageParser(HTMLParser):
    def __init__(self, base_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.forms: list[Form] = []
        self._current: Form | None = None
        self._text: list[str] = []
        self._skip = 0
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value if value is not None else "" for key, value in attrs}
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag == "form":
            self._current = Form(
                action=urljoin(self.base_url, attributes.get("action") or self.base_url),
                method=(attributes.get("method") or "GET").upper(),
                attrs=attributes,
            )
            self.forms.append(self._current)
        elif self._current is not None and tag == "input":
            kind = attributes.get("type", "text").lower()
            if kind in ("submit", "image"):
                self._current.buttons.append(attributes)
            elif "name" in attributes and kind in _TEXT_INPUT_TYPES:
                self._current.fields.append((attributes["name"], attributes.get("value", ""), kind))
            elif "name" in attributes and kind in ("checkbox", "radio") and "checked" in attributes:
                self._current.fields.append((attributes["name"], attributes.get("value", "on"), kind))
        elif self._current is not None and tag == "button":
            if attributes.get("type", "submit").lower() == "submit":
                self._current.buttons.append(attributes)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag == "form":
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self._text.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self._text).split())


_ssl_context: ssl.SSLContext | None = None


def _shared_ssl_context() -> ssl.SSLContext:
    # httpx builds a fresh SSL context per client (~25 ms); browsers are made by the hundred.
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return _ssl_context


class SimulatedBrowser:
    """A browser without JavaScript; see the module docstring. One instance, one cookie jar."""

    REDIRECTS = (301, 302, 303, 307, 308)

    def __init__(self, *, stop_at: str | Sequence[str] = (), timeout: float = 10.0, max_hops: int = 30) -> None:
        self.client = httpx.Client(
            follow_redirects=False,
            timeout=timeout,
            verify=_shared_ssl_context(),
            headers={"User-Agent": "PorticoSimulatedBrowser/1.0", "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
        )
        self.stop_at: tuple[str, ...] = (stop_at,) if isinstance(stop_at, str) else tuple(stop_at)
        self.max_hops = max_hops
        self.history: list[Hop] = []
        self.page: httpx.Response | None = None
        self._parsed: _PageParser | None = None

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> SimulatedBrowser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what the browser sees ----------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        """Every URL visited or stopped at, in order."""
        return [hop.url for hop in self.history]

    @property
    def url(self) -> str | None:
        return str(self.page.url) if self.page is not None else None

    @property
    def title(self) -> str:
        return self._parsed.title.strip() if self._parsed is not None else ""

    @property
    def text(self) -> str:
        """The visible text of the current page (no script or style), whitespace folded."""
        return self._parsed.text if self._parsed is not None else ""

    def forms(self) -> list[Form]:
        return list(self._parsed.forms) if self._parsed is not None else []

    def find_form(self, *, fields: Iterable[str] = (), button: str | None = None) -> Form:
        wanted = set(fields)
        for form in self.forms():
            if wanted <= form.field_names() and (button is None or form.button(button) is not None):
                return form
        raise BrowserError(f"no form with fields {sorted(wanted)} and button {button!r} on {self.url}: {self.text[:500]!r}")

    # -- navigation ---------------------------------------------------------------------

    def get(self, url: str, *, stop_at: str | Sequence[str] | None = None) -> Landing:
        return self._navigate("GET", url, None, self._stops(stop_at))

    def post(self, url: str, data: Mapping[str, str] | Sequence[tuple[str, str]], *, stop_at: str | Sequence[str] | None = None) -> Landing:
        return self._navigate("POST", url, list(data.items()) if isinstance(data, Mapping) else list(data), self._stops(stop_at))

    def submit(
        self,
        form: Form,
        values: Mapping[str, str] | None = None,
        *,
        button: str | None = None,
        stop_at: str | Sequence[str] | None = None,
    ) -> Landing:
        """Submits ``form`` with its own fields overridden by ``values`` and the named (id or
        name) submit button, or none when ``button`` is None."""
        values = dict(values or {})
        pairs = [(name, values.pop(name, value)) for name, value, _ in form.fields]
        pairs.extend(values.items())
        if button is not None:
            chosen = form.button(button)
            if chosen is None:
                raise BrowserError(f"no button {button!r} in the form to {form.action}")
            if chosen.get("name"):
                pairs.append((chosen["name"], chosen.get("value", "")))
        if form.method == "GET":
            target = form.action.split("#", 1)[0].split("?", 1)[0] + "?" + urlencode(pairs)
            return self._navigate("GET", target, None, self._stops(stop_at))
        return self._navigate("POST", form.action, pairs, self._stops(stop_at))

    def login(
        self,
        username: str,
        password: str,
        *,
        stop_at: str | Sequence[str] | None = None,
        username_field: str = "username",
        password_field: str = "password",
    ) -> Landing:
        """Fills the login form on the current page and presses its first submit button that
        is not "cancel"."""
        form = self.find_form(fields=(username_field, password_field))
        submit = next((b for b in form.buttons if b.get("name") != "cancel" and b.get("id") != "cancel"), None)
        key = None if submit is None else (submit.get("id") or submit.get("name"))
        return self.submit(form, {username_field: username, password_field: password}, button=key, stop_at=stop_at)

    def cancel(self, *, stop_at: str | Sequence[str] | None = None, button: str = "cancel") -> Landing:
        """Presses the form's Cancel button (id or name ``cancel``)."""
        return self.submit(self.find_form(button=button), button=button, stop_at=stop_at)

    def _stops(self, stop_at: str | Sequence[str] | None) -> tuple[str, ...]:
        if stop_at is None:
            return self.stop_at
        return (stop_at,) if isinstance(stop_at, str) else tuple(stop_at)

    def _navigate(self, method: str, url: str, data: list[tuple[str, str]] | None, stops: tuple[str, ...]) -> Landing:
        hops = 0
        while True:
            if hops > 0 and any(url.startswith(prefix) for prefix in stops):
                self.history.append(Hop(method, url, None))
                return Landing(url, True, None)
            hops += 1
            if hops > self.max_hops:
                raise BrowserError(f"more than {self.max_hops} hops: {self.urls[-self.max_hops:]}")
            if data is not None:
                response = self.client.request(
                    method, url, content=urlencode(data), headers={"Content-Type": "application/x-www-form-urlencoded"}
                )
            else:
                response = self.client.request(method, url)
            self.history.append(Hop(method, url, response.status_code))
            location = response.headers.get("location")
            if response.status_code in self.REDIRECTS and location:
                response.read()
                url = urljoin(url, location)
                if response.status_code in (301, 302, 303):
                    method, data = "GET", None
                continue
            self.page = response
            self._parsed = _PageParser(str(response.url))
            if "html" in response.headers.get("content-type", ""):
                self._parsed.feed(response.text)
                self._parsed.close()
                auto = next((form for form in self._parsed.forms if "data-autosubmit" in form.attrs), None)
                if auto is not None:
                    fields = [(name, value) for name, value, _ in auto.fields]
                    if auto.method == "GET":
                        method, url, data = "GET", auto.action.split("?", 1)[0] + "?" + urlencode(fields), None
                    else:
                        method, url, data = "POST", auto.action, fields
                    continue
            return Landing(str(response.url), False, response)


# ---------------------------------------------------------------------------------------
# pytest fixtures (a plugin: pytest_plugins = ["tests.support.idp"])

# Contains + % / = : client_secret_basic must form-encode it (RFC 6749 §2.3.1).
PORTICO_SECRET = "p+rt%ic/o=s3cret+%2B/=="
TEST_IDP_CLIENTS = (
    # Native: any port on these loopback redirect URIs (RFC 8252 §7.3); path must match.
    IdPClient(
        "portico",
        PORTICO_SECRET,
        ("http://127.0.0.1/callback", "http://localhost/callback"),
        post_logout_redirect_uris=("http://127.0.0.1/signed-out",),
        application_type="native",
    ),
    # A web client with exact redirect URIs that authenticates with client_secret_post.
    IdPClient(
        "viewer",
        "viewer-secret-" + "x" * 24,
        ("http://127.0.0.1:9/viewer/callback",),
        token_endpoint_auth_method="client_secret_post",
    ),
)
TEST_IDP_USERS = (
    # Cognito-style claims.
    IdPUser(
        "alice",
        "alice-password",
        {
            "cognito:username": "alice",
            "cognito:groups": ["radiology", "admins"],
            "given_name": "Alice",
            "family_name": "Liddell",
            "email": "alice@example.org",
            "email_verified": True,
        },
    ),
    # Keycloak-style claims.
    IdPUser(
        "bob",
        "bob-password",
        {
            "preferred_username": "bob",
            "groups": ["radiology"],
            "name": "Bob Marley",
            "given_name": "Bob",
            "family_name": "Marley",
            "email": "bob@example.org",
            "email_verified": True,
        },
    ),
    # A password that breaks naive form or URL handling.
    IdPUser(
        "carol",
        "c+a%r&ol =pass%2B",
        {
            "cognito:username": "carol",
            "cognito:groups": [],
            "given_name": "Carol",
            "family_name": "Danvers",
            "email": "carol@example.org",
            "email_verified": False,
        },
    ),
)


@pytest.fixture(scope="session", name="test_idp")
def _test_idp() -> Iterator[TestIdP]:
    """One IdP for the session: clients ``portico`` (client_secret_basic, secret with
    ``+%/=``, native loopback redirects) and ``viewer`` (client_secret_post); users
    ``alice`` (Cognito claims), ``bob`` (Keycloak claims), ``carol`` (password with +%&).
    Faults are shared state: use ``idp_faults`` to have them reset after a test."""
    idp = TestIdP(TEST_IDP_CLIENTS, TEST_IDP_USERS)
    idp.start()
    try:
        yield idp
    finally:
        code = idp.stop()
        assert code == 0, f"the test IdP did not stop cleanly (exit code {code})"


@pytest.fixture(name="idp_faults")
def _idp_faults(test_idp: TestIdP) -> Iterator[TestIdP]:
    """The session IdP, with every fault mode reset before and after the test."""
    test_idp.reset_faults()
    yield test_idp
    test_idp.reset_faults()


@pytest.fixture(name="simulated_browser")
def _simulated_browser() -> Iterator[SimulatedBrowser]:
    """A fresh browser (its own cookie jar) per test."""
    browser = SimulatedBrowser()
    try:
        yield browser
    finally:
        browser.close()
