"""The interfaces the services need, as Protocols; the adapters implement them.

A service takes these, never a concrete adapter class, so the same service runs against Kafka and
PostgreSQL (`billing_domain.adapters`) or against the in-memory fakes of `tests/support/fakes.py`.
Each port has a contract suite in `tests/contract/` that runs against both.
"""

from __future__ import annotations

# --- the event log (Kafka) -------------------------------------------------------------------------

# --- the projections (PostgreSQL, schema billing) --------------------------------------------------

# --- reports, audit and checkpoints (PostgreSQL, schema billing_recon) -----------------------------

# --- finding lifecycle, shadow tables, saga recovery (PostgreSQL, schema billing_recon) ------------

# --- locks and notifications ------------------------------------------------------------------------
