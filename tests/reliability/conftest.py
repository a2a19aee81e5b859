"""The reliability suite's shared parts: the figures it reports, a private stack for tests that kill
PostgreSQL, and helpers to dump and compare tables.

Tests that kill a server use `crash_stack` (its own EmbeddedStack in a temporary folder), never the
session `servers` fixture, so the rest of the suite is unaffected.

Figures (tests/support/figures.py): each test asking for `figures` gets its own record, marked passed
or not from its own report; the run prints the totals, and with BILLING_FIGURES_JSON set writes every
record and how the run was invoked, which is what the README's table is made from.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from reliability_helpers import create_database
from support.figures import RELIABILITY, RunRecord, TestFigures, terminal_rows

from billing_sandbox.stack import EmbeddedStack, StackInfo

RECORDS_KEY = pytest.StashKey[dict[str, TestFigures]]()
COUNTS_KEY = pytest.StashKey[dict[str, int]]()
SOAK_SECONDS = float(os.environ.get("BILLING_SOAK_SECONDS", "20"))
RACE_SECONDS = float(os.environ.get("BILLING_RACE_SECONDS", "20"))


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RECORDS_KEY] = {}
    config.stash[COUNTS_KEY] = {"collected": 0, "deselected": 0}


def _in_suite(item: pytest.Item) -> bool:
    return Path(item.path).is_relative_to(RELIABILITY)


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        counts = items[0].config.stash[COUNTS_KEY]
        counts["deselected"] += sum(1 for item in items if _in_suite(item))


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[COUNTS_KEY]["collected"] = sum(1 for item in session.items if _in_suite(item))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> TestFigures:
    """This test's own figures; its good outcomes are published only if it passes."""
    records = request.config.stash[RECORDS_KEY]
    record = records[request.node.nodeid] = TestFigures(request.node.nodeid)
    return record


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                               ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    record = item.config.stash[RECORDS_KEY].get(item.nodeid)
    if record is not None:
        if report.when == "call":
            record.passed = report.passed
        elif report.failed:  # a failed teardown undoes a passed call
            record.passed = False
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    records = config.stash.get(RECORDS_KEY, {})
    if not records:
        return
    counts = config.stash[COUNTS_KEY]
    run = RunRecord(finished_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), args=list(config.args),
                    markexpr=config.option.markexpr or "", keyword=config.option.keyword or "",
                    collected=counts["collected"], deselected=counts["deselected"], exit_status=int(exitstatus),
                    tests=dict(sorted(records.items())))
    totals = run.totals()
    totals.check()
    terminalreporter.section("reliability figures")
    rows = terminal_rows(totals)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        terminalreporter.write_line(f"{name:<{width}}  {value}")
    out = os.environ.get("BILLING_FIGURES_JSON")
    if out:
        Path(out).write_text(run.to_json())


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
    yield create_database(info.database_url)
    stack.start_postgres()

