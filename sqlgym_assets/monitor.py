"""`sqlgym-monitor`: the state of every table from the Dagster instance, in one screen.

It asks the instance's indexed event log for the latest record of each kind per asset (a handful
of queries per table), never lists the lake's objects.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime

from dagster import AssetCheckKey, AssetKey, DagsterInstance

from sqlgym_assets.catalog import TABLES
from sqlgym_assets.checks import CHECK_NAMES
from sqlgym_assets.console import format_table


@dataclass(frozen=True)
class TableStatus:
    table: str
    last_partition: str
    last_success: str
    rows: str
    last_failure: str
    failure_error: str
    checks: str

    def cells(self) -> tuple[str, ...]:
        return (
            self.table,
            self.last_partition,
            self.last_success,
            self.rows,
            self.last_failure,
            self.failure_error,
            self.checks,
        )


HEADER = ("table", "last partition", "at (UTC)", "rows", "last failure", "error", "checks")


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str, width: int = 60) -> str:
    line = text.strip().splitlines()[-1] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def table_status(instance: DagsterInstance, table: str) -> TableStatus:
    key = AssetKey(["sqlgym", table])
    success = instance.fetch_materializations(key, limit=1).records
    failure = instance.fetch_failed_materializations(key, limit=1).records
    partition, at, rows = "-", "-", "-"
    if success:
        materialization = success[0].asset_materialization
        partition = materialization.partition or "-"
        at = _when(success[0].timestamp)
        row_count = materialization.metadata.get("dagster/row_count")
        rows = str(row_count.value) if row_count is not None else "-"
    failed_at, error = "-", ""
    if failure:
        event = failure[0].event_log_entry.dagster_event
        data = event.asset_failed_to_materialize_data
        failed_partition = data.asset_materialization_failure.partition or "-"
        failed_at = f"{failed_partition} at {_when(failure[0].timestamp)}"
        cause = data.error.cause if data.error and data.error.cause else data.error
        error = _short(cause.message) if cause else "(no error recorded)"
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [AssetCheckKey(key, name) for name in CHECK_NAMES]
    )
    failed_checks = []
    evaluated = 0
    for check_key, record in latest.items():
        evaluation = record.event.dagster_event.event_specific_data if record.event else None
        if evaluation is None:
            continue
        evaluated += 1
        if not evaluation.passed:
            failed_checks.append(f"{check_key.name}@{evaluation.partition}")
    checks = (
        "failed: " + ", ".join(failed_checks)
        if failed_checks
        else f"{evaluated}/{len(CHECK_NAMES)} passed"
        if evaluated
        else "-"
    )
    return TableStatus(table, partition, at, rows, failed_at, error, checks)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sqlgym-monitor", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    with DagsterInstance.get() as instance:
        statuses = [table_status(instance, table.name) for table in TABLES]
    print(format_table(HEADER, [status.cells() for status in statuses]))


if __name__ == "__main__":
    main()
