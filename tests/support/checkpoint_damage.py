"""Damage stored checkpoint states in place, as a bad disk or a hand edit would, inside their buckets."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from billing_domain.adapters.postgres.checkpoint_buckets import kind_of, pack, unpack

SCHEMA = "billing_recon"


def overwrite_checkpointed_states(engine: Engine, state: bytes, entity: tuple[str, str] | None = None) -> int:
    """Set the stored state of `entity` (entity type, id), or of every entity, to `state`; how many were set."""
    overwritten = 0
    with engine.begin() as conn:
        parts = conn.exec_driver_sql(f"SELECT topics, bucket, part, entities FROM {SCHEMA}.checkpoint_bucket").all()
        for topics, bucket, part, blob in parts:
            entries = unpack(topics, bucket, bytes(blob))
            hit = [entity is None or (kind_of(bucket), e[0]) == entity for e in entries]
            if not any(hit):
                continue
            overwritten += sum(hit)
            damaged = [(e[0], e[1], e[2], state if h else e[3]) for e, h in zip(entries, hit, strict=True)]
            conn.exec_driver_sql(f"UPDATE {SCHEMA}.checkpoint_bucket SET entities = %s WHERE topics = %s "
                                 "AND bucket = %s AND part = %s", (pack(damaged), topics, bucket, part))
    return overwritten
