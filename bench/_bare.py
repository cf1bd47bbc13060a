"""The comparison endpoint for ``bench/validate.py``: a bare Starlette app on uvicorn.

One POST route that reads the body and answers a fixed ``{"granted": true, "validity": 60}``
with orjson; uvicorn is configured as ``portico serve`` configures it (no access log, no
lifespan, no server header, the same auto-selected loop and HTTP parser), on a socket bound
the same way. Prints one JSON ready line with its pid, like ``portico serve``.

    python bench/_bare.py --port 0 [--reuse-port]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_ANSWER = {"granted": True, "validity": 60}


async def validate(request: Request) -> Response:
    await request.body()
    return Response(orjson.dumps(_ANSWER), media_type="application/json")


app = Starlette(routes=[Route("/orthanc/{server}/tokens/validate", validate, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reuse-port", action="store_true")
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if args.reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    host, port = sock.getsockname()[:2]

    class ReadyServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if not self.should_exit:
                print(json.dumps({"event": "ready", "url": f"http://{host}:{port}", "pid": os.getpid()}), flush=True)

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False, timeout_graceful_shutdown=10)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    ReadyServer(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
