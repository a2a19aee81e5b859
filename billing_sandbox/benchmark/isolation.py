"""Run one stage in a fresh interpreter (multiprocessing spawn) and read that process's own peak RSS.

The peak is `VmHWM` from /proc/self/status: it belongs to the process's address space, which
exec gives afresh, whereas `ru_maxrss` keeps the forking parent's high-water mark across exec.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

Figures = dict[str, Any]


def run_isolated(stage: Callable[..., Figures], *args: Any) -> Figures:
    """`stage(*args)` in a new process; its figures plus `peak_rss_bytes` and `process_s`."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measured, stage, args).result()


def _measured(stage: Callable[..., Figures], args: tuple[Any, ...]) -> Figures:
    began = time.perf_counter()
    figures = stage(*args)
    figures["process_s"] = time.perf_counter() - began
    figures["peak_rss_bytes"] = peak_rss_bytes()
    return figures


def peak_rss_bytes() -> int:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
