"""The findings of a reconciliation report as CSV, for spreadsheets and tickets.

One row per finding. Money and versions are integer columns (minor units, never floats), empty where
the finding has no such value; `expected` and `actual` keep the rest as compact JSON.

Every difference has one sign, the one the finding texts use: what the projection says minus what the
events say (`projection_minus_events_minor`: -3 when the row holds 3 cents too little). It is filled where a
projection is compared with the events: an account's balance, and the ledger's `balances_match_events`.
The other identities compare the events with themselves; their sides are in `expected` / `actual`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

from billing_domain.core.findings import Finding
from billing_domain.core.ledger import BALANCES_MATCH_EVENTS

COLUMNS = ("entity_type", "entity_id", "kind", "severity", "expected_version", "actual_version",
           "expected_balance_minor", "actual_balance_minor", "projection_minus_events_minor", "topic", "partition",
           "offset", "event_id", "detail", "expected", "actual")


def findings_csv(findings: Iterable[Finding]) -> str:
    """The findings as CSV text (header first, `\\n` line ends), in the order given."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for finding in findings:
        writer.writerow(_row(finding))
    return out.getvalue()


def _row(f: Finding) -> list[Any]:
    expected, actual = f.expected or {}, f.actual or {}
    expected_balance, actual_balance = _int(expected, "balance_minor"), _int(actual, "balance_minor")
    difference = (actual_balance - expected_balance if expected_balance is not None and actual_balance is not None
                  else _int(actual, "difference") if f.entity_id.endswith(":" + BALANCES_MATCH_EVENTS) else None)
    return [f.entity_type, f.entity_id, f.kind.value, f.severity.value, _int(expected, "version"),
            _int(actual, "version"), expected_balance, actual_balance, difference, f.topic, f.partition, f.offset,
            f.event_id, f.detail, _json(f.expected), _json(f.actual)]


def _int(values: Mapping[str, Any], key: str) -> int | None:
    value = values.get(key)
    # bool is an int in Python; a flag is not a number of cents or a version.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
