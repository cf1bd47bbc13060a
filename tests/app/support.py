"""Small helpers the console tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import secrets
from typing import Any

import httpx


def unique(stem: str) -> str:
    """A name no other test uses on the shared embedded server."""
    return f"{stem}-{secrets.token_hex(3)}"


def created(api: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a record through the admin API behind the console's back; it must be created."""
    answer = api.post(f"/{path}", json=body)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())
