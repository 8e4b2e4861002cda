"""Records of verification runs outside the forever log, and checking one blob.

`Outcome` is the schema of `evidence.verifications` (key: the artifact id), one record per
artifact per run; streaming consumers read it (README, "Verification outcomes"). `Task` is a
chunk of a run's plan on the internal `evidence.verify-tasks` topic. `check` is the one place a
blob is judged against its artifact id.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from locker.decoding import Decoder
from locker.events.integrity import Mode

OutcomeName = Literal["ok", "mismatch", "missing", "unreadable"]
OUTCOMES: tuple[OutcomeName, ...] = ("ok", "mismatch", "missing", "unreadable")


class Outcome(msgspec.Struct, frozen=True, kw_only=True, tag="verification.outcome", tag_field="type"):
    """What one run found for one artifact. `expected_digest` is the artifact id; `actual_digest`
    is what the blob hashes to now ("" if it could not be read)."""

    run_id: str
    mode: Mode
    artifact_id: str
    outcome: OutcomeName
    expected_digest: str
    actual_digest: str
    expected_size: int
    actual_size: int  # -1: no blob to measure
    detail: str = ""
    verified_at: datetime
    schema_version: int = 1


class Task(msgspec.Struct, frozen=True, kw_only=True, tag="verification.task", tag_field="type"):
    """Part of a run's plan: check these artifacts (id, expected size)."""

    run_id: str
    mode: Mode
    planned: Annotated[int, msgspec.Meta(ge=0)]  # artifacts in the whole run
    artifacts: tuple[tuple[str, int], ...]
    started_at: datetime
    sample: str = ""  # quick runs: as asked, and the seed that ordered it
    seed: int = 0
    # evidence.verifications' end offset of each partition when the run began
    outcomes_from: tuple[int, ...] = ()
    to_anchor: str = ""  # a full run as of this anchor
    # The worker that planned the run, which alone checks its tasks (`streams.app.instance_id`);
    # "" in tasks written before workers were several.
    planner: str = ""
    schema_version: int = 1


_encoder = msgspec.json.Encoder(order="sorted")
outcome_decoder: Decoder[Outcome] = Decoder(Outcome, "verification outcome")
task_decoder: Decoder[Task] = Decoder(Task, "verification task")


def encode(record: Outcome | Task) -> bytes:
    return _encoder.encode(record)


def outcome_line(artifact_id: str, outcome: str, actual_digest: str) -> bytes:
    """One line of a run's coverage digest (`VerificationCompleted.outcomes_digest`)."""
    return f"{artifact_id} {outcome} {actual_digest}\n".encode()


class Found(msgspec.Struct, frozen=True):
    """What `check` saw: the outcome, the digest and size it read, and why it failed."""

    outcome: OutcomeName
    actual_digest: str
    actual_size: int
    detail: str = ""


_CHUNK = 1 << 20


def check(path: Path, artifact_id: str, expected_size: int) -> Found:
    """Read the blob at `path` once, hashing it, and judge it against `artifact_id`."""
    hasher = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb", buffering=0) as blob:
            buffer = bytearray(_CHUNK)
            view = memoryview(buffer)
            while read := blob.readinto(buffer):
                hasher.update(view[:read])
                size += read
    except FileNotFoundError:
        return Found("missing", "", -1, f"no blob at {path}")
    except OSError as exc:
        return Found("unreadable", "", -1, f"{exc.strerror or exc} ({path})")
    return judge(artifact_id, expected_size, "sha256:" + hasher.hexdigest(), size)


def judge(artifact_id: str, expected_size: int, actual: str, size: int) -> Found:
    """The outcome for a blob read whole: `actual` is its digest, `size` its length."""
    if actual != artifact_id:
        return Found("mismatch", actual, size, f"the blob hashes to {actual}")
    if expected_size >= 0 and size != expected_size:
        return Found("mismatch", actual, size, f"the blob has {size} bytes, not {expected_size}")
    return Found("ok", actual, size)
