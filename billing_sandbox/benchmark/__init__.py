"""`billing-recon bench`: a program that measures the reconciler and prints its figures.

Not a timed test: it builds a clean simulated history on the embedded stack (fresh topics and a
fresh database each run), then runs the user's commands (`billing-recon reconcile all --full`, the
daily `reconcile all`, `rebuild accounts --all`, `reconcile account ID`) as whole processes, timed
from outside with their peak RSS, beside a bare-consume floor run the same way. The stage timings
the commands print are the breakdown; the peers (datacompy's Pandas and Polars compares, one
entity at a time) run in fresh processes on the same data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from billing_sandbox.benchmark.runner import BenchOptions, run_bench
    from billing_sandbox.benchmark.sizes import SIZES, Size

__all__ = ["SIZES", "BenchOptions", "Size", "run_bench"]


def __getattr__(name: str) -> Any:
    # Lazy: `python -m billing_sandbox.benchmark.floor` is measured as a whole process and must not pay for
    # importing the runner, the stages and the domain services.
    if name in ("BenchOptions", "run_bench"):
        from billing_sandbox.benchmark import runner

        return getattr(runner, name)
    if name in ("SIZES", "Size"):
        from billing_sandbox.benchmark import sizes

        return getattr(sizes, name)
    raise AttributeError(name)
