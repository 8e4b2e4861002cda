"""Batch murmur2 partitioning equals Kafka's default partitioner (aiokafka's reference code)."""

from __future__ import annotations

import os

from aiokafka.partitioner import murmur2
from hypothesis import given
from hypothesis import strategies as st

from streams.partitioning import murmur2_many, partitions_for


def test_equals_the_reference_on_keys_of_every_length() -> None:
    for length in range(1, 100):
        keys = [os.urandom(length) for _ in range(20)]
        assert murmur2_many(keys) == [murmur2(k) for k in keys], length


def test_java_client_vectors() -> None:
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2, as signed ints in the Java test
    assert murmur2_many([b"21"]) == [-973932308 & 0xFFFFFFFF]
    assert murmur2_many([b"foobar"]) == [-790332482 & 0xFFFFFFFF]


@given(st.lists(st.one_of(st.none(), st.binary(min_size=0, max_size=80)), max_size=40), st.integers(1, 12))
def test_partitions_match_the_default_partitioner(keys: list[bytes | None], count: int) -> None:
    ids = list(range(count))
    expected = [0 if k is None else (murmur2(k) & 0x7FFFFFFF) % count for k in keys]
    assert partitions_for(keys, ids) == expected
