"""The speed layer's partitioner must agree with the producers': kafka-python's own pure-Python murmur2 (a port of
the Java client's) is the independent answer, on arbitrary keys."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2

from jobrec.streaming.key_partitions import key_partition, key_partitions, murmur2_many


def _kafka_partition(key: str, partitions: int) -> int:
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=70), max_size=40))
def test_murmur2_equals_kafka_python_on_arbitrary_bytes(keys: list[bytes]) -> None:
    assert murmur2_many(keys).tolist() == [murmur2(k) for k in keys]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40), max_size=40), st.integers(1, 64)
)
def test_partitions_equal_the_producers_on_arbitrary_ids(keys: list[str], partitions: int) -> None:
    assert key_partitions(keys, partitions).tolist() == [_kafka_partition(k, partitions) for k in keys]


def test_known_values_of_the_java_client() -> None:
    # Utils.murmur2 values published in Kafka's own tests (UtilsTest.testMurmur2)
    assert murmur2_many([b"21", b"foobar", b"a-little-bit-long-string", b"a-little-bit-longer-string"]).tolist() == [
        x & 0xFFFFFFFF for x in (-973932308, -790332482, -985981536, -1486304829)
    ]


def test_seed_user_ids_spread_over_partitions() -> None:
    parts = key_partitions([str(u) for u in range(1000)], 4)
    assert sorted(set(parts.tolist())) == [0, 1, 2, 3]
    assert key_partition("17", 4) == _kafka_partition("17", 4)


def test_a_topic_without_partitions_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one partition"):
        key_partitions(["u"], 0)
