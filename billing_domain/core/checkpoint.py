"""Replay checkpoints: resume a replay from the state a previous one reached.

A checkpoint holds every aggregate's folded state (with the digests of the event ids that tell a
redelivery from a conflicting event, `Aggregate.event_digests`), the saga money, the ledger sums and
the end offsets it covers. It is never trusted blindly: `why_not_trusted` refuses one written by
another code version (or format), one whose topics lost partitions, and one whose last covered
message is no longer the message it saw (a recreated or truncated topic). The caller then replays in full and says why.
"""

from __future__ import annotations

import operator
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec

from billing_domain.core.accounts import AccountAggregate
from billing_domain.core.aggregate import DIGEST_SIZE, Aggregate
from billing_domain.core.cut import Cut, TopicPartitionKey
from billing_domain.core.exceptions import CheckpointUnreadableError, EventPosition
from billing_domain.core.replay import Corruption, InvariantBreak, MoneyMove, Replay
from billing_domain.core.transactions import TransactionAggregate

# 2: a stream's problems in log order, the first one not stored apart; 3: a saga leg keeps its occurred_at;
# 4: an aggregate's event ids without placeholders for a gap (`runs`), and the partition its stream is on;
# 5: the ledger sums as decimal text (a sum of 64-bit amounts can pass 64 bits);
# 6: an aggregate's slots as one array in `_LAYOUT` order, its event ids as 8-byte digests in one byte string
# 7: the states stored by the store in buckets of entities, not a row per entity
CHECKPOINT_FORMAT = 7
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
# What a damaged or hand-edited blob raises: bad msgpack, or the wrong shape for its fields.
_UNREADABLE = (msgspec.DecodeError, KeyError, IndexError, TypeError, ValueError, AttributeError)


def code_version() -> str:
    try:
        package = version("billing-recon")
    except PackageNotFoundError:
        package = "dev"
    return f"format-{CHECKPOINT_FORMAT}.{_LAYOUT_MARK:08x}/billing-recon-{package}"


@dataclass(frozen=True, slots=True)
class CheckpointHeader:
    topics: str
    code_version: str
    cut: Cut
    tail_marks: dict[str, int]
    ledger: dict[str, Any]
    run_id: str | None
    has_delta_memo: bool = False  # the run left a memo for a delta run (`CheckpointStore.delta_memo`)


# A frozen msgspec Struct, not a frozen dataclass: one is built per checkpointed entity written and read, and a
# frozen dataclass's __init__ (a setattr per field) was a tenth of the dump.
class EntityRow(msgspec.Struct, frozen=True):
    entity_type: str
    entity_id: str
    topic: str
    partition: int
    state: bytes


def tail_mark(value: bytes | None) -> int:
    return zlib.crc32(value or b"")


def why_not_trusted(header: CheckpointHeader, partitions: dict[str, list[int]],
                    current_marks: dict[str, int | None]) -> str | None:
    """None if the checkpoint may be resumed from; else the reason a full replay is needed."""
    if header.code_version != code_version():
        return f"checkpoint written by {header.code_version}, this is {code_version()}"
    for (topic, partition), end in header.cut.end.items():
        if partition not in partitions.get(topic, []):
            return f"{topic}[{partition}] is gone since the checkpoint (topic recreated?)"
        key = f"{topic}:{partition}"
        if end > 0 and current_marks.get(key) != header.tail_marks.get(key):
            return (f"the message at {topic}[{partition}]@{end - 1} is not the one the checkpoint covered "
                    "(topic recreated or truncated)")
    return None


# --- entity state ---------------------------------------------------------------------------------------
def _slots(cls: type) -> tuple[str, ...]:
    names = [name for klass in cls.__mro__ for name in getattr(klass, "__slots__", ())]
    # Not the id: it is the row's `entity_id`, and the loaded aggregate shares that string with its dict's key.
    return tuple(n for n in names if n not in ("_applying", "aggregate_id"))


_ACCOUNT_SLOTS = _slots(AccountAggregate)
_TRANSACTION_SLOTS = _slots(TransactionAggregate)
# A state is its slots' values by position: a slot added, dropped or moved changes this mark, so a checkpoint
# of another layout is refused by `why_not_trusted` (as another code version) instead of decoded askew.
_LAYOUT_MARK = zlib.crc32(",".join((*_ACCOUNT_SLOTS, "|", *_TRANSACTION_SLOTS)).encode())
_SLOT_VALUES: dict[str, Callable[[Aggregate], tuple[Any, ...]]] = {
    "account": operator.attrgetter(*_ACCOUNT_SLOTS), "transaction": operator.attrgetter(*_TRANSACTION_SLOTS)}
_MOVE_VALUES: Callable[[MoneyMove], tuple[Any, ...]] = operator.attrgetter(
    "account_id", "reason", "amount_minor", "currency", "event_id", "occurred_at")
_NOWHERE = ("", -1)  # the topic and partition of an entity with no event read (never in a full replay)


def dump_entities(replay: Replay, only: set[tuple[str, str]] | None = None) -> Iterator[EntityRow]:
    """Every entity's state as rows (or only the `only` ones)."""
    if only is not None:
        yield from (_row(replay, entity_type, entity_id) for entity_type, entity_id in only)
        return
    # Every entity: each kind's states in one loop over its own dict (a checkpoint after a full replay holds
    # a row per account, transfer and transfer's money, and a lookup of each by key took a third of the dump).
    yield from _aggregate_rows(replay, "account", replay.accounts)
    yield from _aggregate_rows(replay, "transaction", replay.transactions)
    yield from (_row(replay, *key) for key in replay.corrupt
                if key[1] not in (replay.accounts if key[0] == "account" else replay.transactions))
    yield from (_row(replay, "money", transaction_id) for transaction_id in replay.saga_money)


def _aggregate_rows(replay: Replay, entity_type: str, aggregates: Mapping[str, Aggregate]) -> Iterator[EntityRow]:
    where, corrupt, encode = replay.partition_of, replay.corrupt, _encoder.encode
    breaks = replay.invariant_breaks if entity_type == "account" else {}
    values = _SLOT_VALUES[entity_type]
    for entity_id, aggregate in aggregates.items():
        key = (entity_type, entity_id)
        topic, partition = where.get(key, _NOWHERE)
        corruption = corrupt.get(key) if corrupt else None
        state = encode((values(aggregate), corruption.problems if corruption else None,
                        _broken(breaks.get(entity_id)) if breaks else None))
        yield EntityRow(entity_type, entity_id, topic, partition, state)


def _row(replay: Replay, entity_type: str, entity_id: str) -> EntityRow:
    topic, partition = replay.partition_of.get((entity_type, entity_id), _NOWHERE)
    return EntityRow(entity_type, entity_id, topic, partition, _dump(replay, entity_type, entity_id))


def _dump(replay: Replay, entity_type: str, entity_id: str) -> bytes:
    if entity_type == "money":
        return _encoder.encode([_MOVE_VALUES(m) for m in replay.saga_money.get(entity_id, [])])
    aggregate: Aggregate | None = (replay.accounts if entity_type == "account" else replay.transactions).get(entity_id)
    corruption = replay.corrupt.get((entity_type, entity_id))
    broken = replay.invariant_breaks.get(entity_id) if entity_type == "account" else None
    return _encoder.encode((_SLOT_VALUES[entity_type](aggregate) if aggregate is not None else None,
                            corruption.problems if corruption else None, _broken(broken)))


def _broken(broken: InvariantBreak | None) -> tuple[Any, ...] | None:
    return (broken.version, broken.rule, broken.event_id, _position(broken.position)) if broken else None


def load_entities(replay: Replay, rows: Iterable[EntityRow]) -> None:
    """Put checkpointed state back into a fresh replay. Raises `CheckpointUnreadableError` naming the
    entity whose state does not decode; the replay is then partly loaded and must be discarded."""
    if replay.touched is None:
        replay.touched = set()  # from here on the replay is a resumed one (see `Replay.touched`)
    # Each entity's place as one of a few shared tuples, not a tuple and a topic string per row read (about
    # 35 bytes a row: 4.7 MB of a resumed replay's 129 MB at 134k rows).
    places: dict[tuple[str, int], tuple[str, int]] = {}
    for row in rows:
        try:
            _load_entity(replay, row, places)
        except _UNREADABLE as exc:
            raise CheckpointUnreadableError(f"the checkpointed state of {row.entity_type} {row.entity_id!r} "
                                            f"does not decode ({type(exc).__name__}: {exc})") from exc


def _load_entity(replay: Replay, row: EntityRow, places: dict[tuple[str, int], tuple[str, int]]) -> None:
    data = _decoder.decode(row.state)
    if row.topic:
        place = (row.topic, row.partition)
        replay.partition_of[(row.entity_type, row.entity_id)] = places.setdefault(place, place)
    if row.entity_type == "money":
        replay.saga_money[row.entity_id] = [MoneyMove(*move) for move in data]
        return
    values, problems, broken = data
    if values is not None:
        target: dict[str, Any] = replay.accounts if row.entity_type == "account" else replay.transactions
        target[row.entity_id] = _aggregate(row.entity_type, row.entity_id, values)
    if problems is not None:
        replay.corrupt[(row.entity_type, row.entity_id)] = Corruption(row.entity_type, row.entity_id, problems)
    if broken is not None:
        version_, rule, event_id, position = broken
        replay.invariant_breaks[row.entity_id] = InvariantBreak(version_, rule, event_id,
                                                                _from_position(position) or EventPosition("", 0, 0))


def _aggregate(entity_type: str, entity_id: str, values: list[Any]) -> Aggregate:
    aggregate: Aggregate = (AccountAggregate if entity_type == "account" else TransactionAggregate)(entity_id)
    slots = _ACCOUNT_SLOTS if entity_type == "account" else _TRANSACTION_SLOTS
    if len(values) != len(slots):
        raise ValueError(f"{len(values)} values for {len(slots)} slots")
    for name, value in zip(slots, values, strict=True):
        setattr(aggregate, name, value)
    digests = aggregate.event_digests
    if not isinstance(digests, bytes) or len(digests) % DIGEST_SIZE:
        raise ValueError(f"event digests are not a byte string of {DIGEST_SIZE}-byte digests")
    aggregate.event_digests = bytearray(digests)  # appended to as the tail applies events
    if not aggregate.violations:
        aggregate.violations = ()  # the shared empty one, not a list per loaded aggregate
    return aggregate


def dump_ledger(replay: Replay) -> bytes:
    # Sums as decimal text: each amount fits 64 bits, a currency's sum of them need not (msgpack's ints do).
    return _encoder.encode({"credits": {c: {k: str(v) for k, v in r.items()} for c, r in replay.credits.items()},
                            "debits": {c: {k: str(v) for k, v in r.items()} for c, r in replay.debits.items()},
                            "cut_time": replay.cut_time, "events_read": replay.events_read})


def load_ledger(replay: Replay, ledger: dict[str, Any]) -> None:
    for currency, reasons in ledger["credits"].items():
        replay.credits[currency].update({k: int(v) for k, v in reasons.items()})
    for currency, reasons in ledger["debits"].items():
        replay.debits[currency].update({k: int(v) for k, v in reasons.items()})
    replay.cut_time = ledger["cut_time"]


def decode_ledger(blob: bytes) -> dict[str, Any]:
    try:
        decoded: dict[str, Any] = _decoder.decode(blob)
    except msgspec.DecodeError as exc:
        raise CheckpointUnreadableError(f"the checkpoint's ledger sums do not decode ({exc})") from exc
    return decoded


def _position(position: EventPosition | None) -> list[Any] | None:
    return [position.topic, position.partition, position.offset] if position else None


def _from_position(values: list[Any] | None) -> EventPosition | None:
    return EventPosition(*values) if values else None


def topics_key(topics: Iterable[str]) -> str:
    return ",".join(topics)


def marks_key(tp: TopicPartitionKey) -> str:
    return f"{tp[0]}:{tp[1]}"
