"""The simulator's history is a function of its seed (no server needed). What it writes to the real servers
is tests/integration/test_simulator.py."""

from __future__ import annotations

from billing_domain.core.events import encode_event
from billing_sandbox.simulate import SimulationConfig
from billing_sandbox.simulate.history import HistoryGenerator


def test_a_different_seed_gives_a_different_history() -> None:
    def encoded(seed: int) -> list[bytes]:
        return [encode_event(e) for e in HistoryGenerator(SimulationConfig(seed=seed, accounts=30, days=1)).events()]

    assert encoded(1) == encoded(1)
    assert encoded(1) != encoded(2)
