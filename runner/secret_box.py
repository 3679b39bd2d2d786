"""Tenants' secrets at rest: sealed with the control plane's own key before they reach the database.

The database holds only ciphertext (Fernet: AES-128-CBC with an HMAC, from ``cryptography``), so a
copy of ``runner.db`` (a backup, a leaked PostgreSQL dump) holds no secret; the key is a file of
the head's home (``secrets-key``, 0600), made the first time it is needed. A secret is opened
only to be put in a start command for the node that runs it, and that command is sealed to the
node's own key on the way (``runner.core.agent_wire``): the control plane's memory and the
node's container are the only places it is ever plain.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from runner.core.errors import UserError


class SecretBox:
    def __init__(self, key_path: Path) -> None:
        self.key_path = Path(key_path)
        self._fernet: Fernet | None = None

    def _key(self) -> Fernet:
        if self._fernet is None:
            if not self.key_path.exists():
                self.key_path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:  # made a moment ago by another process of this home
                    pass
                else:
                    with os.fdopen(fd, "wb") as f:
                        f.write(Fernet.generate_key())
            self._fernet = Fernet(self.key_path.read_bytes().strip())
        return self._fernet

    def seal(self, value: str) -> str:
        return self._key().encrypt(value.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._key().decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise UserError(
                f"a secret cannot be opened with {self.key_path} (another head's key?). To fix: set it again "
                "(runner secrets set NAME)"
            ) from None
