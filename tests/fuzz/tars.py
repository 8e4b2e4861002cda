"""Tar files assembled block by block, so that they can say what no tar writer says: a size the
data does not have, a link or a device where a file should be, a path out of the folder, a
member twice, no end; and a Hypothesis strategy that makes such files from a valid list of
members (`tar_mutants`), content changes included (`tests/fuzz/mutations.py`).
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import zstandard
from hypothesis import strategies as st

from locker import archives, signing
from tests.fuzz.mutations import byte_mutants, json_mutants, parse

Form = Literal[0, 1, 2]  # tarfile's USTAR_FORMAT, GNU_FORMAT, PAX_FORMAT
FORMS: list[Form] = [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]
BLOCK = 512
RECORD = 20 * BLOCK
# Where a member named by an absolute path would land if a reader extracted it: must never exist.
ESCAPED = Path(tempfile.gettempdir()) / "stella-fuzz-escaped"


@dataclass
class Entry:
    name: str
    data: bytes
    type: bytes = tarfile.REGTYPE
    size: int | None = None  # what the header claims; None: the data's length
    linkname: str = ""


@dataclass
class Mutant:
    """A file made from valid members, and whether its manifest was signed again after a change
    (then it may hold anything the signer wanted: only its consistency can be checked)."""

    data: bytes
    resealed: bool = False
    steps: list[str] = field(default_factory=list)


def header(entry: Entry, form: Form) -> bytes:
    info = tarfile.TarInfo(entry.name)
    info.type = entry.type
    info.size = len(entry.data) if entry.size is None else entry.size
    info.mtime, info.mode, info.linkname = 0, 0o444, entry.linkname
    if entry.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    try:
        return info.tobuf(form, "utf-8", "surrogateescape")
    except ValueError:  # a long name or a huge size that this format cannot hold: PAX can
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def assemble(
    entries: list[Entry], form: Form = tarfile.USTAR_FORMAT, end: bool = True
) -> tuple[bytes, list[int]]:
    """The tar bytes, and where each member's (last) header block starts."""
    out = bytearray()
    starts = []
    for entry in entries:
        block = header(entry, form)
        starts.append(len(out) + len(block) - BLOCK)
        out += block
        if entry.type in tarfile.REGULAR_TYPES or entry.type not in tarfile.SUPPORTED_TYPES:
            out += entry.data + b"\0" * (-len(entry.data) % BLOCK)
    if end:
        out += b"\0" * (2 * BLOCK)
        out += b"\0" * (-len(out) % RECORD)
    return bytes(out), starts


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor(write_checksum=True).compress(data)
    return data


HOSTILE_NAMES = [
    "/etc/passwd", str(ESCAPED), "../escaped", "blobs/sha256/../../escaped", "./manifest.json",
    "manifest.json/", "manifest.json\x00.txt", "blobs/sha256/" + "A" * 64, "blobs/sha256/" + "0" * 63,
    "blobs/sha256/" + "0" * 64, "events/0.jsonl", "events/000001.jsonl", "events/999999.jsonl",
    "trust/../manifest.json", "trust/x.pem", "trust/" + "a" * 200, "a" * 300, "", ".", "\udcff",
    archives.MANIFEST, archives.SIGNATURE, archives.ANCHOR, archives.SIGSTORE_ROOT, "blobs", "events/",
]  # fmt: skip
TYPES = [
    tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE,
    tarfile.FIFOTYPE, tarfile.CONTTYPE, tarfile.AREGTYPE, tarfile.GNUTYPE_SPARSE, b"Z",
]  # fmt: skip
LINKS = ["/etc/passwd", str(ESCAPED), "../escaped", archives.MANIFEST, "blobs/sha256/" + "0" * 64]
# Header fields: (offset, length) in a ustar header block.
FIELDS = {
    "name": (0, 100), "mode": (100, 8), "uid": (108, 8), "size": (124, 12), "mtime": (136, 12),
    "chksum": (148, 8), "type": (156, 1), "linkname": (157, 100), "magic": (257, 8), "prefix": (345, 155),
}  # fmt: skip
JSON_MEMBERS = {archives.ANCHOR, archives.MANIFEST, archives.SIGSTORE_ROOT}


def _sizes(entry: Entry) -> st.SearchStrategy[int]:
    n = len(entry.data)
    return st.sampled_from(
        [1 << 40, 1 << 33, (8 << 30) - 1, (1 << 30) + 1, (4 << 20) + 1, n + 1, max(n - 1, 0), 0]
    )


@st.composite
def _content(draw: st.DrawFn, entry: Entry) -> bytes:
    """A member's bytes changed: as JSON where it is JSON (one line of an events member)."""
    if entry.name in JSON_MEMBERS or archives.is_events_member(entry.name):
        lines = entry.data.splitlines(keepends=True) or [b"{}"]
        i = draw(st.integers(0, len(lines) - 1))
        try:
            parse(lines[i])
        except (ValueError, RecursionError):  # no longer JSON (changed before): changed as bytes
            lines[i] = draw(byte_mutants(lines[i]))
        else:
            lines[i] = draw(json_mutants(lines[i])) + b"\n"
        return b"".join(lines)
    if entry.name.endswith(".pem") and draw(st.booleans()):
        return draw(_inside_pem(entry.data))
    return draw(byte_mutants(entry.data))


@st.composite
def _inside_pem(draw: st.DrawFn, pem: bytes) -> bytes:
    """A PEM key with its DER bytes mutated (a key type, a curve, a length no key has)."""
    lines = pem.splitlines()
    if len(lines) < 3:
        return draw(byte_mutants(pem))
    try:
        der = base64.b64decode(b"".join(lines[1:-1]), validate=True)
    except ValueError:
        return draw(byte_mutants(pem))
    return b"\n".join([lines[0], *base64.encodebytes(draw(byte_mutants(der))).splitlines(), lines[-1], b""])


@st.composite
def _change(draw: st.DrawFn, entries: list[Entry]) -> str:
    """Change the members once; returns what was done."""
    if not entries:
        entries.append(Entry(archives.MANIFEST, b"{}"))
        return "add"
    i = draw(st.integers(0, len(entries) - 1))
    entry = entries[i]
    op = draw(
        st.sampled_from(
            ["content", "content", "content", "drop", "repeat", "move", "rename", "type", "size", "add"]
        )
    )
    if op == "content":
        entry.data = draw(_content(entry))
    elif op == "drop":
        del entries[i]
    elif op == "repeat":  # the same member again, or one of that name with other bytes
        again = copy.deepcopy(entry)
        if draw(st.booleans()):
            again.data = draw(_content(entry))
        entries.insert(draw(st.integers(0, len(entries))), again)
    elif op == "move":
        entries.insert(draw(st.integers(0, len(entries) - 1)), entries.pop(i))
    elif op == "rename":
        entry.name = draw(st.sampled_from(HOSTILE_NAMES) | st.text(max_size=20))
    elif op == "type":
        entry.type = draw(st.sampled_from(TYPES))
        entry.linkname = draw(st.sampled_from(LINKS))
    elif op == "size":
        entry.size = draw(_sizes(entry))
    else:  # a blob no manifest names, under its own digest; or another name the format has
        data = draw(st.binary(max_size=64))
        name = draw(
            st.sampled_from(
                ["blobs/sha256/" + hashlib.sha256(data).hexdigest(), "events/000001.jsonl", "trust/extra.pem"]
            )
        )
        entries.insert(draw(st.integers(0, len(entries))), Entry(name, data))
    return op


def reseal(entries: list[Entry], signer: signing.Signer, files: bool) -> None:
    """Sign the manifest again, after naming the members there now are in it (with `files`), as one
    who holds the key would: the checks behind the signature are reached."""
    manifest = next((e for e in entries if e.name == archives.MANIFEST), None)
    if manifest is None:
        return
    if files:
        try:
            document = json.loads(manifest.data)
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, dict):
            document["files"] = {
                e.name: {"sha256": archives.entry_of(e.data).sha256, "size": len(e.data)}
                for e in entries
                if e.name not in (archives.MANIFEST, archives.SIGNATURE) and archives.blob_of(e.name) is None
            }
            manifest.data = json.dumps(document, sort_keys=True).encode()
    signature = base64.b64encode(signer.sign(manifest.data)) + b"\n"
    for entry in entries:
        if entry.name == archives.SIGNATURE:
            entry.data = signature


@st.composite
def _header_damage(draw: st.DrawFn, data: bytes, starts: list[int]) -> bytes:
    """A header field overwritten, and its checksum made right again (else tar refuses it early)."""
    if not starts:
        return data
    start = draw(st.sampled_from(starts))
    offset, length = FIELDS[draw(st.sampled_from(sorted(FIELDS)))]
    value = draw(
        st.one_of(
            st.binary(min_size=length, max_size=length),
            st.sampled_from([b"\xff" * length, b"\x80" + b"\xff" * (length - 1), b"7" * length]),
            st.integers(0, 8**11).map(lambda n: b"%0*o\0" % (length - 1, n) if length > 1 else b"0"),
        )
    )[:length]
    block = bytearray(data[start : start + BLOCK].ljust(BLOCK, b"\0"))
    block[offset : offset + len(value)] = value
    if offset != FIELDS["chksum"][0] and draw(st.booleans()):
        block[148:156] = b" " * 8
        block[148:156] = b"%06o\0 " % sum(block)
    return data[:start] + bytes(block) + data[start + BLOCK :]


@st.composite
def tar_mutants(
    draw: st.DrawFn, members: list[tuple[str, bytes]], signer: signing.Signer, compressions: list[str]
) -> Mutant:
    """A tar file of `members` changed at every level: the members, the tar blocks, the
    compressed stream."""
    entries = [Entry(name, data) for name, data in members]
    mutant = Mutant(b"")
    for _ in range(draw(st.integers(0, 3))):
        mutant.steps.append(draw(_change(entries)))
    if draw(st.integers(0, 2)) == 0:
        files = draw(st.booleans())
        reseal(entries, signer, files)
        mutant.resealed = True
        mutant.steps.append("reseal" + (" with files" if files else ""))
    form = draw(st.sampled_from(FORMS))
    end = draw(st.integers(0, 9)) > 0
    data, starts = assemble(entries, form, end)
    if draw(st.integers(0, 3)) == 0:
        data = draw(_header_damage(data, starts))
        mutant.steps.append("header")
    if draw(st.integers(0, 5)) == 0:
        data = draw(byte_mutants(data, max_changes=2))
        mutant.steps.append("tar bytes")
    how = draw(st.sampled_from(compressions))
    data = compress(data, how)
    mutant.steps.append(how)
    if draw(st.integers(0, 5)) == 0:
        tail = draw(st.sampled_from([b"\0" * 4096, compress(b"junk" * 100, how), b"junk"]))
        data = draw(st.sampled_from([draw(byte_mutants(data, max_changes=2)), data + tail]))
        mutant.steps.append("file bytes")
    mutant.data = data
    return mutant
