"""How fast `portico` (the desktop console) is usable: window shown, embedded server answering.

Each run launches ``python -m app.launcher --quit-when-ready --data-dir TMP`` offscreen and
times, from just before the launch, until the console prints "console ready" (the moment
its window is shown and the embedded server has answered an authenticated admin-API call);
the console then closes (stopping its server) and the exit is timed too. Scenarios:

| scenario | what it measures |
|---|---|
| baseline: import Qt | ``python -c "import PySide6.QtWidgets"`` to its exit: the floor of any Qt console |
| baseline: embedded server alone | ``portico serve --embedded`` to its ready line: the child the console waits for |
| console, existing data dir | the everyday start (schema current, a superuser exists) |
| console, fresh data dir | the very first start (creates and migrates the database; the first-superuser question appears over a usable window) |

Target (issue 5): under 3 s to a usable window. Run from the repository root:

    .venv/bin/python bench/console_start.py            # 5 runs each
    .venv/bin/python bench/console_start.py --runs 10

Temporary data directories only; ``PORTICO_*`` variables of the calling shell are ignored.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 3.0


def _env(config: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTICO_")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    env["QT_LOGGING_RULES"] = "qt.qpa.*=false"
    env["PORTICO_CONSOLE_CONFIG_DIR"] = str(config / "console")
    env["XDG_CONFIG_HOME"] = str(config / "xdg")  # QSettings of this run only
    return env


def time_import_qt() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import PySide6.QtWidgets"], check=True, cwd=ROOT)
    return time.perf_counter() - started


def time_embedded_server(data_dir: Path) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "app.launcher", "serve", "--embedded", "--port", "0", "--log-level", "warning", "--data-dir", str(data_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=_env(data_dir),
    )
    assert process.stdout is not None and process.stdin is not None
    line = process.stdout.readline()
    elapsed = time.perf_counter() - started
    json.loads(line)
    process.stdin.close()
    if process.wait(30) != 0:
        raise SystemExit("the embedded server did not stop gracefully")
    process.stdout.close()
    return elapsed


def time_console(data_dir: Path, config: Path) -> tuple[float, float, float]:
    """(to usable window, as the console measured itself, to exit)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "app.launcher", "--quit-when-ready", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=_env(config), text=True,
    )
    assert process.stdout is not None
    ready_at = None
    inside = float("nan")
    for line in process.stdout:
        if line.startswith("console ready in"):
            ready_at = time.perf_counter() - started
            inside = float(line.split()[3])
            break
    code = process.wait(60)
    exited = time.perf_counter() - started
    process.stdout.close()
    if ready_at is None or code != 0:
        raise SystemExit(f"the console did not become ready (exit {code})")
    return ready_at, inside, exited


def _create_superuser(data_dir: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTICO_")}
    env["PORTICO_SUPERUSER_PASSWORD"] = "bench password 123"
    subprocess.run(
        [sys.executable, "-m", "server", "createsuperuser", "--username", "bench", "--no-input", "--data-dir", str(data_dir)],
        check=True, cwd=ROOT, env=env, capture_output=True,
    )


def summary(name: str, values: list[float], baseline: float | None = None) -> str:
    median = statistics.median(values)
    line = f"{name:<46} {median:7.3f}s {min(values):7.3f}s {max(values):7.3f}s"
    if baseline:
        line += f"   +{median - baseline:.3f} s"
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="portico-bench-console-") as tmp:
        base = Path(tmp)
        existing = base / "existing"
        _create_superuser(existing)
        time_console(existing, base / "warm-up")  # file cache, bytecode
        qt = [time_import_qt() for _ in range(args.runs)]
        server = [time_embedded_server(existing) for _ in range(args.runs)]
        warm = [time_console(existing, base / f"cfg-{n}") for n in range(args.runs)]
        fresh = [time_console(base / f"fresh-{n}", base / f"cfg-fresh-{n}") for n in range(args.runs)]
    print(f"portico console start-up to a usable window; {args.runs} runs each; python {platform.python_version()}, {os.cpu_count()} CPUs")
    print(f"{'scenario':<46} {'median':>8} {'min':>8} {'max':>8}")
    print(summary("baseline: import PySide6.QtWidgets", qt))
    print(summary("baseline: embedded server alone (ready line)", server))
    console_median = statistics.median(r[0] for r in warm)
    print(summary("console, existing data dir: usable window", [r[0] for r in warm], statistics.median(server)))
    print(summary("  (as measured inside the console process)", [r[1] for r in warm]))
    print(summary("  console closed, server stopped (from start)", [r[2] for r in warm]))
    print(summary("console, fresh data dir: usable window", [r[0] for r in fresh], statistics.median(server)))
    verdict = "meets" if console_median < TARGET_SECONDS else "MISSES"
    print(f"target < {TARGET_SECONDS:.1f} s (existing data dir, median): {verdict} ({console_median:.3f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
