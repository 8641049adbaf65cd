"""Where issued receipt PDFs are kept: a folder (RECEIPT_STORAGE), written atomically.

S3 (`s3://…`) is refused when the settings are read (see `config.Settings`): it is not built.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

__all__ = ["FolderStorage", "receipt_key", "storage_for"]


def receipt_key(year: int, number: str) -> str:
    return f"receipts/{year}/{number}.pdf"


class FolderStorage:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"key {key!r} leaves the storage folder")
        return path

    def _write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written beside its final name, flushed, then renamed: a reader sees all or nothing.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, key, data)

    async def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None


def storage_for(setting: str) -> FolderStorage | None:
    """The storage RECEIPT_STORAGE names; None when it is empty (PDFs are then only rendered
    on demand, never kept)."""
    if not setting.strip():
        return None
    return FolderStorage(setting)
