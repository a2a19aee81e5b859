"""The floor is a whole process of its own, light to start, and says plainly when it has no servers."""

from __future__ import annotations

import os
import sys

import pytest

from billing_sandbox.benchmark.commands import FLOOR_MODULE, recon_command
from billing_sandbox.benchmark.processes import CommandFailed, run_command


def test_the_floor_without_servers_fails_and_says_why() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    with pytest.raises(CommandFailed, match="BILLING_KAFKA_BOOTSTRAP_SERVERS is not set"):
        run_command([sys.executable, "-m", FLOOR_MODULE], env=env)


def test_the_floor_does_not_import_the_runner_or_the_domain_services() -> None:
    # Measured as a whole process, the floor must start as a bare consumer would, not pay our imports.
    code = (f"import sys; import {FLOOR_MODULE}; "
            "print(sorted(m for m in sys.modules if m.startswith(('billing_sandbox', 'billing_domain.services'))))")
    run = run_command([sys.executable, "-c", code])
    assert "billing_sandbox.benchmark.runner" not in run.stdout and "billing_domain.services" not in run.stdout


def test_the_commands_are_the_installed_console_script() -> None:
    assert recon_command()[0].endswith("billing-recon") or recon_command()[1:] == ["-m", "billing_cli.app"]
