"""Reading the golden payloads in `golden/`: each file holds a record's type tag, its canonical
bytes (as UTF-8 text) and their SHA-256. They were computed once and are never regenerated."""

from __future__ import annotations

import json
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"


def golden(tag: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((GOLDEN / f"{tag}.json").read_text(encoding="utf-8"))
    return data


def golden_bytes(tag: str) -> bytes:
    return golden(tag)["canonical"].encode("utf-8")
