"""The asset factory: one daily-partitioned lake asset per table, fed by its Postgres table.

Each step reads its partition in one snapshot (``source``), hands the row stream to the lake's IO
manager, which writes the file (``lake``), then checks the file it wrote (``quality``).
"""

from collections.abc import Generator, Iterator
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    AssetRecordsFilter,
    AssetsDefinition,
    AssetSpec,
    DailyPartitionsDefinition,
    Failure,
    FreshnessPolicy,
    MetadataValue,
    Output,
    ResourceParam,
    RetryPolicy,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
    multi_asset,
)

from sqlgym_assets.catalog import (
    TABLES,
    Column,
    ColumnPolicy,
    SyncMode,
    TableSpec,
    validate_catalog,
)
from sqlgym_assets.lake.io_manager import SOURCE_ROW_COUNT, ParquetLakeIOManager
from sqlgym_assets.lake.keys import KeyedPartition, LiveKeys
from sqlgym_assets.lake.reader import partition_exists
from sqlgym_assets.operations.retries import (
    SYNC_RETRY_POLICY,
    fail_permanent_errors_without_retry,
)
from sqlgym_assets.quality.checks import (
    KEYS_MATCH_SOURCE,
    SCHEMA_MATCHES_SOURCE,
    VALIDATED_CHECKS,
    PartitionFacts,
    build_check_specs,
    run_checks,
)
from sqlgym_assets.quality.validator import start_validator
from sqlgym_assets.source.plan import (
    ContractDrift,
    SourceTableAbsentError,
    check_partition_readable,
    compare_with_contract,
    partition_window,
)
from sqlgym_assets.source.reader import PostgresResource

# UTC days, today included: the hourly run keeps refreshing the current day.
DAILY_PARTITIONS = DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC", end_offset=1)
LAKE_IO_MANAGER_KEY = "parquet_lake"
# Every table's step takes a slot of this pool; dagster.yaml sets how many query at once.
SOURCE_DATABASE_POOL = "sqlgym_source_db"
STEP_PRIORITY_BASE = 5  # catalog priority 1 runs first: Dagster runs higher numbers first
BACKFILL_TAG = "dagster/backfill"
# On an observation (and a WARN check) of a legacy table the source lacks.
ABSENT_FROM_SOURCE = "sqlgym/absent_from_source"


def lake_asset_key(table: TableSpec) -> AssetKey:
    return AssetKey(["sqlgym", table.name])


def source_asset_key(table: TableSpec) -> AssetKey:
    return AssetKey(["postgres", table.name])


def column_schema(table: TableSpec, columns: tuple[Column, ...]) -> TableSchema:
    """The catalog's columns as the UI's Columns table shows them, tagged by policy."""
    return TableSchema(
        columns=[
            TableColumn(
                name=column.name,
                type=column.pg_type,
                description=column.description or None,
                constraints=TableColumnConstraints(
                    nullable=not column.required,
                    unique=table.primary_key == (column.name,),
                ),
                tags={} if column.policy is ColumnPolicy.PLAIN else {column.policy.value: ""},
            )
            for column in columns
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
            # Credentials too, tagged: the lake never holds them.
            "dagster/column_schema": column_schema(table, table.columns),
            "dagster/table_name": table.name,
        },
    )


def build_lake_asset(
    table: TableSpec, retry_policy: RetryPolicy | None = SYNC_RETRY_POLICY
) -> AssetsDefinition:
    key = lake_asset_key(table)
    spec = AssetSpec(
        key=key,
        deps=[source_asset_key(table)],
        group_name=table.group,
        description=f"{table.description} Daily Parquet partitions, {table.sync_mode.value} sync.",
        kinds={"postgres", "s3", "parquet"},
        metadata={
            "dagster/column_schema": column_schema(table, table.lake_columns),
            **_sync_metadata(table),
        },
        # Scheduled hourly: stale after 2 hours is a warning, after 6 a failure.
        freshness_policy=FreshnessPolicy.time_window(
            fail_window=timedelta(hours=6), warn_window=timedelta(hours=2)
        )
        if table.enabled
        else None,
        skippable=True,  # a snapshot table sits out past-day backfills
    ).with_io_manager_key(LAKE_IO_MANAGER_KEY)

    # A multi-asset so the checks can run without the asset: re-validating a written partition
    # reads the lake, never the database's rows again.
    @multi_asset(
        name=key.to_python_identifier(),
        specs=[spec],
        partitions_def=DAILY_PARTITIONS,
        check_specs=build_check_specs(key, table, DAILY_PARTITIONS),
        can_subset=True,
        pool=SOURCE_DATABASE_POOL,
        op_tags={"dagster/priority": str(STEP_PRIORITY_BASE - table.priority)},
        retry_policy=retry_policy,
    )
    def sync_table(
        context: AssetExecutionContext,
        postgres: PostgresResource,
        # The IO manager doubles as a resource: checks read the file it wrote.
        parquet_lake: ResourceParam[ParquetLakeIOManager],
    ) -> Iterator[Output | AssetCheckResult]:
        checks = {check_key.name for check_key in context.selected_asset_check_keys}
        with fail_permanent_errors_without_retry():
            # First: a lake URL that cannot be used fails here, once, before the database is read.
            uri = parquet_lake.file_uri(key, context.partition_key)
            if key in context.selected_asset_keys:
                if _sits_out_backfill(context, table):
                    return
                if checks & VALIDATED_CHECKS:
                    start_validator()  # its set-up overlaps the extract
                try:
                    facts = yield from _extract(context, table, postgres)
                except SourceTableAbsentError as absent:
                    if not table.legacy:
                        raise
                    yield from _report_absent(context, table, str(absent), checks)
                    return
            else:
                facts = _recorded_facts(context, table, postgres, parquet_lake, uri, checks)
            yield from run_checks(table, key, parquet_lake.settings(), uri, facts, checks)

    return sync_table


def _sits_out_backfill(context: AssetExecutionContext, table: TableSpec) -> bool:
    """A past day of a snapshot table cannot be read; in a backfill it is left out, not failed."""
    if BACKFILL_TAG not in context.run.tags or table.sync_mode is not SyncMode.SNAPSHOT:
        return False
    today = datetime.now(UTC).date().isoformat()
    if context.partition_key == today:
        return False
    context.log.info(
        f"sqlgym/{table.name} is a snapshot table: it holds the whole table as of now, so "
        f"backfill day {context.partition_key} is left out (only {today} can be taken)"
    )
    return True


def _extract(
    context: AssetExecutionContext, table: TableSpec, postgres: PostgresResource
) -> Generator[Output, None, PartitionFacts]:
    window = partition_window(context.partition_key)
    check_partition_readable(table, window, now=datetime.now(UTC))
    is_snapshot = table.sync_mode is SyncMode.SNAPSHOT
    with postgres.snapshot(table, None if is_snapshot else window) as snapshot:
        if snapshot.null_cursor_rows:
            context.log.warning(
                f"{snapshot.null_cursor_rows} row(s) of {table.name} have a NULL "
                f"{table.cursor_column} and belong to no day; they are not in any partition"
            )
        context.log.info(
            f"reading {snapshot.source_row_count} row(s) of {table.name} "
            + ("(whole table)" if is_snapshot else f"in [{window.start}, {window.end})")
        )
        drift = snapshot.drift
        if drift:
            context.log.warning(
                f"the source's {table.name} differs from the catalog; read into the catalog's "
                f"types: {drift.as_metadata()}"
            )
        # The lake IO manager writes the stream and closes it, which ends the snapshot's
        # transaction with the write; a stream left unread is closed when this block ends.
        live_keys = snapshot.live_keys
        yield Output(
            snapshot.stream
            if live_keys is None
            else KeyedPartition(snapshot.stream, LiveKeys(live_keys, snapshot.read_at)),
            output_name=lake_asset_key(table).to_python_identifier(),
            metadata={
                SOURCE_ROW_COUNT: snapshot.source_row_count,
                "sqlgym/null_cursor_rows": snapshot.null_cursor_rows,
                "sqlgym/read_at": MetadataValue.timestamp(snapshot.read_at),
                "sqlgym/window": "whole table"
                if is_snapshot
                else f"[{window.start.isoformat()}, {window.end.isoformat()})",
                # Columns whose live type differs from the catalog's, read into the catalog's.
                "sqlgym/converted_columns": MetadataValue.json(
                    {
                        name: f"{drift.changed[name][1]} -> {drift.changed[name][0]}"
                        for name in drift.converted
                    }
                ),
                "sqlgym/absent_columns": MetadataValue.json(list(drift.removed)),
                "sqlgym/pseudonymized_columns": MetadataValue.json(list(snapshot.pseudonymized)),
            },
        )
        return PartitionFacts(snapshot.source_row_count, snapshot.drift, live_keys)


def _report_absent(
    context: AssetExecutionContext, table: TableSpec, reason: str, checks: set[str]
) -> Iterator[AssetObservation | AssetCheckResult]:
    """A legacy table a valid database may lack: observed as absent, a WARN, and no file."""
    context.log.warning(f"sqlgym/{table.name} is a legacy table, absent from this source: {reason}")
    key = lake_asset_key(table)
    yield AssetObservation(
        asset_key=key,
        partition=context.partition_key,
        metadata={ABSENT_FROM_SOURCE: True, "sqlgym/reason": reason},
    )
    if SCHEMA_MATCHES_SOURCE in checks:
        yield AssetCheckResult(
            asset_key=key,
            check_name=SCHEMA_MATCHES_SOURCE,
            passed=False,
            severity=AssetCheckSeverity.WARN,
            description=f"{table.name} is absent from the source: a legacy table that the app's "
            "current models no longer create. Nothing was written.",
            metadata={ABSENT_FROM_SOURCE: True},
        )


def _recorded_facts(
    context: AssetExecutionContext,
    table: TableSpec,
    postgres: PostgresResource,
    parquet_lake: ParquetLakeIOManager,
    uri: str,
    checks: set[str],
) -> PartitionFacts:
    """For checks run on their own: the count recorded with the partition's materialization."""
    if not partition_exists(parquet_lake.settings(), uri):
        raise Failure(
            f"sqlgym/{table.name} has no file for {context.partition_key} at {uri}: "
            "materialize the partition before checking it"
        )
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=lake_asset_key(table), asset_partitions=[context.partition_key]
        ),
        limit=1,
    ).records
    recorded = records[0].asset_materialization.metadata.get(SOURCE_ROW_COUNT) if records else None
    return PartitionFacts(
        source_row_count=None if recorded is None else int(recorded.value),
        drift=compare_with_contract(table, postgres.source_columns(table))
        if SCHEMA_MATCHES_SOURCE in checks
        else ContractDrift(),
        # The keys alone, in a snapshot of their own: is the lake's current state still the
        # source's, deletes since the last sync included?
        live_keys=postgres.live_keys(table) if KEYS_MATCH_SOURCE in checks else None,
    )


def build_assets(
    tables: tuple[TableSpec, ...] = TABLES, retry_policy: RetryPolicy | None = SYNC_RETRY_POLICY
) -> list[AssetSpec | AssetsDefinition]:
    validate_catalog(tables)
    return [
        *(build_source_asset(table) for table in tables),
        *(build_lake_asset(table, retry_policy) for table in tables),
    ]
