"""A real Orthanc server as a child process, for tests that need Orthanc's own REST API.

    with OrthancServer() as orthanc:
        stored = orthanc.upload(dicom_bytes)        # POST /instances
        study = orthanc.get(f"/studies/{stored['ParentStudy']}")

Each server gets a temporary directory holding its configuration JSON, its storage and
index, and its log (stdout and stderr). It listens for HTTP on a free port (Orthanc 1.10 has
no bind-address option: it binds every interface, and RemoteAccessAllowed=false makes it
refuse any client that is not on loopback), requires HTTP basic authentication
(`username` / `password`, a random password per server), loads no plugin and no Lua script,
and runs no DICOM listener unless asked (`dicom=True`). Stopping sends SIGTERM, waits, then
SIGKILL; the child is also marked to die with the test process (PR_SET_PDEATHSIG), so a
killed pytest leaves no Orthanc behind.

Orthanc is Debian's package `orthanc` (binary /usr/sbin/Orthanc; PORTICO_TEST_ORTHANC overrides
the path). Where it is missing, `require_orthanc()` and the fixture skip, except under CI=true
where they fail.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import pytest

ORTHANC_BINARY = Path(os.environ.get("PORTICO_TEST_ORTHANC", "/usr/sbin/Orthanc"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
LOG_TAIL_CHARS = 6000

_LEVELS = {
    "patient": "patients",
    "patients": "patients",
    "study": "studies",
    "studies": "studies",
    "series": "series",
    "instance": "instances",
    "instances": "instances",
}


class OrthancError(RuntimeError):
    """Orthanc could not be started, or answered an unexpected way."""


class LabelsNotSupported(OrthancError):
    """The running Orthanc has no labels (they came with Orthanc 1.12.0, REST API version 20)."""


def orthanc_missing_reason(binary: Path = ORTHANC_BINARY) -> str | None:
    """Why no Orthanc can be started here, or None when it can."""
    if not binary.is_file():
        return f"Orthanc is not installed: {binary} is missing (apt-get install orthanc)"
    if not os.access(binary, os.X_OK):
        return f"Orthanc at {binary} is not executable"
    return None


def require_orthanc(binary: Path = ORTHANC_BINARY) -> None:
    """Skip the calling test when Orthanc is missing; under CI=true fail instead."""
    reason = orthanc_missing_reason(binary)
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the Orthanc tests must run)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port that is free on every interface right now (Orthanc binds 0.0.0.0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("0.0.0.0", 0))
        port: int = probe.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the process that started us dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the explicit stop still applies
        pass


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; always reaps the child."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class OrthancServer:
    """One Orthanc child process with its own temporary configuration, storage and log."""

    def __init__(
        self,
        binary: Path | str = ORTHANC_BINARY,
        *,
        username: str = "portico",
        password: str | None = None,
        dicom: bool = False,
        startup_timeout: float = STARTUP_TIMEOUT,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.binary = Path(binary)
        self.username = username
        self.password = password if password is not None else secrets.token_urlsafe(24)
        self.dicom = dicom
        self.startup_timeout = startup_timeout
        self.extra_config = dict(extra_config or {})
        self.http_port = 0
        self.dicom_port: int | None = None
        self.system: dict[str, Any] = {}
        self.started_in = 0.0
        self.returncode: int | None = None
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_path: Path | None = None
        self._final_log = ""
        self._client: httpx.Client | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes], float], OrthancServer] | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> OrthancServer:
        """Start Orthanc and wait until GET /system answers; raises OrthancError otherwise."""
        if self._process is not None:
            raise OrthancError("this OrthancServer was already started")
        reason = orthanc_missing_reason(self.binary)
        if reason is not None:
            raise OrthancError(reason)
        self._tempdir = tempfile.TemporaryDirectory(prefix="portico-orthanc-")
        started = time.perf_counter()
        try:
            # A free port can be taken by someone else before Orthanc binds it: retry then.
            for attempt in range(3):
                if self._launch_and_wait(attempt):
                    break
            else:
                raise OrthancError("Orthanc could not bind a free port after 3 attempts:\n" + self.log_tail())
        except BaseException:
            self.stop()
            raise
        self.started_in = time.perf_counter() - started
        return self

    def _config(self, root: Path) -> dict[str, Any]:
        config: dict[str, Any] = {
            "Name": "portico-test",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "Plugins": [],
            "LuaScripts": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.username: self.password},
            "DicomServerEnabled": self.dicom,
            "DicomPort": self.dicom_port if self.dicom_port is not None else 4242,
            "DicomAet": "PORTICOTEST",
            "HttpDescribeErrors": True,
            "HttpThreadsCount": 10,
            "WebDavEnabled": False,
            "ExecuteLuaEnabled": False,
            "SaveJobs": False,
            "ConcurrentJobs": 1,
            "SyncStorageArea": False,
            "OverwriteInstances": False,
            "DicomModalities": {},
            "OrthancPeers": {},
        }
        config.update(self.extra_config)
        return config

    def _launch_and_wait(self, attempt: int) -> bool:
        """Launch once; True when ready, False when the port was taken (caller retries)."""
        assert self._tempdir is not None
        root = Path(self._tempdir.name)
        self.http_port = free_port()
        self.dicom_port = free_port() if self.dicom else None
        config_path = root / "orthanc.json"
        config_path.write_text(json.dumps(self._config(root), indent=2), encoding="utf-8")
        self._close_log()
        self._log_path = root / f"orthanc-{attempt}.log"
        self._log = open(self._log_path, "wb")  # closed by stop()
        self._process = subprocess.Popen(
            [str(self.binary), str(config_path)],
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        if self._finalizer is not None:
            self._finalizer.detach()
        # Last resort if the object is dropped or the interpreter exits without stop().
        self._finalizer = weakref.finalize(self, _terminate, self._process, 5.0)

        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(auth=(self.username, self.password), timeout=2.0) as probe:
            while True:
                code = self._process.poll()
                if code is not None:
                    self._process.wait()
                    log = self.log_text()
                    if "already in use" in log:  # "The TCP port of the HTTP server is ... already in use"
                        return False
                    raise OrthancError(f"Orthanc exited with code {code} while starting:\n{self.log_tail()}")
                try:
                    response = probe.get(f"{self.url}/system")
                except httpx.TransportError:
                    response = None
                if response is not None:
                    if response.status_code == 200:
                        self.system = response.json()
                        return True
                    if "Orthanc has started" not in self.log_text():
                        # Someone else answers on this port; Orthanc will fail to bind it and exit.
                        response = None
                if response is not None:
                    raise OrthancError(
                        f"GET /system answered {response.status_code} while starting:\n"
                        f"{response.text}\n--- Orthanc log ---\n{self.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise OrthancError(
                        f"Orthanc did not answer GET {self.url}/system within {self.startup_timeout:.0f} s:\n"
                        f"{self.log_tail()}"
                    )
                time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Stop Orthanc (SIGTERM, wait, SIGKILL), close everything, remove the temp dir.

        Returns Orthanc's exit code (0 for a graceful stop), or None if it never started.
        Safe to call more than once.
        """
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._process is not None:
            _terminate(self._process, timeout)
            self.returncode = self._process.returncode
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._close_log()
        if self._tempdir is not None:
            self._final_log = self.log_text()
            self._tempdir.cleanup()
            self._tempdir = None
        return self.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # -- facts ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the REST API, e.g. http://127.0.0.1:40123 (no trailing slash)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def directory(self) -> Path | None:
        """The temporary directory (config, storage, index, log) while the server exists."""
        return Path(self._tempdir.name) if self._tempdir is not None else None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def version(self) -> str:
        """Orthanc's version, from GET /system (e.g. "1.10.1")."""
        return str(self.system.get("Version", ""))

    @property
    def api_version(self) -> int:
        return int(self.system.get("ApiVersion", 0))

    @property
    def supports_labels(self) -> bool:
        """Labels came with Orthanc 1.12.0 (API version 20), announced as /system "HasLabels"."""
        return bool(self.system.get("HasLabels", False))

    def log_text(self) -> str:
        """Everything Orthanc wrote to stdout and stderr (this launch; kept after stop())."""
        if self._tempdir is None or self._log_path is None:
            return self._final_log
        return self._log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        text = self.log_text()
        return text if len(text) <= chars else "[...]\n" + text[-chars:]

    # -- REST -------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        """An httpx client on `url` with the server's credentials (closed by stop())."""
        if not self.running:
            raise OrthancError("Orthanc is not running")
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, auth=(self.username, self.password), timeout=30.0)
        return self._client

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.is_error:
            raise OrthancError(
                f"{response.request.method} {response.request.url.path} answered {response.status_code}: {response.text}"
            )
        return response

    def get(self, path: str) -> Any:
        """GET a REST path (e.g. "/studies/<id>") and return its JSON."""
        return self._check(self.client.get(path)).json()

    def upload(self, dicom: bytes) -> dict[str, Any]:
        """POST /instances one DICOM file; Orthanc's JSON (ID, ParentPatient, ParentStudy, ParentSeries, Status)."""
        response = self._check(
            self.client.post("/instances", content=dicom, headers={"Content-Type": "application/dicom"})
        )
        stored: dict[str, Any] = response.json()
        if stored.get("Status") not in ("Success", "AlreadyStored"):
            raise OrthancError(f"Orthanc did not store the instance: {stored}")
        return stored

    def upload_all(self, files: Iterable[bytes]) -> list[dict[str, Any]]:
        return [self.upload(dicom) for dicom in files]

    def lookup(self, dicom_id: str) -> list[dict[str, Any]]:
        """POST /tools/lookup: the resources whose DICOM identifier is `dicom_id`."""
        found: list[dict[str, Any]] = self._check(self.client.post("/tools/lookup", content=dicom_id)).json()
        return found

    def add_label(self, level: str, orthanc_id: str, label: str) -> None:
        """PUT /{level}/{id}/labels/{label}; raises LabelsNotSupported before Orthanc 1.12."""
        plural = _LEVELS.get(level.lower())
        if plural is None:
            raise ValueError(f"unknown level {level!r}: one of patient, study, series, instance")
        if not self.supports_labels:
            raise LabelsNotSupported(
                f"Orthanc {self.version} (API version {self.api_version}) has no labels: they need Orthanc 1.12.0+"
            )
        self._check(self.client.put(f"/{plural}/{orthanc_id}/labels/{label}"))

    def labels(self, level: str, orthanc_id: str) -> list[str]:
        plural = _LEVELS.get(level.lower())
        if plural is None:
            raise ValueError(f"unknown level {level!r}")
        if not self.supports_labels:
            raise LabelsNotSupported(f"Orthanc {self.version} has no labels: they need Orthanc 1.12.0+")
        found: list[str] = self.get(f"/{plural}/{orthanc_id}/labels")
        return found


def start_orthanc(**options: Any) -> OrthancServer:
    """A started OrthancServer (skips, or fails under CI=true, when Orthanc is missing).

    The caller stops it: `server.stop()`, or use it in a `with` block.
    """
    require_orthanc(Path(options.get("binary", ORTHANC_BINARY)))
    return OrthancServer(**options).start()


@pytest.fixture(scope="module")
def orthanc_server() -> Iterator[OrthancServer]:
    """One Orthanc per test module. Import it into the test module to use it:

        from tests.support.orthanc import orthanc_server  # noqa: F401 (fixture)

    Tests share the server's storage: use fresh DICOM UIDs (dicom.new_uid()) per test.
    """
    server = start_orthanc()
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, f"Orthanc did not stop gracefully (exit {code}):\n{server.log_tail()}"


__all__ = [
    "IN_CI",
    "ORTHANC_BINARY",
    "LabelsNotSupported",
    "OrthancError",
    "OrthancServer",
    "free_port",
    "orthanc_missing_reason",
    "orthanc_server",
    "require_orthanc",
    "start_orthanc",
]
