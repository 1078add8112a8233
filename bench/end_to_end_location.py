"""The code location bench/end_to_end.py materializes: the bench's tables as the project's assets.

Each asset is built by the project's own factory (``assets.build_lake_asset``), with its checks,
IO manager and resources as in ``sqlgym_assets.definitions``; only the tables are the bench's:
``sqlgym/submissions`` (2,000,000 rows, read whole: a snapshot table) and
``sqlgym/busy_submissions`` (an append table with a day of 1,000,000 rows), in the schema named
by SQLGYM_BENCH_SCHEMA.
"""

from dagster import Definitions, EnvVar, definitions, in_process_executor

from sqlgym_assets.assets import LAKE_IO_MANAGER_KEY, build_lake_asset
from sqlgym_assets.catalog import Column, SyncMode, TableSpec
from sqlgym_assets.lake.io_manager import ParquetLakeIOManager
from sqlgym_assets.lake.layout import LAKE_URL_ENV
from sqlgym_assets.operations.shutdown import skip_the_last_collection
from sqlgym_assets.source.reader import PostgresResource

# (name, PostgreSQL type as format_type prints it, NOT NULL): extract_bench.COLUMNS
COLUMNS = tuple(
    Column(name, pg_type, required=required)
    for name, pg_type, required in (
        ("id", "character varying", True),
        ("user_id", "character varying", True),
        ("problem_id", "character varying", True),
        ("query", "text", True),
        ("is_correct", "boolean", True),
        ("execution_time", "integer", False),
        ("submitted_at", "timestamp without time zone", True),
        ("query_result", "jsonb", False),
        ("memory_used_mb", "numeric(10,2)", False),
    )
)
WHOLE_TABLE = TableSpec(
    name="submissions",
    description="Benchmark submissions, read whole.",
    group="bench",
    sync_mode=SyncMode.SNAPSHOT,
    priority=1,
    columns=COLUMNS,
)
BUSY_DAY = TableSpec(
    name="busy_submissions",
    description="Benchmark submissions with one busy day.",
    group="bench",
    sync_mode=SyncMode.APPEND,
    cursor_column="submitted_at",
    priority=1,
    columns=COLUMNS,
)


@definitions
def defs() -> Definitions:
    skip_the_last_collection()  # as sqlgym_assets.definitions does
    return Definitions(
        assets=[build_lake_asset(WHOLE_TABLE), build_lake_asset(BUSY_DAY)],
        executor=in_process_executor,
        resources={
            "postgres": PostgresResource(source_schema=EnvVar("SQLGYM_BENCH_SCHEMA")),
            LAKE_IO_MANAGER_KEY: ParquetLakeIOManager(lake_url=EnvVar(LAKE_URL_ENV)),
        },
    )
