"""The asset factory: one daily-partitioned lake asset per table, fed by its Postgres table."""

from collections.abc import Iterator
from datetime import UTC, datetime

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    DailyPartitionsDefinition,
    MetadataValue,
    Output,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
    asset,
)

from sqlgym_assets.catalog import TABLES, SyncMode, TableSpec, validate_catalog
from sqlgym_assets.extraction import check_partition_readable, partition_window
from sqlgym_assets.postgres_resource import PostgresResource

# UTC days, today included: the hourly run keeps refreshing the current day.
DAILY_PARTITIONS = DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC", end_offset=1)
LAKE_IO_MANAGER_KEY = "parquet_lake"


def lake_asset_key(table: TableSpec) -> AssetKey:
    return AssetKey(["sqlgym", table.name])


def source_asset_key(table: TableSpec) -> AssetKey:
    return AssetKey(["postgres", table.name])


def column_schema(table: TableSpec) -> TableSchema:
    return TableSchema(
        columns=[
            TableColumn(
                name=column.name,
                type=column.pg_type,
                constraints=TableColumnConstraints(
                    nullable=not column.required,
                    unique=table.primary_key == (column.name,),
                ),
            )
            for column in table.columns
        ]
    )


def _sync_metadata(table: TableSpec) -> dict[str, object]:
    return {
        "sqlgym/sync_mode": table.sync_mode.value,
        "sqlgym/cursor_column": table.cursor_column or "",
        "sqlgym/primary_key": ", ".join(table.primary_key),
        "sqlgym/priority": table.priority,
        "sqlgym/scheduled": table.enabled,
    }


def build_source_asset(table: TableSpec) -> AssetSpec:
    """The PostgreSQL table itself: external, so lineage shows Postgres -> lake."""
    return AssetSpec(
        key=source_asset_key(table),
        description=f"PostgreSQL table {table.name} of the SQLGym app. {table.description}",
        group_name=table.group,
        kinds={"postgres"},
        metadata={
            "dagster/column_schema": column_schema(table),
            "dagster/table_name": table.name,
        },
    )


def build_lake_asset(table: TableSpec) -> AssetsDefinition:
    @asset(
        key=lake_asset_key(table),
        deps=[source_asset_key(table)],
        partitions_def=DAILY_PARTITIONS,
        group_name=table.group,
        description=f"{table.description} Daily Parquet partitions, {table.sync_mode.value} sync.",
        kinds={"postgres", "s3", "parquet"},
        io_manager_key=LAKE_IO_MANAGER_KEY,
        metadata={
            "dagster/column_schema": column_schema(table),
            **_sync_metadata(table),
        },
    )
    def sync_table(context: AssetExecutionContext, postgres: PostgresResource) -> Iterator[Output]:
        window = partition_window(context.partition_key)
        check_partition_readable(table, window, now=datetime.now(UTC))
        is_snapshot = table.sync_mode is SyncMode.SNAPSHOT
        with postgres.read_partition(table, None if is_snapshot else window) as extract:
            if extract.null_cursor_rows:
                context.log.warning(
                    f"{extract.null_cursor_rows} row(s) of {table.name} have a NULL "
                    f"{table.cursor_column} and belong to no day; they are not in any partition"
                )
            context.log.info(
                f"reading {extract.source_row_count} row(s) of {table.name} "
                + ("(whole table)" if is_snapshot else f"in [{window.start}, {window.end})")
            )
            # The IO manager consumes the stream while this generator is suspended here, so the
            # read-only transaction stays open until the file is written.
            yield Output(
                extract.reader(),
                metadata={
                    "sqlgym/source_row_count": extract.source_row_count,
                    "sqlgym/null_cursor_rows": extract.null_cursor_rows,
                    "sqlgym/read_at": MetadataValue.timestamp(extract.read_at),
                    "sqlgym/window": "whole table"
                    if is_snapshot
                    else f"[{window.start.isoformat()}, {window.end.isoformat()})",
                },
            )

    return sync_table


def build_assets(tables: tuple[TableSpec, ...] = TABLES) -> list[AssetSpec | AssetsDefinition]:
    validate_catalog(tables)
    return [
        *(build_source_asset(table) for table in tables),
        *(build_lake_asset(table) for table in tables),
    ]
