"""Requests per second of RFC 7662 introspection for valid tokens (warm), against a bare
endpoint of the same framework, in the same run.

1. Seeds a temporary SQLite data directory (1,000 users, 5 imaging servers with their
   plugin credentials; ``bench/_seed.py``) and gives 200 users an SSO session and a Portico
   ES256 access token, as the login flow makes them.
2. Starts ``python -m server serve`` (pinned to CPU 0), introspects every token once
   (cold), then drives warm ``POST /oauth2/introspect`` calls (HTTP Basic with a plugin
   credential, form body ``token=...``), rotating over the 200 tokens, at N keep-alive
   connections for a fixed time with wrk (pinned to CPU 1), or the Python load generator.
3. Drives the bare Starlette app (``bench/_bare.py``: read the body, answer fixed JSON with
   orjson, same uvicorn options) identically.
4. Prints both, the ratio, and the server CPU per request; checks every answer was 200 and
   that a sample of answers says ``active: true``.

    .venv/bin/python bench/introspect.py [--duration 10] [--connections 32]

The harness (processes, pinning, load generators, measurement) is bench/validate.py's.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import _seed  # noqa: E402
import validate as harness  # noqa: E402

TOKENS = 200


FORM = "application/x-www-form-urlencoded"


def _answer(port: int, call: harness.Call) -> tuple[int, dict[str, object]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", call.path, body=call.body, headers={
            "Authorization": call.authorization, "Content-Type": FORM})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def run(args: argparse.Namespace, scratch: Path) -> int:
    data_dir = scratch / "data"
    data_dir.mkdir()
    migrated = subprocess.run([sys.executable, "-m", "server", "migrate"], cwd=harness.REPOSITORY,
                              env=harness._environment(data_dir), capture_output=True, text=True, check=False)
    if migrated.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{migrated.stdout}{migrated.stderr}")
    seeded = _seed.seed(data_dir, users=1000, groups=50, servers=5, rules=1000, tokens=0)
    rng = random.Random(7)
    tokens = harness.portico_access_tokens(data_dir, rng.sample(range(1, seeded.users + 1), TOKENS))
    plugin = next(iter(seeded.plugins.values()))
    authorization = harness._basic(plugin.username, plugin.password)
    calls = [harness.Call("/oauth2/introspect", authorization, urlencode({"token": token.token}).encode(), FORM) for token in tokens]
    bare_calls = [harness.Call("/orthanc/bench/tokens/validate", authorization, call.body, FORM) for call in calls]

    kind = "wrk" if shutil.which("wrk") and not args.python_load else "python"
    pin = harness.TWO_CPUS
    print(f"introspection benchmark: {TOKENS} ES256 tokens, {args.connections} connections, {args.duration:g} s per run, "
          f"load generator {kind}{' (server on CPU 0, load on CPU 1)' if pin else ''}", flush=True)

    server = harness.portico(data_dir, 1)
    try:
        started = time.perf_counter()
        statuses = [_answer(server.port, call) for call in calls]  # cold: signature, session and user read
        cold_ms = (time.perf_counter() - started) / len(calls) * 1000
        bad = [status for status, body in statuses if status != 200 or body.get("active") is not True]
        if bad:
            raise RuntimeError(f"{len(bad)} tokens were not active at introspection: {bad[:3]}")
        print(f"  cold (first sight of each token, one client, wall time): {cold_ms:.2f} ms/request", flush=True)
        portico_result = harness.measure("portico /oauth2/introspect (warm)", server,
                                         harness.LoadGenerator(kind, scratch, calls, args.connections, pin),
                                         args.duration, args.warmup)
        status, body = _answer(server.port, calls[0])
        if status != 200 or body.get("active") is not True:
            raise RuntimeError(f"after the run the first token is not active: {status} {body}")
    finally:
        server.stop()

    bare = harness.bare(1)
    try:
        bare_result = harness.measure("bare starlette POST (same body)", bare,
                                      harness.LoadGenerator(kind, scratch, bare_calls, args.connections, pin),
                                      args.duration, args.warmup)
    finally:
        bare.stop()

    ratio = portico_result.rate / bare_result.rate if bare_result.rate else 0.0
    print(f"\nintrospection: {portico_result.rate:,.0f} req/s = {ratio:.0%} of the bare endpoint's {bare_result.rate:,.0f} req/s; "
          f"p50 {portico_result.p50_us / 1000:.2f} ms, p99 {portico_result.p99_us / 1000:.2f} ms; "
          f"server CPU {portico_result.cpu_per_request_us:.0f} µs/request (bare {bare_result.cpu_per_request_us:.0f})")
    errors = portico_result.errors + bare_result.errors
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--python-load", action="store_true", help="use bench/_load.py even if wrk is installed")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="portico-bench-introspect-"))
    try:
        return run(args, scratch)
    finally:
        for process in list(harness.RUNNING):
            process.kill()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
