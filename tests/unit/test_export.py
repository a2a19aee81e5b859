"""findings_csv: one row per finding, integer money and version columns, JSON for the rest."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import msgspec

from billing_domain.config import Topics
from billing_domain.core.exceptions import EventPosition
from billing_domain.core.findings import Finding, Kind
from billing_domain.services.export import COLUMNS, findings_csv


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_header_only_for_no_findings() -> None:
    assert findings_csv([]) == ",".join(COLUMNS) + "\n"


def test_balance_mismatch_has_integer_money_columns() -> None:
    finding = Finding.of("account", "acc-1", Kind.BALANCE_MISMATCH, "balance 100 at v3, events say 250",
                         expected={"balance_minor": 250, "version": 3}, actual={"balance_minor": 100, "version": 3})
    [row] = _rows(findings_csv([finding]))
    assert row["kind"] == "balance_mismatch" and row["severity"] == "critical"
    money = (row["expected_balance_minor"], row["actual_balance_minor"], row["projection_minus_events_minor"])
    assert money == ("250", "100", "-150")  # the projection holds 150 too little
    assert (row["expected_version"], row["actual_version"]) == ("3", "3")
    assert row["expected"] == '{"balance_minor":250,"version":3}'


def test_missing_values_are_empty_and_flags_are_not_numbers() -> None:
    orphan = Finding.of("transaction", "tx-1", Kind.ORPHAN_PROJECTION, "projection row with no events",
                        actual={"version": 2, "amount_minor": 500, "closed": True})
    ledger = Finding.of("ledger", "EUR:balances_match_events", Kind.ACCOUNTING_EQUATION, "identity 1 does not hold",
                        expected={"right": 10, "identity": "..."}, actual={"left": 7, "difference": -3})
    events_only = Finding.of("ledger", "EUR:transfers_conserve_money", Kind.ACCOUNTING_EQUATION, "identity 2",
                             expected={"right": 10, "identity": "..."}, actual={"left": 7, "difference": -3})
    corrupt = Finding.of("account", "acc-2", Kind.STREAM_CORRUPT, "version gap, detail with, a comma",
                         expected={"problems": ["gap"]}, topic="billing.account-events", partition=2, offset=41,
                         event_id="e-1")
    orphan_row, ledger_row, corrupt_row, events_only_row = _rows(findings_csv([orphan, ledger, corrupt, events_only]))
    assert orphan_row["expected_version"] == "" and orphan_row["actual_version"] == "2"
    assert orphan_row["expected"] == "" and '"closed":true' in orphan_row["actual"]
    assert ledger_row["projection_minus_events_minor"] == "-3"
    assert events_only_row["projection_minus_events_minor"] == ""  # both sides are events: see expected/actual
    assert (corrupt_row["partition"], corrupt_row["offset"], corrupt_row["event_id"]) == ("2", "41", "e-1")
    assert corrupt_row["detail"] == "version gap, detail with, a comma"


def test_every_numeric_cell_parses_as_an_integer() -> None:
    findings = [Finding.of("account", f"acc-{i}", Kind.BALANCE_MISMATCH, "x",
                           expected={"balance_minor": 10**12 + i, "version": i},
                           actual={"balance_minor": i, "version": i})
                for i in range(5)]
    numeric = ("expected_version", "actual_version", "expected_balance_minor", "actual_balance_minor",
               "projection_minus_events_minor")
    for row in _rows(findings_csv(findings)):
        for column in numeric:
            assert str(int(row[column])) == row[column]


def test_the_difference_has_the_sign_of_the_detail_texts() -> None:
    """A real diff's finding text and its CSV row say the same number: the projection minus the events."""
    from support.builders import AccountStream

    from billing_domain.core.accounts import AccountAggregate
    from billing_domain.core.diff import diff_accounts
    from billing_domain.core.lag import LagJudge
    from billing_domain.core.replay import Replay

    stream = AccountStream("acc-1")
    stream.opened()
    stream.credited(1_000)
    replay = Replay(Topics.with_prefix("t."), account_versions={"acc-1": 2})
    replay.feed_events((event, EventPosition("t.account-events", 0, i)) for i, event in enumerate(stream.events))
    row = AccountAggregate.from_events(stream.events).state()
    short = msgspec.structs.replace(row, balance_minor=row.balance_minor - 3)
    [finding] = diff_accounts(replay, {"acc-1": short}, LagJudge(datetime.now(UTC)))
    [csv_row] = _rows(findings_csv([finding]))
    assert "(difference -3)" in finding.detail and csv_row["projection_minus_events_minor"] == "-3"
