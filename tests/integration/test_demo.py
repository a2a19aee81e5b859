"""The README's main command: the demo finds every injected fault, repairs what may be repaired, verifies."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from billing_domain.config import Topics


def _demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "billing_pipelines.demo"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=240, check=False)


def test_the_demo_finds_every_fault_and_leaves_only_what_no_rebuild_may_fix(
        servers: Any, topics: Topics, database_url: str) -> None:
    done = _demo({"BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers, "BILLING_DATABASE_URL": database_url,
                  "BILLING_TOPIC_PREFIX": topics.accounts.removesuffix("account-events"),
                  "BILLING_DEMO_ON_CONFIGURED_SERVERS": "yes", "COLUMNS": "160"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every injected fault found: yes" in done.stdout
    assert "Everything a rebuild can fix is fixed." in done.stdout
