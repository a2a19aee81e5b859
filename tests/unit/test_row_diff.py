"""The one rule behind the rebuild's before/after columns, in the CLI and in the Dagster job's table."""

from billing_domain.core.row_diff import changed_columns


def test_only_the_columns_that_differ_are_listed_bookkeeping_aside() -> None:
    before = {"balance_minor": 100, "version": 3, "status": "active", "updated_at": "t1", "last_event_id": "e3"}
    after = {"balance_minor": 250, "version": 5, "status": "active", "updated_at": "t2", "last_event_id": "e5"}

    assert changed_columns(before, after) == [("balance_minor", 100, 250), ("version", 3, 5)]


def test_a_column_the_old_row_lacked_shows_as_none_before() -> None:
    assert changed_columns({"version": 1}, {"version": 1, "frozen_minor": 0}) == [("frozen_minor", None, 0)]
