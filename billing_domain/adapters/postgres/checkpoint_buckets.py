"""The checkpoint's entity states packed into buckets: a few thousand rows, not one row per entity.

A row per entity cost PostgreSQL a primary-key insert and a foreign-key check per entity: 420k rows
(100k accounts) took 6.2-9.3 s to COPY, 1.3-1.7 s of it without the key and the reference. A bucket
holds every entity of one kind whose id hashes to it, as one MessagePack array of
`[entity_id, topic, partition, state]`; a kind's ids spread over `BUCKETS_PER_KIND` buckets, so
one entity is read by reading its bucket (about a thousand entities at a million accounts). A full
save writes a bucket in parts when its entities come late (see `BucketPacker`); a resumed one writes
each bucket it touches again as one part.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator

import msgspec

from billing_domain.core.checkpoint import EntityRow
from billing_domain.core.exceptions import CheckpointUnreadableError

KINDS = ("account", "transaction", "money")  # `EntityRow.entity_type`; a kind's buckets are one range
BUCKETS_PER_KIND = 1024
Entry = tuple[str, str, int, bytes]  # entity_id, topic, partition, state

_encoder = msgspec.msgpack.Encoder()
_entries_decoder = msgspec.msgpack.Decoder(list[tuple[str, str, int, bytes]])
_ARRAY32 = b"\xdd"  # MessagePack's array with a 32-bit count: valid for any number of entries


_FIRST_BUCKET = {kind: n * BUCKETS_PER_KIND for n, kind in enumerate(KINDS)}


def bucket_of(entity_type: str, entity_id: str) -> int:
    """Stable across processes and releases (crc32, not `hash`): a stored entity is looked up by it."""
    return _FIRST_BUCKET[entity_type] + zlib.crc32(entity_id.encode("utf-8", "surrogatepass")) % BUCKETS_PER_KIND


def buckets_of_kinds(kinds: Iterable[str]) -> list[int]:
    return [KINDS.index(kind) * BUCKETS_PER_KIND + n for kind in kinds for n in range(BUCKETS_PER_KIND)]


Part = tuple[int, int, bytes]  # bucket, part number, blob
PART_BYTES = 32 * 2**20  # packed entries held by a full save before they are written as parts of their buckets


class BucketPacker:
    """Entity rows packed into their buckets' blobs as they arrive: the encoded entries are appended to one
    byte buffer per bucket, so a million rows leave no million objects behind. Once the buffers hold
    `held_bytes`, each bucket's entries so far are given out as one part of it and packing goes on: a save
    holds at most that much whatever the number of entities (holding every bucket until the COPY cost 13%
    of a full run's peak memory at 100k accounts)."""

    def __init__(self, held_bytes: int | None = None) -> None:
        self.held_bytes = held_bytes or PART_BYTES
        self.rows = 0

    def parts(self, rows: Iterable[EntityRow]) -> Iterator[Part]:
        # bucket_of and the append written out, with locals: calls per row took a third more time.
        buffers: dict[int, bytearray] = {}
        counts: dict[int, int] = {}
        parts_given: dict[int, int] = {}
        encode_into, first_bucket, crc32, spread = _encoder.encode_into, _FIRST_BUCKET, zlib.crc32, BUCKETS_PER_KIND
        held = 0
        for row in rows:
            entity_id = row.entity_id
            bucket = first_bucket[row.entity_type] + crc32(entity_id.encode("utf-8", "surrogatepass")) % spread
            buffer = buffers.get(bucket)
            if buffer is None:
                buffer = buffers[bucket] = bytearray()
                counts[bucket] = 0
            before = len(buffer)
            encode_into((entity_id, row.topic, row.partition, row.state), buffer, -1)
            counts[bucket] += 1
            held += len(buffer) - before
            if held >= self.held_bytes:
                self.rows += sum(counts.values())
                yield from _give_out(buffers, counts, parts_given)
                held = 0
        self.rows += sum(counts.values())
        yield from _give_out(buffers, counts, parts_given)


def _give_out(buffers: dict[int, bytearray], counts: dict[int, int], parts_given: dict[int, int]) -> Iterator[Part]:
    for bucket in sorted(buffers):
        part = parts_given.get(bucket, 0)
        parts_given[bucket] = part + 1
        yield bucket, part, _ARRAY32 + struct.pack(">I", counts[bucket]) + buffers.pop(bucket)
    counts.clear()


def pack(entries: Iterable[Entry]) -> bytes:
    """One bucket's blob from its entries, in one encoder call (a resumed run's save merges buckets so)."""
    return _encoder.encode(list(entries))


def unpack(topics: str, bucket: int, blob: bytes) -> list[Entry]:
    """A bucket's entries. A blob that does not decode is `CheckpointUnreadableError` naming the bucket: the
    caller then replays in full, as for one entity's state that does not decode."""
    try:
        return _entries_decoder.decode(blob)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CheckpointUnreadableError(f"checkpoint bucket {bucket} of {topics} does not decode "
                                        f"({type(exc).__name__}: {exc})") from exc


def rows_of(topics: str, bucket: int, blob: bytes, only: set[str] | None = None) -> Iterator[EntityRow]:
    """The bucket's entities as rows; with `only`, just those ids (a single-entity read builds no row for
    the bucket's other thousand)."""
    if not 0 <= bucket < len(KINDS) * BUCKETS_PER_KIND:
        raise CheckpointUnreadableError(f"checkpoint bucket {bucket} of {topics} is not a bucket of this layout")
    kind = kind_of(bucket)
    for entity_id, topic, partition, state in unpack(topics, bucket, blob):
        if only is None or entity_id in only:
            yield EntityRow(kind, entity_id, topic, partition, state)


def kind_of(bucket: int) -> str:
    return KINDS[bucket // BUCKETS_PER_KIND]
