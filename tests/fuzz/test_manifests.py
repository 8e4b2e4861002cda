"""Structure-aware fuzzing of the decoders inside archives, evidence packs and backups: archive and
pack manifests and events lines (`locker.archives`), backup manifests, blob indexes and framed
record streams (`locker.backups`, `commands.backup.read_records`), starting from valid ones.

Properties: each decoder gives a value or raises its documented error (`InvalidInput` for the
archive formats; `ValueError`, which msgspec's `DecodeError` is, for the backup formats;
`StorageUnavailable` from `read_records`), never anything else; a value re-encodes and decodes
back to itself; a frame header that claims more bytes than the file has is not allocated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from commands.backup import read_records
from locker import archives, backups
from locker.backups import FRAME_HEADER, BackedUpRecord
from locker.errors import InvalidInput, StorageUnavailable
from tests.fuzz import samples
from tests.fuzz.conftest import bounded, fuzz_settings, peak_memory
from tests.fuzz.mutations import byte_mutants, mutants, packed_mutants, pick

pytestmark = pytest.mark.fuzz

DEEP = b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@dataclass(frozen=True)
class Format:
    decode: Callable[[bytes], object]
    encode: Callable[[object], bytes]
    error: type[Exception]  # the documented one


def frame_body(records: object) -> bytes:
    assert isinstance(records, list)
    return backups.frame(records)[FRAME_HEADER:]


def encode_lines(lines: object) -> bytes:
    assert isinstance(lines, list)
    return archives.encode_lines(lines)


FORMATS = {
    "archives.decode_manifest": Format(archives.decode_manifest, archives.encode_manifest, InvalidInput),  # type: ignore[arg-type]
    "archives.decode_pack_manifest": Format(
        archives.decode_pack_manifest,
        archives.encode_manifest,  # type: ignore[arg-type]
        InvalidInput,
    ),
    "archives.decode_lines": Format(archives.decode_lines, encode_lines, InvalidInput),
    "backups.decode_manifest": Format(backups.decode_manifest, backups.encode_manifest, ValueError),  # type: ignore[arg-type]
    "backups.decode_blob_index": Format(backups.decode_blob_index, backups.encode_blob_index, ValueError),  # type: ignore[arg-type]
    "backups.decode_frame": Format(backups.decode_frame, frame_body, ValueError),  # type: ignore[arg-type]
}
LINE_A, LINE_B = samples.LINES.splitlines(keepends=True)
JSON_SEEDS = {
    "archives.decode_manifest": [archives.encode_manifest(samples.ARCHIVE_MANIFEST)],
    "archives.decode_pack_manifest": [archives.encode_manifest(samples.PACK_MANIFEST)],
    "archives.decode_lines": [LINE_A, LINE_B],
    "backups.decode_manifest": [samples.BACKUP_MANIFEST],
}
PACKED_SEEDS = {
    "backups.decode_blob_index": [samples.BLOB_INDEX],
    "backups.decode_frame": [frame[FRAME_HEADER:] for frame in samples.BACKUP_FRAMES],
}


def decoded(name: str, raw: bytes) -> object | None:
    """What `raw` decodes to, or None if it was refused with the documented error."""
    decoder = FORMATS[name]
    try:
        with bounded():
            return decoder.decode(raw)
    except decoder.error as error:
        if isinstance(error, InvalidInput):
            assert error.reason == "schema-invalid", error
        return None


def rereads(name: str, value: object) -> None:
    decoder = FORMATS[name]
    assert decoder.decode(decoder.encode(value)) == value


@st.composite
def json_documents(draw: st.DrawFn, name: str) -> bytes:
    """A mutated document; for events lines, one mutated line among good ones."""
    raw = draw(mutants(JSON_SEEDS[name]))
    if name == "archives.decode_lines":
        raw = draw(pick([raw, LINE_A + raw, raw + b"\n" + LINE_B, LINE_A + raw + b"\r" + LINE_B]))
    return raw


def packed_documents(name: str) -> st.SearchStrategy[bytes]:
    seed = pick(PACKED_SEEDS[name])
    return st.one_of(seed.flatmap(packed_mutants), seed.flatmap(packed_mutants), seed.flatmap(byte_mutants))


def cases(
    seeds: dict[str, list[bytes]], documents: Callable[[str], st.SearchStrategy[bytes]]
) -> st.SearchStrategy[tuple[str, bytes]]:
    """(decoder name, input) pairs: a decoder, then a mutant of one of its seeds."""
    return st.sampled_from(sorted(seeds)).flatmap(lambda name: st.tuples(st.just(name), documents(name)))


def test_the_seeds_decode_and_reread() -> None:
    for name, seeds in {**JSON_SEEDS, **PACKED_SEEDS}.items():
        for seed in seeds:
            value = decoded(name, seed)
            assert value is not None, name
            rereads(name, value)


@fuzz_settings(800)
@given(case=cases(JSON_SEEDS, json_documents))
# Regressions: nested too deep for the interpreter, these raised RecursionError.
@example(case=("archives.decode_manifest", DEEP))
@example(case=("archives.decode_pack_manifest", DEEP))
@example(case=("archives.decode_lines", LINE_A + DEEP))
@example(case=("backups.decode_manifest", DEEP))
def test_mutated_manifests_and_lines_decode_or_are_refused(case: tuple[str, bytes]) -> None:
    name, raw = case
    value = decoded(name, raw)
    if value is not None:
        rereads(name, value)


@fuzz_settings(500)
@given(case=cases(PACKED_SEEDS, packed_documents))
# Regressions: an item more than the array-like struct has, nested too deep (msgspec skips it,
# recursively): these raised RecursionError.
@example(case=("backups.decode_blob_index", b"\x91\x95\xa1a\xa1b\x00\x01" + b"\x91" * 100_000 + b"\xc0"))
@example(case=("backups.decode_frame", b"\x91\x97\x00\x00\x00\xc0\xc0\x90" + b"\x91" * 100_000 + b"\xc0"))
def test_mutated_blob_indexes_and_frames_decode_or_are_refused(case: tuple[str, bytes]) -> None:
    name, raw = case
    value = decoded(name, raw)
    if value is not None:
        rereads(name, value)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """A backup's record stream: good frames, mutated ones, and headers that lie about sizes."""
    frames = list(samples.BACKUP_FRAMES)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(frames) - 1))
        body = frames[i][FRAME_HEADER:]
        op = draw(st.sampled_from(["body", "body", "size", "drop", "repeat", "cut"]))
        if op == "body":
            body = draw(packed_mutants(body))
            frames[i] = len(body).to_bytes(4, "big") + body
        elif op == "size":  # the header claims another size, up to 4 GiB
            size = draw(st.sampled_from([0, 1, max(len(body) - 1, 0), len(body) + 1, 1 << 31, (1 << 32) - 1]))
            frames[i] = size.to_bytes(4, "big") + body
        elif op == "drop" and len(frames) > 1:
            del frames[i]
        elif op == "repeat":
            frames.insert(i, frames[i])
        else:
            frames[i] = frames[i][: draw(st.integers(0, max(len(frames[i]) - 1, 0)))]
    return b"".join(frames)


def records_of(path: Path) -> list[BackedUpRecord] | None:
    try:
        return list(read_records(path))
    except StorageUnavailable:
        return None


@fuzz_settings(400)
@given(stream=streams())
# Regression: a header claiming 4 GiB made the reader allocate 4 GiB before finding the file short.
@example(stream=b"\xff\xff\xff\xff" + samples.BACKUP_FRAMES[0])
def test_backup_streams_are_read_or_refused_in_bounded_memory(tmp_path: Path, stream: bytes) -> None:
    path = tmp_path / "events.records"
    path.write_bytes(stream)
    with bounded(), peak_memory() as peak:
        found = records_of(path)
    assert peak.bytes < 16 * len(stream) + (8 << 20), f"{peak.bytes} bytes for a {len(stream)}-byte file"
    try:
        whole = list(backups.unframe(stream))
    except ValueError:
        whole = None
    assert found == whole  # the file reader and the in-memory one agree
