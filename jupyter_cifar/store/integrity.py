"""What keeps a stored model whole: its sha256 and size, taken when it is saved and checked on every
read to its end (a damaged file is an :class:`~jupyter_cifar.errors.IntegrityError` naming the version,
never a wrong model).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO

from ..errors import IntegrityError
from .records import CHUNK, ModelRecord


def file_digest(path: Path) -> tuple[str, int]:
    """(sha256, size) of a file, streamed."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class VerifyingReader:
    """Wraps a stored file's stream; at its end, checks size and sha256 against the record."""

    def __init__(self, raw: IO[bytes], record: ModelRecord) -> None:
        self.raw = raw
        self.record = record
        self._hash = hashlib.sha256()
        self._size = 0
        self._checked = False

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self._hash.update(data)
        self._size += len(data)
        if not data or n < 0:
            self._check()
        return data

    def _check(self) -> None:
        if self._checked:
            return
        self._checked = True
        r = self.record
        if self._size != r.size or self._hash.hexdigest() != r.sha256:
            raise IntegrityError(
                f"model {r.ref}: the stored file is corrupt ({self._size} bytes, sha256 "
                f"{self._hash.hexdigest()[:12]}…; saved as {r.size} bytes, sha256 {r.sha256[:12]}…)"
            )

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> VerifyingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
