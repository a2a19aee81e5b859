"""The reliability suite's figures: what each test tried and what came of it, counted apart.

Every test that reports figures gets its own `TestFigures` (the `figures` fixture of tests/reliability),
so no count depends on which tests ran before. An attempt is counted when it is made, an outcome when
it is seen. The published totals take a test's good outcomes (refused, survived, equal, rows checked)
only if the test passed: a test that failed proves nothing about what it saw go right. Bad outcomes
(rows lost or moved backwards) count whatever the test's result, so a failure can never hide one.

The README's "Reliability and security" table is `published_rows` of the figures file a whole run of
the suite writes (`BILLING_FIGURES_JSON`); tests/unit/test_published_figures.py holds the two together.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
RELIABILITY = TESTS / "reliability"
PUBLISHED_FILE = RELIABILITY / "published_figures.json"


@dataclass
class TestFigures:
    """One test's counts. `passed` is set from the test's own report when its call phase ends."""

    __test__ = False  # a record, not a test class, whatever its name says to pytest

    nodeid: str
    faults_injected: dict[str, int] = field(default_factory=dict)
    faults_survived: dict[str, int] = field(default_factory=dict)
    interleavings_tried: int = 0
    interleavings_equal: int = 0
    bad_inputs_tried: int = 0
    bad_inputs_refused: int = 0
    fuzz_inputs_tried: int = 0
    fuzz_inputs_refused: int = 0
    fuzz_inputs_valid: int = 0
    version_samples: int = 0
    rows_checked_after_races: int = 0
    rows_lost_or_moved_backwards: int = 0
    passed: bool = False

    # --- faults in real servers and processes ---------------------------------------------------------
    def injected(self, fault: str, n: int = 1) -> None:
        self.faults_injected[fault] = self.faults_injected.get(fault, 0) + n

    def survived(self, fault: str, n: int = 1) -> None:
        survived = self.faults_survived.get(fault, 0) + n
        # Survival is an outcome of an injected fault: claiming more than was injected is a bug in the test.
        assert survived <= self.faults_injected.get(fault, 0), f"{fault!r}: survived more often than injected"
        self.faults_survived[fault] = survived

    # --- in-memory interleavings: not faults in a server, so not counted as faults ----------------------
    def interleaving_tried(self) -> None:
        self.interleavings_tried += 1

    def interleaving_equal(self) -> None:
        assert self.interleavings_equal < self.interleavings_tried, "an outcome without its attempt"
        self.interleavings_equal += 1

    # --- inputs -----------------------------------------------------------------------------------------
    def bad_input(self, refused: bool) -> None:
        """One input that must be refused; `refused` is what was observed, after trying it."""
        self.bad_inputs_tried += 1
        self.bad_inputs_refused += int(refused)

    @contextmanager
    def refusal(self) -> Iterator[None]:
        """One input that must be refused: tried on entry, refused only if the block ends without an error,
        so the assertions inside it are what saw the refusal."""
        self.bad_inputs_tried += 1
        yield
        self.bad_inputs_refused += 1

    # Decoder fuzz: a generated input is counted tried before it is decoded, and refused or valid only once that
    # outcome is seen; an input the decoder fails on any other way stays tried with neither.
    def fuzz_tried(self) -> None:
        """One generated input, which may or may not be a valid event, about to be decoded."""
        self.fuzz_inputs_tried += 1

    def fuzz_refused(self) -> None:
        """The input just tried was refused with an error naming where (topic, partition, offset) and which field."""
        self._fuzz_outcome()
        self.fuzz_inputs_refused += 1

    def fuzz_valid(self) -> None:
        """The input just tried decoded as a valid event (one that survives its own round trip)."""
        self._fuzz_outcome()
        self.fuzz_inputs_valid += 1

    def _fuzz_outcome(self) -> None:
        outcomes = self.fuzz_inputs_refused + self.fuzz_inputs_valid
        assert outcomes < self.fuzz_inputs_tried, "an outcome without its attempt"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TestFigures:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        assert not unknown, f"unknown figure fields {sorted(unknown)}"
        return cls(**dict(data))


# Outcomes that count only for tests that passed; every other count is an attempt or a bad outcome.
GOOD_OUTCOMES = ("faults_survived", "interleavings_equal", "bad_inputs_refused", "fuzz_inputs_refused",
                 "fuzz_inputs_valid", "rows_checked_after_races")
COUNTS = ("interleavings_tried", "interleavings_equal", "bad_inputs_tried", "bad_inputs_refused", "fuzz_inputs_tried",
          "fuzz_inputs_refused", "fuzz_inputs_valid", "version_samples", "rows_checked_after_races",
          "rows_lost_or_moved_backwards")


@dataclass
class Totals:
    """The whole run's figures, summed over its tests."""

    faults_injected: dict[str, int] = field(default_factory=dict)
    faults_survived: dict[str, int] = field(default_factory=dict)
    interleavings_tried: int = 0
    interleavings_equal: int = 0
    bad_inputs_tried: int = 0
    bad_inputs_refused: int = 0
    fuzz_inputs_tried: int = 0
    fuzz_inputs_refused: int = 0
    fuzz_inputs_valid: int = 0
    version_samples: int = 0
    rows_checked_after_races: int = 0
    rows_lost_or_moved_backwards: int = 0
    tests: int = 0
    tests_failed: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, records: Iterable[TestFigures]) -> Totals:
        totals = cls()
        for record in records:
            totals._add(record)
        return totals

    def _add(self, record: TestFigures) -> None:
        self.tests += 1
        if not record.passed:
            self.tests_failed.append(record.nodeid)
        for fault, n in record.faults_injected.items():
            self.faults_injected[fault] = self.faults_injected.get(fault, 0) + n
        if record.passed:
            for fault, n in record.faults_survived.items():
                self.faults_survived[fault] = self.faults_survived.get(fault, 0) + n
        for name in COUNTS:
            if record.passed or name not in GOOD_OUTCOMES:
                setattr(self, name, getattr(self, name) + getattr(record, name))

    def check(self) -> None:
        """What must hold whatever the run: no outcome without its attempt."""
        for fault, n in self.faults_survived.items():
            assert n <= self.faults_injected.get(fault, 0), fault
        assert self.interleavings_equal <= self.interleavings_tried
        assert self.bad_inputs_refused <= self.bad_inputs_tried
        assert self.fuzz_inputs_refused + self.fuzz_inputs_valid <= self.fuzz_inputs_tried


PUBLISHED_LABELS = (
    "faults injected into real servers and processes / survived",
    "in-memory interleavings (every event fed to the fold twice, partitions interleaved) / equal to the "
    "canonical replay",
    "bad inputs that must be refused (malformed events, command line, run config, settings, privileges) / "
    "refused",
    "decoder fuzz inputs tried / refused / decoded as valid events",
    "version samples taken during the races",
    "rows checked after the races",
    "rows lost or moved backwards",
)


def _n(value: int) -> str:
    return f"{value:,}"


def published_rows(totals: Totals) -> list[tuple[str, str]]:
    """The README's table: labels fixed here, values only from the totals."""
    values = (
        f"{_n(sum(totals.faults_injected.values()))} / {_n(sum(totals.faults_survived.values()))}",
        f"{_n(totals.interleavings_tried)} / {_n(totals.interleavings_equal)}",
        f"{_n(totals.bad_inputs_tried)} / {_n(totals.bad_inputs_refused)}",
        f"{_n(totals.fuzz_inputs_tried)} / {_n(totals.fuzz_inputs_refused)} / {_n(totals.fuzz_inputs_valid)}",
        _n(totals.version_samples),
        _n(totals.rows_checked_after_races),
        f"**{_n(totals.rows_lost_or_moved_backwards)}**",
    )
    return list(zip(PUBLISHED_LABELS, values, strict=True))


def terminal_rows(totals: Totals) -> list[tuple[str, str]]:
    """The run's own summary: every fault by name, then the published figures, then failed tests."""
    rows = [(f"fault: {name}", f"{n} injected / {totals.faults_survived.get(name, 0)} survived")
            for name, n in sorted(totals.faults_injected.items())]
    rows += published_rows(totals)
    rows += [("test failed (its good outcomes are not counted)", nodeid) for nodeid in totals.tests_failed]
    return rows


def markdown_table(rows: list[tuple[str, str]]) -> str:
    return "\n".join(["| figure | value |", "| --- | --- |", *(f"| {name} | {value} |" for name, value in rows)])


@dataclass
class RunRecord:
    """What a run of the suite writes: when, how it was invoked, its exit status and every test's figures."""

    finished_at: str  # UTC, ISO 8601
    args: list[str]
    markexpr: str
    keyword: str
    collected: int
    deselected: int
    exit_status: int
    tests: dict[str, TestFigures]

    def totals(self) -> Totals:
        return Totals.of(self.tests.values())

    def to_json(self) -> str:
        data = asdict(self)
        # Per test, only what it counted (zeros are the defaults `load` restores): a record to read in a diff.
        data["tests"] = {nodeid: {k: v for k, v in record.to_json().items() if v or k in ("nodeid", "passed")}
                         for nodeid, record in self.tests.items()}
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        data = json.loads(path.read_text())
        data["tests"] = {k: TestFigures.from_json(v) for k, v in data["tests"].items()}
        return cls(**data)


def figure_reporting_tests(directory: Path = RELIABILITY) -> dict[str, set[str]]:
    """Each test file of `directory` that reports figures -> the names of its test functions taking `figures`."""
    found: dict[str, set[str]] = {}
    for path in sorted(directory.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        names = {node.name for node in ast.walk(tree)
                 if isinstance(node, ast.FunctionDef) and node.name.startswith("test")
                 and any(a.arg == "figures" for a in node.args.args)}
        if names:
            found[path.name] = names
    return found


def main(argv: list[str]) -> None:
    """Print the README table of a figures file: `python -m support.figures reliability/published_figures.json`."""
    run = RunRecord.load(Path(argv[0]) if argv else PUBLISHED_FILE)
    print(f"run finished {run.finished_at}")
    print(markdown_table(published_rows(run.totals())))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
