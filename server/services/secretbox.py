"""Encryption at rest of client secrets, private keys and upstream tokens.

The key never lives in the database: it comes from ``PORTICO_SECRET_KEY`` or from a key
file (mode 0600) beside the SQLite file. Several keys may be given, newest first, to
rotate: data is encrypted with the first and decrypted with whichever fits (Fernet).
A known value encrypted with the key is kept in the database so that starting with the
wrong key is refused at once instead of failing later on the first secret.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.orm import Session

from server.storage.tables import Meta

KEY_CHECK = "secret_key_check"
_KEY_CHECK_PLAINTEXT = b"portico key check v1"


class SecretKeyError(RuntimeError):
    """The encryption key is missing, malformed, unsafe or not the one the data was written with."""


class SecretBox:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SecretKeyError("no encryption key given")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError as error:
            raise SecretKeyError(f"malformed encryption key: {error}") from None

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, ciphertext: bytes) -> str:
        try:
            return self._fernet.decrypt(ciphertext).decode()
        except InvalidToken:
            raise SecretKeyError("a stored secret does not decrypt with the configured key") from None

    def encrypt_optional(self, plaintext: str | None) -> bytes | None:
        return None if plaintext is None else self.encrypt(plaintext)

    @classmethod
    def from_text(cls, text: str) -> SecretBox:
        return cls([part.strip().encode() for part in text.replace("\n", ",").split(",") if part.strip()])


def load_or_create_key_file(path: Path, *, create: bool) -> SecretBox:
    if not path.exists():
        if not create:
            raise SecretKeyError(f"the key file {path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once never overwrite each other's key.
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(Fernet.generate_key() + b"\n")
    check_key_file_permissions(path)
    return SecretBox.from_text(path.read_text())


def check_key_file_permissions(path: Path) -> None:
    if os.name != "posix":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretKeyError(
            f"the key file {path} is readable by others (mode {mode:o}); run: chmod 600 {path}"
        )


def verify_or_record_key(session: Session, box: SecretBox) -> None:
    """Refuse a key that differs from the one the stored secrets were written with."""
    stored = session.get(Meta, KEY_CHECK)
    if stored is None:
        session.add(Meta(key=KEY_CHECK, value=box.encrypt(_KEY_CHECK_PLAINTEXT.decode()).decode()))
        return
    try:
        box.decrypt(stored.value.encode())
    except SecretKeyError:
        raise SecretKeyError(
            "the encryption key is not the one this database was written with; "
            "set PORTICO_SECRET_KEY (or the key file) to the original key"
        ) from None
