"""Dagster alone, for bench/hourly_run.py: the hourly run's 21 assets and their checks, no work.

Each asset has the project's key, daily partitions and check specs, and its step does nothing
but log two lines (as a sync logs its read and its write) and return its materialization and
every check as passed. A run of all 21 on one partition measures what Dagster itself costs the
hourly run (start-up, planning, events in the instance's storage) on this machine, beside the
project's own run in the same bench run.
"""

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetsDefinition,
    Definitions,
    MaterializeResult,
    asset,
    definitions,
    in_process_executor,
)

from sqlgym_assets.assets import DAILY_PARTITIONS, lake_asset_key
from sqlgym_assets.catalog import TABLES, TableSpec
from sqlgym_assets.operations.shutdown import skip_the_last_collection
from sqlgym_assets.quality.checks import build_check_specs, check_names


def no_work_asset(table: TableSpec) -> AssetsDefinition:
    key = lake_asset_key(table)

    @asset(
        key=key,
        partitions_def=DAILY_PARTITIONS,
        check_specs=build_check_specs(key, table, DAILY_PARTITIONS),
    )
    def no_work(context: AssetExecutionContext) -> MaterializeResult:
        context.log.info(f"reading no rows of {table.name}")
        context.log.info(f"wrote no rows of {table.name}")
        return MaterializeResult(
            metadata={"dagster/row_count": 0},
            check_results=[
                AssetCheckResult(check_name=name, passed=True) for name in check_names(table)
            ],
        )

    return no_work


@definitions
def defs() -> Definitions:
    skip_the_last_collection()  # as the project's code location does: exits are comparable
    return Definitions(
        assets=[no_work_asset(table) for table in TABLES], executor=in_process_executor
    )
