"""The two peers the reconciler is measured against, on the same data.

(a) The original engine's way, one account at a time: one SELECT of its projection row, then its
events, folded and compared. Two emulations, both on a sample of accounts and extrapolated per
account to all of them:
  - `indexed`: the account's raw messages come from an in-memory index built beforehand (not timed:
    it stands for an event store with a per-aggregate index and costs the peer nothing), then are
    decoded and folded: a lower bound of the peer's cost;
  - `scan`: the account's partition of the account topic is read from offset 0 to its end with a new
    consumer, keeping the messages with its key: what loading one aggregate costs on Kafka.
(b) datacompy comparing the replayed accounts with the projection rows as DataFrames, with its Pandas
compare and its Polars compare (int64 money in both), timed against our `diff_accounts` on the same
replay and rows.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import psycopg
from confluent_kafka import KafkaError, TopicPartition
from sqlalchemy.engine import make_url

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ACCOUNT_COLUMNS
from billing_domain.core.accounts import AccountAggregate, AccountState
from billing_domain.core.diff import diff_accounts
from billing_domain.core.events import decode_event
from billing_domain.services.reconcile import replay_all
from billing_sandbox.benchmark.environment import BenchTarget

Figures = dict[str, Any]
COMPARED = ("owner_id", "currency", "balance_minor", "min_balance_minor", "max_balance_minor", "status", "version")
FRAME_COLUMNS = ("account_id", *COMPARED)
INT64_COLUMNS = ("balance_minor", "min_balance_minor", "max_balance_minor", "version")
COMPARE_RUNS = 3  # each compare and our diff: the median of 3 (a binding target; each run is well under a second)
SELECT_ONE = f"SELECT {', '.join(ACCOUNT_COLUMNS)} FROM billing.account_projection WHERE account_id = %s"


def one_at_a_time_stage(target: BenchTarget, sample: int, scan_sample: int, seed: int) -> Figures:
    services = target.open()
    event_store = services.event_store
    try:
        began = time.perf_counter()
        index: dict[str, tuple[int, list[bytes]]] = {}
        for batch in event_store.read_cut(topics=[event_store.topics.accounts]):
            for message in batch:
                key, value = message.key(), message.value()
                if key is not None and value is not None:
                    index.setdefault(key.decode(), (message.partition() or 0, []))[1].append(value)
        index_s = time.perf_counter() - began
        rng = random.Random(seed)
        ids = sorted(index)
        indexed_ids = rng.sample(ids, min(sample, len(ids)))
        scan_ids = rng.sample(ids, min(scan_sample, len(ids)))
        with psycopg.connect(_libpq_url(target.database_url)) as conn:
            indexed = [_indexed_one(conn, account_id, index[account_id][1]) for account_id in indexed_ids]
            scanned = [_scanned_one(conn, event_store, account_id, index[account_id][0]) for account_id in scan_ids]
    finally:
        services.close()
    accounts = len(index)
    return {"accounts": accounts, "index_build_s": index_s,
            "indexed": _summary(indexed, accounts), "scan": _summary(scanned, accounts)}


def _indexed_one(conn: psycopg.Connection[Any], account_id: str, values: list[bytes]) -> tuple[float, bool]:
    began = time.perf_counter()
    row = conn.execute(SELECT_ONE, (account_id,)).fetchone()
    key = account_id.encode()
    aggregate = AccountAggregate.from_events(decode_event(value, key) for value in values)
    same = _same(aggregate, row)
    return time.perf_counter() - began, same


def _scanned_one(conn: psycopg.Connection[Any], event_store: KafkaEventStore, account_id: str,
                 partition: int) -> tuple[float, bool]:
    began = time.perf_counter()
    row = conn.execute(SELECT_ONE, (account_id,)).fetchone()
    key = account_id.encode()
    consumer = event_store.new_consumer()
    consumer.assign([TopicPartition(event_store.topics.accounts, partition, 0)])
    aggregate = AccountAggregate(account_id)
    try:
        at_end = False
        while not at_end:
            for message in consumer.consume(10_000, timeout=0.1):
                error = message.error()
                if error is not None:
                    at_end = at_end or error.code() == KafkaError._PARTITION_EOF
                    continue
                if message.key() == key:
                    aggregate.apply(decode_event(message.value(), key))
    finally:
        consumer.close()
    same = _same(aggregate, row)
    return time.perf_counter() - began, same


def _same(aggregate: AccountAggregate, row: Any) -> bool:
    if row is None:
        return False
    state, projected = aggregate.state(), AccountState(*row)
    return all(getattr(state, f) == getattr(projected, f) for f in COMPARED)


def _summary(results: list[tuple[float, bool]], accounts: int) -> Figures:
    if not results:
        return {"sample": 0}
    seconds = [s for s, _ in results]
    per_account = statistics.fmean(seconds)
    return {"sample": len(results), "per_account_ms": 1000 * per_account,
            "p50_ms": 1000 * statistics.median(seconds), "extrapolated_s": per_account * accounts,
            "mismatches": sum(1 for _, same in results if not same)}


def _libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def diff_vs_datacompy_stage(target: BenchTarget) -> Figures:
    """Our diff against datacompy's Pandas and Polars compares, on the same replay and projection rows
    (accounts, clean data). Building the frames is timed for neither; each `report()` is timed apart."""
    services = target.open()
    try:
        outcome = replay_all(services.event_store, services.projections)
    finally:
        services.close()
    replay, rows = outcome.replay, outcome.account_rows
    ours: list[float] = []
    for _ in range(COMPARE_RUNS):
        began = time.perf_counter()
        findings = diff_accounts(replay, rows, outcome.judge)
        ours.append(time.perf_counter() - began)
    ours_s = statistics.median(ours)
    replayed, projected = [a.state() for a in replay.accounts.values()], list(rows.values())
    pandas_figures = _pandas_compare(replayed, projected)
    polars_figures = _polars_compare(replayed, projected)
    fastest_peer_s = min(pandas_figures["compare_s"], polars_figures["compare_s"])
    return {"rows": len(rows), "ours_s": ours_s, "ours_runs_s": ours, "ours_findings": len(findings),
            "runs": COMPARE_RUNS, "pandas": pandas_figures,
            "polars": polars_figures, "speedup": fastest_peer_s / ours_s if ours_s > 0 else 0.0}


def _pandas_compare(replayed: list[AccountState], projected: list[AccountState]) -> Figures:
    import datacompy
    import pandas as pd

    began = time.perf_counter()
    left, right = _pandas_frame(pd, replayed), _pandas_frame(pd, projected)
    frames_s = time.perf_counter() - began
    return _timed_compare(datacompy.PandasCompare, left, right, frames_s,
                          {c: str(left[c].dtype) for c in INT64_COLUMNS})


def _polars_compare(replayed: list[AccountState], projected: list[AccountState]) -> Figures:
    import datacompy
    import polars as pl

    began = time.perf_counter()
    left, right = _polars_frame(pl, replayed), _polars_frame(pl, projected)
    frames_s = time.perf_counter() - began
    return _timed_compare(datacompy.PolarsCompare, left, right, frames_s,
                          {c: str(left.schema[c]).lower() for c in INT64_COLUMNS})


def _timed_compare(compare_class: Any, left: Any, right: Any, frames_s: float, dtypes: dict[str, str]) -> Figures:
    runs: list[float] = []
    for _ in range(COMPARE_RUNS):
        began = time.perf_counter()
        compare = compare_class(left, right, join_columns="account_id", df1_name="replay", df2_name="projection")
        matches = compare.matches()
        runs.append(time.perf_counter() - began)
    compare_s = statistics.median(runs)
    began = time.perf_counter()
    report_chars = len(compare.report())
    return {"compare_s": compare_s, "runs_s": runs, "report_s": time.perf_counter() - began, "frames_build_s": frames_s,
            "matches": bool(matches), "report_chars": report_chars, "money_dtypes": dtypes}


def _columns(states: list[AccountState]) -> dict[str, list[Any]]:
    return {c: [getattr(s, c) for s in states] for c in FRAME_COLUMNS}


def _pandas_frame(pd: Any, states: list[AccountState]) -> Any:
    frame = pd.DataFrame(_columns(states))
    for column in INT64_COLUMNS:
        frame[column] = frame[column].astype("int64")  # money stays integral: never a float column
    return frame


def _polars_frame(pl: Any, states: list[AccountState]) -> Any:
    columns = _columns(states)
    schema = {c: (pl.Int64 if c in INT64_COLUMNS else pl.Utf8) for c in FRAME_COLUMNS}  # money: Int64, never float
    return pl.DataFrame(columns, schema=schema)
