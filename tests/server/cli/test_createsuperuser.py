"""``portico createsuperuser``: non-interactive and interactive, its refusals, and a login with the result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from server.services.passwords import verify_password
from tests.conftest import ServerProcess, login, portico_env, run_cli
from tests.server.cli.support import ok, sqlite_connection

PASSWORD = "a long enough password"


def _superuser_row(data_dir: Path, username: str) -> tuple[str, bool, bool, bool, str | None]:
    with sqlite_connection(data_dir) as connection:
        row = connection.execute(
            "SELECT username, is_superuser, is_staff, is_active, password_hash FROM users WHERE username = ?", (username,)
        ).fetchone()
    assert row is not None, f"no user {username!r} in the database"
    return row[0], bool(row[1]), bool(row[2]), bool(row[3]), row[4]


def test_username_flag_and_password_from_the_environment(tmp_path: Path) -> None:
    env = portico_env(tmp_path, PORTICO_SUPERUSER_PASSWORD=PASSWORD)
    result = ok(run_cli("createsuperuser", "--username", "root", "--no-input", env=env))
    assert "created" in result.stdout
    assert "'root'" in result.stdout
    username, is_superuser, is_staff, is_active, password_hash = _superuser_row(tmp_path, "root")
    assert (username, is_superuser, is_staff, is_active) == ("root", True, True, True)
    # Only a hash is stored, and it is the hash of the given password.
    assert password_hash is not None and password_hash.startswith("$argon2id$")
    assert PASSWORD not in password_hash
    assert verify_password(password_hash, PASSWORD)


def test_password_from_stdin(tmp_path: Path) -> None:
    result = ok(run_cli("createsuperuser", "--username", "ops", "--no-input", "--password-stdin", env=portico_env(tmp_path), input=PASSWORD + "\n"))
    assert "created" in result.stdout
    password_hash = _superuser_row(tmp_path, "ops")[4]
    # The line's newline is not part of the password.
    assert verify_password(password_hash, PASSWORD)
    assert not verify_password(password_hash, PASSWORD + "\n")


def test_no_input_without_a_username_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("createsuperuser", "--no-input", env=portico_env(tmp_path, PORTICO_SUPERUSER_PASSWORD=PASSWORD))
    assert result.returncode == 2, result.stderr
    assert "--username" in result.stderr
    assert "Traceback" not in result.stderr
    assert "created" not in result.stdout


def test_a_too_short_password_is_refused(tmp_path: Path) -> None:
    result = run_cli("createsuperuser", "--username", "root", "--no-input", "--password-stdin", env=portico_env(tmp_path), input="seven77\n")
    assert result.returncode != 0
    assert "password" in result.stderr.lower()
    assert "8" in result.stderr  # says how long it must be
    assert "Traceback" not in result.stderr
    assert "created" not in result.stdout


def test_an_invalid_email_is_refused(tmp_path: Path) -> None:
    result = run_cli("createsuperuser", "--username", "root", "--email", "not-an-email", "--no-input", env=portico_env(tmp_path, PORTICO_SUPERUSER_PASSWORD=PASSWORD))
    assert result.returncode != 0, result.stdout
    assert "email" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_duplicate_username_is_refused_whatever_its_case(tmp_path: Path) -> None:
    env = portico_env(tmp_path, PORTICO_SUPERUSER_PASSWORD=PASSWORD)
    # The username may also come from the environment.
    ok(run_cli("createsuperuser", "--no-input", env={**env, "PORTICO_SUPERUSER_USERNAME": "Alice"}))
    result = run_cli("createsuperuser", "--username", "alice", "--no-input", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "already exists" in result.stderr
    assert "alice" in result.stderr
    assert "Traceback" not in result.stderr
    assert "created" not in result.stdout
    with sqlite_connection(tmp_path) as connection:
        assert connection.execute("SELECT username FROM users").fetchall() == [("Alice",)]


def test_the_created_superuser_can_log_in_over_the_api(tmp_path: Path) -> None:
    env = portico_env(tmp_path)
    ok(run_cli("createsuperuser", "--username", "root", "--no-input", "--password-stdin", env=env, input=PASSWORD + "\n"))
    server = ServerProcess(env).start()
    try:
        token = login(server.url, "root", PASSWORD)
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            me = client.get("/api/v1/auth/me")
            assert me.status_code == 200, me.text
            assert me.json()["username"] == "root"
            assert me.json()["is_superuser"] is True
            assert client.get("/api/v1/users").status_code == 200
        refused = httpx.post(f"{server.url}/api/v1/auth/login", json={"username": "root", "password": "not the password"}, timeout=30)
        assert refused.status_code == 401, refused.text
    finally:
        code = server.stop()
    assert code == 0, "".join(server.output)


def _interactive(data_dir: Path, typed: str) -> subprocess.CompletedProcess[str]:
    """Run createsuperuser without a controlling terminal, so that getpass reads what is typed on stdin."""
    return subprocess.run(
        [sys.executable, "-m", "server", "createsuperuser"],
        env=portico_env(data_dir),
        input=typed,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        start_new_session=True,
    )


@pytest.mark.skipif(os.name != "posix", reason="detaching from the terminal needs POSIX sessions")
def test_interactive_prompts_and_asks_again_when_the_passwords_differ(tmp_path: Path) -> None:
    result = ok(_interactive(tmp_path, f"erin\n{PASSWORD}\nsomething else\n{PASSWORD}\n{PASSWORD}\n"))
    assert "Username:" in result.stdout
    assert "The passwords differ" in result.stderr
    assert "created" in result.stdout
    assert verify_password(_superuser_row(tmp_path, "erin")[4], PASSWORD)


@pytest.mark.skipif(os.name != "posix", reason="detaching from the terminal needs POSIX sessions")
def test_interactive_end_of_input_is_a_clear_error(tmp_path: Path) -> None:
    result = _interactive(tmp_path, "erin\n")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert "createsuperuser" in result.stderr
