"""Hypothesis strategies that start from a valid input and break it a little, so that most
examples get past the parser and into the checks behind it (random bytes rarely do).

- `json_mutants(seed)`: the seed's JSON parsed into a tree that can also hold what no encoder
  writes (repeated keys, raw number literals, lone surrogate escapes), changed 1-4 times (a key
  dropped, added, renamed or repeated; a value replaced by another type, a huge, negative or
  fractional number, a long string, control or odd Unicode characters, deep nesting, a value from
  elsewhere in the tree; a base64 string's bytes, or the JSON inside them, mutated in turn),
  written back as text, and sometimes mutated as bytes too.
- `byte_mutants(seed)`: bits flipped, bytes set, inserted, deleted, repeated, the end cut off.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from hypothesis import strategies as st

Path = tuple[int, ...]
T = TypeVar("T")


@dataclass(frozen=True)
class Literal:
    """JSON text written as it is: `1e999`, `"\\ud800"`, a 5000-digit number, `NaN`."""

    text: str


@dataclass
class Obj:
    """A JSON object as its list of pairs: a key may repeat, and order is kept."""

    pairs: list[tuple[Any, Any]]  # keys: strings in JSON, anything in msgpack


def parse(raw: bytes) -> Any:
    return json.loads(raw, object_pairs_hook=lambda pairs: Obj(list(pairs)))


def dumps(node: Any, ascii_only: bool = True) -> str:
    """JSON text; non-ASCII characters escaped (`\\u00e9`, a lone surrogate `\\ud800`) or as they are."""
    match node:
        case Literal(text):
            return text
        case Obj(pairs):
            inner = (f"{json.dumps(k, ensure_ascii=ascii_only)}:{dumps(v, ascii_only)}" for k, v in pairs)
            return "{" + ",".join(inner) + "}"
        case list():
            return "[" + ",".join(dumps(v, ascii_only) for v in node) + "]"
        case _:
            return json.dumps(node, ensure_ascii=ascii_only)  # nan as NaN


def children(node: Any) -> list[Any]:
    match node:
        case Obj(pairs):
            return [v for _, v in pairs]
        case list():
            return node
        case _:
            return []


def depth_of(node: Any) -> int:
    deepest, todo = 0, [(node, 1)]
    while todo:
        node, depth = todo.pop()
        deepest = max(deepest, depth)
        todo += [(child, depth + 1) for child in children(node)]
    return deepest


def paths(node: Any, at: Path = ()) -> list[Path]:
    """Every place in the tree, the root first."""
    found = [at]
    for i, child in enumerate(children(node)):
        found += paths(child, (*at, i))
    return found


def get(node: Any, path: Path) -> Any:
    for i in path:
        node = children(node)[i]
    return node


def put(node: Any, path: Path, value: Any) -> Any:
    """The tree with the value at `path` replaced (in place; the root returned)."""
    if not path:
        return value
    parent = get(node, path[:-1])
    i = path[-1]
    if isinstance(parent, Obj):
        parent.pairs[i] = (parent.pairs[i][0], value)
    else:
        parent[i] = value
    return node


NUMBERS = [
    "1e999", "-1e999", "1" * 5000, "-" + "9" * 400, "1" * 5000 + ".5", "0.1e-99999", "-0", "0.0", "1.5",
    "-1", "0", "2147483648", "4294967296", "9223372036854775807", "9223372036854775808",
    "18446744073709551616", "-9223372036854775809", "NaN", "Infinity", "-Infinity", "1E+2", "01",
]  # fmt: skip
STRINGS = [
    '"\\ud800"', '"\\udc00\\ud800"', '"a\\ud83d"', '"\\u0000"', '"\\u001b[31m"', '"\\u2028\\u2029"',
    '"\\ufeff"', '"\\u202e"', '"\\ud83d\\ude00"', '"\\uffff"', '"\\u0085"', '"\\/"',
]  # fmt: skip
TEXTS = [
    "", " ", "\x00", "\x7f\x85\x9f", "line\nbreak", "tab\t", "sha256:" + "0" * 64, "sha256:" + "G" * 64,
    "sha256:" + "A" * 64, "sha256:", "2025-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999-23:59", "2025-13-01T00:00:00Z", "2025-01-01T00:00:00+24:00",
    "2025-01-01", "QQ==", "QQ", "====", "QQ==\n", "anchor.created", "artifact.ingested", "artifact",
    "../../etc/passwd", "/etc/passwd", "\U0001d518" * 3, "\u00e9" * 40,
]  # fmt: skip
FIELDS = [
    "type", "schema_version", "artifact_id", "content", "digest", "subjects", "size", "kind",
    "body", "signature", "checkpoints", "key_name", "record", "partitions", "root", "sequence",
    "previous", "tree_size", "last_offset", "files", "artifacts", "events", "proof", "value",
    "leaf_index", "format", "anchor_id", "verifier_key", "blob", "sha256", "ingested_at",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=16),
    st.lists(st.characters(exclude_categories=[]), max_size=8).map("".join),  # lone surrogates too
    st.sampled_from(TEXTS),
    st.sampled_from(NUMBERS + STRINGS).map(Literal),
    st.integers(min_value=1, max_value=200_000).map(lambda n: "a" * n),
)
deep = st.builds(
    lambda n, opener: Literal(opener * n + "1" + {"[": "]", '{"a":': "}"}[opener] * n),
    st.sampled_from([64, 1000, 3000, 100_000]),
    st.sampled_from(["[", '{"a":']),
)
values = (
    st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.lists(st.tuples(st.sampled_from(FIELDS) | st.text(max_size=8), inner), max_size=4).map(Obj),
        ),
        max_leaves=8,
    )
    | deep
)


def _nudged(value: Any, fill: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Values close to `value`: the small changes that reach range and length checks."""
    match value:
        case bool():
            return st.just(not value)
        case int():
            return st.sampled_from([value + 1, value - 1, -value, value * 2**64, 0, -1])
        case float() if math.isfinite(value):
            return st.sampled_from([-value, value * 1e300, int(value)])
        case str() if value:
            longer = value * (1000 if len(value) < 1000 else 2)
            return st.sampled_from([value[:-1], value + value[-1], value.upper(), longer, value[1:]])
        case bytes():
            return byte_mutants(value)
        case list() if value:
            return st.sampled_from([[], value * 2, [*value, value[0]], value[::-1]])
        case _:
            return fill


def _decoded(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True) if value and len(value) % 4 == 0 else None
    except (binascii.Error, ValueError):
        return None


@st.composite
def _inside_base64(draw: st.DrawFn, value: str) -> str:
    """A base64 string's bytes mutated: as JSON if they are JSON (an anchor in a recovery
    record, a record in an anchor document), else as bytes (a signature, a root, content)."""
    inner = _decoded(value)
    assert inner is not None
    try:
        parse(inner)
    except (ValueError, RecursionError):
        changed = draw(byte_mutants(inner))
    else:
        changed = draw(json_mutants(inner, depth=1))
    return base64.b64encode(changed).decode()


@st.composite
def _mutate(draw: st.DrawFn, tree: Any, depth: int, fill: st.SearchStrategy[Any]) -> Any:
    """`tree` changed once, somewhere; `fill` gives new values."""
    path = draw(st.sampled_from(paths(tree)))
    node = get(tree, path)
    ops = ["replace", "nudge", "swap"]
    if isinstance(node, Obj):
        ops += ["add", "add"]
        if node.pairs:
            ops += ["drop", "rename", "repeat", "repeat-other"]
    if isinstance(node, list):
        ops += ["insert", "drop", "repeat"] if node else ["insert"]
    if isinstance(node, str) and depth == 0 and _decoded(node) is not None:
        ops += ["inside", "inside"]
    op = draw(st.sampled_from(ops))
    if op == "replace":
        return put(tree, path, draw(fill))
    if op == "nudge":
        return put(tree, path, draw(_nudged(node, fill)))
    if op == "swap":  # a value from elsewhere: a type a neighbouring field has
        return put(tree, path, copy.deepcopy(get(tree, draw(st.sampled_from(paths(tree))))))
    if op == "inside":
        return put(tree, path, draw(_inside_base64(node)))
    items = node.pairs if isinstance(node, Obj) else node
    i = draw(st.integers(0, max(len(items) - 1, 0)))
    if op == "add":
        key = draw(st.sampled_from(FIELDS) | st.text(max_size=8) | st.just("type"))
        node.pairs.insert(i, (key, draw(fill)))
    elif op == "insert":  # an item more: in an array-like struct, a field it does not have
        items.insert(draw(st.integers(0, len(items))), draw(fill))
    elif op == "drop":
        del items[i]
    elif op == "rename":
        old = str(node.pairs[i][0])  # a msgpack map's keys may be numbers
        key = draw(st.sampled_from(FIELDS) | st.text(max_size=8) | st.sampled_from([old.upper(), old + "_"]))
        node.pairs[i] = (key, node.pairs[i][1])
    elif op == "repeat":  # the same key (or item) again, with the same value: later or earlier
        items.insert(draw(st.integers(0, len(items))), copy.deepcopy(items[i]))
    else:  # the same key again with another value
        node.pairs.insert(draw(st.integers(0, len(items))), (node.pairs[i][0], draw(fill)))
    return tree


@st.composite
def json_mutants(draw: st.DrawFn, seed: bytes, depth: int = 0) -> bytes:
    """`seed` (JSON text) changed 1-4 times as a tree, then maybe as bytes (only as bytes if it is
    nested deeply: a mutant of a mutant; the tree's walks and copies recurse)."""
    tree = parse(seed)
    if depth_of(tree) > 100:
        return draw(byte_mutants(seed))
    for _ in range(draw(st.integers(1, 4))):
        tree = draw(_mutate(copy.deepcopy(tree), depth, values))
    # Lone surrogates in a Python str: escaped (valid JSON text), or as raw CESU-8 bytes (not UTF-8).
    raw = dumps(tree, draw(st.booleans())).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 3)) == 0:
        raw = draw(byte_mutants(raw))
    return raw


SPECIAL_BYTES = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":"]


@st.composite
def _byte_change(draw: st.DrawFn, data: bytes) -> bytes:
    if not data:
        return draw(st.binary(min_size=1, max_size=8))
    at = draw(st.integers(0, len(data) - 1))
    op = draw(st.sampled_from(["flip", "set", "insert", "special", "delete", "repeat", "cut"]))
    if op == "flip":
        return data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
    if op == "set":
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if op == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    if op == "special":
        return data[:at] + draw(st.sampled_from(SPECIAL_BYTES)) + data[at:]
    end = draw(st.integers(at, min(len(data), at + 64)))
    if op == "delete":
        return data[:at] + data[end:]
    if op == "repeat":
        return data[:end] + data[at:end] + data[end:]
    return data[:at]


@st.composite
def byte_mutants(draw: st.DrawFn, seed: bytes, max_changes: int = 3) -> bytes:
    data = seed
    for _ in range(draw(st.integers(1, max_changes))):
        data = draw(_byte_change(data))
    return data


# msgpack (backup streams and blob indexes): the same changes to the tree, and headers that
# claim more than follows, invalid UTF-8 in a string, deep nesting, reserved and extension types.
@dataclass(frozen=True)
class Packed:
    """msgpack bytes written as they are."""

    data: bytes


def unpack(raw: bytes) -> Any:
    def tree(value: Any) -> Any:
        match value:
            case dict():
                return Obj([(k, tree(v)) for k, v in value.items()])
            case list():
                return [tree(v) for v in value]
            case _:
                return value

    return tree(msgspec.msgpack.decode(raw))


def pack(node: Any) -> bytes:
    match node:
        case Packed(data):
            return data
        case Obj(pairs):
            return _header(0xDF, len(pairs)) + b"".join(pack(k) + pack(v) for k, v in pairs)
        case list():
            return _header(0xDD, len(node)) + b"".join(pack(v) for v in node)
        case str():  # lone surrogates as they are: not UTF-8
            data = node.encode("utf-8", "surrogatepass")
            return _header(0xDB, len(data)) + data
        case int() if not -(2**63) <= node < 2**64:
            return b"\xcf" + b"\xff" * 8
        case _:
            return msgspec.msgpack.encode(node)


def _header(code: int, length: int) -> bytes:
    return bytes([code]) + length.to_bytes(4, "big")


HOSTILE_PACKED = [
    b"\xdd\xff\xff\xff\xff",  # an array of 4 billion items, none there
    b"\xdf\xff\xff\xff\xff\xc0",  # a map of 4 billion pairs
    b"\xdb\xff\xff\xff\xffab",  # a string of 4 GiB
    b"\xc6\xff\xff\xff\xffab",  # bytes of 4 GiB
    b"\xc9\xff\xff\xff\xff\x01",  # an extension of 4 GiB
    b"\xd6\xff\x00\x00\x00\x00",  # a timestamp extension
    b"\xc7\x0c\xff" + b"\xff" * 12,  # a timestamp out of range
    b"\xc1",  # never used
    b"\xa3\xed\xa0\x80",  # a string that is not UTF-8
    b"\x91" * 100_000 + b"\xc0",  # nested 100,000 deep
    b"\xca\x7f\xc0\x00\x00",  # float32 NaN
]
packed_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.sampled_from([2**63, 2**64 - 1, -(2**63), 2**31, -1]),
        st.floats(),
        st.text(max_size=16),
        st.binary(max_size=32),
        st.builds(msgspec.msgpack.Ext, st.integers(-128, 127), st.binary(max_size=8)),
        st.sampled_from(HOSTILE_PACKED).map(Packed),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.lists(st.tuples(st.text(max_size=8) | st.integers(), inner), max_size=4).map(Obj),
    ),
    max_leaves=10,
)


@st.composite
def packed_mutants(draw: st.DrawFn, seed: bytes) -> bytes:
    """`seed` (msgpack) changed 1-4 times as a tree, then maybe as bytes (only as bytes if it is
    no msgpack: changed before)."""
    try:
        tree = unpack(seed)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return draw(byte_mutants(seed))
    if depth_of(tree) > 100:
        return draw(byte_mutants(seed))
    for _ in range(draw(st.integers(1, 4))):
        tree = draw(_mutate(copy.deepcopy(tree), 1, packed_values))
    raw = pack(tree)
    if draw(st.integers(0, 3)) == 0:
        raw = draw(byte_mutants(raw))
    return raw


def pick(items: Sequence[T]) -> st.SearchStrategy[T]:
    """One of `items`, by its index: `sampled_from` would print them all in every repr."""
    return st.integers(0, len(items) - 1).map(list(items).__getitem__)


def mutants(seeds: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    """Seeds as they are, changed as JSON, or changed as bytes."""
    seed = pick(seeds)
    return st.one_of(
        seed,
        seed.flatmap(json_mutants),
        seed.flatmap(json_mutants),
        seed.flatmap(json_mutants),
        seed.flatmap(byte_mutants),
    )
