"""The reliability suite's shared parts: the figures it reports, a private stack for tests that kill
PostgreSQL, and helpers to dump and compare tables.

Tests that kill a server use `crash_stack` (its own EmbeddedStack in a temporary folder), never the
session `servers` fixture, so the rest of the suite is unaffected.

Figures (tests/support/figures.py): each test asking for `figures` gets its own record, marked passed
or not from its own report; the run prints the totals, and with BILLING_FIGURES_JSON set writes every
record and how the run was invoked, which is what the README's table is made from. The hooks that do so
are in tests/support/figures_plugin.py (registered by tests/conftest.py, so they also run under xdist).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_helpers import create_database
from support.figures import TestFigures
from support.figures_plugin import RECORDS_KEY

from billing_sandbox.stack import EmbeddedStack, StackInfo


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> TestFigures:
    """This test's own figures; its good outcomes are published only if it passes."""
    records = request.config.stash[RECORDS_KEY]
    record = records[request.node.nodeid] = TestFigures(request.node.nodeid)
    return record


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

