"""The code location bench/end_to_end.py materializes: the bench's tables as the project's assets.

Each asset is built by the project's own factory (``assets.build_lake_asset``), with its checks,
IO manager and resources as in ``sqlgym_assets.definitions``; only the tables are the bench's:
``sqlgym/submissions`` (2,000,000 rows, read whole: a snapshot table) and
``sqlgym/busy_submissions`` (an append table with a day of 1,000,000 rows), in the schema named
by SQLGYM_BENCH_SCHEMA; and, for bench/backfill_bench.py, ``sqlgym/daily_submissions`` (the same
2,000,000 rows as an append table, about 66,666 a day for 30 days).
"""

import sys
from dataclasses import replace
from pathlib import Path

from dagster import Definitions, EnvVar, definitions, in_process_executor

from sqlgym_assets.assets import LAKE_IO_MANAGER_KEY, build_lake_asset
from sqlgym_assets.lake.io_manager import ParquetLakeIOManager
from sqlgym_assets.lake.layout import LAKE_URL_ENV
from sqlgym_assets.operations.shutdown import skip_the_last_collection
from sqlgym_assets.source.reader import PostgresResource

# Loaded by path (`dagster ... -f`): its folder is importable only once it is on the path.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from extract_bench import bench_table_spec

WHOLE_TABLE = bench_table_spec("full")
BUSY_DAY = replace(
    bench_table_spec("day"),
    name="busy_submissions",
    description="Benchmark submissions with one busy day.",
)
DAILY = replace(
    bench_table_spec("day"),
    name="daily_submissions",
    description="Benchmark submissions, 30 days of them.",
)


@definitions
def defs() -> Definitions:
    skip_the_last_collection()  # as sqlgym_assets.definitions does
    return Definitions(
        assets=[build_lake_asset(table) for table in (WHOLE_TABLE, BUSY_DAY, DAILY)],
        executor=in_process_executor,
        resources={
            "postgres": PostgresResource(source_schema=EnvVar("SQLGYM_BENCH_SCHEMA")),
            LAKE_IO_MANAGER_KEY: ParquetLakeIOManager(lake_url=EnvVar(LAKE_URL_ENV)),
        },
    )
