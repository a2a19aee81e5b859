"""Run the benchmark without the CLI: `python benchmarks/bench.py --size small --json-out f.json`.

Same options as `billing-recon bench`; the code lives in billing_sandbox/benchmark.
"""

from __future__ import annotations

import typer

from billing_cli.bench import bench

if __name__ == "__main__":
    typer.run(bench)
