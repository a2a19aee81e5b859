"""The live projector's lag: an asset with its check, and a sensor that alerts Slack when it grows too far.

The measurement and the verdict are `billing_domain.services.projector_lag`; here they are described to Dagster
(numbers per partition, so the UI plots them) and routed to Slack. The sensor alerts once when the
lag crosses the thresholds and once when it is back within them (its cursor holds the last state); a
group with no committed offset (no projector runs, as on the demo stack) is said once, not every minute.
"""


from typing import Any

import dagster as dg

from billing_domain.services.projector_lag import (
    DEFAULT_MAX_PROJECTOR_LAG,
    DEFAULT_MAX_PROJECTOR_LAG_AGE_MINUTES,
    LagThresholds,
    LagVerdict,
    ProjectorLag,
    lag_alert,
    lag_recovered_alert,
    lag_verdict,
    measure_lag,
    no_projector_alert,
)
from billing_pipelines.alerting import post_alert
from billing_pipelines.constants import RECONCILIATION_GROUP
from billing_pipelines.resources import EventStoreResource, SlackResource

PROJECTOR_LAG = dg.AssetKey("projector_lag")
CHECK_NAME = "projector_lag_within_threshold"
BREACHED, OK, NO_PROJECTOR = "breached", "ok", "no_projector"


class ProjectorLagConfig(dg.Config):
    group_id: str | None = None
    """The projector's consumer group; default $BILLING_PROJECTOR_GROUP, else billing-projector."""


@dg.asset(name="projector_lag", group_name=RECONCILIATION_GROUP, kinds={"kafka"},
          description="Events the live projector's consumer group has not applied yet, per partition (exact "
                      "partition ends), and how long the oldest of them has waited.",
          check_specs=[dg.AssetCheckSpec(CHECK_NAME, asset=PROJECTOR_LAG, description=(
              f"At most $BILLING_MAX_PROJECTOR_LAG events unapplied (default {DEFAULT_MAX_PROJECTOR_LAG}) and none "
              f"waiting longer than $BILLING_MAX_PROJECTOR_LAG_AGE_MINUTES (default "
              f"{DEFAULT_MAX_PROJECTOR_LAG_AGE_MINUTES:g}) (WARN)."))])
def projector_lag(context: dg.AssetExecutionContext, config: ProjectorLagConfig,
                  event_store: EventStoreResource) -> dg.MaterializeResult:
    lag = measure_lag(event_store.get_store(), config.group_id)
    thresholds = LagThresholds.from_env()
    verdict = lag_verdict(lag, thresholds)
    context.log.info(f"projector {lag.group_id}: {lag.total:,} events unapplied"
                     + ("" if verdict.passed else f"; {'; '.join(verdict.reasons)}"))
    return dg.MaterializeResult(metadata=lag_metadata(lag), check_results=[check_result(lag, verdict, thresholds)])


def lag_metadata(lag: ProjectorLag) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "group_id": dg.MetadataValue.text(lag.group_id),
        "total_lag": dg.MetadataValue.int(lag.total),
        "oldest_unapplied_age_s": dg.MetadataValue.float(lag.oldest_unapplied_age.total_seconds()),
        "behind_newest_s": dg.MetadataValue.float(lag.behind_newest.total_seconds()),
        "partitions_behind": dg.MetadataValue.int(sum(p.lag > 0 for p in lag.partitions)),
    }
    metadata |= {f"lag/{p.name}": dg.MetadataValue.int(p.lag) for p in lag.partitions}
    return metadata


def check_result(lag: ProjectorLag, verdict: LagVerdict, thresholds: LagThresholds) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=CHECK_NAME, passed=verdict.passed, severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(verdict.reasons) or "within bounds",
        metadata={"total_lag": dg.MetadataValue.int(lag.total),
                  "max_lag": dg.MetadataValue.int(thresholds.max_events),
                  "oldest_unapplied_age_s": dg.MetadataValue.float(lag.oldest_unapplied_age.total_seconds()),
                  "max_age_s": dg.MetadataValue.float(thresholds.max_age.total_seconds())})


@dg.sensor(name="projector_lag_sensor", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every minute: the projector's lag against the thresholds of projector_lag_within_threshold; "
                       "one Slack alert when it goes past them and one when it is back within them. A group that "
                       "never committed an offset is no projector running: said once, not a breach each minute.")
def projector_lag_sensor(context: dg.SensorEvaluationContext, event_store: EventStoreResource,
                         slack: SlackResource) -> dg.SkipReason:
    lag = measure_lag(event_store.get_store())
    verdict = lag_verdict(lag, LagThresholds.from_env())
    state = NO_PROJECTOR if verdict.no_projector else OK if verdict.passed else BREACHED
    previous = context.cursor or OK
    context.update_cursor(state)
    if state == previous:
        if state == NO_PROJECTOR:  # said once, when first seen: a stack without a projector is no news each minute
            return dg.SkipReason()
        return dg.SkipReason(f"projector {lag.group_id}: {lag.total:,} unapplied, still {state}")
    if state == NO_PROJECTOR:
        alert = no_projector_alert(lag, verdict, slack.ui_url())
    elif state == BREACHED:
        alert = lag_alert(lag, verdict, slack.ui_url())
    else:
        alert = lag_recovered_alert(lag, first_seen=previous == NO_PROJECTOR)
    delivery = post_alert(context.log, slack, alert, f"projector {lag.group_id}: {state} alert")
    said = "; ".join(verdict.reasons) or "within bounds"
    return dg.SkipReason(f"projector {lag.group_id}: {said}; alert {'sent' if delivery.sent else 'not sent'}")
