"""The provider-key cache: fetched once, refetched once on an unknown kid, never more often
than its rate allows (a stream of made-up kids must not make Portico hammer the IdP)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from server.services.oidc_rp import IdPError, JwksCache, http_client


def _jwk(kid: str) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return {**public, "kid": kid, "alg": "ES256", "use": "sig"}


class KeyServer:
    """A real HTTP server publishing a JWKS that the test can change, counting fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = [_jwk("one")]
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def key_server() -> Iterator[KeyServer]:
    server = KeyServer()
    yield server
    server.close()


def test_keys_are_fetched_once_then_served_from_memory(key_server: KeyServer) -> None:
    cache = JwksCache()
    with http_client(2) as http:
        for _ in range(5):
            assert cache.key(http, key_server.url, "one").key_id == "one"
    assert key_server.fetches == 1


def test_an_unknown_kid_refetches_once_and_finds_a_rotated_key(key_server: KeyServer) -> None:
    cache = JwksCache(min_refresh=0)
    with http_client(2) as http:
        cache.key(http, key_server.url, "one")
        key_server.keys.append(_jwk("two"))  # the provider rotates
        assert cache.key(http, key_server.url, "two").key_id == "two"
    assert key_server.fetches == 2


def test_made_up_kids_do_not_make_portico_hammer_the_provider(key_server: KeyServer) -> None:
    cache = JwksCache(min_refresh=60)
    with http_client(2) as http:
        cache.key(http, key_server.url, "one")
        for attempt in range(20):
            with pytest.raises(IdPError) as refused:
                cache.key(http, key_server.url, f"made-up-{attempt}")
            assert refused.value.code == "id_token_unknown_key"
    # The first fetch, and no refetch within the minute: made-up kids cost nothing upstream.
    assert key_server.fetches == 1
