"""Which partition of a topic a record key goes to, the way Kafka's own producers decide: murmur2 of the key's bytes.

The speed layer splits users across its instances by the partitions of the clicks topic they own, so it must know,
for a user id it reads from the interactions table, the partition that user's clicks arrive on. Producers key
clicks by user id (`jobrec.streaming.producer`, the HTTP API); the Java client, kafka-python and librdkafka's
`murmur2_random` partitioner put a key on `(murmur2(key) & 0x7fffffff) % partitions`. (librdkafka's default,
`consistent_random`, hashes with CRC32 instead: a producer on it must set `partitioner=murmur2_random`.)

Vectorised with numpy: a million user ids hash in well under a second, where the pure-Python loop kafka-python
ships takes several seconds. Pure: no Kafka, no Spark.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_SEED = 0x9747B28C
_M = np.uint32(0x5BD1E995)


def _murmur2_same_length(data: np.ndarray, length: int) -> np.ndarray:
    """murmur2 of each row of `data`, an (n, length) uint8 array; uint32 arithmetic wraps as Java's int does."""
    h = np.full(data.shape[0], (_SEED ^ length) & 0xFFFFFFFF, dtype=np.uint32)
    whole = length // 4
    if whole:
        words = np.ascontiguousarray(data[:, : whole * 4]).view("<u4").astype(np.uint32)
        for i in range(whole):
            k = words[:, i] * _M
            k ^= k >> np.uint32(24)
            k *= _M
            h *= _M
            h ^= k
    tail = length & ~3
    extra = length % 4
    if extra >= 3:
        h ^= data[:, tail + 2].astype(np.uint32) << np.uint32(16)
    if extra >= 2:
        h ^= data[:, tail + 1].astype(np.uint32) << np.uint32(8)
    if extra >= 1:
        h ^= data[:, tail].astype(np.uint32)
        h *= _M
    h ^= h >> np.uint32(13)
    h *= _M
    h ^= h >> np.uint32(15)
    return h


def murmur2_many(keys: Sequence[bytes]) -> np.ndarray:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2) of every key, as uint32."""
    out = np.empty(len(keys), dtype=np.uint32)
    if not keys:
        return out
    lengths = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
    # keys of one length hash together, as rows of one byte matrix
    for length in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == length)
        if length:
            data = np.frombuffer(b"".join([keys[i] for i in rows.tolist()]), dtype=np.uint8).reshape(-1, length)
        else:
            data = np.zeros((len(rows), 0), dtype=np.uint8)
        out[rows] = _murmur2_same_length(data, length)
    return out


def key_partitions(keys: Sequence[str], partitions: int) -> np.ndarray:
    """The partition (int64) a record keyed by each of `keys` (UTF-8 encoded) goes to, out of `partitions`."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    hashes = murmur2_many([k.encode("utf-8") for k in keys])
    return (hashes & np.uint32(0x7FFFFFFF)).astype(np.int64) % partitions


def key_partition(key: str, partitions: int) -> int:
    """The partition of one key; see `key_partitions`."""
    return int(key_partitions([key], partitions)[0])
