"""A consistent cut of the event store: for each (topic, partition), the offsets read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TopicPartitionKey = tuple[str, int]


@dataclass(slots=True)
class Cut:
    """`start[tp]` is the first offset read, `end[tp]` the offset after the last one (exclusive)."""

    start: dict[TopicPartitionKey, int] = field(default_factory=dict)
    end: dict[TopicPartitionKey, int] = field(default_factory=dict)

    @property
    def message_count(self) -> int:
        return sum(self.end[tp] - self.start.get(tp, 0) for tp in self.end)

    def to_json(self) -> dict[str, Any]:
        return {f"{topic}:{partition}": {"start": self.start.get((topic, partition), 0), "end": end}
                for (topic, partition), end in sorted(self.end.items())}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cut:
        cut = cls()
        for name, offsets in data.items():
            topic, _, partition = name.rpartition(":")
            cut.start[(topic, int(partition))] = int(offsets["start"])
            cut.end[(topic, int(partition))] = int(offsets["end"])
        return cut
