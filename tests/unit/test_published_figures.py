"""The reliability figures the README publishes are what the figures code makes of a real, whole run.

The numbers are not fixed here (a new run may give others); what is fixed: the README's table is exactly
`published_rows` of the committed run record (tests/reliability/published_figures.json, written by the
run itself through BILLING_FIGURES_JSON), that run covered the whole suite and passed, every test that
reports figures is in it, no outcome exceeds its attempt, and the README says the run's date. And the
counting rules themselves: an attempt without its outcome stays an attempt, a failed test's good
outcomes are not published, its bad ones are.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.figures import (
    PUBLISHED_FILE,
    PUBLISHED_LABELS,
    RELIABILITY,
    RunRecord,
    TestFigures,
    Totals,
    figure_reporting_tests,
    published_rows,
)

REPOSITORY = Path(__file__).resolve().parents[2]
README = REPOSITORY / "README.md"
REGENERATE = ("run `BILLING_FIGURES_JSON=tests/reliability/published_figures.json .venv/bin/pytest -q "
              "-p no:cacheprovider tests/reliability`, then paste `cd tests && ../.venv/bin/python -m support.figures`")


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def _table(section: str) -> list[tuple[str, str]]:
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    assert lines[:2] == ["| figure | value |", "| --- | --- |"], lines[:2]
    rows = []
    for line in lines[2:]:
        name, value = (cell.strip() for cell in line.strip("|").split(" | ", 1))
        rows.append((name, value))
    return rows


@pytest.fixture(scope="module")
def run() -> RunRecord:
    return RunRecord.load(PUBLISHED_FILE)


# --- the README against the run record --------------------------------------------------------------
def test_the_readme_table_is_the_published_rows_of_the_recorded_run(run: RunRecord) -> None:
    section = _section("Reliability and security")
    assert _table(section) == published_rows(run.totals()), REGENERATE
    assert [name for name, _ in _table(section)] == list(PUBLISHED_LABELS)


def test_the_readme_names_the_date_of_the_recorded_run(run: RunRecord) -> None:
    date = run.finished_at[:10]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", date)
    assert f"on {date}" in _section("Reliability and security"), REGENERATE


def test_the_recorded_run_was_the_whole_suite_and_passed(run: RunRecord) -> None:
    assert run.exit_status == 0 and run.deselected == 0 and not run.markexpr and not run.keyword
    # Run on the suite itself (or on all tests), not on a chosen few of its files.
    assert any((REPOSITORY / arg).resolve() in (RELIABILITY, RELIABILITY.parent) for arg in run.args), run.args
    assert run.collected >= len(run.tests) > 0
    failed = [nodeid for nodeid, record in run.tests.items() if not record.passed]
    assert failed == [], failed


def test_every_test_that_reports_figures_is_in_the_run_and_nothing_stale_is(run: RunRecord) -> None:
    reporting = figure_reporting_tests()
    recorded: dict[str, set[str]] = {}
    for nodeid in run.tests:
        path, function = nodeid.split("::", 1)
        recorded.setdefault(Path(path).name, set()).add(function.split("[", 1)[0])
    assert set(recorded) == set(reporting), REGENERATE  # a file added or removed since the run
    for name, functions in recorded.items():
        assert functions <= reporting[name], (name, functions - reporting[name], REGENERATE)


def test_no_recorded_outcome_exceeds_its_attempt(run: RunRecord) -> None:
    totals = run.totals()
    totals.check()
    for record in run.tests.values():
        Totals.of([record]).check()  # per test too: one test's excess cannot hide in another's shortfall
    assert totals.fuzz_inputs_refused + totals.fuzz_inputs_valid == totals.fuzz_inputs_tried
    assert sum(totals.faults_injected.values()) > 0 and totals.fuzz_inputs_tried > 0


# --- the counting rules -------------------------------------------------------------------------------
def test_an_input_is_refused_only_if_the_block_that_checks_its_refusal_completes() -> None:
    figures = TestFigures("t::a")
    with figures.refusal():
        pass
    with pytest.raises(AssertionError), figures.refusal():
        raise AssertionError("the input was accepted")
    assert (figures.bad_inputs_tried, figures.bad_inputs_refused) == (2, 1)


def test_an_outcome_without_its_attempt_is_a_bug_in_the_test() -> None:
    figures = TestFigures("t::a")
    with pytest.raises(AssertionError, match="survived more often"):
        figures.survived("broker cut")
    figures.injected("broker cut")
    figures.survived("broker cut")
    with pytest.raises(AssertionError):
        figures.interleaving_equal()


def test_a_fuzz_input_is_tried_before_it_is_decoded_and_refused_or_valid_only_once_seen() -> None:
    figures = TestFigures("t::a")
    with pytest.raises(AssertionError, match="without its attempt"):
        figures.fuzz_refused()
    figures.fuzz_tried()
    figures.fuzz_refused()
    figures.fuzz_tried()  # the decoder failed on this one some other way: neither refused nor valid
    figures.fuzz_tried()
    figures.fuzz_valid()
    assert (figures.fuzz_inputs_tried, figures.fuzz_inputs_refused, figures.fuzz_inputs_valid) == (3, 1, 1)


def test_a_failed_test_keeps_its_attempts_and_bad_outcomes_but_not_its_good_ones() -> None:
    passed, failed = TestFigures("t::passed", passed=True), TestFigures("t::failed", passed=False)
    for record in (passed, failed):
        record.injected("kill")
        record.survived("kill")
        record.bad_input(refused=True)
        record.fuzz_tried()
        record.fuzz_valid()
        record.rows_checked_after_races += 10
        record.rows_lost_or_moved_backwards += 1
    totals = Totals.of([passed, failed])
    assert (totals.faults_injected, totals.faults_survived) == ({"kill": 2}, {"kill": 1})
    assert (totals.bad_inputs_tried, totals.bad_inputs_refused) == (2, 1)
    assert (totals.fuzz_inputs_tried, totals.fuzz_inputs_valid) == (2, 1)
    assert totals.rows_checked_after_races == 10 and totals.rows_lost_or_moved_backwards == 2
    assert totals.tests_failed == ["t::failed"]
    assert published_rows(totals)[0] == (PUBLISHED_LABELS[0], "2 / 1")


def test_totals_do_not_depend_on_the_order_of_the_tests() -> None:
    records = [TestFigures(f"t::{i}", passed=i % 2 == 0) for i in range(4)]
    for i, record in enumerate(records):
        record.fuzz_tried()
        record.fuzz_refused() if i % 3 == 0 else record.fuzz_valid()
        record.injected(f"fault {i % 2}", i)
    assert published_rows(Totals.of(records)) == published_rows(Totals.of(reversed(records)))
