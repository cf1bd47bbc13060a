"""The server's commands: serve, migrate, createsuperuser, check, export, import.

(``portico`` without a command opens the console; that dispatch lives in ``app.launcher``
so that the server never imports the console.)
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.settings import Settings

if TYPE_CHECKING:
    from server.services.console_credential import ConsoleCredential

log = logging.getLogger("portico")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="sqlite:///path or postgresql://user@host/db (default: SQLite in the data directory)")
    parser.add_argument("--data-dir", type=Path, help="where the SQLite file and the key file live (default: the user's data directory)")


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return Settings.from_environment(database_url=getattr(args, "database_url", None), data_dir=getattr(args, "data_dir", None), **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portico", description="Identity and access for medical imaging.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the headless server (admin API, SSO, token and Orthanc services)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--workers", type=int, default=1, help="server processes sharing the port (SO_REUSEPORT)")
    serve.add_argument("--no-migrate", action="store_true", help="refuse to start on an old schema instead of migrating it")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument(
        "--embedded", action="store_true",
        help="run as the desktop console's child: listen on 127.0.0.1 only, hand a one-time console "
        "credential to the parent in the ready line, and stop when standard input closes",
    )
    _add_database_options(serve)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    _add_database_options(migrate)

    superuser = commands.add_parser("createsuperuser", help="create a superuser (interactive, or from flags and environment)")
    superuser.add_argument("--username", default=os.environ.get("PORTICO_SUPERUSER_USERNAME"))
    superuser.add_argument("--email", default=os.environ.get("PORTICO_SUPERUSER_EMAIL"))
    superuser.add_argument(
        "--no-input", action="store_true",
        help="never prompt: the password comes from PORTICO_SUPERUSER_PASSWORD or --password-stdin",
    )
    superuser.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    _add_database_options(superuser)

    check = commands.add_parser("check", help="check the configuration, the database and the audit chain")
    _add_database_options(check)

    export = commands.add_parser("export", help="write the whole configuration as JSON")
    export.add_argument("--output", "-o", type=Path, help="file to write (default: standard output)")
    export.add_argument("--include-secrets", action="store_true", help="include client secrets and REST passwords in clear")
    _add_database_options(export)

    importer = commands.add_parser("import", help="read a configuration written by export")
    importer.add_argument("file", type=Path, help="the JSON file ('-' for standard input)")
    importer.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
    _add_database_options(importer)
    keys = commands.add_parser("keys", help="Portico's token signing keys")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    rotate = key_commands.add_parser(
        "rotate", help="make the next key sign; the old one keeps verifying until its tokens expire"
    )
    _add_database_options(rotate)

    orthanc_config = commands.add_parser(
        "orthanc-config", help="print the Orthanc 'Authorization' block of an imaging server, with a new plugin credential"
    )
    orthanc_config.add_argument("server", help="the imaging server's token (server-id) or name")
    _add_database_options(orthanc_config)
    return parser


# ---------------------------------------------------------------- serve


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Alembic announces every plugin it loads at INFO; only its warnings matter here.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))


def _listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    """Linux: have the kernel send SIGTERM when the parent dies, even by SIGKILL.

    The portable guard is the stdin pipe (see ``_stop_at_end_of_input``); this one also
    covers a parent that is killed before its pipe is noticed."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _stop_at_end_of_input(server: Any) -> None:
    """The console holds our stdin open; when it exits or crashes the pipe reaches EOF."""
    import threading

    def watch() -> None:
        # os.read on the descriptor, not sys.stdin: a daemon thread blocked inside the
        # buffered reader holds its lock, and the interpreter aborts on it at exit.
        try:
            descriptor = sys.stdin.fileno()
            while os.read(descriptor, 4096):
                pass
        except (OSError, ValueError):
            pass
        log.info("standard input closed: the console is gone, stopping")
        server.should_exit = True

    threading.Thread(target=watch, name="portico-stdin-watch", daemon=True).start()


def _run_server(
    settings: Settings,
    sock: socket.socket,
    args: argparse.Namespace,
    *,
    migrate_schema: bool,
    console: ConsoleCredential | None = None,
) -> None:
    import uvicorn

    from server.api.app import create_app
    from server.services.accounts import has_active_superuser
    from server.services.portico import open_portico

    portico = open_portico(settings, migrate_schema=migrate_schema, listen_for_changes=True)
    host, port = sock.getsockname()[:2]
    if console is None and not has_active_superuser(portico.db):  # the console asks for one itself
        log.warning("no active superuser yet: create one with `portico createsuperuser`")

    class ReadyServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if not self.should_exit:
                # One machine-readable line: the console (and tests) wait for it to learn the port.
                ready: dict[str, Any] = {"event": "ready", "url": f"http://{host}:{port}", "pid": os.getpid()}
                if console is not None:
                    # stdout is a pipe to the console that started us: the credential goes
                    # nowhere else (not to disk, not to the command line, not to the log).
                    ready["console_token"] = console.token
                print(json.dumps(ready), flush=True)

    application = create_app(portico)
    application.state.console_credential = console
    config = uvicorn.Config(
        application,
        log_level=args.log_level,
        access_log=args.access_log,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown so that the process dies
    # of the signal; with these no-op handlers in place it returns instead and we exit 0,
    # which tells a supervisor (or the console) that the stop was clean.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    server = ReadyServer(config)
    if console is not None:
        _stop_at_end_of_input(server)
    try:
        server.run(sockets=[sock])
    finally:
        portico.close()


def _worker(settings: Settings, host: str, port: int, args: argparse.Namespace) -> None:
    sock = _listening_socket(host, port, reuse_port=True)
    _run_server(settings, sock, args, migrate_schema=False)


def command_serve(args: argparse.Namespace) -> int:
    _configure_logging(args.log_level)
    settings = _settings(args, migrate_on_start=not args.no_migrate)
    if args.workers < 1:
        print("portico serve: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    console: ConsoleCredential | None = None
    if args.embedded:
        if args.workers != 1:
            print("portico serve: --embedded runs one worker", file=sys.stderr)
            return EXIT_USAGE
        from server.services.console_credential import ConsoleCredential

        _die_with_parent()
        args.host = "127.0.0.1"  # the console's own server is never reachable from the network
        console = ConsoleCredential.generate()
    if args.workers == 1:
        try:
            sock = _listening_socket(args.host, args.port, reuse_port=False)
        except OSError as error:
            print(f"portico serve: cannot listen on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
            return EXIT_FAILED
        _run_server(settings, sock, args, migrate_schema=not args.no_migrate, console=console)
        return EXIT_OK
    if args.port == 0:
        print("portico serve: several workers need a fixed --port", file=sys.stderr)
        return EXIT_USAGE
    # Migrate once, before the workers start; then each binds its own SO_REUSEPORT socket,
    # which spreads a few keep-alive clients (Orthanc) over the workers, unlike a shared socket.
    from server.services.portico import open_portico

    open_portico(settings, migrate_schema=not args.no_migrate).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker, args=(settings, args.host, args.port, args), daemon=False) for _ in range(args.workers)]
    for worker in workers:
        worker.start()

    def forward(signum: int, _frame: Any) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for worker in workers:
        worker.join()
    return EXIT_OK if all(worker.exitcode == 0 for worker in workers) else EXIT_FAILED


# ---------------------------------------------------------------- migrate, createsuperuser, check


def command_migrate(args: argparse.Namespace) -> int:
    _configure_logging("warning")
    from server.storage import migrate
    from server.storage.database import Database

    db = Database(_settings(args).resolved_database_url)
    try:
        before = migrate.current_revision(db.engine)
        migrate.upgrade(db.engine)
        after = migrate.current_revision(db.engine)
    finally:
        db.dispose()
    print(f"schema {before or 'empty'} -> {after}" if before != after else f"schema already at {after}")
    return EXIT_OK


def _read_password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if os.environ.get("PORTICO_SUPERUSER_PASSWORD"):
        return os.environ["PORTICO_SUPERUSER_PASSWORD"]
    if args.no_input:
        return None
    while True:
        try:
            first = getpass.getpass("Password: ")
            again = getpass.getpass("Password (again): ")
        except EOFError:
            return None
        if first == again:
            return first
        print("The passwords differ; try again.", file=sys.stderr)


def command_createsuperuser(args: argparse.Namespace) -> int:
    from server.contract.errors import PorticoError
    from server.contract.schemas import Password, Username
    from server.services.accounts import create_superuser
    from server.services.portico import open_portico
    from pydantic import EmailStr, TypeAdapter, ValidationError

    username = args.username
    if not username:
        if args.no_input:
            print("createsuperuser: --username (or PORTICO_SUPERUSER_USERNAME) is required with --no-input", file=sys.stderr)
            return EXIT_USAGE
        try:
            username = input("Username: ").strip()
        except EOFError:
            print("createsuperuser: no username given", file=sys.stderr)
            return EXIT_USAGE
    password = _read_password(args)
    if not password:
        print("createsuperuser: no password given (PORTICO_SUPERUSER_PASSWORD, --password-stdin, or interactively)", file=sys.stderr)
        return EXIT_USAGE
    checks: list[tuple[str, Any, object]] = [("username", Username, username), ("password", Password, password)]
    if args.email is not None:
        checks.append(("email", EmailStr, args.email))
    for name, kind, value in checks:
        try:
            TypeAdapter(kind).validate_python(value)
        except ValidationError as error:
            message = str(error.errors()[0]["msg"]).removeprefix("Value error, ")
            print(f"createsuperuser: {name}: {message}", file=sys.stderr)
            return EXIT_USAGE
    portico = open_portico(_settings(args))
    try:
        user = create_superuser(portico.db, username, password, args.email)
    except PorticoError as error:
        print(f"createsuperuser: {error.message}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        portico.close()
    print(f"superuser {user.username!r} created")
    return EXIT_OK


def command_check(args: argparse.Namespace) -> int:
    from server.services.checks import run_checks

    ok = True
    for result in run_checks(_settings(args)):
        print(f"[{'ok' if result.ok else 'FAIL'}] {result.name}: {result.message}")
        ok = ok and result.ok
    print("all checks passed" if ok else "some checks failed")
    return EXIT_OK if ok else EXIT_FAILED


# ---------------------------------------------------------------- export, import


def command_export(args: argparse.Namespace) -> int:
    from server.services.portico import open_portico
    from server.services.transfer import export_configuration

    portico = open_portico(_settings(args))
    try:
        document = export_configuration(portico, include_secrets=args.include_secrets)
    finally:
        portico.close()
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    if args.output:
        # The file may hold secrets: readable by its owner only, also when it existed before.
        try:
            descriptor = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as error:
            print(f"export: cannot write {args.output}: {error.strerror}", file=sys.stderr)
            return EXIT_FAILED
        if os.name == "posix":
            os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        print(f"exported to {args.output}" + (" (with secrets in clear: keep it safe)" if args.include_secrets else ""), file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def command_import(args: argparse.Namespace) -> int:
    from server.services.portico import open_portico
    from server.services.transfer import ImportRefused, import_configuration

    try:
        raw = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
        document = json.loads(raw)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        print(f"import: cannot read {args.file}: {error}", file=sys.stderr)
        return EXIT_FAILED
    portico = open_portico(_settings(args))
    try:
        report = import_configuration(portico, document, dry_run=args.dry_run)
    except ImportRefused as refused:
        for line in refused.problems:
            print(f"error: {line}", file=sys.stderr)
        print(f"import refused: {len(refused.problems)} problem(s); nothing was changed", file=sys.stderr)
        return EXIT_FAILED
    finally:
        portico.close()
    for line in report.lines():
        print(line)
    print(report.summary(dry_run=args.dry_run))
    return EXIT_OK


def command_keys(args: argparse.Namespace) -> int:
    from server.services.audit import Actor
    from server.services.portico import open_portico
    from server.services.signing_keys import rotate

    portico = open_portico(_settings(args))
    try:
        active, upcoming = rotate(portico.db, portico.box, Actor.system("keys rotate"))
    finally:
        portico.close()
    print(f"signing with key {active} now; key {upcoming} is published as the next one")
    print(
        "the previous key stays published until the tokens it signed have expired "
        f"({portico.settings.access_token_seconds} s); running servers switch at once (SQLite: within 0.25 s)"
    )
    return EXIT_OK


def command_orthanc_config(args: argparse.Namespace) -> int:
    from sqlalchemy import or_, select

    from server.services.audit import Actor
    from server.services.orthanc_config import orthanc_configuration
    from server.services.portico import open_portico
    from server.services.principal import Principal
    from server.services.records import WriteContext
    from server.storage.tables import ImagingServer

    portico = open_portico(_settings(args))
    try:
        with portico.db.writing() as session:
            server = session.scalar(select(ImagingServer).where(or_(ImagingServer.token == args.server, ImagingServer.name == args.server)))
            if server is None:
                print(f"orthanc-config: no imaging server with token or name {args.server!r}", file=sys.stderr)
                return EXIT_FAILED
            actor = Actor.system("orthanc-config")
            principal = Principal(user_id=0, username=actor.name, is_superuser=True, is_staff=True, permissions=frozenset())
            block = orthanc_configuration(WriteContext(session=session, principal=principal, box=portico.box), server)
    finally:
        portico.close()
    print(json.dumps(block, indent=2))
    return EXIT_OK


# ---------------------------------------------------------------- entry point


COMMANDS = {
    "serve": command_serve,
    "migrate": command_migrate,
    "createsuperuser": command_createsuperuser,
    "check": command_check,
    "export": command_export,
    "import": command_import,
    "orthanc-config": command_orthanc_config,
    "keys": command_keys,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a command-line user gets one clear line, not a traceback
        from server.services.portico import NotMigrated
        from server.services.secretbox import SecretKeyError

        if isinstance(error, NotMigrated | SecretKeyError):
            print(f"portico {args.command}: {error}", file=sys.stderr)
            return EXIT_FAILED
        raise
