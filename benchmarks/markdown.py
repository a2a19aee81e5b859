"""Render bench JSON files as the Markdown table of docs/features/benchmark.md.

    python benchmarks/markdown.py small.json medium.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from billing_cli.bench import met_text
from billing_sandbox.benchmark.targets import evaluate


def render(path: Path) -> str:
    figures = json.loads(path.read_text(encoding="utf-8"))
    lines = [f"### --size {figures['size']}", "", "| figure | value | target | met? |", "| --- | --- | --- | --- |"]
    for row in evaluate(figures):  # re-evaluated, so older JSON files get today's target rows
        figure = row["figure"]
        indent = "&emsp;" if figure.startswith(" ") else ""  # a breakdown row stays under its headline
        cells = (indent + figure.strip(), row["value"], row["target"], met_text(row))
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write("\n".join(render(Path(p)) for p in sys.argv[1:]))
