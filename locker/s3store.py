"""Content-addressed blob storage in an S3 bucket (`EvidenceLocker:Backend = s3`).

Layout: the object `<S3:Prefix>sha256/<64 hex>` holds the blob of `sha256:<64 hex>`.

Durability and "nothing lost": `put_many` returns only once the server has answered every PUT
with success. Each PUT carries `x-amz-checksum-sha256` (the blob's own digest, which is its id),
so the server checks the bytes it received and refuses them (`BadDigest`) if they differ; an S3
server acknowledges a PUT only once the object is stored (and, on AWS, readable by every later
request). So an event is never published before its blob is confirmed.

Conditional writes: every PUT of `put_many` carries `If-None-Match: *`, so a second writer never
replaces an object that is there: the server answers 412 instead. A 412 is success, without
reading the object back: the key is the content's digest and every object this store writes was
checked by the server against that digest, so an existing object holds the same bytes (an object
damaged or replaced behind the locker's back is what verification runs find; `restore` replaces
it, unconditionally). SeaweedFS 4.48 (the tests' server) and AWS S3 honour the header; a server
that ignores it would overwrite an object with the same bytes, which loses nothing.

Errors: a missing object is `ArtifactNotFound`; a server that cannot be reached, answers 5xx,
refuses the credentials or lacks the bucket is `StoreUnreachable` (a `StorageUnavailable`), which
the loops retry and never take for one bad blob.
Credentials come from `S3:CredentialsFile` (mode 0600: `access_key_id` and `secret_access_key`,
TOML) or the environment (`STELLA_S3_ACCESS_KEY_ID`, `STELLA_S3_SECRET_ACCESS_KEY`, which win);
never from the config file, and never logged.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import re
import stat
import tomllib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import urlsplit

from locker import verification
from locker.cas import DiskUsage, checked
from locker.digests import parse_digest
from locker.errors import (
    ArtifactNotFound,
    IntegrityError,
    InvalidInput,
    StorageUnavailable,
    StoreUnreachable,
    UsageError,
)

if TYPE_CHECKING:
    from locker.config import Settings

_CHUNK = 1 << 20
ACCESS_KEY_ENV = "STELLA_S3_ACCESS_KEY_ID"
SECRET_KEY_ENV = "STELLA_S3_SECRET_ACCESS_KEY"  # noqa: S105  # a variable's name, not a secret
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_DELETE_AT_ONCE = 1000  # DeleteObjects takes at most 1,000 keys
_MISSING = {"404", "NoSuchKey", "NotFound"}
_EXISTS = {"412", "PreconditionFailed"}
_UNREADABLE = {"InvalidObjectState"}  # this object cannot be read as it is (an archive storage class)


class Unreadable(StorageUnavailable):
    """One object the server will not read back, while the store itself answers."""


@dataclass(frozen=True)
class S3Config:
    """Where the bucket is and how to reach it; validated by `from_settings`."""

    bucket: str
    endpoint: str = ""  # empty: AWS's endpoint for the region
    region: str = "us-east-1"
    prefix: str = ""  # "" or ending in "/"
    addressing_style: str = "path"
    concurrency: int = 16
    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)


def config_from(settings: Settings) -> S3Config:
    """The `S3:*` keys checked, with the credentials; `UsageError` naming what is wrong."""
    bucket = str(settings.get("S3:Bucket")).strip()
    if not bucket:
        raise UsageError("EvidenceLocker:Backend is s3 but S3:Bucket is empty: name the bucket")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise UsageError(f"S3:Bucket {bucket!r} is not a valid bucket name (3-63 of a-z, 0-9, '.', '-')")
    endpoint = str(settings.get("S3:Endpoint")).strip()
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise UsageError(f"S3:Endpoint must be an http(s)://host[:port] URL, got {endpoint!r}")
    region = str(settings.get("S3:Region")).strip()
    if not region:
        raise UsageError("S3:Region is empty (SeaweedFS and MinIO take any, e.g. us-east-1)")
    prefix = str(settings.get("S3:Prefix")).strip()
    if prefix.startswith("/") or "//" in prefix or ".." in prefix.split("/"):
        raise UsageError(f"S3:Prefix {prefix!r} must be a relative key prefix such as 'locker-1/'")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    style = str(settings.get("S3:AddressingStyle")).strip().lower()
    if style not in ("path", "virtual"):
        raise UsageError(f"S3:AddressingStyle must be path or virtual, got {style!r}")
    concurrency = settings.integer("S3:Concurrency")
    if not 1 <= concurrency <= 256:
        raise UsageError(f"S3:Concurrency must be between 1 and 256, got {concurrency}")
    access, secret = read_credentials(settings.s3_credentials_file)
    return S3Config(bucket, endpoint, region, prefix, style, concurrency, access, secret)


def read_credentials(path: Path) -> tuple[str, str]:
    """(access key id, secret access key) from the environment, else from the file at `path`.
    `UsageError` if neither has both, or if the file is readable by others."""
    access, secret = os.environ.get(ACCESS_KEY_ENV, ""), os.environ.get(SECRET_KEY_ENV, "")
    if access and secret:
        return access, secret
    try:
        info = path.stat()
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(
            f"no S3 credentials: put access_key_id and secret_access_key in {path} (mode 0600) or set "
            f"{ACCESS_KEY_ENV} and {SECRET_KEY_ENV}"
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        # the parser's message may quote the file: say only where it failed
        what = type(exc).__name__ if isinstance(exc, tomllib.TOMLDecodeError) else str(exc)
        raise UsageError(f"S3 credentials file {path} is unusable ({what})") from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise UsageError(f"S3 credentials file {path} is readable by others: chmod 600 {path}")
    found = data.get("access_key_id"), data.get("secret_access_key")
    if not all(isinstance(value, str) and value for value in found):
        raise UsageError(f"S3 credentials file {path} needs access_key_id and secret_access_key (strings)")
    return str(found[0]), str(found[1])


def credentials_text(access_key_id: str, secret_access_key: str) -> bytes:
    """The credentials file's content (for `locker.files.create_secret`)."""
    return f"access_key_id = {access_key_id!r}\nsecret_access_key = {secret_access_key!r}\n".encode()


class S3BlobStore:
    """Blobs as objects in a bucket; picklable (a child process makes its own client)."""

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self.location = f"s3://{config.bucket}/{config.prefix}"
        self._keys = f"{config.prefix}sha256/"
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        return cls(config_from(settings))

    def __getstate__(self) -> dict[str, object]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]

    @property
    def client(self) -> Any:
        """boto3's S3 client, made on first use (boto3 takes ~0.3 s to import)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            c = self.config
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=c.endpoint or None,
                region_name=c.region,
                aws_access_key_id=c.access_key_id,
                aws_secret_access_key=c.secret_access_key,
                config=Config(
                    s3={"addressing_style": c.addressing_style},
                    retries={"mode": "standard", "max_attempts": 3},
                    connect_timeout=5,
                    read_timeout=60,
                    max_pool_connections=max(c.concurrency, 10),
                    # The SHA-256 checksum is sent as a header of our own (put_many); no CRC trailer
                    # in aws-chunked bodies, which not every S3-compatible server reads.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        return self._client

    def key(self, artifact_id: str) -> str:
        hexdigest = parse_digest(artifact_id, what="artifact id")[len("sha256:") :]
        return self._keys + hexdigest

    def where(self, artifact_id: str) -> str:
        return f"s3://{self.config.bucket}/{self.key(artifact_id)}"

    @contextlib.contextmanager
    def _calling(self, what: str, artifact_id: str = "") -> Iterator[None]:
        """Map the client's errors: a missing object `ArtifactNotFound`, one the server will not
        read as it is `Unreadable`, anything else about the server or the network
        `StoreUnreachable` (retried by the loops, never skipped)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if artifact_id and code in _MISSING:
                raise ArtifactNotFound(artifact_id) from None
            if artifact_id and code in _UNREADABLE:
                raise Unreadable(f"S3 {self.location}: cannot {what}: {_describe(exc)}") from None
            raise StoreUnreachable(f"S3 {self.location}: cannot {what}: {_describe(exc)}") from None
        except (BotoCoreError, OSError) as exc:
            raise StoreUnreachable(f"S3 {self.location}: cannot {what}: {exc}") from None

    def ensure(self) -> None:
        """Check that the bucket is there and these credentials may use it (buckets are made by
        their owners, not here)."""
        with self._calling(f"reach bucket {self.config.bucket}"):
            self.client.head_bucket(Bucket=self.config.bucket)

    def exists(self, artifact_id: str) -> bool:
        try:
            self.size(artifact_id)
        except ArtifactNotFound:
            return False
        return True

    def size(self, artifact_id: str) -> int:
        with self._calling(f"look up {artifact_id}", artifact_id):
            head = self.client.head_object(Bucket=self.config.bucket, Key=self.key(artifact_id))
        return int(head["ContentLength"])

    def read(self, artifact_id: str) -> bytes:
        with self.open(artifact_id) as body:
            return body.read()

    def open(self, artifact_id: str) -> BinaryIO:
        """The object's bytes as a stream off the connection: nothing is buffered whole."""
        with self._calling(f"read {artifact_id}", artifact_id):
            answer = self.client.get_object(Bucket=self.config.bucket, Key=self.key(artifact_id))
        return cast(BinaryIO, io.BufferedReader(_Body(self, artifact_id, answer["Body"]), _CHUNK))

    def hash_of(self, artifact_id: str) -> str:
        return _hashed(self, artifact_id)[0]

    def verify(self, artifact_id: str) -> None:
        actual = self.hash_of(artifact_id)
        if actual != artifact_id:
            raise IntegrityError(f"blob {artifact_id}", artifact_id, actual)

    def read_checked(self, artifact_id: str) -> bytes:
        return checked(artifact_id, self.read(artifact_id), f"the blob of {artifact_id}")

    def check(self, artifact_id: str, expected_size: int) -> verification.Found:
        try:
            actual, size = _hashed(self, artifact_id)
        except InvalidInput:
            return verification.Found("missing", "", -1, f"{artifact_id[:80]!r} is not an artifact id")
        except ArtifactNotFound:
            return verification.Found("missing", "", -1, f"no object at {self.where(artifact_id)}")
        except Unreadable as exc:
            return verification.Found("unreadable", "", -1, str(exc))
        # StoreUnreachable (the server down, 5xx, refused credentials) goes up, and the verify
        # loop retries the batch: an outage must not put a failure of every artifact on the log.
        return verification.judge(artifact_id, expected_size, actual, size)

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Every `(artifact_id, data)` stored and confirmed by the server before this returns.

        Each data is checked against its id first (`IntegrityError`, nothing sent). PUTs run
        `S3:Concurrency` at once, each conditional (`If-None-Match: *`; 412: there already, fine)
        and checksummed; any failure is `StorageUnavailable` once every PUT has ended."""
        todo: dict[str, bytes] = {}
        for artifact_id, data in items:
            todo[self.key(artifact_id)] = checked(artifact_id, data)
        if not todo:
            return
        if len(todo) == 1:
            self._put(*next(iter(todo.items())), conditional=True)
            return
        assert self.client is not None  # made here, once, not by several threads at once
        with ThreadPoolExecutor(min(self.config.concurrency, len(todo))) as pool:
            futures = [pool.submit(self._put, key, data, conditional=True) for key, data in todo.items()]
        for future in futures:
            future.result()  # the first failure, after all have ended

    def _put(self, key: str, data: bytes, *, conditional: bool) -> None:
        from botocore.exceptions import ClientError

        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        extra = {"IfNoneMatch": "*"} if conditional else {}
        with self._calling(f"write {key}"):
            try:
                self.client.put_object(
                    Bucket=self.config.bucket, Key=key, Body=data, ChecksumSHA256=digest, **extra
                )
            except ClientError as exc:
                if not (conditional and str(exc.response.get("Error", {}).get("Code", "")) in _EXISTS):
                    raise  # 412 to a conditional PUT: the object is there (same key, same bytes)

    def restore(self, artifact_id: str, data: bytes) -> None:
        """Replace the object (damaged, or gone) with `data`: checked against the id, then an
        unconditional checksummed PUT (the one write that may replace an object)."""
        self._put(self.key(artifact_id), checked(artifact_id, data), conditional=False)

    def delete_many(self, artifact_ids: Sequence[str]) -> None:
        keys = [self.key(artifact_id) for artifact_id in artifact_ids]
        for start in range(0, len(keys), _DELETE_AT_ONCE):
            batch = [{"Key": key} for key in keys[start : start + _DELETE_AT_ONCE]]
            with self._calling(f"delete {len(batch)} objects"):
                answer = self.client.delete_objects(
                    Bucket=self.config.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            failed = [e for e in answer.get("Errors", []) if e.get("Code") not in _MISSING]
            if failed:
                first = failed[0]
                raise StorageUnavailable(
                    f"S3 {self.location}: cannot delete {len(failed)} objects, e.g. {first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message', '')}"
                )

    def _objects(self) -> Iterator[tuple[str, int]]:
        """(artifact id, size) of every blob object, in key order."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.config.bucket, Prefix=self._keys
        )
        with self._calling("list the blobs"):
            for page in pages:
                for item in page.get("Contents", []):
                    name = str(item["Key"])[len(self._keys) :]
                    if len(name) == 64 and all(c in "0123456789abcdef" for c in name):
                        yield "sha256:" + name, int(item["Size"])

    def iter_ids(self) -> Iterator[str]:
        for artifact_id, _ in self._objects():
            yield artifact_id

    def usage(self) -> tuple[int, int]:
        count = size = 0
        for _, object_size in self._objects():
            count += 1
            size += object_size
        return count, size

    def free_bytes(self) -> int | None:
        return None  # a bucket has no free space to read; a full one answers its PUTs with errors

    def disk_usage(self) -> DiskUsage | None:
        return None

    def readiness(self, room: int) -> dict[str, object]:
        try:
            self.ensure()
        except StorageUnavailable as exc:
            return {"writable": False, "detail": str(exc)}
        return {"writable": True}

    def probe(self) -> float:
        """Write, read back and delete a small object under the prefix; its round trip in seconds.
        `StorageUnavailable` if any step fails (doctor's check)."""
        import time

        key = f"{self.config.prefix}probe/{os.urandom(8).hex()}"
        data = os.urandom(64)
        started = time.monotonic()
        self._put(key, data, conditional=True)
        try:
            with self._calling("read the probe object back"):
                back = self.client.get_object(Bucket=self.config.bucket, Key=key)["Body"].read()
        finally:
            with self._calling("delete the probe object"):
                self.client.delete_object(Bucket=self.config.bucket, Key=key)
        if back != data:
            raise StorageUnavailable(f"S3 {self.location}: the probe object read back differs")
        return time.monotonic() - started

    def clean_tmp(self) -> int:
        return 0  # a PUT is atomic: no partial object is ever visible, nothing is left to clean


class _Body(io.RawIOBase):
    """A GET's body as a raw stream; a connection that breaks mid-read is `StorageUnavailable`."""

    def __init__(self, store: S3BlobStore, artifact_id: str, body: Any) -> None:
        super().__init__()
        self._store, self._id, self._body = store, artifact_id, body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with self._store._calling(f"read {self._id}", self._id):
            data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()
        super().close()


def _hashed(store: S3BlobStore, artifact_id: str) -> tuple[str, int]:
    """(digest, size) of the stored object, hashed as it streams in."""
    hasher = hashlib.sha256()
    size = 0
    with store.open(artifact_id) as body:
        while chunk := body.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


def _describe(exc: Any) -> str:
    """A client error as `<status> <code>: <message>`, with nothing of the request's signature."""
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    return f"{status} {error.get('Code', '')}: {error.get('Message', '')}".strip()
