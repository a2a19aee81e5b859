"""findings_csv: one row per finding, integer money and version columns, JSON for the rest."""

from __future__ import annotations

import csv
import io

from billing_domain.export import COLUMNS, findings_csv
from billing_domain.findings import Finding, Kind


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_header_only_for_no_findings() -> None:
    assert findings_csv([]) == ",".join(COLUMNS) + "\n"


def test_balance_mismatch_has_integer_money_columns() -> None:
    finding = Finding.of("account", "acc-1", Kind.BALANCE_MISMATCH, "balance 100 at v3, events say 250",
                         expected={"balance_minor": 250, "version": 3}, actual={"balance_minor": 100, "version": 3})
    [row] = _rows(findings_csv([finding]))
    assert row["kind"] == "balance_mismatch" and row["severity"] == "critical"
    money = (row["expected_balance_minor"], row["actual_balance_minor"], row["difference_minor"])
    assert money == ("250", "100", "150")
    assert (row["expected_version"], row["actual_version"]) == ("3", "3")
    assert row["expected"] == '{"balance_minor":250,"version":3}'


def test_missing_values_are_empty_and_flags_are_not_numbers() -> None:
    orphan = Finding.of("transaction", "tx-1", Kind.ORPHAN_PROJECTION, "projection row with no events",
                        actual={"version": 2, "amount_minor": 500, "closed": True})
    ledger = Finding.of("ledger", "EUR:1", Kind.ACCOUNTING_EQUATION, "identity 1 does not hold",
                        expected={"right": 10, "identity": "..."}, actual={"left": 7, "difference": -3})
    corrupt = Finding.of("account", "acc-2", Kind.STREAM_CORRUPT, "version gap, detail with, a comma",
                         expected={"problems": ["gap"]}, topic="billing.account-events", partition=2, offset=41,
                         event_id="e-1")
    orphan_row, ledger_row, corrupt_row = _rows(findings_csv([orphan, ledger, corrupt]))
    assert orphan_row["expected_version"] == "" and orphan_row["actual_version"] == "2"
    assert orphan_row["expected"] == "" and '"closed":true' in orphan_row["actual"]
    assert ledger_row["difference_minor"] == "-3"
    assert (corrupt_row["partition"], corrupt_row["offset"], corrupt_row["event_id"]) == ("2", "41", "e-1")
    assert corrupt_row["detail"] == "version gap, detail with, a comma"


def test_every_numeric_cell_parses_as_an_integer() -> None:
    findings = [Finding.of("account", f"acc-{i}", Kind.BALANCE_MISMATCH, "x",
                           expected={"balance_minor": 10**12 + i, "version": i},
                           actual={"balance_minor": i, "version": i})
                for i in range(5)]
    numeric = ("expected_version", "actual_version", "expected_balance_minor", "actual_balance_minor",
               "difference_minor")
    for row in _rows(findings_csv(findings)):
        for column in numeric:
            assert str(int(row[column])) == row[column]
