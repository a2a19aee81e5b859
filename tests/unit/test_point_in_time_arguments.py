"""The point-in-time arguments parse strictly (no server needed): UTC times with their offset, month ends. The
point-in-time reads on the real servers are tests/integration/test_point_in_time.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billing_domain.core.exceptions import ConfigurationError
from billing_domain.services.point_in_time import month_end, parse_utc


def test_times_parse_strictly() -> None:
    assert parse_utc("2026-01-31T23:59:59Z") == datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)
    assert parse_utc("2026-02-01T01:00:00+01:00") == datetime(2026, 2, 1, 0, 0, tzinfo=UTC)
    assert month_end("2025-12") == datetime(2025, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert month_end("2024-02") == datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC)
    for bad in ("yesterday", "2026-01-31T23:59:59"):
        with pytest.raises(ConfigurationError, match="at:"):
            parse_utc(bad)
    with pytest.raises(ConfigurationError, match="month:"):
        month_end("2026-13")
