"""The bucket codec of the checkpoint store: what goes in comes out, and a damaged blob is refused by name."""

from __future__ import annotations

import pytest

from billing_domain.adapters.postgres.checkpoint_buckets import (
    BUCKETS_PER_KIND,
    KINDS,
    BucketPacker,
    bucket_of,
    buckets_of_kinds,
    pack,
    rows_of,
)
from billing_domain.core.checkpoint import EntityRow
from billing_domain.core.exceptions import CheckpointUnreadableError


def test_each_kind_has_its_own_range_of_buckets() -> None:
    for n, kind in enumerate(KINDS):
        buckets = {bucket_of(kind, f"id-{i}") for i in range(5000)}
        assert buckets <= set(range(n * BUCKETS_PER_KIND, (n + 1) * BUCKETS_PER_KIND))
        assert len(buckets) > BUCKETS_PER_KIND // 2  # the ids spread
        assert set(buckets_of_kinds([kind])) == set(range(n * BUCKETS_PER_KIND, (n + 1) * BUCKETS_PER_KIND))


def test_the_bucket_of_an_id_is_the_same_in_every_process() -> None:
    # crc32 of the UTF-8 id: a stored checkpoint is read by it in later processes and releases.
    assert bucket_of("account", "acc-1") == 0 * BUCKETS_PER_KIND + 1887887009 % BUCKETS_PER_KIND
    assert 2 * BUCKETS_PER_KIND <= bucket_of("money", "tx-\udc80") < 3 * BUCKETS_PER_KIND  # a lone surrogate too


def test_packed_rows_come_back_as_they_went_in() -> None:
    rows = [EntityRow("transaction", f"tx-{n}", "t", n, bytes([n % 256]) * n) for n in range(300)]
    packer = BucketPacker()
    parts = list(packer.parts(rows))
    back = [r for bucket, _, blob in parts for r in rows_of("t,u", bucket, blob)]
    assert packer.rows == len(rows)
    assert {part for _, part, _ in parts} == {0}  # all of it fits the bytes held: one part a bucket
    assert sorted(back, key=lambda r: r.entity_id) == sorted(rows, key=lambda r: r.entity_id)


def test_past_the_bytes_it_may_hold_a_bucket_is_given_out_in_parts() -> None:
    rows = [EntityRow("account", f"acc-{n}", "t", 0, b"x" * 100) for n in range(2000)]
    packer = BucketPacker(held_bytes=10_000)  # about 90 entries
    parts = list(packer.parts(rows))
    back = [r for bucket, _, blob in parts for r in rows_of("t,u", bucket, blob)]
    assert packer.rows == len(rows) and sorted(r.entity_id for r in back) == sorted(r.entity_id for r in rows)
    per_bucket: dict[int, list[int]] = {}
    for bucket, part, _ in parts:
        per_bucket.setdefault(bucket, []).append(part)
    assert all(numbers == list(range(len(numbers))) for numbers in per_bucket.values())
    assert max(len(numbers) for numbers in per_bucket.values()) > 1
    assert max(len(blob) for _, _, blob in parts) < 10_000 + 200


@pytest.mark.parametrize(("bucket", "blob"), [(5, b"\xc1"), (5, pack([("id", "t", 0, b"s")])[:-1]),
                                              (5, b"\x91\x93\xa2id\x00\xc0"), (len(KINDS) * BUCKETS_PER_KIND, b"\x90")])
def test_a_damaged_bucket_is_refused_naming_it(bucket: int, blob: bytes) -> None:
    with pytest.raises(CheckpointUnreadableError, match=f"checkpoint bucket {bucket} of t,u "):
        list(rows_of("t,u", bucket, blob))


def test_a_read_of_some_ids_gives_just_those() -> None:
    blob = pack([(f"acc-{n}", "t", 0, b"s") for n in range(50)])  # as if the 50 ids shared bucket 0
    assert [r.entity_id for r in rows_of("t,u", 0, blob, {"acc-3", "acc-9", "acc-nope"})] == ["acc-3", "acc-9"]
