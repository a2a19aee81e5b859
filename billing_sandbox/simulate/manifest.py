"""What a simulation wrote and which faults it injected, with the findings each must produce.

The manifest is the answer key of a reconciliation run over a simulated history: the
reconciler's findings, as (entity_type, entity_id, kind), must equal `expected_findings()`.
It holds nothing taken from the wall clock or the servers, so one seed gives one manifest.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from billing_sandbox.simulate.history import SimulationConfig

FindingKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class ExpectedFinding:
    entity_type: str  # account | transaction | ledger
    entity_id: str
    kind: str

    def key(self) -> FindingKey:
        return (self.entity_type, self.entity_id, self.kind)


@dataclass(frozen=True, slots=True)
class InjectedFault:
    """One fault: what was done to which entity, and what the reconciler must report for it."""

    fault: str
    entity_type: str
    entity_id: str
    detail: str
    expected_findings: list[ExpectedFinding] = field(default_factory=list)


@dataclass(slots=True)
class Manifest:
    seed: int
    config: SimulationConfig
    counts: dict[str, int]  # accounts, transactions, events (the clean history), fault_messages
    projections_written: str  # "projector" | "bulk"
    history_end: str  # RFC 3339: occurred_at of the history's last event, the cut time
    faults: list[InjectedFault] = field(default_factory=list)

    def expected_findings(self) -> set[FindingKey]:
        """Every finding the faults should produce, flattened (ledger findings appear once)."""
        return {finding.key() for fault in self.faults for finding in fault.expected_findings}

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "seed": self.seed, "config": self.config.to_json(), "counts": dict(sorted(self.counts.items())),
            "projections_written": self.projections_written, "history_end": self.history_end,
            "faults": [asdict(f) for f in self.faults],
        }
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        faults = [InjectedFault(f["fault"], f["entity_type"], f["entity_id"], f["detail"],
                                [ExpectedFinding(**e) for e in f["expected_findings"]]) for f in data["faults"]]
        return cls(data["seed"], SimulationConfig.from_json(data["config"]), data["counts"],
                   data["projections_written"], data["history_end"], faults)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
