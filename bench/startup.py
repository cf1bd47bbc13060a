"""How long `portico serve` takes to become ready, against a bare interpreter baseline.

For each scenario, N runs (default 5): the wall time from launching the process to the first
200 from ``GET /readyz``.

- fresh:    ``python -m server serve --port 0`` on a brand-new data directory (creates the
            SQLite file and the key file, migrates the schema to head);
- existing: the same command on a data directory that has been used already;
- baseline: ``python -c "import fastapi, sqlalchemy"`` run to its exit: the floor that any
            server built on these libraries pays before doing any work of its own.

Run from the repository root with the project's interpreter:

    .venv/bin/python bench/startup.py [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

REPOSITORY = Path(__file__).resolve().parent.parent
TIMEOUT = 60.0


def _environment(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTICO_")}
    env["PORTICO_DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = str(REPOSITORY) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _readyz_status(url: str) -> int | None:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)
    try:
        connection.request("GET", "/readyz")
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def time_to_ready(python: str, data_dir: Path) -> float:
    """Seconds from launching `serve --port 0` to the first 200 from /readyz; stops it again."""
    lines: queue.Queue[str | None] = queue.Queue()
    started = time.perf_counter()
    process = subprocess.Popen(
        [python, "-m", "server", "serve", "--port", "0", "--log-level", "warning"],
        cwd=REPOSITORY, env=_environment(data_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    output: list[str] = []
    try:
        url = ""
        deadline = started + TIMEOUT
        while not url:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                raise RuntimeError("portico serve did not print its ready line in time:\n" + "".join(output)) from None
            if line is None:
                raise RuntimeError(f"portico serve exited ({process.wait()}):\n" + "".join(output))
            output.append(line)
            if line.startswith("{") and '"ready"' in line:
                url = json.loads(line)["url"]
        while _readyz_status(url) != 200:
            if time.perf_counter() > deadline:
                raise RuntimeError("/readyz never answered 200:\n" + "".join(output))
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(5)
        if process.stdout is not None:
            process.stdout.close()
    if process.returncode != 0:
        raise RuntimeError(f"portico serve did not stop cleanly (exit {process.returncode}):\n" + "".join(output))
    return elapsed


def time_baseline(python: str) -> float:
    started = time.perf_counter()
    subprocess.run([python, "-c", "import fastapi, sqlalchemy"], cwd=REPOSITORY, check=True)
    return time.perf_counter() - started


def summary(name: str, times: list[float], baseline: float | None) -> dict[str, float | str]:
    median = statistics.median(times)
    row: dict[str, float | str] = {"scenario": name, "median": median, "min": min(times), "max": max(times)}
    if baseline is not None:
        row["over_baseline"] = median - baseline
        row["ratio"] = median / baseline
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per scenario (default 5)")
    parser.add_argument("--python", default=sys.executable, help="interpreter with Portico installed (default: this one)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON as well")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    with tempfile.TemporaryDirectory(prefix="portico-bench-") as scratch:
        root = Path(scratch)
        time_baseline(args.python)  # warm the file cache once, for every scenario alike
        time_to_ready(args.python, root / "warm-up")
        baseline = [time_baseline(args.python) for _ in range(args.runs)]
        fresh = [time_to_ready(args.python, root / f"fresh-{run}") for run in range(args.runs)]
        existing_dir = root / "existing"
        time_to_ready(args.python, existing_dir)  # create and migrate it once, untimed
        existing = [time_to_ready(args.python, existing_dir) for _ in range(args.runs)]

    base = statistics.median(baseline)
    rows = [
        summary('baseline: python -c "import fastapi, sqlalchemy"', baseline, None),
        summary("serve, fresh data dir (create + migrate)", fresh, base),
        summary("serve, existing data dir", existing, base),
    ]
    print(f"portico serve start-up to first 200 from /readyz; {args.runs} runs each; python {sys.version.split()[0]}")
    print(f"{'scenario':<50} {'median':>8} {'min':>8} {'max':>8} {'vs baseline':>16}")
    for row in rows:
        versus = "" if "ratio" not in row else f"+{row['over_baseline']:.3f} s x{row['ratio']:.2f}"
        print(f"{row['scenario']!s:<50} {row['median']:>7.3f}s {row['min']:>7.3f}s {row['max']:>7.3f}s {versus:>16}")
    if args.json:
        print(json.dumps({"runs": args.runs, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
