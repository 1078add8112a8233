"""Run failures, told once and clearly: a log line per failed table, and one notifier hook."""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from dagster import DefaultSensorStatus, RunFailureSensorContext, run_failure_sensor

from sqlgym_assets.assets import lake_asset_key
from sqlgym_assets.aws import region_from_environment
from sqlgym_assets.catalog import TABLES

if TYPE_CHECKING:
    from dagster_shared.error import SerializableErrorInfo

WEBHOOK_URL_ENV = "SQLGYM_ALERT_WEBHOOK_URL"  # a Slack incoming webhook, or anything taking JSON
SNS_TOPIC_ARN_ENV = "SQLGYM_ALERT_SNS_TOPIC_ARN"
WEBSERVER_URL_ENV = "SQLGYM_DAGSTER_URL"
DEFAULT_WEBSERVER_URL = "http://localhost:3000"

logger = logging.getLogger(__name__)
# A lake asset's step is named after its asset key.
_TABLE_OF_STEP = {lake_asset_key(table).to_python_identifier(): table.name for table in TABLES}


@dataclass(frozen=True)
class Alert:
    table: str
    partition: str
    error: str
    run_url: str

    def line(self) -> str:
        return (
            f"SQLGYM SYNC FAILED table={self.table} partition={self.partition} "
            f"error={self.error!r} run={self.run_url}"
        )


def alerts_for(context: RunFailureSensorContext) -> list[Alert]:
    run = context.dagster_run
    base = os.environ.get(WEBSERVER_URL_ENV, DEFAULT_WEBSERVER_URL).rstrip("/")
    run_url = f"{base}/runs/{run.run_id}"
    partition = run.tags.get("dagster/partition", "-")
    alerts = []
    for event in context.get_step_failure_events():
        table = _TABLE_OF_STEP.get(event.step_key or "", event.step_key or "-")
        alerts.append(
            Alert(table, partition, error_summary(event.step_failure_data.error), run_url)
        )
    if not alerts:  # the run died outside any step (e.g. it could not start)
        message = context.failure_event.message or "run failed"
        alerts.append(Alert("-", partition, message, run_url))
    return alerts


def error_summary(error: SerializableErrorInfo | None, width: int = 300) -> str:
    """The root cause in its own words: first line, without the exception's module and class."""
    while error is not None and error.cause is not None:
        error = error.cause
    if error is None or not error.message.strip():
        return "no error recorded"
    line = error.message.strip().splitlines()[0]
    kind, separator, words = line.partition(": ")
    if separator and "." in kind and " " not in kind:
        line = words
    return line if len(line) <= width else line[: width - 1] + "…"


def notify(alert: Alert) -> None:
    """The one place a notifier plugs in, chosen by environment variable."""
    webhook = os.environ.get(WEBHOOK_URL_ENV)
    if webhook:
        request = urllib.request.Request(
            webhook,
            data=json.dumps({"text": alert.line(), **asdict(alert)}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass
    topic = os.environ.get(SNS_TOPIC_ARN_ENV)
    if topic:
        import boto3

        boto3.client("sns", region_name=region_from_environment()).publish(
            TopicArn=topic, Subject="sqlgym sync failed", Message=alert.line()
        )


@run_failure_sensor(
    name="sqlgym_run_failure_alert",
    description=f"Logs one alert line per failed table; posts it to ${WEBHOOK_URL_ENV} "
    f"and/or ${SNS_TOPIC_ARN_ENV} when set.",
    monitor_all_code_locations=False,
    # On as soon as the daemon runs, as README says: an alert sensor left off alerts nobody.
    default_status=DefaultSensorStatus.RUNNING,
)
def run_failure_alert(context: RunFailureSensorContext) -> None:
    for alert in alerts_for(context):
        context.log.error(alert.line())
        logger.error(alert.line())
        notify(alert)
