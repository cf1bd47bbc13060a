"""Every attack and fault of the issue gets a clear, specific refusal and leaves nothing
behind: no session, no user, no code handed out."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from tests.server.sso.conftest import VIEWER_URL, Wiring, wire
from tests.support.idp import IdPUser, SimulatedBrowser, TestIdP


@pytest.fixture
def faults(idp: TestIdP) -> Iterator[TestIdP]:
    idp.reset_faults()
    yield idp
    idp.reset_faults()


def _error(landing) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    """(status, code, message) of Portico's error page."""
    assert landing.response is not None, f"expected Portico's error page, the browser stopped at {landing.url}"
    html = landing.response.text
    code = re.search(r"id=\"step\">Step: [a-z_]+ · code: ([a-z_]+)", html)
    message = re.search(r'<p role="alert" id="message">(.*?)</p>', html, re.S)
    assert code and message, html[:500]
    return landing.response.status_code, code.group(1), message.group(1)


class Nothing:
    """Asserts that a refused login left no session and no user behind."""

    def __init__(self, wiring: Wiring, username: str) -> None:
        self.wiring, self.username = wiring, username
        self.sessions = wiring.sso_session_count()

    def left_behind(self) -> None:
        assert self.wiring.sso_session_count() == self.sessions
        assert self.wiring.user(self.username) is None


def _callback_url(wiring: Wiring, user: IdPUser) -> tuple[SimulatedBrowser, str]:
    """Log in at the IdP but stop before the browser reaches Portico's callback."""
    browser = wiring.browser()
    browser.get(str(httpx.URL(wiring.login_url, params={"redirect_uri": VIEWER_URL})))
    landing = browser.login(user.username, user.password, stop_at=wiring.urls["callback"])
    assert landing.stopped, landing
    return browser, landing.url


def _with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = dict(pair.split("=", 1) for pair in parts.query.split("&"))
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return parts._replace(query=urlencode(query, safe="%")).geturl()


def test_state_mismatch_is_refused(cognito: Wiring, fresh_user: IdPUser) -> None:
    nothing = Nothing(cognito, fresh_user.username)
    browser, callback = _callback_url(cognito, fresh_user)
    status, code, message = _error(browser.get(_with_query(callback, state="forged")))
    assert (status, code) == (400, "state_mismatch") and "does not match" in message
    nothing.left_behind()


def test_missing_state_is_refused(cognito: Wiring, fresh_user: IdPUser) -> None:
    nothing = Nothing(cognito, fresh_user.username)
    browser, callback = _callback_url(cognito, fresh_user)
    status, code, _ = _error(browser.get(_with_query(callback, state=None)))
    assert (status, code) == (400, "state_missing")
    nothing.left_behind()


def test_a_callback_replayed_in_the_same_browser_is_refused(cognito: Wiring, fresh_user: IdPUser) -> None:
    browser, callback = _callback_url(cognito, fresh_user)
    assert browser.get(callback).stopped  # the real login reaches the viewer
    sessions = cognito.sso_session_count()
    status, code, _ = _error(browser.get(callback))
    assert code in ("login_unknown", "login_replayed") and status == 400
    assert cognito.sso_session_count() == sessions


def test_a_callback_without_the_login_cookie_is_refused(cognito: Wiring, fresh_user: IdPUser) -> None:
    nothing = Nothing(cognito, fresh_user.username)
    _, callback = _callback_url(cognito, fresh_user)
    status, code, message = _error(cognito.browser().get(callback))  # another browser: no cookie
    assert (status, code) == (400, "login_unknown") and "start again" in message
    nothing.left_behind()


@pytest.fixture(scope="module")
def stateless(portico, idp) -> Wiring:  # type: ignore[no-untyped-def]
    """A provider with state and PKCE off, so that only the nonce ties a code to its login."""
    return wire(portico, idp, preset="cognito",
                provider_overrides={"use_state": False, "use_pkce": False}, auth_server_overrides={"is_default": False})


def test_nonce_mismatch_is_refused(stateless: Wiring, fresh_user: IdPUser) -> None:
    nothing = Nothing(stateless, fresh_user.username)
    # Browser A starts a login; browser B's code (with B's nonce) is delivered to A.
    victim = stateless.browser()
    victim.get(str(httpx.URL(stateless.login_url, params={"redirect_uri": VIEWER_URL})))
    _, attacker_callback = _callback_url(stateless, fresh_user)
    status, code, message = _error(victim.get(attacker_callback))
    assert code == "id_token_nonce" and status == 502 and "nonce" in message
    nothing.left_behind()


def test_a_replayed_authorization_code_is_refused_by_the_idp(stateless: Wiring, fresh_user: IdPUser) -> None:
    browser, callback = _callback_url(stateless, fresh_user)
    assert browser.get(callback).stopped
    sessions = stateless.sso_session_count()
    replayer = stateless.browser()
    replayer.get(str(httpx.URL(stateless.login_url, params={"redirect_uri": VIEWER_URL})))
    status, code, message = _error(replayer.get(callback))
    assert (status, code) == (502, "token_invalid_grant") and "already used" in message
    assert stateless.sso_session_count() == sessions


def test_a_redirect_url_outside_the_whitelist_gets_no_redirect(cognito: Wiring) -> None:
    response = httpx.get(cognito.login_url, params={"redirect_uri": "https://evil.test/steal"})
    assert response.status_code == 400 and "location" not in response.headers
    assert "redirect_uri_not_allowed" in response.text and "whitelist" in response.text
    assert "https://evil.test/steal" in response.text.replace("&#39;", "'")
    missing = httpx.get(cognito.login_url)
    assert missing.status_code == 400 and "redirect_uri_missing" in missing.text


@pytest.mark.parametrize(
    ("fault", "code", "words"),
    [
        ("bad_signature", "id_token_signature", "does not verify"),
        ("alg_none", "id_token_algorithm", "'none'"),
        ("hs256_public_key", "id_token_algorithm", "'HS256'"),
        ("wrong_iss", "id_token_issuer", "correct the provider's issuer"),
        ("wrong_aud", "id_token_audience", "check the auth server's client id"),
        ("expired", "id_token_expired", "expired"),
        ("not_yet_valid", "id_token_not_yet_valid", "synchronise both clocks"),
    ],
)
def test_bad_id_tokens_are_refused(cognito: Wiring, faults: TestIdP, fresh_user: IdPUser, fault: str, code: str, words: str) -> None:
    nothing = Nothing(cognito, fresh_user.username)
    faults.set_faults(id_token=fault)
    _, landing = cognito.login(fresh_user.username, fresh_user.password)
    status, got, message = _error(landing)
    assert (status, got) == (502, code), message
    assert words in message.replace("&#39;", "'")
    nothing.left_behind()


def test_an_error_from_the_idp_is_explained(cognito: Wiring, faults: TestIdP, fresh_user: IdPUser) -> None:
    nothing = Nothing(cognito, fresh_user.username)
    faults.set_faults(authorize_error="unauthorized_client")
    browser = cognito.browser()
    landing = browser.get(str(httpx.URL(cognito.login_url, params={"redirect_uri": VIEWER_URL})))
    if landing.response is not None and "password" in landing.response.text:
        landing = browser.login(fresh_user.username, fresh_user.password)
    status, code, message = _error(landing)
    assert code == "idp_client_refused" and "unauthorized_client" in message
    nothing.left_behind()


def test_cancelling_at_the_idp_is_explained(cognito: Wiring, fresh_user: IdPUser) -> None:
    nothing = Nothing(cognito, fresh_user.username)
    browser = cognito.browser()
    browser.get(str(httpx.URL(cognito.login_url, params={"redirect_uri": VIEWER_URL})))
    status, code, message = _error(browser.cancel())
    assert code == "idp_access_denied" and "cancelled" in message
    nothing.left_behind()


def test_an_unreachable_idp_is_explained(portico, idp, fresh_user: IdPUser) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/oauth2/token"
    down = wire(portico, idp, preset="cognito", provider_overrides={"token_endpoint": dead}, auth_server_overrides={"is_default": False})
    nothing = Nothing(down, fresh_user.username)
    _, landing = down.login(fresh_user.username, fresh_user.password)
    status, code, message = _error(landing)
    assert (status, code) == (502, "idp_unreachable") and message.startswith("Cannot connect to the identity provider")
    nothing.left_behind()


def test_an_idp_slower_than_the_timeout_is_explained(cognito: Wiring, faults: TestIdP, fresh_user: IdPUser) -> None:
    nothing = Nothing(cognito, fresh_user.username)
    faults.set_faults(token_delay_ms=3000)  # Portico waits 1.5 s (PORTICO_IDP_TIMEOUT_SECONDS)
    _, landing = cognito.login(fresh_user.username, fresh_user.password)
    status, code, message = _error(landing)
    assert (status, code) == (504, "idp_timeout") and "did not answer within 1.5 s" in message
    nothing.left_behind()


@pytest.mark.parametrize(("fault", "code"), [("malformed", "idp_bad_response"), ("missing_sub", "userinfo_malformed"), ("error", "userinfo_error")])
def test_a_broken_userinfo_answer_is_explained(cognito: Wiring, faults: TestIdP, fresh_user: IdPUser, fault: str, code: str) -> None:
    nothing = Nothing(cognito, fresh_user.username)
    faults.set_faults(userinfo=fault)
    _, landing = cognito.login(fresh_user.username, fresh_user.password)
    status, got, message = _error(landing)
    assert (status, got) == (502, code), message
    nothing.left_behind()


def test_a_wrong_client_secret_is_explained(portico, idp, fresh_user: IdPUser) -> None:  # type: ignore[no-untyped-def]
    wrong = wire(portico, idp, preset="cognito", secret="not-the-secret", auth_server_overrides={"is_default": False})
    nothing = Nothing(wrong, fresh_user.username)
    _, landing = wrong.login(fresh_user.username, fresh_user.password)
    status, code, message = _error(landing)
    assert code == "token_invalid_client" and "client secret" in message
    nothing.left_behind()


def test_failed_logins_are_audited(cognito: Wiring, fresh_user: IdPUser) -> None:
    browser, callback = _callback_url(cognito, fresh_user)
    browser.get(_with_query(callback, state="forged"))
    events = cognito.api.get("/api/v1/audit-events", params={"action": "auth.sso.login", "outcome": "failure", "limit": 5,
                                                              "sort": "-id"}).json()["items"]
    assert events and "state_mismatch" in events[0]["detail"]


def test_a_forged_callback_does_not_destroy_the_login_in_progress(cognito: Wiring, fresh_user: IdPUser) -> None:
    browser, callback = _callback_url(cognito, fresh_user)
    status, code, _ = _error(browser.get(_with_query(callback, state="forged", code="forged")))
    assert code == "state_mismatch"
    # The real answer from the IdP still completes the login.
    assert browser.get(callback).stopped


def test_a_look_alike_username_from_the_idp_is_refused(cognito: Wiring, idp: TestIdP) -> None:
    impostor = "\u0430dmin"  # Cyrillic "а": looks like "admin"
    idp.add_user("impostor", "impostor-password", {"cognito:username": impostor, "email": "x@idp.test"})
    nothing = Nothing(cognito, impostor)
    _, landing = cognito.login("impostor", "impostor-password")
    status, code, message = _error(landing)
    assert code == "claim_mapping_failed" and "characters Portico does not allow" in message
    nothing.left_behind()


def test_a_viewer_using_pkce_must_present_its_verifier(cognito: Wiring, fresh_user: IdPUser) -> None:
    from tests.support.idp import pkce_pair

    verifier, challenge = pkce_pair()
    browser = cognito.browser()
    browser.get(str(httpx.URL(cognito.login_url, params={
        "redirect_uri": VIEWER_URL, "code_challenge": challenge, "code_challenge_method": "S256"})))
    landing = browser.login(fresh_user.username, fresh_user.password)
    code = landing.query["code"]
    token_url = cognito.urls["token"]
    without = httpx.post(token_url, data={"grant_type": "authorization_code", "code": code, "redirect_uri": VIEWER_URL})
    assert without.status_code == 400 and "code_verifier" in without.json()["error_description"]
    # A refused attempt does not use the code up: the holder of the verifier still gets its tokens.
    good = httpx.post(token_url, data={"grant_type": "authorization_code", "code": code, "redirect_uri": VIEWER_URL,
                                       "code_verifier": verifier})
    assert good.status_code == 200, good.text
    plain = httpx.get(cognito.login_url, params={"redirect_uri": VIEWER_URL, "code_challenge": challenge,
                                                 "code_challenge_method": "plain"})
    assert plain.status_code == 400 and "pkce_method" in plain.text


def test_the_sign_out_url_answers_the_browser(cognito: Wiring) -> None:
    page = httpx.get(cognito.urls["logout"])
    assert page.status_code == 200 and "You are signed out" in page.text
