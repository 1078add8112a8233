"""The asset factory: one daily-partitioned lake asset per table, fed by its Postgres table.

Each step reads its partition in one snapshot (``source``), hands the row stream to the lake's IO
manager, which writes the file (``lake``), then checks the file it wrote (``quality``).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    AssetRecordsFilter,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    DagsterEventType,
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
from sqlgym_assets.lake.io_manager import SOURCE_ROW_COUNT, ParquetLakeIOManager, SyncFacts
from sqlgym_assets.lake.keys import KeyedPartition, LiveKeys
from sqlgym_assets.lake.reader import partition_exists
from sqlgym_assets.lake.writer import BatchStream
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
        # Selectable by how it syncs: a backfill of past days selects `tag:sync_mode=incremental`
        # and `tag:sync_mode=append`, as snapshot tables cannot be taken of a past day.
        tags={"sync_mode": table.sync_mode.value},
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
        # A range of days (a UI backfill, `--partition-range`) is one run, not a run per day.
        backfill_policy=BackfillPolicy.single_run(),
    )
    def sync_table(
        context: AssetExecutionContext,
        postgres: PostgresResource,
        # The IO manager doubles as a resource: checks read the file it wrote.
        parquet_lake: ResourceParam[ParquetLakeIOManager],
    ) -> Iterator[Output | AssetMaterialization | AssetObservation | AssetCheckResult]:
        checks = {check_key.name for check_key in context.selected_asset_check_keys}
        if context.has_partition_key:
            with fail_permanent_errors_without_retry():
                yield from _sync_day(context, table, postgres, parquet_lake, checks)
        else:
            yield from _sync_days(context, table, postgres, parquet_lake, checks)

    return sync_table


def _sync_day(
    context: AssetExecutionContext,
    table: TableSpec,
    postgres: PostgresResource,
    parquet_lake: ParquetLakeIOManager,
    checks: set[str],
) -> Iterator[Output | AssetObservation | AssetCheckResult]:
    """A run of one day: the rows go to the IO manager as the asset's output, then are checked."""
    key = lake_asset_key(table)
    day = context.partition_key
    # First: a lake URL that cannot be used fails here, once, before the database is read.
    uri = parquet_lake.file_uri(key, day)
    if key in context.selected_asset_keys:
        if _sits_out(context, table, day):
            return
        if checks & VALIDATED_CHECKS:
            start_validator()  # its set-up overlaps the extract
        try:
            with _read_day(context, table, postgres, day) as read:
                yield Output(
                    read.rows, output_name=key.to_python_identifier(), metadata=read.metadata
                )
        except SourceTableAbsentError as absent:
            if not table.legacy:
                raise
            yield from _report_absent(context, table, day, str(absent), checks)
            return
        facts = read.facts
    else:
        facts = _recorded_facts(context, table, postgres, parquet_lake, uri, day, checks)
    yield from run_checks(table, key, parquet_lake.settings(), uri, facts, checks)


def _sync_days(
    context: AssetExecutionContext,
    table: TableSpec,
    postgres: PostgresResource,
    parquet_lake: ParquetLakeIOManager,
    checks: set[str],
) -> Iterator[AssetMaterialization | AssetObservation | AssetCheckEvaluation]:
    """A run of a range of days (a backfill): each day is read in a snapshot of its own, written,
    recorded and checked before the next, so memory stays that of one day. A day that fails does
    not stop the others; a retry of the step redoes only the days this run has not recorded."""
    key = lake_asset_key(table)
    days = context.partition_keys
    with fail_permanent_errors_without_retry():
        parquet_lake.file_uri(key, days[0])  # an unusable lake URL fails once, before any read
    done = _days_recorded_by_this_run(context, key) if context.retry_number else set()
    if key in context.selected_asset_keys and checks & VALIDATED_CHECKS:
        start_validator()
    failures: dict[str, Exception] = {}
    for day in days:
        if day in done:
            continue
        try:
            with fail_permanent_errors_without_retry():
                yield from _sync_day_of_range(context, table, postgres, parquet_lake, checks, day)
        except Exception as error:
            if isinstance(error, Failure) and not error.allow_retries:
                # A bad setting, query or catalog fails every day alike: stop at the first.
                raise Failure(
                    description=f"sqlgym/{table.name} {day}: {error.description} (the days "
                    "after it are not tried: they would fail the same way)",
                    allow_retries=False,
                ) from error
            failures[day] = error
            context.log.error(f"sqlgym/{table.name} {day} failed, the other days go on: {error}")
    if failures:
        raise Failure(
            description=f"sqlgym/{table.name}: {len(failures)} of {len(days)} day(s) failed: "
            + "; ".join(f"{day}: {error}" for day, error in failures.items()),
            metadata={"sqlgym/failed_days": MetadataValue.json(list(failures))},
        )


def _sync_day_of_range(
    context: AssetExecutionContext,
    table: TableSpec,
    postgres: PostgresResource,
    parquet_lake: ParquetLakeIOManager,
    checks: set[str],
    day: str,
) -> Iterator[AssetMaterialization | AssetObservation | AssetCheckEvaluation]:
    key = lake_asset_key(table)
    uri = parquet_lake.file_uri(key, day)
    if key in context.selected_asset_keys:
        if _sits_out(context, table, day):
            return
        try:
            with _read_day(context, table, postgres, day) as read:
                written = parquet_lake.write_day(
                    key,
                    day,
                    read.rows,
                    SyncFacts(context.run.run_id, table.sync_mode.value, read.metadata),
                    context.log,
                )
        except SourceTableAbsentError as absent:
            if not table.legacy:
                raise
            for event in _report_absent(context, table, day, str(absent), checks):
                yield _dated(event, day) if isinstance(event, AssetCheckResult) else event
            return
        yield AssetMaterialization(
            asset_key=key, partition=day, metadata={**read.metadata, **written}
        )
        facts = read.facts
    else:
        facts = _recorded_facts(context, table, postgres, parquet_lake, uri, day, checks)
    for result in run_checks(table, key, parquet_lake.settings(), uri, facts, checks):
        yield _dated(result, day)


def _dated(result: AssetCheckResult, day: str) -> AssetCheckEvaluation:
    """A check result of one day of a range: Dagster dates an AssetCheckResult with the run's one
    partition, which a range run has not, so the day is set here."""
    return AssetCheckEvaluation(
        asset_key=result.asset_key,
        check_name=result.check_name,
        passed=result.passed,
        metadata=result.metadata,
        severity=result.severity,
        description=result.description,
        blocking=result.check_name in VALIDATED_CHECKS,
        partition=day,
    )


def _days_recorded_by_this_run(context: AssetExecutionContext, key: AssetKey) -> set[str]:
    records = context.instance.get_records_for_run(
        context.run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
    ).records
    events = [record.event_log_entry.dagster_event for record in records]
    return {event.partition for event in events if event and event.asset_key == key}


def _sits_out(context: AssetExecutionContext, table: TableSpec, day: str) -> bool:
    """A past day of a snapshot table cannot be read; in a backfill or a range of days it is left
    out, not failed."""
    if table.sync_mode is not SyncMode.SNAPSHOT:
        return False
    if BACKFILL_TAG not in context.run.tags and context.has_partition_key:
        return False
    today = datetime.now(UTC).date().isoformat()
    if day == today:
        return False
    context.log.info(
        f"sqlgym/{table.name} is a snapshot table: it holds the whole table as of now, so "
        f"backfill day {day} is left out (only {today} can be taken)"
    )
    return True


@dataclass(frozen=True)
class DayRead:
    """One day read from the source, open: its rows (a stream the lake's write consumes), the
    metadata of the read, and what the checks compare the file against."""

    rows: KeyedPartition | BatchStream
    metadata: dict[str, object]
    facts: PartitionFacts


@contextmanager
def _read_day(
    context: AssetExecutionContext, table: TableSpec, postgres: PostgresResource, day: str
) -> Iterator[DayRead]:
    """Opens the day's snapshot; the lake's write of ``rows`` ends its transaction, and a stream
    left unread is closed when the block ends."""
    window = partition_window(day)
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
        live_keys = snapshot.live_keys
        yield DayRead(
            rows=snapshot.stream
            if live_keys is None
            else KeyedPartition(snapshot.stream, LiveKeys(live_keys, snapshot.read_at)),
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
            facts=PartitionFacts(snapshot.source_row_count, snapshot.drift, live_keys),
        )


def _report_absent(
    context: AssetExecutionContext, table: TableSpec, day: str, reason: str, checks: set[str]
) -> Iterator[AssetObservation | AssetCheckResult]:
    """A legacy table a valid database may lack: observed as absent, a WARN, and no file."""
    context.log.warning(f"sqlgym/{table.name} is a legacy table, absent from this source: {reason}")
    key = lake_asset_key(table)
    yield AssetObservation(
        asset_key=key,
        partition=day,
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
    day: str,
    checks: set[str],
) -> PartitionFacts:
    """For checks run on their own: the count recorded with the partition's materialization."""
    if not partition_exists(parquet_lake.settings(), uri):
        raise Failure(
            f"sqlgym/{table.name} has no file for {day} at {uri}: "
            "materialize the partition before checking it"
        )
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=lake_asset_key(table), asset_partitions=[day]),
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
