"""`sqlgym-monitor`: the state of every table from the Dagster instance, in one screen.

It asks the instance's indexed storage for the latest records (a few queries per table, and the
step failures of recent failed runs), never lists the lake's objects.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    EventLogRecord,
    RunsFilter,
)

from sqlgym_assets.assets import ABSENT_FROM_SOURCE, lake_asset_key
from sqlgym_assets.catalog import TABLES, TableSpec
from sqlgym_assets.operations.alerts import error_summary
from sqlgym_assets.operations.console import format_table
from sqlgym_assets.quality.checks import check_names


@dataclass(frozen=True)
class TableStatus:
    table: str
    last_partition: str
    last_success: str
    rows: str
    source: str  # "absent" while the latest word on a legacy table is that the source lacks it
    last_failure: str
    failure_error: str
    checks: str

    def cells(self) -> tuple[str, ...]:
        return (
            self.table,
            self.last_partition,
            self.last_success,
            self.rows,
            self.source,
            self.last_failure,
            self.failure_error,
            self.checks,
        )


RECENT_FAILED_RUNS = 200  # enough to cover every table's latest failure in practice
HEADER = (
    "table",
    "last partition",
    "at (UTC)",
    "rows",
    "source",
    "last failure",
    "error",
    "checks",
)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def latest_step_failures(instance: DagsterInstance) -> dict[str, EventLogRecord]:
    """The newest failure of each step, read from the most recent failed runs only."""
    latest: dict[str, EventLogRecord] = {}
    failed_runs = instance.get_runs(
        filters=RunsFilter(statuses=[DagsterRunStatus.FAILURE]), limit=RECENT_FAILED_RUNS
    )
    for run in failed_runs:  # newest first
        records = instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.STEP_FAILURE
        ).records
        for record in reversed(records):
            latest.setdefault(record.event_log_entry.step_key or "", record)
    return latest


def table_status(
    instance: DagsterInstance, table: TableSpec, failures: dict[str, EventLogRecord]
) -> TableStatus:
    key = lake_asset_key(table)
    success = instance.fetch_materializations(key, limit=1).records
    failure = failures.get(key.to_python_identifier())
    partition, at, rows = "-", "-", "-"
    if success:
        materialization = success[0].asset_materialization
        partition = materialization.partition or "-"
        at = _when(success[0].timestamp)
        row_count = materialization.metadata.get("dagster/row_count")
        rows = str(row_count.value) if row_count is not None else "-"
    source = "-"
    observed = instance.fetch_observations(key, limit=1).records
    if observed and (not success or observed[0].timestamp > success[0].timestamp):
        absent = observed[0].asset_observation.metadata.get(ABSENT_FROM_SOURCE)
        source = "absent" if absent is not None and absent.value else "-"
    failed_at, error = "-", "-"
    if failure:
        run = instance.get_run_by_id(failure.run_id)
        failed_partition = run.tags.get("dagster/partition", "-") if run else "-"
        failed_at = f"{failed_partition} at {_when(failure.timestamp)}"
        error = error_summary(failure.event_log_entry.dagster_event.step_failure_data.error, 90)
    # A failed run leaves its checks planned, never evaluated: those fall back to the checks
    # returned with the latest materialization, which describe the file in the lake.
    with_materialization = _evaluations_of_run(instance, key, success[0].run_id) if success else {}
    failed_checks, not_run, evaluated = [], [], 0
    for name in check_names(table):
        record = instance.get_latest_asset_check_evaluation_record(AssetCheckKey(key, name))
        if record is None:
            continue
        data = record.event.dagster_event.event_specific_data if record.event else None
        if not isinstance(data, AssetCheckEvaluation):  # planned, but its run failed first
            data = with_materialization.get(name)
        if data is None:
            not_run.append(name)
            continue
        evaluated += 1
        if not data.passed:
            failed_checks.append(f"{name}@{data.partition}")
    if failed_checks:
        checks = "failed: " + ", ".join(failed_checks)
    elif evaluated:
        checks = f"{evaluated}/{len(check_names(table))} passed"
    else:
        checks = "not run" if not_run else "-"
    return TableStatus(table.name, partition, at, rows, source, failed_at, error, checks)


def _evaluations_of_run(
    instance: DagsterInstance, key: AssetKey, run_id: str
) -> dict[str, AssetCheckEvaluation]:
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    evaluations = (record.event_log_entry.dagster_event.event_specific_data for record in records)
    return {e.check_name: e for e in evaluations if e.asset_key == key}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sqlgym-monitor", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    with DagsterInstance.get() as instance:
        failures = latest_step_failures(instance)
        statuses = [table_status(instance, table, failures) for table in TABLES]
    print(format_table(HEADER, [status.cells() for status in statuses]))


if __name__ == "__main__":
    main()
