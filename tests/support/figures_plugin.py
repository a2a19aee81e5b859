"""The reliability figures' pytest hooks (registered by tests/conftest.py), so they run however pytest is run.

Each test asking for the `figures` fixture (tests/reliability/conftest.py) gets its own record in
`config.stash[RECORDS_KEY]`, marked passed or not from its own reports. At the end the run prints the totals,
and with BILLING_FIGURES_JSON set writes every record and how the run was invoked (support/figures.py).

Under pytest-xdist the tests run in workers, whose records would never reach the controller that prints and
writes: each worker adds a test's record to the user properties of its teardown report, and its collection
counts to its output when it ends; the controller takes both. A run in one process and a run in workers
write the same run record. These hooks live here, not in tests/reliability/conftest.py, because an xdist
controller collects nothing and so never loads a conftest below tests/.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from support.figures import RELIABILITY, RunRecord, TestFigures, terminal_rows

RECORDS_KEY = pytest.StashKey[dict[str, TestFigures]]()
COUNTS_KEY = pytest.StashKey[dict[str, int]]()
FIGURES_PROPERTY = "reliability_figures"  # a record, among the user properties of a test's teardown report
COUNTS_OUTPUT = "reliability_counts"  # a worker's collection counts, in its output to the controller


def _in_suite(item: pytest.Item) -> bool:
    return Path(item.path).is_relative_to(RELIABILITY)


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RECORDS_KEY] = {}
    config.stash[COUNTS_KEY] = {"collected": 0, "deselected": 0}


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        counts = items[0].config.stash[COUNTS_KEY]
        counts["deselected"] += sum(1 for item in items if _in_suite(item))


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[COUNTS_KEY]["collected"] = sum(1 for item in session.items if _in_suite(item))


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
        if report.when == "teardown" and _is_xdist_worker(item.config):
            report.user_properties.append((FIGURES_PROPERTY, record.to_json()))
    return report


# --- under pytest-xdist: the workers' records and counts reach the controller ------------------------
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "teardown":
        return
    for name, value in report.user_properties:
        if name == FIGURES_PROPERTY:
            _from_workers[report.nodeid] = TestFigures.from_json(value)


# The controller's copy of the workers' records (in a worker, a record is in its own stash already).
_from_workers: dict[str, TestFigures] = {}


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _is_xdist_worker(session.config):
        output: dict[str, Any] = session.config.workeroutput  # type: ignore[attr-defined]
        output[COUNTS_OUTPUT] = dict(session.config.stash[COUNTS_KEY])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    counts = getattr(node, "workeroutput", {}).get(COUNTS_OUTPUT)
    if counts:  # every worker collects the whole run: any one's counts are the run's
        node.config.stash[COUNTS_KEY].update(counts)


# --- the run's figures ------------------------------------------------------------------------------
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    if _is_xdist_worker(config):
        return
    records = {**config.stash.get(RECORDS_KEY, {}), **_from_workers}
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
