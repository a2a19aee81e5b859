"""The reliability suite's shared parts: the figures it reports, a private stack for tests that kill
PostgreSQL, and helpers to dump and compare tables.

Tests that kill a server use `crash_stack` (its own EmbeddedStack in a temporary folder), never the
session `servers` fixture, so the rest of the suite is unaffected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
from reliability_helpers import create_database

from billing_domain.stack import EmbeddedStack, StackInfo

FIGURES_KEY = pytest.StashKey["Figures"]()
SOAK_SECONDS = float(os.environ.get("BILLING_SOAK_SECONDS", "20"))
RACE_SECONDS = float(os.environ.get("BILLING_RACE_SECONDS", "20"))


@dataclass
class Figures:
    """What the run did to the system and what the system did about it."""

    faults_injected: dict[str, int] = field(default_factory=dict)
    faults_survived: dict[str, int] = field(default_factory=dict)
    bad_inputs_tried: int = 0
    bad_inputs_refused: int = 0
    rows_checked_after_races: int = 0
    rows_lost_or_moved_backwards: int = 0
    version_samples: int = 0

    def injected(self, fault: str, n: int = 1) -> None:
        self.faults_injected[fault] = self.faults_injected.get(fault, 0) + n

    def survived(self, fault: str, n: int = 1) -> None:
        self.faults_survived[fault] = self.faults_survived.get(fault, 0) + n

    def bad_input(self, refused: bool) -> None:
        self.bad_inputs_tried += 1
        self.bad_inputs_refused += int(refused)

    def table(self) -> list[tuple[str, str]]:
        rows = [(f"fault: {name}", f"{self.faults_survived.get(name, 0)} survived / {n} injected")
                for name, n in sorted(self.faults_injected.items())]
        rows += [
            ("faults injected (total)", str(sum(self.faults_injected.values()))),
            ("faults survived (total)", str(sum(self.faults_survived.values()))),
            ("bad inputs tried", str(self.bad_inputs_tried)),
            ("bad inputs refused", str(self.bad_inputs_refused)),
            ("version samples taken during races", str(self.version_samples)),
            ("rows checked after the races", str(self.rows_checked_after_races)),
            ("rows lost or moved backwards (must be 0)", str(self.rows_lost_or_moved_backwards)),
        ]
        return rows


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FIGURES_KEY] = Figures()


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest) -> Figures:
    return request.config.stash[FIGURES_KEY]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    figures = config.stash.get(FIGURES_KEY, None)
    if figures is None or not (figures.faults_injected or figures.bad_inputs_tried
                               or figures.rows_checked_after_races):
        return
    terminalreporter.section("reliability figures")
    width = max(len(name) for name, _ in figures.table())
    for name, value in figures.table():
        terminalreporter.write_line(f"{name:<{width}}  {value}")
    out = os.environ.get("BILLING_FIGURES_JSON")
    if out:
        Path(out).write_text(json.dumps(asdict(figures), indent=2) + "\n")


# --- a private stack for tests that kill PostgreSQL --------------------------------------------------
@pytest.fixture(scope="session")
def crash_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedStack, StackInfo]]:
    stack = EmbeddedStack(Path(tmp_path_factory.mktemp("crash-stack")))
    info = stack.up()
    try:
        yield stack, info
    finally:
        stack.destroy()


@pytest.fixture
def crash_db(crash_stack: tuple[EmbeddedStack, StackInfo]) -> Iterator[str]:
    """A fresh database on the private stack; PostgreSQL is running again after the test, whatever it did."""
    stack, info = crash_stack
    stack.start_postgres()
    yield create_database(info.pg_port)
    stack.start_postgres()

