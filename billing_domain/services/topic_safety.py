"""Whether the event topics keep every event, asked of the broker once a run and said in the report.

The judgement is `core.topic_config`'s; this reads the configuration through the `EventLog` port, puts it in the
report's stats (`topic_config`, `topic_config_status`, `warnings`) and logs each warning. A broker that does not
describe its topics makes the configuration unknown: one note, logged once per process, never an error.
"""

from __future__ import annotations

import logging
from typing import Any

from billing_domain.core.topic_config import TopicSafety, warnings_of
from billing_domain.ports import EventLog

log = logging.getLogger(__name__)
_noted: set[str] = set()


def judge_topics(event_log: EventLog, stats: dict[str, Any]) -> TopicSafety:
    """Describe the topics, judge them and add the verdict to `stats` (keeping warnings already there)."""
    safety = TopicSafety.of(event_log.topic_configs().values())
    earlier = warnings_of(stats)
    stats |= safety.to_stats()
    stats["warnings"] = [*earlier, *safety.warnings]
    for warning in safety.warnings:
        log.warning("EVENT LOG CAN LOSE EVENTS: %s", warning)
    if safety.note is not None and safety.note not in _noted:
        _noted.add(safety.note)
        log.info("%s", safety.note)
    return safety
