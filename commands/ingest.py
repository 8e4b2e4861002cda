"""`stella evidence ingest`: send files as submissions and wait for what became of each.

The CLI is a plain Kafka client. It positions a consumer at the end of `evidence.events`
*before* it sends, then waits for the event whose `correlation_id` is the submission id. On
timeout it raises `TimedOut` naming the submissions still queued; it never guesses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from locker import submissions
from locker.config import Settings
from locker.digests import digest_of, parse_digest
from locker.errors import InvalidInput, TimedOut, UsageError
from locker.events import KINDS, ArtifactIngested, ArtifactResubmitted, IngestRejected, decode
from streams.kafka import assign_all, consumer, producer
from streams.topics import Topics


@dataclass
class IngestResult:
    file: str
    artifact_id: str
    digest: str
    status: str  # ingested | duplicate | rejected
    reason: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        out = asdict(self)
        if self.status != "rejected":
            out.pop("reason")
            out.pop("detail")
        return out


def build(
    path: Path, data: bytes, *, kind: str, subjects: Sequence[str], producer_name: str
) -> submissions.ArtifactSubmission:
    return submissions.ArtifactSubmission(
        content=data,
        kind=kind,  # type: ignore[arg-type]
        subjects=tuple(subjects),
        producer=producer_name,
        media_type=_media_type(path),
        digest=digest_of(data),
        submission_id=submissions.new_submission_id(),
    )


def _media_type(path: Path) -> str:
    name = path.name.lower()
    for suffix, media in (
        (".intoto.jsonl", "application/vnd.in-toto+json"),
        (".dsse.json", "application/vnd.dsse.envelope.v1+json"),
        (".spdx.json", "application/spdx+json"),
        (".cdx.json", "application/vnd.cyclonedx+json"),
        (".json", "application/json"),
        (".sig", "application/octet-stream"),
    ):
        if name.endswith(suffix):
            return media
    return "application/octet-stream"


async def ingest(
    settings: Settings,
    files: Sequence[Path],
    *,
    kind: str,
    subjects: Sequence[str],
    producer_name: str,
    on_done: Callable[[IngestResult], None] | None = None,
) -> list[IngestResult]:
    if kind not in KINDS:
        raise UsageError(f"--kind must be one of {', '.join(KINDS)}")
    for subject in subjects:
        parse_digest(subject, what="--subject")
    results: dict[str, IngestResult] = {}
    outgoing: list[tuple[str, submissions.ArtifactSubmission]] = []
    ordered: list[IngestResult] = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        digest = digest_of(data)
        result = IngestResult(file=str(path), artifact_id=digest, digest=digest, status="pending")
        ordered.append(result)
        if len(data) > settings.max_content_bytes:
            result.status, result.reason = "rejected", "too-large"
            result.detail = f"{len(data)} bytes, the limit is {settings.max_content_bytes}"
            if on_done:
                on_done(result)
            continue
        sub = build(path, data, kind=kind, subjects=subjects, producer_name=producer_name)
        results[sub.submission_id] = result
        outgoing.append((digest, sub))
    if outgoing:
        await _send_and_wait(settings, outgoing, results, on_done)
    return ordered


async def _send_and_wait(
    settings: Settings,
    outgoing: list[tuple[str, submissions.ArtifactSubmission]],
    results: dict[str, IngestResult],
    on_done: Callable[[IngestResult], None] | None,
) -> None:
    topics = Topics(settings.topic_prefix)
    async with consumer(settings) as watcher, producer(settings) as sender:
        tps = await assign_all(watcher, topics.events)
        if not tps:
            raise UsageError(f"topic {topics.events} does not exist; run `stella init`")
        await watcher.seek_to_end(*tps)
        for tp in tps:
            await watcher.position(tp)  # resolve the end now, before anything is sent
        acks = [
            await sender.send(topics.submissions, key=digest.encode(), value=submissions.encode(sub))
            for digest, sub in outgoing
        ]
        await asyncio.gather(*acks)
        waiting = set(results)
        deadline = time.monotonic() + settings.timeout
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                queued = ", ".join(sorted(waiting)[:5])
                raise TimedOut(
                    f"{len(waiting)} submission(s) sent but not processed within {settings.timeout:.0f}s "
                    f"(queued; is the service running? `stella service status`). Submission ids: {queued}"
                )
            batches = await watcher.getmany(timeout_ms=int(min(left, 1.0) * 1000), max_records=5000)
            for records in batches.values():
                for record in records:
                    done = _outcome(record.value, results)
                    if done is not None and done in waiting:
                        waiting.discard(done)
                        if on_done:
                            on_done(results[done])


def _outcome(value: bytes, results: dict[str, IngestResult]) -> str | None:
    """Update the result an event answers; returns its submission id, if it is one of ours."""
    try:
        event = decode(value)
    except InvalidInput:
        return None
    result = results.get(event.correlation_id)
    if result is None:
        return None
    if isinstance(event, ArtifactIngested):
        result.status = "ingested"
    elif isinstance(event, ArtifactResubmitted):
        result.status = "duplicate"
    elif isinstance(event, IngestRejected):
        result.status, result.reason, result.detail = "rejected", event.reason, event.detail
    return event.correlation_id
