"""The demo refuses servers of yours unless told they are disposable (no server needed: it refuses before
connecting). The demo on the real servers is tests/integration/test_demo.py."""

from __future__ import annotations

import os
import subprocess
import sys


def _demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "billing_pipelines.demo"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=240, check=False)


def test_the_demo_refuses_servers_of_yours_unless_told_they_are_disposable() -> None:
    done = _demo({"BILLING_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "BILLING_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"})
    assert done.returncode == 2
    assert "BILLING_DEMO_ON_CONFIGURED_SERVERS" in done.stdout
