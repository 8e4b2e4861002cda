"""Reading bytes that come from outside: every outcome is a value or an `InvalidInput`.

Record values and headers can hold anything. `Decoder.decode` and `Decoder.convert` raise nothing
but `InvalidInput`, and its `reason` is one of `REASONS`:

- `undecodable`: there is no JSON value to read: a null record value (a Kafka tombstone), bytes
  that are not UTF-8 or not JSON, or nesting deeper than the interpreter's recursion limit (about
  1000 levels; fewer when decoding from deep in a call stack).
- `unknown-type`: a JSON object whose `type` tag names none of the types being decoded, or that
  has no `type` tag where several types are possible.
- `schema-invalid`: a JSON value that is not an object, or an object of a known type whose fields
  are wrong: missing, unknown where unknown fields are forbidden, of the wrong type, or a number
  out of range for its field (a float beyond about 1.8e308 such as 1e999, an integer of more than
  4300 digits). Fields a type does not declare and tolerates are skipped, numbers included.

A key repeated in an object counts with its last value; a repeated `type` tag must repeat the
same value. Details are cut to `DETAIL_LIMIT` characters: they end up in headers and events.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, cast

import msgspec
import msgspec.inspect

from locker.errors import InvalidInput

T = TypeVar("T")

REASONS = frozenset({"undecodable", "unknown-type", "schema-invalid"})
DETAIL_LIMIT = 200

_json_text = msgspec.json.Decoder(msgspec.Raw)


class Decoder(Generic[T]):
    """A total decoder for `type_`: a Struct, a union of tagged Structs, or any msgspec type.

    `what` names one such value in rejection details ("submission", "event").
    """

    def __init__(self, type_: Any, what: str) -> None:
        self.what = what
        self._type = type_
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(type_)
        self._tag_field, self._tags = _tags_of(type_)
        self._probe = msgspec.json.Decoder(
            msgspec.defstruct("Tagged", [(self._tag_field, msgspec.Raw, msgspec.Raw())])
        )

    def decode(self, raw: bytes | None) -> T:
        """The value that the JSON in `raw` holds; raises `InvalidInput` (see the module)."""
        if raw is None:
            raise InvalidInput("undecodable", f"no {self.what}: the record value is null")
        try:
            if not raw.isascii():
                raw.decode("utf-8")  # msgspec would let bad UTF-8 through in skipped strings
            return self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise self._rejection(raw, exc) from None
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
            raise _undecodable(self.what, exc) from None

    def convert(self, value: Any, *, strict: bool = True) -> T:
        """`value` (built of dicts, lists, strings, numbers) as a `T`; raises `InvalidInput`.

        With `strict=False`, strings are also read as the numbers or times a field wants.
        """
        try:
            return cast(T, msgspec.convert(value, self._type, strict=strict))
        except msgspec.ValidationError as exc:
            raise InvalidInput("schema-invalid", shorten(str(exc))) from None
        except RecursionError as exc:
            raise _undecodable(self.what, exc) from None

    def _rejection(self, raw: bytes, error: msgspec.ValidationError) -> InvalidInput:
        """Why JSON that failed validation is refused: its type tag decides between a schema
        error and an unknown type, unless the bytes turn out not to be JSON after all."""
        try:
            _json_text.decode(raw)  # well-formed to the end? The typed decoder stopped early.
            tag: msgspec.Raw = getattr(self._probe.decode(raw), self._tag_field)
        except msgspec.ValidationError:
            return InvalidInput("schema-invalid", shorten(str(error)))  # not an object
        except (msgspec.DecodeError, RecursionError) as exc:
            return _undecodable(self.what, exc)
        if not self._tags or json_string(tag) in self._tags or (not tag and len(self._tags) == 1):
            return InvalidInput("schema-invalid", shorten(str(error)))  # untagged, known, or the default
        expected = " or ".join(f'"{t}"' for t in sorted(self._tags))
        if not tag:
            missing = f"the {self.what} has no `{self._tag_field}` tag; expected {expected}"
            return InvalidInput("unknown-type", shorten(missing))
        shown = shorten(bytes(tag).decode(), 80)
        return InvalidInput("unknown-type", shorten(f"unknown {self.what} type {shown}; expected {expected}"))


def json_string(raw: msgspec.Raw) -> str | None:
    """The string that a raw JSON value is, or None if it is no (valid) JSON string."""
    try:
        return msgspec.json.decode(raw, type=str)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def shorten(text: str, limit: int = DETAIL_LIMIT) -> str:
    """`text`, or its start and end around " ... " if it is longer than `limit` characters."""
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]} ... {text[len(text) - half :]}"


def _tags_of(type_: Any) -> tuple[str, frozenset[str]]:
    """The tag field and the tags of the tagged Structs in `type_` (none if it has none)."""
    info = msgspec.inspect.type_info(type_)
    members = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    structs = [m for m in members if isinstance(m, msgspec.inspect.StructType) and m.tag is not None]
    field = structs[0].tag_field if structs else "type"
    return str(field), frozenset(str(s.tag) for s in structs)


def _undecodable(what: str, error: Exception) -> InvalidInput:
    match error:
        case RecursionError():
            why = "nested too deeply"
        case UnicodeDecodeError():
            why = f"not UTF-8 ({error.reason} at byte {error.start})"
        case _:
            why = str(error)
    return InvalidInput("undecodable", f"not a JSON {what}: {shorten(why)}")
