"""`stella evidence diagnostics --output FILE.tar.gz [--days N]`: one bundle to attach to an incident.

Members (listed again in the bundle's README.md): the index status, storage stats, the recent
anchor chain and the latest anchor's verification, the latest verification run's failures, the
doctor's report, the operations audit log (the decoded commands and events of the last N days),
the effective config, and the tails of the service's and the broker's logs.

Never a secret: config values whose key names a secret are replaced by name; then every member is
searched for every secret value the locker knows of (the signing key file's contents and each of
its parts, the API token, the Kafka principals' passwords, the S3 backend's keys, secret-named
config values, and the values of secret-named environment variables) and each occurrence is
replaced. A section that cannot be collected (broker down, no anchor yet) holds its error
instead; the bundle is still written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from locker import kafka_auth, s3store
from locker.archives import write_tar_gz
from locker.config import MAX_WORKERS, Settings
from locker.errors import LockerError, Refused, UsageError

SECRET_NAME = re.compile(r"pass(word)?|secret|token|credential|private|sasl|api_?key", re.IGNORECASE)
REDACTED = b"[REDACTED]"
LOG_TAIL = 2000  # lines of each log
AUDIT_CAP = 100_000  # records of each topic in the audit log, the newest kept
MIN_SECRET = 6  # shorter values are not searched for: they would match everywhere


def collect(
    settings: Settings, output: Path, *, days: int = 7, report: Callable[[str], None] | None = None
) -> dict[str, Any]:
    if days < 1:
        raise Refused("--days: 1 or more")
    if output.exists():  # said before the work of collecting
        raise UsageError(f"{output} exists: choose another --output")
    members: dict[str, bytes] = {}
    errors: dict[str, str] = {}
    for name, produce in _sections(settings, days):
        if report is not None:
            report(name)
        try:
            members[name] = produce()
        except LockerError as exc:
            errors[name] = str(exc)
            members[name] = _json({"error": str(exc)})
    members["README.md"] = _readme(settings, days, errors).encode()
    secrets = known_secrets(settings)
    members = {name: redact(data, secrets) for name, data in members.items()}
    now = int(time.time())
    named = ((f"diagnostics/{name}", data) for name, data in members.items())
    write_tar_gz(output, named, mtime=now, what="bundle")
    return {
        "output": str(output),
        "bytes": output.stat().st_size,
        "members": sorted(members),
        "sections_failed": errors,
        "days": days,
    }


def _sections(settings: Settings, days: int) -> Iterator[tuple[str, Callable[[], bytes]]]:
    from commands import doctor, index, integrity, storage_report

    yield "index-status.json", lambda: _json(index.status(settings, sample=10))
    yield "storage-stats.json", lambda: _json(msgspec.to_builtins(storage_report.stats(settings)))
    yield "anchors.json", lambda: _json(_recent_chain(settings))
    yield "integrity.json", lambda: _json(msgspec.to_builtins(integrity.report(settings, only="failed")))
    yield "doctor.json", lambda: _json(msgspec.to_builtins(doctor.run(settings)))
    yield "audit-log.jsonl", lambda: audit_log(settings, days)
    yield "config.json", lambda: _json(effective_config(settings))
    yield "logs/service.log", lambda: tail(settings.log_path / "service.log")
    yield "logs/service.out", lambda: tail(settings.log_path / "service.out")
    for n in range(1, MAX_WORKERS):  # the other local workers' (`service start --workers N`)
        for name in (f"service-{n}.log", f"service-{n}.out"):
            if (settings.log_path / name).exists():
                yield f"logs/{name}", partial(tail, settings.log_path / name)
    yield "logs/broker.log", lambda: tail(_broker_log(settings))


def _recent_chain(settings: Settings) -> dict[str, Any]:
    from commands import anchors

    listed = anchors.listing(settings)
    try:
        latest: dict[str, Any] | str = anchors.verify_latest(settings)
    except LockerError as exc:
        latest = str(exc)
    return {"anchors": listed[-50:], "anchors_in_all": len(listed), "latest_verified": latest}


def _secret_key(key: str) -> bool:
    """Does a config key name a secret value? (`...File` and `...Path` keys name where one is.)"""
    return bool(SECRET_NAME.search(key)) and not key.endswith(("File", "Path", "Mechanism"))


def effective_config(settings: Settings) -> dict[str, Any]:
    """Every key with its value and where it came from; values of secret-named keys replaced."""
    return {
        key: {
            "value": "[REDACTED]" if _secret_key(key) else value,
            "source": settings.sources.get(key, ""),
        }
        for key, value in sorted(settings.values.items())
    }


def known_secrets(settings: Settings) -> set[bytes]:
    """Every secret value this process can know of: see the module docstring."""
    found: set[str] = set()
    try:
        key = settings.key_file.read_text(errors="replace")
    except OSError:
        key = ""
    found.add(key.strip())
    found.update(part for part in re.split(r"[\s+:]+", key) if len(part) >= 16)  # the key's fields
    with contextlib.suppress(OSError):
        found.add(settings.token_file.read_text(errors="replace").strip())  # the API token
    for who in kafka_auth.ROLES:  # the Kafka principals' passwords
        with contextlib.suppress(OSError):
            path = kafka_auth.password_file(settings.kafka_credentials_path, who)
            found.add(path.read_text(errors="replace").strip())
    with contextlib.suppress(LockerError):  # the S3 backend's keys, from its file or the environment
        found.update(s3store.read_credentials(settings.s3_credentials_file))
    found.update(str(v) for k, v in settings.values.items() if _secret_key(k) and v)
    found.update(v for k, v in os.environ.items() if SECRET_NAME.search(k))
    return {s.encode() for s in found if len(s) >= MIN_SECRET}


def redact(data: bytes, secrets: set[bytes]) -> bytes:
    for secret in sorted(secrets, key=len, reverse=True):  # a secret inside a longer one: the longer first
        data = data.replace(secret, REDACTED)
    return data


def audit_log(settings: Settings, days: int) -> bytes:
    """The commands and events of the last `days` days (the newest AUDIT_CAP of each topic), one
    decoded record a line, in each partition's log order."""
    from streams.topics import Topics

    topics = Topics(settings.topic_prefix)
    since = datetime.now(UTC) - timedelta(days=days)
    lines = []
    for topic, decode in ((topics.commands, _command), (topics.events, _event)):
        lines += asyncio.run(_read_since(settings, topic, since, decode))
    return b"".join(lines)


async def _read_since(
    settings: Settings, topic: str, since: datetime, decode: Callable[[bytes], Any]
) -> list[bytes]:
    from streams.kafka import assign_all, consumer, read_to_end

    async with consumer(settings) as client:
        tps = await assign_all(client, topic)
        if not tps:
            return []
        found = await client.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps})
        ends = await client.end_offsets(tps)
    cap = max(AUDIT_CAP // len(tps), 1)
    starts = {
        tp.partition: max(ends[tp] if found[tp] is None else found[tp].offset, ends[tp] - cap) for tp in tps
    }
    stops = {tp.partition: ends[tp] for tp in tps}
    out = []
    async for batch in read_to_end(settings, topic, starts=starts, stops=stops):
        for record in batch:
            line = {"topic": topic, "partition": record.partition, "offset": record.offset}
            try:
                line["record"] = msgspec.to_builtins(decode(record.value))
            except LockerError as exc:
                line["undecodable"] = str(exc)
            out.append(json.dumps(line, default=str).encode() + b"\n")
    return out


def _event(value: bytes) -> Any:
    from locker.events import decode

    return decode(value)


def _command(value: bytes) -> Any:
    from locker.requests import decode

    return decode(value)


def tail(path: Path, lines: int = LOG_TAIL) -> bytes:
    """The last `lines` lines of the file at `path`, read from its end (logs can be large)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(size - lines * 400, 0))
            data = f.read()
    except FileNotFoundError:
        return b"(no such file: %s)\n" % str(path).encode()
    except OSError as exc:
        return b"(unreadable: %s: %s)\n" % (str(path).encode(), (exc.strerror or "").encode())
    return b"\n".join(data.split(b"\n")[-lines - 1 :])


def _broker_log(settings: Settings) -> Path:
    from commands.broker import LocalBroker

    return LocalBroker.from_settings(settings).daemon.log_file


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, default=str).encode() + b"\n"


def _readme(settings: Settings, days: int, errors: dict[str, str]) -> str:
    failed = "".join(f"- `{name}`: {error}\n" for name, error in errors.items()) or "none\n"
    return f"""# Evidence Locker diagnostics

Collected {datetime.now(UTC).isoformat(timespec="seconds")} from the locker at {settings.home}
(`stella evidence diagnostics`). Secret values are replaced by `[REDACTED]` in every file.

- `index-status.json`: `stella evidence index status` (entries, lag, a sample of rows checked
  against their events)
- `storage-stats.json`: `stella evidence storage stats` (by kind and status, growth, free space)
- `anchors.json`: the last 50 anchors with each link's status; the latest anchor's verification
- `integrity.json`: `stella evidence verify-report --latest --filter failed`
- `doctor.json`: `stella doctor --format json`
- `audit-log.jsonl`: the commands and events of the last {days} days (the newest {AUDIT_CAP} of
  each topic), decoded, one a line
- `config.json`: the effective config, every key with its value and where it came from
- `logs/`: the last {LOG_TAIL} lines of the service's log and output, and of the local broker's log

Sections that could not be collected (they hold their error instead):
{failed}"""
