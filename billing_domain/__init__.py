"""Plain-Python core of the billing reconciliation pipeline.

Read it like a book: `events` and the aggregates (`accounts`, `transactions`) first, then the
reconciliation and rebuild services, then the adapters that talk to Kafka, PostgreSQL and Slack.
Nothing in this package imports Dagster.
"""
