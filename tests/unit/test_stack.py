"""The embedded stack refuses a damaged data folder with an error that says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from billing_sandbox.stack import EmbeddedStack, StackError


def test_a_partly_deleted_data_folder_is_refused_with_a_way_out(tmp_path: Path) -> None:
    stack = EmbeddedStack(tmp_path)
    (stack.pgdata / "base").mkdir(parents=True)  # what is left when the cluster's files were deleted
    with pytest.raises(StackError, match=r"PG_VERSION is missing.*Remove that folder"):
        stack.up()
    assert stack.status() is None  # nothing started, nothing recorded
