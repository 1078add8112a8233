"""The code location: every asset, check, job and resource of the SQLGym lake."""

from dagster import AssetSelection, Definitions, define_asset_job

from sqlgym_assets.assets import DAILY_PARTITIONS, LAKE_IO_MANAGER_KEY, build_assets, lake_asset_key
from sqlgym_assets.catalog import TABLES
from sqlgym_assets.parquet_io_manager import ParquetLakeIOManager
from sqlgym_assets.postgres_resource import PostgresResource

# Re-validates a day already in the lake without extracting it again: launch it for a partition.
lake_checks_job = define_asset_job(
    "sqlgym_lake_checks",
    selection=AssetSelection.checks_for_assets(*(lake_asset_key(table) for table in TABLES)),
    partitions_def=DAILY_PARTITIONS,
    description="Runs the four checks of every lake asset on a partition already written.",
)

# Resources read their environment variables when a run starts, never here at import.
defs = Definitions(
    assets=build_assets(),
    jobs=[lake_checks_job],
    resources={
        "postgres": PostgresResource(),
        LAKE_IO_MANAGER_KEY: ParquetLakeIOManager(),
    },
)
