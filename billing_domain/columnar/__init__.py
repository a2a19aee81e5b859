"""A columnar batch engine for the full replay: decode a cut into columns, fold the plain streams with Polars.

The aggregates (`core/`) stay the reference model: every stream that is not plain (a gap, a redelivery, a
conflicting version, a poison event, an event off its stream's partition or topic, a keyless message) is
folded by the reference `Replay` itself, so every rule keeps its one implementation. What comes out is a
`core.replay.Replay`, filled, so the diff, the saga check, the ledger and the checkpoint read it unchanged.

Measured (`python -m billing_sandbox.benchmark.fold_measure`, fold only, collector paused as in the pipeline, CPU
seconds on the shared 2-core machine): 200k events / 20k accounts, aggregates 1.19 s (168k events/s, peak RSS
242 MiB) against columns 1.62 s (127k events/s, 463 MiB); 1M events / 100k accounts with the collector on,
9.5 s against 15.2 s CPU, 1.0 against 1.9 GiB. The columns are not faster yet: building the Python `Replay`
the diff reads (an aggregate, its event ids and a money move per leg, per entity) costs about what the
aggregates' own fold costs, and the cut is held whole. So `aggregate` stays the default engine; the gain
needs the diff, saga check and ledger to read the columns themselves (issue 17's next parts).
"""

from billing_domain.columnar.decode import DecodedBatch, decode_batch
from billing_domain.columnar.engine import ENGINES, FoldSplit, can_fold, fold_into

__all__ = ["ENGINES", "DecodedBatch", "FoldSplit", "can_fold", "decode_batch", "fold_into"]
