"""The console's own Portico server: a child process on 127.0.0.1 (no Qt here).

The child is ``portico serve --embedded`` (this same program started again: the launcher
module from a source tree, the executable itself in a PyInstaller bundle). It prints one
ready line with its URL and a one-time credential on its stdout, which is a pipe to us; the
credential is never on disk or on a command line. We hold its stdin open: when this process
ends, however it ends, the pipe closes and the child stops gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

LOG_FILENAME = "embedded-server.log"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def default_data_dir() -> Path:
    """The same folder `portico serve` uses by default (server.settings.default_data_dir)."""
    return Path(platformdirs.user_data_dir("portico", appauthor=False))


class EmbeddedServerError(Exception):
    """The embedded server did not start (its log's last lines are in the message)."""


@dataclass(frozen=True)
class EmbeddedInfo:
    url: str
    token: str = field(repr=False)
    pid: int
    data_dir: Path


def server_command(data_dir: Path) -> list[str]:
    base = [sys.executable] if getattr(sys, "frozen", False) else [sys.executable, "-m", "app.launcher"]
    return [*base, "serve", "--embedded", "--port", "0", "--log-level", "warning", "--data-dir", str(data_dir)]


class EmbeddedServer:
    """Start, watch and stop one embedded server process on the running asyncio loop."""

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        on_exit: Callable[[int], None] | None = None,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.data_dir = data_dir or default_data_dir()
        self.on_exit = on_exit
        self.ready_timeout = ready_timeout
        self.info: EmbeddedInfo | None = None
        self.returncode: int | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILENAME

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    async def start(self) -> EmbeddedInfo:
        """Spawn the child (unless ``spawn`` already did) and wait for its ready line."""
        if self.info is not None and self.running:
            raise EmbeddedServerError("the embedded server is already running")
        if self._process is None or self._process.returncode is not None:
            await self.spawn()
        return await self.wait_ready()

    async def spawn(self) -> None:
        """Only start the process: the console spawns it first thing and builds its window
        while the child boots (most of the start-up time is the child's imports)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stopping = False
        self.returncode = None
        env = {key: value for key, value in os.environ.items() if key not in ("PORTICO_DATABASE_URL", "PORTICO_DATA_DIR")}
        with open(self.log_path, "ab") as log:
            process = await asyncio.create_subprocess_exec(
                *server_command(self.data_dir),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=env,
            )
        self._process = process
        self.info = None

    async def wait_ready(self) -> EmbeddedInfo:
        process = self._process
        if process is None:
            raise EmbeddedServerError("the embedded server was not started")
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), self.ready_timeout)
        except TimeoutError:
            await self._kill()
            raise EmbeddedServerError(
                f"the embedded server did not start within {self.ready_timeout:.0f} s\n{self.log_tail()}"
            ) from None
        except BaseException:
            await self._kill()
            raise
        try:
            ready = json.loads(line)
            info = EmbeddedInfo(url=ready["url"], token=ready["console_token"], pid=int(ready["pid"]), data_dir=self.data_dir)
        except (ValueError, KeyError, TypeError):
            await self._kill()
            reason = "it exited" if not line else "its ready line was not understood"
            raise EmbeddedServerError(f"the embedded server did not start ({reason})\n{self.log_tail()}") from None
        self.info = info
        self._watcher = asyncio.get_running_loop().create_task(self._watch(process))
        return info

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        with contextlib.suppress(OSError, ValueError):
            while await process.stdout.read(4096):  # nothing more is expected; keep the pipe drained
                pass
        code = await process.wait()
        self.returncode = code
        if not self._stopping and self.on_exit is not None:
            self.on_exit(code)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Graceful: close its stdin (the signal it waits for), then wait; kill if it hangs."""
        process = self._process
        if process is None:
            return self.returncode
        self._stopping = True
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        try:
            code = await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            await self._kill()
            code = process.returncode if process.returncode is not None else -9
        await self._finish_watcher()
        self.returncode = code
        self._process = None
        return code

    def kill(self) -> None:
        """Kill it now (what a crash looks like to the console); the watcher reports it."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()

    async def _kill(self) -> None:
        process = self._process
        if process is None:
            return
        self._stopping = True
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        await self._finish_watcher()
        self.returncode = process.returncode
        self._process = None

    async def _finish_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None and not watcher.done():
            try:
                await asyncio.wait_for(watcher, 5)
            except (TimeoutError, asyncio.CancelledError):
                watcher.cancel()

    async def forget(self) -> None:
        """After the child died by itself: release its pipes before a restart."""
        process, self._process = self._process, None
        if process is not None and process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        await self._finish_watcher()
