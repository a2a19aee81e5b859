"""The Dagster layer: assets, checks, jobs, schedules and sensors over the billing domain services.

Thin on purpose: every operation is a call into `billing_domain`; this package only wires the
resources and describes the results to Dagster (metadata, markdown, check results).
"""
