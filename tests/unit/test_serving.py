from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.serving import byte_range, headers, not_modified

ID = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-3", 10, (0, 3)),
        ("bytes=4-", 10, (4, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=5-100", 10, (5, 9)),
        ("bytes=0-1,4-5", 10, None),  # several ranges: the whole
        ("items=0-1", 10, None),
        ("bytes=-", 10, None),
    ],
)
def test_one_range_or_the_whole(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, size) == expected


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=12-20", "bytes=5-2", "bytes=-0"])
def test_a_range_past_the_end_or_backwards_is_unsatisfiable(header: str) -> None:
    with pytest.raises(ValueError):
        byte_range(header, 10)


@given(st.text(max_size=40), st.integers(min_value=1, max_value=1 << 40))
def test_any_range_header_is_the_whole_a_part_inside_or_refused(header: str, size: int) -> None:
    try:
        found = byte_range(header, size)
    except ValueError:
        return
    assert found is None or 0 <= found[0] <= found[1] < size


def test_etags_and_safe_headers() -> None:
    tag = headers(ID, "text/html")["ETag"]
    assert tag == f'"{ID}"' and not_modified(tag, tag) and not_modified(f'W/{tag}, "x"', tag)
    assert not_modified("*", tag) and not not_modified('"other"', tag) and not not_modified(None, tag)
    served = headers(ID, "text/html; charset=utf-8")
    assert served["Content-Type"] == "application/octet-stream"
    assert served["X-Content-Type-Options"] == "nosniff"
    assert served["Content-Disposition"].startswith("attachment; ")
