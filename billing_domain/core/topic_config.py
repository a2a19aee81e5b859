"""Whether the event topics are configured to keep every event.

The contract: retention is infinite and the topics are never compacted, since they are the system of record. A
compacted topic keeps only the newest message per key, and a finite `retention.ms` or `retention.bytes` deletes
the oldest segments: either way events are gone and every replay is a guess. The run says so loudly (the report's
stats, the Dagster asset's metadata, the alert) without a finding of its own: the contract's kinds are fixed, and
the warning is about the log, not about an entity.

A broker may not describe its topics (Tansu describes only what a topic was created with): then the configuration
is unknown, which the report says once, as a note rather than a warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CLEANUP_POLICY, RETENTION_MS, RETENTION_BYTES = "cleanup.policy", "retention.ms", "retention.bytes"
LOSSY_SETTINGS = (CLEANUP_POLICY, RETENTION_MS, RETENTION_BYTES)  # what decides whether a topic keeps every event
KEPT_FOREVER: Mapping[str, str] = {CLEANUP_POLICY: "delete", RETENTION_MS: "-1", RETENTION_BYTES: "-1"}
UNKNOWN = "topic configuration unknown"
SAFE, CAN_LOSE_EVENTS = "kept forever", "can lose events"


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """One event topic's settings among `LOSSY_SETTINGS`, as its broker describes them (None: it would not say)."""

    topic: str
    settings: Mapping[str, str] | None
    why_unknown: str | None = None  # the broker's answer when it described nothing

    def risks(self) -> list[str]:
        """Each setting that can drop events, said for an operator."""
        settings = self.settings or {}
        found = []
        policy = settings.get(CLEANUP_POLICY)
        if policy is not None and "compact" in (p.strip() for p in policy.split(",")):
            found.append(f"{CLEANUP_POLICY}={policy}: compaction keeps only the newest message of each key")
        for name, unit in ((RETENTION_MS, _duration), (RETENTION_BYTES, _size)):
            value = settings.get(name)
            limit = _int(value)
            if value is not None and (limit is None or limit >= 0):
                found.append(f"{name}={value}{unit(limit)}: events older or beyond it are deleted")
        return found

    @property
    def unknown(self) -> list[str]:
        """The settings the broker did not describe."""
        return [name for name in LOSSY_SETTINGS if self.settings is None or name not in self.settings]


@dataclass(frozen=True, slots=True)
class TopicSafety:
    """Every event topic's configuration, judged: `warnings` are loud, `note` is said once when nothing is known."""

    configs: tuple[TopicConfig, ...]

    @classmethod
    def of(cls, configs: Iterable[TopicConfig]) -> TopicSafety:
        return cls(tuple(sorted(configs, key=lambda c: c.topic)))

    @property
    def warnings(self) -> list[str]:
        return [f"topic {c.topic} can lose events ({'; '.join(c.risks())}): the replay cannot be trusted to hold "
                "every event" for c in self.configs if c.risks()]

    @property
    def status(self) -> str:
        if self.warnings:
            return CAN_LOSE_EVENTS
        return UNKNOWN if any(c.unknown for c in self.configs) else SAFE

    @property
    def note(self) -> str | None:
        """The one line for topics whose settings are not all known (and nothing known is lossy)."""
        unknown = [c for c in self.configs if c.unknown]
        if self.warnings or not unknown:
            return None
        why = next((c.why_unknown for c in unknown if c.why_unknown), None)
        names = ", ".join(sorted({name for c in unknown for name in c.unknown}))
        return (f"{UNKNOWN}: the broker did not describe {names} of {', '.join(c.topic for c in unknown)}"
                f"{f' ({why})' if why else ''}; whether every event is kept cannot be checked")

    def to_stats(self) -> dict[str, Any]:
        """What the report's stats carry: `topic_config` per topic, its `status`, and the `warnings`."""
        return {"topic_config": {c.topic: dict(c.settings) if c.settings is not None else None for c in self.configs},
                "topic_config_status": self.status, "topic_config_note": self.note, "warnings": self.warnings}


def warnings_of(stats: Mapping[str, Any]) -> list[str]:
    """The report-level warnings a report's stats carry (none in a report made before there were any)."""
    found = stats.get("warnings") or []
    return [str(w) for w in found] if isinstance(found, list) else []


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _duration(ms: int | None) -> str:
    if ms is None:
        return ""
    days, hours = ms / 86_400_000, ms / 3_600_000
    return f" ({days:g} days)" if days >= 1 else f" ({hours:g} hours)"


def _size(size: int | None) -> str:
    return "" if size is None else f" ({size / 2**30:g} GiB per partition)"
