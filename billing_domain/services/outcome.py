"""What a replay hands to the report and the checkpoint, whichever way it read the log."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from billing_domain.core.accounts import AccountState
from billing_domain.core.cut import Cut
from billing_domain.core.findings import Finding
from billing_domain.core.lag import LagJudge
from billing_domain.core.ledger import LedgerTotals
from billing_domain.core.replay import AGGREGATE_TYPES, Replay
from billing_domain.core.transactions import TransactionState
from billing_domain.ports import ReadMark
from billing_domain.services.delta_memo import DeltaMemo
from billing_domain.services.read_plan import ReplayMode


@dataclass(frozen=True, slots=True)
class DeltaResult:
    """What `build_report` and `save_checkpoint` need besides the replay of the entities diffed again."""

    carried: list[Finding]
    totals: LedgerTotals
    memo: DeltaMemo  # for this run; its run_id is set when the checkpoint is saved


@dataclass(slots=True)
class ReplayOutcome:
    """A replay with the projection rows it was diffed against (read before the events)."""

    replay: Replay
    cut: Cut
    account_rows: dict[str, AccountState]
    transaction_rows: dict[str, TransactionState]
    timings: dict[str, float] = field(default_factory=dict)
    mode: ReplayMode = ReplayMode.FULL
    mode_reason: str = "full replay"
    read_mark: ReadMark | None = None  # taken before the rows were read (see projection_changes)
    delta: DeltaResult | None = None  # set in delta mode: the rows and replay hold only the entities diffed again
    entity_types: tuple[str, ...] = AGGREGATE_TYPES  # whose rows and checkpointed state were loaded
    resumed_from: str | None = None  # the run whose checkpoint this replay continued
    # The run's clock and the projector's offsets as the run began reading the projections: `stuck`, rows
    # behind and sagas across the two topics are judged by them (see core.lag).
    judge: LagJudge = field(default_factory=lambda: LagJudge(datetime.now(UTC)))

    def __post_init__(self) -> None:
        self.mode = ReplayMode(self.mode)  # a caller's "full" is the mode named so
