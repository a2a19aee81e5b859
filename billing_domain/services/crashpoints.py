"""Named steps of the writing operations (rebuild, shadow swap, saga recovery) where a test can stop the
process, to SIGKILL it there and check what the crash left: `BILLING_PAUSE_AT=<step>` makes the first
arrival at that step write the step's name to `BILLING_PAUSE_MARKER` (a file), then wait for a line on
stdin (the test's "go on"; a test that kills the process never sends it).

Unset (always, outside the reliability tests), `reached` is one dictionary lookup.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PAUSE_AT = "BILLING_PAUSE_AT"
PAUSE_MARKER = "BILLING_PAUSE_MARKER"
_paused: set[str] = set()


def reached(step: str) -> None:
    if os.environ.get(PAUSE_AT) != step or step in _paused:
        return
    _paused.add(step)
    marker = os.environ.get(PAUSE_MARKER)
    if marker:
        partial = Path(f"{marker}.partial")
        partial.write_text(step)
        partial.replace(marker)  # the test sees the whole name or nothing
    sys.stdin.readline()  # until the test says go on, or kills the process
