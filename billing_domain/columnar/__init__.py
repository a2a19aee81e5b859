"""A columnar batch engine for the full replay: decode a cut into columns, fold the plain streams with Polars.

The aggregates (`core/`) stay the reference model: every stream that is not plain (a gap, a redelivery, a
conflicting version, a poison event, an event off its stream's partition or topic, a keyless message) is
folded by the reference `Replay` itself, so every rule keeps its one implementation. What comes out is a
`core.replay.Replay`, filled, so the diff, the saga check, the ledger and the checkpoint read it unchanged.
"""

from billing_domain.columnar.decode import DecodedBatch, decode_batch
from billing_domain.columnar.engine import ENGINES, FoldSplit, can_fold, fold_into

__all__ = ["ENGINES", "DecodedBatch", "FoldSplit", "can_fold", "decode_batch", "fold_into"]
