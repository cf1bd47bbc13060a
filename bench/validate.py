"""Throughput, latency and CPU cost of Orthanc's validate calls, against a bare Starlette endpoint.

1. Seeds a fresh SQLite data directory (a temporary one) with 10,000 users, 500 groups,
   50 imaging servers, 20,000 access rules, 1-3 memberships per user, one plugin
   credential per imaging server and API tokens for 6,000 users (``bench/_seed.py``).
2. Starts ``python -m server serve --port 0 --log-level warning`` on it, warms the decision
   cache (one validate per token), then drives warm ``POST /orthanc/{server}/tokens/validate``
   calls at N keep-alive connections for a fixed time with wrk (or, without wrk, a Python
   load generator pinned to its own core: ``bench/_load.py``).
3. Drives a bare Starlette app on uvicorn (``bench/_bare.py``: same uvicorn options, one
   POST route answering a fixed body with orjson) identically, for comparison. Both servers
   run side by side and are measured in ``--rounds`` alternating rounds (default 3); the
   ratio is the median of the rounds' ratios, each of two runs made back to back, so that
   other work on a shared machine disturbs both endpoints alike.
4. Measures the cold decision cost: server CPU (utime+stime from /proc/<pid>/stat) across
   N validate calls with N never-seen tokens (of N distinct users), divided by N, minus the
   warm per-call CPU measured the same way (same client, same number of calls); two rounds
   each for API tokens and for Portico's ES256 access tokens, the lower reported.
5. Repeats the throughput runs with 2 server processes (``--workers 2``, SO_REUSEPORT; the
   bare app as 2 processes on one SO_REUSEPORT port), unless ``--no-workers2``.

With one server process, the server is pinned to CPU 0 and the load generator to CPU 1;
with two, nothing is pinned (2 servers and the load generator share the 2 CPUs).

Run from the repository root with the project's interpreter:

    .venv/bin/python bench/validate.py [--duration 10] [--connections 32] [--rounds 3] [--cold 2000] [--no-workers2]

Everything it starts is stopped at the end (also on Ctrl-C or an error); its temporary
directory (data dir, Lua script, request file) is removed.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import queue
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(0, str(HERE))

import _seed

from server.settings import DATABASE_FILENAME

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
TWO_CPUS = hasattr(os, "sched_getaffinity") and {0, 1} <= os.sched_getaffinity(0)
SERVER_CPU, LOAD_CPU = 0, 1


# ---------------------------------------------------------------- processes


def _environment(data_dir: Path | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTICO_")}
    if data_dir is not None:
        env["PORTICO_DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = str(REPOSITORY) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _pinned(cpu: int | None, command: list[str]) -> list[str]:
    """The command run on one CPU only (taskset execs it: same pid, every thread pinned)."""
    if cpu is None or not TWO_CPUS or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Server:
    """A server child process (its own session/process group) that prints JSON ready lines."""

    name: str
    command: list[str]
    env: dict[str, str]
    ready_lines: int = 1
    cpu: int | None = None
    process: subprocess.Popen[str] | None = None
    url: str = ""
    pids: list[int] = field(default_factory=list)  # the processes that serve (the workers)
    output: list[str] = field(default_factory=list)

    def start(self) -> Server:
        self.process = subprocess.Popen(
            _pinned(self.cpu, self.command), cwd=REPOSITORY, env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        RUNNING.append(self)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT
        while len(self.pids) < self.ready_lines:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{self.name} did not become ready in {READY_TIMEOUT:.0f} s:\n" + "".join(self.output)) from None
            if line is None:
                raise RuntimeError(f"{self.name} exited ({self.process.wait()}):\n" + "".join(self.output))
            if line.startswith("{") and '"ready"' in line:
                ready = json.loads(line)
                self.url = ready["url"]
                self.pids.append(int(ready["pid"]))
        return self

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return sum(cpu_seconds(pid) for pid in {self.process.pid, *self.pids})

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()
        if self in RUNNING:
            RUNNING.remove(self)
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reap_group()

    def _reap_group(self) -> None:
        # Workers of `serve --workers 2` live in the group of the process we started.
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.process.stdout is not None:
            self.process.stdout.close()


RUNNING: list[Server] = []


class Group:
    """Several Server processes treated as one (the bare app on one SO_REUSEPORT port)."""

    def __init__(self, members: list[Server]) -> None:
        self.members = members
        self.url = members[0].url
        self.port = members[0].port

    def cpu_seconds(self) -> float:
        return sum(member.cpu_seconds() for member in self.members)

    def stop(self) -> None:
        for member in self.members:
            member.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def portico(data_dir: Path, workers: int) -> Server:
    command = [sys.executable, "-m", "server", "serve", "--log-level", "warning"]
    if workers == 1:
        return Server("portico serve", [*command, "--port", "0"], _environment(data_dir), cpu=SERVER_CPU).start()
    return Server(
        f"portico serve --workers {workers}", [*command, "--port", str(free_port()), "--workers", str(workers)],
        _environment(data_dir), ready_lines=workers,
    ).start()


def bare(workers: int) -> Server | Group:
    command = [sys.executable, str(HERE / "_bare.py")]
    if workers == 1:
        return Server("bare starlette", [*command, "--port", "0"], _environment(), cpu=SERVER_CPU).start()
    port = free_port()
    return Group([
        Server("bare starlette", [*command, "--port", str(port), "--reuse-port"], _environment()).start() for _ in range(workers)
    ])


# ---------------------------------------------------------------- requests


@dataclass(frozen=True)
class Call:
    path: str
    authorization: str
    body: bytes
    content_type: str = "application/json"

    def raw(self, port: int) -> str:
        return (
            f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {self.authorization}\r\n"
            f"Content-Type: {self.content_type}\r\nContent-Length: {len(self.body)}\r\n\r\n"
        ) + self.body.decode("latin-1")


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def portico_access_tokens(data_dir: Path, user_ids: list[int]) -> list[_seed.ApiToken]:
    """An SSO session and a Portico ES256 access token for each user, as the login flow makes them."""
    import secrets as _secrets
    from datetime import timedelta as _timedelta

    from server.services.portico import open_portico
    from server.settings import Settings
    from server.storage.tables import Session, User, utcnow

    portico = open_portico(Settings(data_dir=data_dir), migrate_schema=False)
    try:
        with portico.db.writing() as session:
            users = {user.id: user for user in session.query(User).filter(User.id.in_(user_ids))}
            tokens = []
            for user_id in user_ids:
                row = Session(id=_secrets.token_hex(12), user_id=user_id, kind="sso", expires_at=utcnow() + _timedelta(hours=1))
                session.add(row)
                tokens.append(_seed.ApiToken(user_id, portico.tokens.issue(users[user_id], row.id)))
        return tokens
    finally:
        portico.close()


def make_call(seeded: _seed.Seeded, token: _seed.ApiToken, rng: random.Random) -> Call:
    """A validate call as the plugin sends it, mostly on a server where the user has rules."""
    mine = sorted(seeded.servers_of_user.get(token.user_id, ()))
    server_id = rng.choice(mine) if mine and rng.random() < 0.85 else rng.randint(1, seeded.servers)
    plugin = seeded.plugins[server_id]
    level = rng.choices(["study", "series", "instance"], [8, 1, 1])[0]
    method = rng.choices(["get", "delete", "post"], [17, 2, 1])[0]
    uids = seeded.study_uids.get(server_id)
    study_uid = rng.choice(uids) if uids and rng.random() < 0.3 else _seed._study_uid(rng)
    pool = seeded.labels.get(server_id) or list(_seed.LABELS)
    body = {
        "level": level,
        "method": method,
        "orthanc-id": "-".join(f"{rng.getrandbits(32):08x}" for _ in range(5)),
        "dicom-uid": study_uid if level == "study" else _seed._study_uid(rng),
        "server-id": plugin.server_token,
        "token-key": "token",
        "token-value": token.token,
        "labels": rng.sample(pool, min(len(pool), rng.randint(0, 2))),
    }
    return Call(f"/orthanc/{plugin.server_token}/tokens/validate", _basic(plugin.username, plugin.password), json.dumps(body).encode())


def send_all(url: str, calls: list[Call]) -> dict[str, int]:
    """Each call once, in order, over one keep-alive connection; counts of the answers."""
    port = int(url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    counts = {"granted": 0, "denied": 0, "errors": 0}
    try:
        for call in calls:
            connection.request("POST", call.path, body=call.body,
                               headers={"Authorization": call.authorization, "Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                counts["errors"] += 1
                if counts["errors"] == 1:
                    print(f"  unexpected answer {response.status}: {payload[:300]!r}", file=sys.stderr)
                continue
            counts["granted" if json.loads(payload)["granted"] else "denied"] += 1
    finally:
        connection.close()
    return counts


# ---------------------------------------------------------------- load generation

LUA = """-- generated by bench/validate.py: rotate over pre-built validate requests
local calls = {
%s
}
local count = #calls
local index = 0
request = function()
  index = index + 1
  if index > count then index = 1 end
  return calls[index]
end
done = function(summary, latency, _)
  local e = summary.errors
  io.write(string.format("WRK_RESULT %%d %%d %%.1f %%.1f %%.1f %%d %%d %%d %%d %%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
"""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "\\r").replace("\n", "\\n") + '"'


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_us: float
    p99_us: float
    max_us: float
    errors: int
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_request_us(self) -> float:
        return self.cpu_seconds / self.requests * 1e6 if self.requests else 0.0


class LoadGenerator:
    def __init__(self, kind: str, scratch: Path, calls: list[Call], connections: int, pin: bool) -> None:
        self.kind = kind
        self.scratch = scratch
        self.calls = calls
        self.connections = connections
        self.pin = pin

    def _command(self, port: int, seconds: float) -> tuple[list[str], str]:
        raws = [call.raw(port) for call in self.calls]
        if self.kind == "wrk":
            script = self.scratch / f"validate-{port}.lua"
            script.write_text(LUA % ",\n".join(_lua_string(raw) for raw in raws))
            return ["wrk", "-t1", f"-c{self.connections}", f"-d{seconds:g}s", "--timeout", "5s", "-s", str(script),
                    f"http://127.0.0.1:{port}/"], "wrk"
        requests = self.scratch / f"requests-{port}.json"
        requests.write_text(json.dumps(raws))
        command = [sys.executable, str(HERE / "_load.py"), str(requests), "--port", str(port),
                   "--connections", str(self.connections), "--duration", f"{seconds:g}"]
        return command, "python"

    def run(self, server: Server | Group, seconds: float) -> LoadResult:
        command, kind = self._command(server.port, seconds)
        before = server.cpu_seconds()
        completed = subprocess.run(_pinned(LOAD_CPU if self.pin else None, command), capture_output=True, text=True,
                                   timeout=seconds + 60, check=False, start_new_session=True)
        after = server.cpu_seconds()
        if completed.returncode != 0:
            raise RuntimeError(f"{kind} failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
        if kind == "wrk":
            line = next((l for l in completed.stdout.splitlines() if l.startswith("WRK_RESULT")), None)
            if line is None:
                raise RuntimeError(f"wrk printed no result:\n{completed.stdout}\n{completed.stderr}")
            values = line.split()[1:]
            requests, duration_us = int(values[0]), int(values[1])
            p50, p99, worst = (float(v) for v in values[2:5])
            errors = sum(int(v) for v in values[5:10])
        else:
            data = json.loads(completed.stdout.strip().splitlines()[-1])
            requests, duration_us = int(data["requests"]), int(float(data["duration_us"]))
            p50, p99, worst = float(data["p50"]), float(data["p99"]), float(data["max"])
            errors = int(data["errors_status"]) + int(data["errors_connect"]) + int(data["errors_read"])
        return LoadResult(requests, duration_us / 1e6, p50, p99, worst, errors, after - before)


def _median_run(runs: list[LoadResult]) -> LoadResult:
    """The run of median throughput (its latencies and CPU go with it)."""
    return sorted(runs, key=lambda run: run.rate)[len(runs) // 2]


def measure(name: str, server: Server | Group, load: LoadGenerator, duration: float, warmup: float) -> LoadResult:
    load.run(server, warmup)  # connections, allocator, caches of every worker
    result = load.run(server, duration)
    note = f", {result.errors} ERRORS (non-200, connect, read, write or timeout)" if result.errors else ""
    print(f"  {name}: {result.rate:,.0f} req/s, p50 {result.p50_us / 1000:.2f} ms, p99 {result.p99_us / 1000:.2f} ms, "
          f"server CPU {result.cpu_per_request_us:.1f} µs/req{note}", flush=True)
    return result


# ---------------------------------------------------------------- cold decisions


def cold_decision(server: Server, warm_calls: list[Call], cold_calls: list[Call]) -> tuple[float, float, dict[str, int]]:
    """(warm µs/call, cold µs/call) of server CPU, same client, same number of calls."""
    n = len(cold_calls)
    repeated = [warm_calls[i % len(warm_calls)] for i in range(n)]
    before = server.cpu_seconds()
    send_all(server.url, repeated)
    warm = (server.cpu_seconds() - before) / n * 1e6
    before = server.cpu_seconds()
    counts = send_all(server.url, cold_calls)
    cold = (server.cpu_seconds() - before) / n * 1e6
    return warm, cold, counts


def invalidation_probe(server: Server, data_dir: Path, calls: list[Call]) -> tuple[float, float]:
    """(µs/call of a warm pass, µs/call of the same pass after a commit no decision depends on)."""
    import sqlite3

    def one_pass() -> float:
        before = server.cpu_seconds()
        send_all(server.url, calls)
        return (server.cpu_seconds() - before) / len(calls) * 1e6

    warm = one_pass()
    connection = sqlite3.connect(data_dir / DATABASE_FILENAME, timeout=10)
    try:
        with connection:
            connection.execute("INSERT OR REPLACE INTO portico_meta (key, value) VALUES ('bench-probe', ?)", (str(time.time()),))
    finally:
        connection.close()
    time.sleep(1.0)  # longer than any change-watching interval
    return warm, one_pass()


# ---------------------------------------------------------------- main


def _row(name: str, result: LoadResult | None) -> str:
    if result is None:
        return f"{name:<32} {'-':>8}"
    return (f"{name:<32} {result.rate:>8,.0f} {result.p50_us / 1000:>6.2f} ms {result.p99_us / 1000:>6.2f} ms "
            f"{result.cpu_per_request_us:>7.1f} µs" + (f"   ({result.errors} errors)" if result.errors else ""))


def run(args: argparse.Namespace, scratch: Path) -> int:
    kind = args.loadgen
    if kind == "auto":
        kind = "wrk" if shutil.which("wrk") else "python"
    if kind == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk), or use --loadgen python")
    pinning = "server on CPU 0, load generator on CPU 1" if TWO_CPUS else "no CPU pinning (fewer than 2 CPUs)"
    print(f"validate benchmark: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load generator: "
          f"{'wrk -t1' if kind == 'wrk' else 'Python asyncio (bench/_load.py; wrk not found)'}, "
          f"{args.connections} keep-alive connections, {args.duration:g} s per run after a {args.warmup:g} s warm-up", flush=True)
    print(f"  1 process: {pinning}; 2 processes: unpinned", flush=True)
    load_average = os.getloadavg()[0]
    if load_average > 0.5:
        print(f"  note: the 1-minute load average is {load_average:.2f} before starting: other processes share these "
              "CPUs, so req/s and latency are noisy (server CPU per request is the steadier measure)", flush=True)

    # 1. seed
    data_dir = scratch / "data"
    data_dir.mkdir()
    started = time.perf_counter()
    migrated = subprocess.run([sys.executable, "-m", "server", "migrate"], cwd=REPOSITORY, env=_environment(data_dir),
                              capture_output=True, text=True, timeout=120, check=False)
    if migrated.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{migrated.stdout}{migrated.stderr}")
    migrate_seconds = time.perf_counter() - started
    started = time.perf_counter()
    needed = args.tokens + 2 * args.cold
    seeded = _seed.seed(data_dir, tokens=needed)
    seed_seconds = time.perf_counter() - started
    print(f"seeded {seeded.users:,} users, {seeded.groups} groups, {seeded.servers} imaging servers, {seeded.rules:,} rules, "
          f"{seeded.memberships:,} memberships, {len(seeded.tokens):,} API tokens, {len(seeded.plugins)} plugin credentials: "
          f"migrate {migrate_seconds:.2f} s + inserts {seed_seconds:.2f} s", flush=True)

    rng = random.Random(7)
    warm_calls = [make_call(seeded, token, rng) for token in seeded.tokens[: args.tokens]]
    cold_tokens = seeded.tokens[args.tokens :]
    cold_calls = [make_call(seeded, token, rng) for token in cold_tokens]
    # Portico's own ES256 access tokens, for users not seen by any call above.
    jwt_users = list(range(needed + 1, needed + 1 + 2 * args.cold))
    jwt_calls = [make_call(seeded, token, rng) for token in portico_access_tokens(data_dir, jwt_users)]
    load = LoadGenerator(kind, scratch, warm_calls, args.connections, pin=TWO_CPUS)
    results: dict[str, LoadResult | None] = {}

    # 2-3. one process each, both started (and pinned to the same CPU) before the first run,
    # measured in alternating rounds: other work on the machine then disturbs both alike.
    print(f"1 server process, {args.rounds} alternating round(s):", flush=True)
    bare_server: Server | Group = bare(1)
    server: Server | Group = portico(data_dir, 1)
    pairs: list[tuple[LoadResult, LoadResult]] = []
    try:
        counts = send_all(server.url, warm_calls)  # warms the token, subject, server and credential caches
        if counts["errors"]:
            raise RuntimeError(f"warming: {counts['errors']} of {len(warm_calls)} validate calls did not answer 200")
        print(f"  warmed {len(warm_calls)} tokens: {counts['granted']} granted, {counts['denied']} denied", flush=True)
        for number in range(args.rounds):
            order = ["bare", "portico"] if number % 2 == 0 else ["portico", "bare"]
            measured = {}
            for which in order:
                if which == "bare":
                    measured[which] = measure(f"round {number + 1}: bare starlette", bare_server, load, args.duration, args.warmup)
                else:
                    measured[which] = measure(f"round {number + 1}: portico validate (warm)", server, load, args.duration, args.warmup)
            pairs.append((measured["bare"], measured["portico"]))
        bare_server.stop()
        results["bare"] = _median_run([pair[0] for pair in pairs])
        results["portico"] = _median_run([pair[1] for pair in pairs])
        # 4. cold decisions: two rounds of N never-seen tokens each; the lower is reported (less noise)
        rounds = []
        for number in range(2):
            batch = cold_calls[number * args.cold : (number + 1) * args.cold]
            rounds.append(cold_decision(server, warm_calls, batch))
        warm_seq, cold_seq, cold_counts = min(rounds, key=lambda r: r[1] - r[0])
        print(f"  cold: {args.cold} never-seen tokens x 2 rounds, sequential on one connection: "
              f"{', '.join(f'{c - w:.0f}' for w, c, _ in rounds)} µs/decision over warm "
              f"({cold_counts['granted']} granted, {cold_counts['denied']} denied, {cold_counts['errors']} errors)", flush=True)
        jwt_rounds = []
        for number in range(2):
            batch = jwt_calls[number * args.cold : (number + 1) * args.cold]
            jwt_rounds.append(cold_decision(server, warm_calls, batch))
        jwt_warm, jwt_cold, jwt_counts = min(jwt_rounds, key=lambda r: r[1] - r[0])
        print(f"  cold ES256: {args.cold} never-seen Portico access tokens (signature, session, user, rules) x 2 rounds: "
              f"{', '.join(f'{c - w:.0f}' for w, c, _ in jwt_rounds)} µs/decision over warm ({jwt_counts['granted']} granted, "
              f"{jwt_counts['denied']} denied, {jwt_counts['errors']} errors)", flush=True)
        # 4b. does an unrelated commit to the database drop the warm caches?
        probe = invalidation_probe(server, data_dir, warm_calls)
        print(f"  invalidation probe: one pass over the {len(warm_calls)} warm tokens costs {probe[0]:.0f} µs/call; "
              f"after one unrelated commit (a row in portico_meta) {probe[1]:.0f} µs/call", flush=True)
    finally:
        bare_server.stop()
        code = server.stop()
        if code != 0:
            print(f"  portico serve did not stop cleanly (exit {code})", file=sys.stderr)

    # 5. two processes each
    if args.workers2:
        print("2 server processes (SO_REUSEPORT):", flush=True)
        load2 = LoadGenerator(kind, scratch, warm_calls, args.connections, pin=False)
        server = bare(2)
        try:
            results["bare2"] = measure("bare starlette x2", server, load2, args.duration, args.warmup)
        finally:
            server.stop()
        server = portico(data_dir, 2)
        try:
            results["portico2"] = measure("portico validate x2 (warm)", server, load2, args.duration, max(args.warmup, 2.0))
        finally:
            server.stop()

    # table
    bare1, portico1 = results["bare"], results["portico"]
    assert bare1 is not None and portico1 is not None
    # Each round's ratio compares two runs made back to back; the median of those is the figure.
    ratios = [p.rate / b.rate if b.rate else 0.0 for b, p in pairs]
    ratio = statistics.median(ratios)
    cpu_ratio = bare1.cpu_per_request_us / portico1.cpu_per_request_us if portico1.cpu_per_request_us else 0.0
    cold = cold_seq - warm_seq
    cold_jwt = jwt_cold - jwt_warm
    print()
    print(f"{'endpoint':<32} {'req/s':>8} {'p50':>9} {'p99':>9} {'cpu/req':>10}")
    print(_row("bare starlette", bare1))
    print(_row("portico validate (warm)", portico1))
    print(f"{'ratio':<32} {ratio:>7.0%}    (target >= 70%: {'met' if ratio >= 0.70 else 'MISSED'}; "
          f"p99 target < 10 ms: {'met' if portico1.p99_us < 10_000 else 'MISSED'})")
    if len(pairs) > 1:
        print(f"{'':<32} (median of {len(pairs)} rounds' ratios: {', '.join(f'{r:.0%}' for r in ratios)}; "
              f"median runs shown; server CPU per request: bare {cpu_ratio:.0%} of portico's)")
    if args.workers2:
        bare2, portico2 = results["bare2"], results["portico2"]
        assert bare2 is not None and portico2 is not None
        print(_row("bare starlette, 2 processes", bare2))
        print(_row("portico validate, --workers 2", portico2))
        print(f"{'ratio, 2 processes':<32} {portico2.rate / bare2.rate if bare2.rate else 0:>7.0%}")
    print(f"warm decision: {warm_seq:.0f} µs server CPU per call (sequential, one connection; "
          f"{portico1.cpu_per_request_us:.0f} µs under load)")
    print(f"cold decision, first-seen API token: {cold:.0f} µs server CPU ({cold_seq:.0f} - {warm_seq:.0f} warm)")
    print(f"cold decision, first-seen ES256 token: {cold_jwt:.0f} µs server CPU ({jwt_cold:.0f} - {jwt_warm:.0f} warm; "
          f"target < 300 µs: {'met' if cold_jwt < 300 else 'MISSED'})")
    print(f"(1-minute load average at the end: {os.getloadavg()[0]:.2f})")
    if args.json:
        print(json.dumps({
            "loadgen": kind,
            "connections": args.connections,
            "duration": args.duration,
            "seed_seconds": {"migrate": migrate_seconds, "inserts": seed_seconds},
            "runs": {key: None if value is None else {**value.__dict__, "rate": value.rate, "cpu_per_request_us": value.cpu_per_request_us}
                     for key, value in results.items()},
            "ratio": ratio,
            "round_ratios": ratios,
            "cpu_ratio": cpu_ratio,
            "warm_cpu_us": warm_seq,
            "cold_decision_us": cold,
            "cold_es256_decision_us": cold_jwt,
        }, indent=2))
    errors = sum(r.errors for r in results.values() if r is not None)
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of untimed load before each run (default 1)")
    parser.add_argument("--tokens", type=int, default=300, help="distinct warm tokens the load rotates over (default 300)")
    parser.add_argument("--cold", type=int, default=2000, help="never-seen tokens per cold round (2 rounds; default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/portico rounds of the 1-process runs (default 3)")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto", help="default: wrk if installed")
    parser.add_argument("--no-workers2", dest="workers2", action="store_false", help="skip the 2-process runs")
    parser.add_argument("--json", action="store_true", help="print the results as JSON as well")
    args = parser.parse_args()
    if args.duration <= 0 or args.connections < 1 or args.tokens < 1 or args.cold < 1 or args.rounds < 1:
        parser.error("--duration, --connections, --tokens, --cold and --rounds must be positive")
    if args.tokens + 4 * args.cold > 10_000:
        parser.error("--tokens + 4 x --cold must not exceed the 10,000 seeded users (one token per user)")

    def terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    scratch = Path(tempfile.mkdtemp(prefix="portico-bench-validate-"))
    try:
        return run(args, scratch)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process started", file=sys.stderr)
        return 130
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        pending = RUNNING.copy()
        for server in pending:
            try:
                server.stop()
            except (OSError, subprocess.SubprocessError, RuntimeError) as error:  # keep stopping the others
                print(f"stopping {server.name}: {error}", file=sys.stderr)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
