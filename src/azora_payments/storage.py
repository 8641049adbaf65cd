"""Where issued receipt PDFs are kept (RECEIPT_STORAGE): a folder, written atomically, or an
S3-compatible bucket (`s3://bucket/prefix`), which is what servers on several machines share.

S3 goes through obstore (the Rust `object_store` crate behind a native asyncio API): no thread
pool per call, its own retries with backoff on 5xx and dropped connections, timeouts, and the
usual AWS settings read from the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, …).

Objects are written once under a key that names their version and never changed after: a
version is new bytes under a new key.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from obstore.store import S3Store

__all__ = [
    "FolderStorage",
    "ReceiptStorage",
    "S3Location",
    "S3Storage",
    "StorageUnavailable",
    "parse_s3_url",
    "storage_for",
    "version_key",
]

# Each S3 call is retried by obstore within this budget; past it the job fails and the queue
# retries it later with its own backoff.
S3_TIMEOUT = timedelta(seconds=20)
S3_RETRIES = 3


class StorageUnavailable(RuntimeError):
    """The receipt store cannot be reached or refused the request; the message says which."""


class ReceiptStorage(Protocol):
    """What receipts need from a store."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def check(self) -> None:
        """Raise StorageUnavailable (one line) when the store cannot be used."""


def version_key(year: int, number: str, version: int) -> str:
    return f"receipts/{year}/{number}/v{version}.pdf"


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

    async def check(self) -> None:
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot create folder {self.root}: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str


def parse_s3_url(url: str) -> S3Location:
    """`s3://bucket` or `s3://bucket/some/prefix`."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("an S3 store is s3://bucket or s3://bucket/prefix")
    return S3Location(bucket=parts.netloc, prefix=parts.path.strip("/"))


class S3Storage:
    def __init__(self, location: S3Location, *, endpoint: str | None = None) -> None:
        from obstore.store import S3Store

        self.location = location
        self.endpoint = (
            endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        )
        options: dict[str, object] = {
            "timeout": S3_TIMEOUT,
            "connect_timeout": timedelta(seconds=5),
        }
        if self.endpoint and self.endpoint.startswith("http://"):
            # An endpoint the operator wrote as http:// (a MinIO or moto nearby); requests are
            # signed, the secret key itself never travels.
            options["allow_http"] = True
        config: dict[str, object] = {}
        if self.endpoint:
            # Path-style addressing: S3-compatible stores rarely serve bucket sub-domains.
            config = {"endpoint": self.endpoint, "virtual_hosted_style_request": False}
        self.store: S3Store = S3Store(
            location.bucket,
            prefix=location.prefix or None,
            config=config,  # type: ignore[arg-type]
            client_options=options,  # type: ignore[arg-type]
            retry_config={
                "max_retries": S3_RETRIES,
                "retry_timeout": S3_TIMEOUT,
                "backoff": {"init_backoff": timedelta(milliseconds=100)},
            },
        )

    def __repr__(self) -> str:
        return f"S3Storage(s3://{self.location.bucket}/{self.location.prefix})"

    async def put(self, key: str, data: bytes) -> None:
        import obstore

        try:
            await obstore.put_async(self.store, key, data)
        except Exception as exc:
            raise StorageUnavailable(self._why(exc)) from exc

    async def get(self, key: str) -> bytes | None:
        import obstore

        try:
            result = await obstore.get_async(self.store, key)
            return bytes(await result.bytes_async())
        except FileNotFoundError:  # obstore's NotFoundError
            return None
        except Exception as exc:
            raise StorageUnavailable(self._why(exc)) from exc

    async def check(self) -> None:
        """The bucket exists and these credentials may list it."""
        import obstore

        try:
            await obstore.list_with_delimiter_async(self.store, None)
        except Exception as exc:
            raise StorageUnavailable(self._why(exc)) from None

    def _why(self, exc: Exception) -> str:
        where = f"s3://{self.location.bucket}" + (f" at {self.endpoint}" if self.endpoint else "")
        text = str(exc)
        if "NoSuchBucket" in text:
            return f"bucket {self.location.bucket!r} does not exist ({where})"
        if any(code in text for code in ("AccessDenied", "InvalidAccessKey", "SignatureDoesNot")):
            return f"access denied to {where} (check the AWS credentials)"
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return f"{where} unavailable: {first[:200]}"


def storage_for(setting: str) -> FolderStorage | S3Storage | None:
    """The storage RECEIPT_STORAGE names; None when it is empty (PDFs are then rendered when
    asked for, never kept)."""
    setting = setting.strip()
    if not setting:
        return None
    if setting.lower().startswith("s3:"):
        return S3Storage(parse_s3_url(setting))
    return FolderStorage(setting)
