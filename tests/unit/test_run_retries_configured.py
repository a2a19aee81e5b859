"""Run retries are on in both Dagster instance configurations, the local one and the deployment's (no server
needed): the daemon relaunches a run whose worker died. That it does, on a real daemon, is
tests/reliability/test_run_retry.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", [ROOT / "dagster.yaml", ROOT / "deploy" / "dagster.yaml"], ids=["local", "deploy"])
def test_run_retries_are_configured(path: Path) -> None:
    retries = yaml.safe_load(path.read_text())["run_retries"]
    assert retries["enabled"] is True and retries["max_retries"] >= 1
