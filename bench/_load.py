"""Fallback load generator for ``bench/validate.py`` when wrk is not installed.

Keep-alive HTTP/1.1 over raw asyncio streams (uvloop when available), N connections, each
sending the next pre-built request as soon as the previous answer is read. Pinned to one
CPU (``--cpu``) so that it does not compete with the server under test. It is much slower
than wrk (one Python core: roughly 10-15k requests/s at best), so with it the numbers are a
floor of what the server can do, and both endpoints are limited alike.

    python bench/_load.py REQUESTS.json --host 127.0.0.1 --port P --connections 32 --duration 10 [--cpu 1]

REQUESTS.json: a list of complete requests as latin-1 strings. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time


async def _connection(host: str, port: int, requests: list[bytes], offset: int, stop_at: float,
                      latencies: list[float], errors: dict[str, int]) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        errors["connect"] += 1
        return
    index = offset
    count = len(requests)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(requests[index % count])
            index += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                    break
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status >= 400:
                errors["status"] += 1
    except (OSError, asyncio.IncompleteReadError, ValueError):
        errors["read"] += 1
    finally:
        writer.close()


async def _run(host: str, port: int, requests: list[bytes], connections: int, duration: float) -> dict[str, object]:
    latencies: list[float] = []
    errors = {"connect": 0, "read": 0, "status": 0}
    started = time.perf_counter()
    stop_at = started + duration
    await asyncio.gather(*(_connection(host, port, requests, n * 7, stop_at, latencies, errors) for n in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e6 if latencies else 0.0

    return {
        "requests": len(latencies),
        "duration_us": elapsed * 1e6,
        "p50": percentile(50),
        "p99": percentile(99),
        "max": latencies[-1] * 1e6 if latencies else 0.0,
        "errors_status": errors["status"],
        "errors_connect": errors["connect"],
        "errors_read": errors["read"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("requests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--cpu", type=int)
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    with open(args.requests, encoding="utf-8") as handle:
        requests = [item.encode("latin-1") for item in json.load(handle)]
    main_coroutine = _run(args.host, args.port, requests, args.connections, args.duration)
    try:
        import uvloop

        result = uvloop.run(main_coroutine)
    except ImportError:
        result = asyncio.run(main_coroutine)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
