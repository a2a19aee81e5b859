"""The benchmark's sizes. The simulator makes ~13 events per account per day, so `days=1` with the
named number of accounts gives about 1.3x the named number of events: the manifest's counts are
what the figures are measured on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Size:
    name: str
    accounts: int
    days: int
    nominal_events: int
    peer_sample: int  # accounts folded one at a time from an in-memory index of their events
    scan_sample: int  # accounts read one at a time by scanning their partition
    repeats: int  # whole-command runs per figure (the median); one where a run is long
    floor_repeats: int  # runs of the floor, which is cheap and moves from run to run
    command_sample: int  # accounts checked by `billing-recon reconcile account ID`, a whole process each


SIZES: dict[str, Size] = {
    "tiny": Size("tiny", 400, 1, 5_000, 100, 3, 3, 3, 10),  # a quick look
    # what CI runs (tests/integration/test_bench_small.py)
    "small": Size("small", 10_000, 1, 100_000, 1_000, 20, 3, 3, 20),
    "medium": Size("medium", 100_000, 1, 1_000_000, 1_000, 10, 1, 3, 20),
    "large": Size("large", 1_000_000, 1, 10_000_000, 1_000, 3, 1, 1, 10),  # on demand
}
