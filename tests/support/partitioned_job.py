"""The partitioned job as a reconstructable target: the multiprocess executor's step processes load it again from
here, with the resources the environment names (BILLING_* set by the test)."""

from __future__ import annotations

import dagster as dg

from billing_pipelines.definitions import build_defs


def partitioned_job() -> dg.JobDefinition:
    return build_defs().resolve_job_def("partitioned_reconciliation")
