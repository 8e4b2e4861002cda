"""Structure-aware fuzzing of the record decoders: submissions, commands, events, anchor records
and dead-letter headers, starting from the golden payloads and from values the project's own
encoders write, mutated as JSON and as bytes (`tests/fuzz/mutations.py`).

Properties: decoding gives a value or `InvalidInput` with a documented reason and a short detail
(`locker.decoding`), nothing else; a value re-encodes with the project's encoder, and those bytes
decode to the same value; what reads a decoded value further (an anchor's checks, the
best-effort readers of rejected submissions) raises nothing either.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from locker import anchors, events, requests, signing, submissions
from locker.decoding import REASONS
from locker.dlq import DeadLetter
from locker.errors import InvalidInput
from tests.contract.goldens import GOLDEN, golden, golden_bytes
from tests.fuzz.conftest import bounded, fuzz_settings
from tests.fuzz.mutations import byte_mutants, mutants

pytestmark = pytest.mark.fuzz

CHECK_REASONS = REASONS | {"too-large", "invalid-digest", "digest-mismatch", "key-mismatch"}
EVENT_TAGS = sorted(str(t.__struct_config__.tag) for t in events.EVENT_TYPES)
COMMAND_TAGS = sorted(str(t.__struct_config__.tag) for t in typing.get_args(requests.Command))
GOLDEN_VERIFIER = signing.Verifier.from_vkey(golden("anchor.created")["verifier_key"])
AT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@dataclass(frozen=True)
class Codec:
    """A decoder under test, the reasons it may give, and how a decoded value is written back."""

    decode: Callable[[bytes | None], object]
    encode: Callable[[object], bytes]
    reasons: frozenset[str]
    seeds: tuple[bytes, ...]


def check(raw: bytes | None) -> submissions.Accepted:
    return submissions.check(raw, None, max_content_bytes=1 << 20)


def encode_accepted(accepted: object) -> bytes:
    assert isinstance(accepted, submissions.Accepted)
    return submissions.encode(accepted.submission)


def encode_anchor_record(record: object) -> bytes:
    if isinstance(record, anchors.AnchorRecovered):
        return anchors.encode_recovery(record)
    assert isinstance(record, anchors.AnchorCreated)
    return anchors.encode(record)


CONTENT = b'{"bomFormat": "CycloneDX"}'
SUBMISSIONS = (
    (GOLDEN / "submission.artifact.json").read_bytes(),
    submissions.encode(
        submissions.ArtifactSubmission(
            content=CONTENT,
            kind="sbom",
            subjects=("sha256:" + "1" * 64, "sha256:" + "2" * 64),
            producer="fuzz",
            media_type="application/vnd.cyclonedx+json",
            digest="sha256:" + hashlib.sha256(CONTENT).hexdigest(),
            submission_id="s-1",
        )
    ),
    b'{"type":"artifact","content":""}',
)
COMMANDS = (
    *(golden_bytes(tag) for tag in COMMAND_TAGS),
    requests.encode(requests.create_anchor("a new chain", "sha256:" + "3" * 64)),
    requests.encode(requests.apply_retention({"sbom": "30d"}, aggressive=True)),
)
ANCHORS = (golden_bytes("anchor.created"),)
CODECS = {
    "submissions.check": Codec(check, encode_accepted, CHECK_REASONS, SUBMISSIONS),
    "events.decode": Codec(
        events.decode,
        events.encode,  # type: ignore[arg-type]
        REASONS,
        (
            *(golden_bytes(tag) for tag in EVENT_TAGS),
            # A version-1 payload, which decodes through the upcaster.
            json.loads((GOLDEN / "v1" / "verification.started.json").read_text())["canonical"].encode(),
        ),
    ),
    "requests.decode": Codec(requests.decode, requests.encode, REASONS, COMMANDS),  # type: ignore[arg-type]
    "anchors.decode": Codec(anchors.decode, anchors.encode, REASONS, ANCHORS),  # type: ignore[arg-type]
    "anchors.decode_record": Codec(
        anchors.decode_record, encode_anchor_record, REASONS, (*ANCHORS, golden_bytes("anchor.recovered"))
    ),
}


def decoded(codec: Codec, raw: bytes | None) -> object | None:
    """The value `raw` decodes to, or None if it was refused as documented."""
    try:
        with bounded():
            return codec.decode(raw)
    except InvalidInput as error:
        assert error.reason in codec.reasons, error
        assert len(error.detail) <= 200, error.detail
        return None


def rereads(codec: Codec, value: object) -> None:
    """A decoded value re-encodes, and decodes back to itself."""
    again = codec.encode(value)
    assert codec.decode(again) == value, again


def test_the_seeds_decode() -> None:
    for name, codec in CODECS.items():
        for seed in codec.seeds:
            assert decoded(codec, seed) is not None, (name, seed[:80])


@pytest.mark.parametrize("name", sorted(CODECS))
@fuzz_settings(300)
@given(data=st.data())
def test_mutated_records_decode_or_are_refused(name: str, data: st.DataObject) -> None:
    codec = CODECS[name]
    raw = data.draw(mutants(codec.seeds), label="raw")
    value = decoded(codec, raw)
    if value is not None:
        rereads(codec, value)
    if name.startswith("anchors."):
        anchors.effective_chain([anchors.StoredAnchor(0, raw)])
        if isinstance(value, anchors.AnchorCreated):
            anchors.check_anchor(value, anchors.anchor_id(raw), GOLDEN_VERIFIER)
    if name == "submissions.check":
        assert isinstance(submissions.claimed_digest(raw), str)
        assert isinstance(submissions.correlation_of(raw), str)


LETTER = DeadLetter(
    reason="schema-invalid",
    detail="Expected `str`, got `int` - at `$.producer`",
    source_topic="evidence.submissions",
    source_partition=3,
    source_offset=918273,
    rejected_at=AT,
)
Headers = list[tuple[str, bytes | None]]


@st.composite
def mutated_headers(draw: st.DrawFn) -> Headers:
    """A dead letter's headers with some values mutated as bytes, dropped, repeated or renamed."""
    headers: Headers = list(LETTER.headers())
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(headers) - 1)) if headers else 0
        op = draw(st.sampled_from(["value", "value", "null", "drop", "repeat", "rename"]))
        if not headers:
            headers.append(("stella.reason", b""))
        elif op == "value":
            headers[i] = (headers[i][0], draw(byte_mutants(headers[i][1] or b"")))
        elif op == "null":
            headers[i] = (headers[i][0], None)
        elif op == "drop":
            del headers[i]
        elif op == "repeat":
            headers.insert(draw(st.integers(0, len(headers))), headers[i])
        else:
            headers[i] = (draw(st.sampled_from([n for n, _ in LETTER.headers()])), headers[i][1])
    return headers


@fuzz_settings(300)
@given(headers=mutated_headers())
@example(headers=[(n, b"9" * 5000 if n == "stella.source.offset" else v) for n, v in LETTER.headers()])
def test_mutated_dead_letter_headers_are_read_or_refused(headers: Headers) -> None:
    try:
        with bounded():
            letter = DeadLetter.from_headers(headers)
    except InvalidInput as error:
        assert error.reason in {"undecodable", "schema-invalid"}, error
        return
    assert DeadLetter.from_headers(letter.headers()) == letter


VKEYS = [GOLDEN_VERIFIER.vkey, signing.Verifier("stella.test/fuzz", bytes(32)).vkey]
# Lone surrogates too (a command-line argument holds them for bytes that are not UTF-8): built
# from characters, since Hypothesis's text() leaves them out.
texts = st.lists(
    st.characters(exclude_categories=[]) | st.sampled_from(["\udcff", "+", "\n", "\u2014"]), max_size=8
).map("".join)


@st.composite
def verifier_keys(draw: st.DrawFn) -> str:
    """A verifier key string (an anchor document's, a pack's, `--trusted-key`) changed as text."""
    name, key_id, key = draw(st.sampled_from(VKEYS)).split("+", 2)
    for _ in range(draw(st.integers(1, 3))):
        part = draw(st.sampled_from(["name", "key_id", "key", "joined"]))
        if part == "name":
            name = draw(st.sampled_from([name + draw(texts), draw(texts), name.replace(".", "+")]))
        elif part == "key_id":
            key_id = draw(st.sampled_from([key_id.upper(), key_id[:-1], draw(texts), "0" * 8]))
        elif part == "key":
            try:
                raw = base64.b64decode(key, validate=True)
            except ValueError:  # changed already
                raw = key.encode("utf-8", "surrogatepass")
            key = draw(
                st.sampled_from([base64.b64encode(draw(byte_mutants(raw))).decode(), key + "=", draw(texts)])
            )
        else:
            return draw(st.sampled_from(["+".join([name, key_id]), "+".join([name, key_id, key, key])]))
    if draw(st.booleans()):  # the key id that goes with the (changed) name and key, to get further
        with contextlib.suppress(ValueError):
            raw = base64.b64decode(key, validate=True)
            named = name.encode("utf-8", "surrogatepass") + b"\n" + signing.ED25519 + raw[1:]
            key_id = hashlib.sha256(named).digest()[:4].hex()
    return "+".join([name, key_id, key])


@fuzz_settings(300)
@given(vkey=verifier_keys())
# Regression: a name that is no UTF-8 (a lone surrogate, as argv gives for such bytes) raised
# UnicodeEncodeError while the key id was computed.
@example(vkey="\udcff+00000000+" + base64.b64encode(signing.ED25519 + bytes(32)).decode())
def test_mutated_verifier_keys_are_read_or_refused(vkey: str) -> None:
    try:
        verifier = signing.Verifier.from_vkey(vkey)
    except InvalidInput as error:
        assert error.reason == "invalid-key", error
        return
    assert signing.Verifier.from_vkey(verifier.vkey) == verifier
