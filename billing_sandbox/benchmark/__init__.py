"""`billing-recon bench`: a program that measures the reconciler and prints its figures.

Not a timed test: it builds a clean simulated history on the embedded stack (fresh topics and a
fresh database each run), runs every stage in a fresh process (so each stage's peak RSS is its
own), and reports seconds, rates and ratios against the floor (reading every event's bytes) and
two peers (one entity at a time; datacompy on DataFrames).
"""

from billing_sandbox.benchmark.runner import BenchOptions, run_bench
from billing_sandbox.benchmark.sizes import SIZES, Size

__all__ = ["SIZES", "BenchOptions", "Size", "run_bench"]
